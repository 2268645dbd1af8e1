"""SimpleITK images of a synthetic study built from its truth and its CT datasets.

These stand in for ``quant.image.volume`` in tests that must not depend on the SUV conversion.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from service.synthetic.study import SyntheticStudy


def pet_suv_image(study: SyntheticStudy) -> sitk.Image:
    """The study's SUV (``truth.suv``) as a float32 image on the PET grid."""
    image = sitk.GetImageFromArray(study.truth.suv.astype(np.float32))
    image.SetSpacing(study.truth.pet_spacing_mm)
    image.SetOrigin(study.truth.pet_origin_mm)
    return image


def ct_hu_image(study: SyntheticStudy) -> sitk.Image:
    """The CT in HU (float32) read from the CT datasets (stored x slope + intercept)."""
    slices = [
        ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for ds in study.ct
    ]
    image = sitk.GetImageFromArray(np.stack(slices))
    image.SetSpacing(study.truth.ct_spacing_mm)
    image.SetOrigin(study.truth.ct_origin_mm)
    return image


def ct_hu_on_pet(study: SyntheticStudy) -> sitk.Image:
    """The CT resampled (linear interpolation) onto the PET grid; air (-1000) outside."""
    return sitk.Resample(
        ct_hu_image(study), pet_suv_image(study), sitk.Transform(), sitk.sitkLinear, -1000.0
    )
