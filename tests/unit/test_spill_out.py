"""The organ halo model (:mod:`quant.segmentation.spill_out`) on a blurred sphere.

The blur is scipy's Gaussian filter (not the SimpleITK filter the model fits with), the width
is one the candidates do not list exactly, and the background carries noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from quant.segmentation.spill_out import organ_spill_out

SPACING = (2.0, 2.0, 3.0)  # x, y, z mm


def _sphere(shape: tuple[int, int, int], centre_mm: tuple[float, float, float],
            radius_mm: float) -> np.ndarray:
    k, j, i = np.indices(shape)
    return (
        ((i * SPACING[0] - centre_mm[0]) ** 2 + (j * SPACING[1] - centre_mm[1]) ** 2
         + (k * SPACING[2] - centre_mm[2]) ** 2) <= radius_mm**2
    )


def _blurred(truth: np.ndarray, fwhm_mm: float) -> np.ndarray:
    sigma = fwhm_mm / 2.3548
    per_axis = (sigma / SPACING[2], sigma / SPACING[1], sigma / SPACING[0])
    out: np.ndarray = ndimage.gaussian_filter(truth, per_axis, mode="nearest")
    return out


@pytest.mark.parametrize("fwhm_mm", [5.5, 7.5])
def test_the_halo_of_a_hot_organ_is_fitted_and_removed(fwhm_mm: float) -> None:
    shape = (30, 40, 40)
    organ = _sphere(shape, (40.0, 40.0, 45.0), 18.0)
    truth = np.where(organ, 15.0, 1.0)
    rng = np.random.default_rng(7)
    suv = _blurred(truth, fwhm_mm) + rng.normal(0.0, 0.05, shape)
    spill, fitted = organ_spill_out(suv, organ, SPACING)
    assert fitted is not None and abs(fitted - fwhm_mm) <= 1.5
    halo = ~organ & ndimage.binary_dilation(organ, iterations=2)
    assert float(suv[halo].mean()) > 3.0  # the halo is there before
    assert float((suv - spill)[halo].mean()) == pytest.approx(1.0, abs=0.15)


def test_no_organ_no_halo() -> None:
    suv = np.ones((10, 10, 10))
    spill, fitted = organ_spill_out(suv, np.zeros(suv.shape, dtype=bool), SPACING)
    assert fitted is None and not spill.any()
