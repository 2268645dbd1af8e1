"""quant.figures against hand-computed values on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from quant.figures import (
    lesion_figures,
    muscle_figures,
    sphere_kernel,
    suv_peak,
    voxel_volume_ml,
)

SPHERE_VOLUME_MM3 = np.pi * 12.0**3 / 6.0  # 904.78 mm3: the 1.2 cm PERCIST sphere


def _cap_volume(radius: float, height: float) -> float:
    """Volume of a spherical cap of the given height."""
    return np.pi * height**2 * (3.0 * radius - height) / 3.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (4.0, 4.0, 3.0)])
def test_kernel_is_normalised_and_symmetric(spacing: tuple[float, float, float]) -> None:
    kernel = sphere_kernel(spacing)
    assert kernel.sum() == pytest.approx(1.0)
    assert all(n % 2 == 1 for n in kernel.shape)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1, ::-1])
    np.testing.assert_allclose(kernel, kernel.transpose(0, 2, 1))


@pytest.mark.parametrize(
    ("spacing", "value"),
    [((2.0, 2.0, 2.0), 2.0), ((4.0, 4.0, 3.0), 3.5), ((1.0, 1.0, 1.0), 0.7)],
)
def test_uniform_block_peak_equals_block_value(
    spacing: tuple[float, float, float], value: float
) -> None:
    suv = np.zeros((30, 30, 30))
    suv[5:25, 5:25, 5:25] = value
    mask = np.zeros(suv.shape, dtype=bool)
    mask[12:18, 12:18, 12:18] = True
    result = lesion_figures(suv, mask, 0.5, (1.5,), spacing, source="contour", label="block")
    assert result.suv_peak == pytest.approx(value)
    assert result.suv_max == pytest.approx(value)
    assert result.suv_mean == pytest.approx(value)
    assert result.volume_ml == pytest.approx(216 * np.prod(spacing) / 1000.0)
    assert result.tm_max == pytest.approx(value / 0.5)
    assert result.tm_mean == pytest.approx(value / 0.5)
    assert (result.source, result.label) == ("contour", "block")


def test_single_hot_voxel_peak_is_value_over_sphere_volume() -> None:
    suv = np.zeros((21, 21, 21))
    suv[10, 10, 10] = 1000.0
    mask = suv > 0
    # The hot voxel lies wholly inside the sphere: its weight is 1 / (sphere volume in voxels).
    assert suv_peak(suv, mask, (1.0, 1.0, 1.0)) == pytest.approx(
        1000.0 / SPHERE_VOLUME_MM3, rel=0.01
    )


def test_partial_voxels_at_a_plane_boundary() -> None:
    # Cold (1) for columns < 15, hot (3) from 15: the plane lies 0.5 mm from the centres of
    # column 15. A sphere centred there has a cap of height R - 0.5 mm on the cold side.
    suv = np.full((31, 31, 31), 3.0)
    suv[:, :, :15] = 1.0
    mask = np.zeros(suv.shape, dtype=bool)
    mask[15, 15, 15] = True
    cold = _cap_volume(6.0, 5.5) / SPHERE_VOLUME_MM3
    expected = 3.0 - 2.0 * cold
    assert suv_peak(suv, mask, (1.0, 1.0, 1.0)) == pytest.approx(expected, rel=0.01)


def test_peak_centre_must_lie_in_the_lesion() -> None:
    suv = np.ones((30, 30, 30))
    suv[3:9, 3:9, 3:9] = 10.0  # hot block outside the VOI
    mask = np.zeros(suv.shape, dtype=bool)
    mask[20:24, 20:24, 20:24] = True
    assert suv_peak(suv, mask, (2.0, 2.0, 2.0)) == pytest.approx(1.0)


def _two_blobs() -> tuple[np.ndarray, np.ndarray]:
    suv = np.full((12, 12, 12), 1.0)
    suv[2:4, 2:4, 2:4] = 3.0  # blob A: 8 voxels
    suv[3, 3, 3] = 5.0  # its maximum
    suv[7:9, 7:10, 7:8] = 2.5  # blob B: 6 voxels, far from A
    mask = np.zeros(suv.shape, dtype=bool)
    mask[1:11, 1:11, 1:11] = True
    return suv, mask


def test_only_the_blob_connected_to_the_maximum_is_hypoxic() -> None:
    suv, mask = _two_blobs()
    spacing = (2.0, 2.0, 2.0)
    result = lesion_figures(suv, mask, 1.0, (2.0, 1.0), spacing, source="contour", label="x")
    voxel = voxel_volume_ml(spacing)
    two, one = result.hypoxic
    assert two.threshold == 2.0
    assert two.mask.sum() == 8
    assert two.volume_ml == pytest.approx(8 * voxel)
    assert two.fraction == pytest.approx(8 / 1000)
    assert not two.mask[7:9, 7:10, 7:8].any()
    # At T/M >= 1 every VOI voxel is connected to the maximum.
    assert one.mask.sum() == 1000 and one.fraction == pytest.approx(1.0)
    assert result.max_index == (3, 3, 3)
    assert result.suv_max == 5.0
    assert result.tm_max == pytest.approx(5.0)
    assert result.suv_mean == pytest.approx(suv[mask].mean())


def test_a_blob_touching_by_a_corner_is_connected() -> None:
    suv, mask = _two_blobs()
    suv[4, 4, 4] = 2.5  # shares only a corner with blob A's voxel (3, 3, 3)
    result = lesion_figures(suv, mask, 1.0, (2.0,), (2.0, 2.0, 2.0), source="s", label="l")
    assert result.hypoxic[0].mask.sum() == 9


def test_hypoxic_volume_scales_with_the_muscle_mean() -> None:
    suv, mask = _two_blobs()
    # Muscle 2.0: threshold 2.0 means SUV >= 4.0, only the maximum voxel.
    result = lesion_figures(suv, mask, 2.0, (2.0, 3.0), (1.0, 1.0, 1.0), source="s", label="l")
    assert result.hypoxic[0].mask.sum() == 1
    assert result.hypoxic[0].volume_ml == pytest.approx(0.001)
    assert result.hypoxic[1].volume_ml == 0.0 and result.hypoxic[1].fraction == 0.0
    assert result.tm_mean == pytest.approx(suv[mask].mean() / 2.0)


def test_muscle_figures() -> None:
    suv = np.zeros((3, 3, 3))
    suv[1, 1, :] = [1.0, 2.0, 3.0]
    mean, sd, volume = muscle_figures(suv, suv > 0, (4.0, 4.0, 3.0))
    assert (mean, sd) == pytest.approx((2.0, 1.0))
    assert volume == pytest.approx(3 * 0.048)


@pytest.mark.parametrize(
    ("mask_shape", "muscle", "spacing", "message"),
    [
        ((4, 4, 4), 1.0, (1.0, 1.0, 1.0), "differs"),
        ((5, 5, 5), 0.0, (1.0, 1.0, 1.0), "muscle_suv_mean"),
        ((5, 5, 5), 1.0, (1.0, 0.0, 1.0), "spacing_mm"),
    ],
)
def test_bad_arguments_are_named(
    mask_shape: tuple[int, int, int],
    muscle: float,
    spacing: tuple[float, float, float],
    message: str,
) -> None:
    suv = np.ones((5, 5, 5))
    mask = np.ones(mask_shape, dtype=bool)
    with pytest.raises(ValueError, match=message):
        lesion_figures(suv, mask, muscle, (1.5,), spacing, source="s", label="l")


def test_empty_mask_is_refused() -> None:
    suv = np.ones((5, 5, 5))
    with pytest.raises(ValueError, match="empty"):
        lesion_figures(suv, suv > 2, 1.0, (1.5,), (1.0, 1.0, 1.0), source="s", label="l")
