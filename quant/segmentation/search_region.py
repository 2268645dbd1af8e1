"""Where the automatic lesion search may look: a z-range or a body region from the CT.

Rules
-----
z-range (``search_z_range_mm = [zmin, zmax]``)
    A voxel is searched when the patient z coordinate (DICOM LPS, mm, growing towards the
    head) of its centre lies in ``[zmin, zmax]``.
Body region (``search_region``)
    Found from the lungs on the CT: air (< -400 HU) enclosed by the body in its axial slice,
    26-connected regions of at least :data:`LUNG_MIN_ML`; the largest one and every other that
    overlaps it in z make the lungs. ``thorax`` is the z extent of the lungs, ``head_neck``
    everything above the lung apices, ``abdomen_pelvis`` everything below the lung bases.
    Without a CT, or without lungs in the field of view, the region cannot be placed and the
    study is refused with that reason (use a z-range instead).

Either restriction applies to the candidates of :func:`quant.segmentation.regions.detect_lesions`
only after physiological uptake has been recognised on the whole field of view (so that a liver
cut by the boundary is still recognised as liver); a lesion crossing the boundary is cut at it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.errors import QuantificationError
from quant.image.grid import voxel_z_mm
from quant.image.masks import component_sizes, labels_of, largest_component
from quant.settings import QuantSettings

BODY_HU = -500.0
LUNG_HU = -400.0
LUNG_MIN_ML = 200.0


def filled_body(hu: np.ndarray) -> np.ndarray:
    """Body (largest region above -500 HU) with the holes of each axial slice filled."""
    body = largest_component(hu > BODY_HU)
    out = np.zeros_like(body)
    for k in np.flatnonzero(body.any(axis=(1, 2))):
        filled = sitk.BinaryFillhole(sitk.GetImageFromArray(body[k].astype(np.uint8)), True, 1)
        out[k] = sitk.GetArrayFromImage(filled).astype(bool)
    return out


def lung_z_extent_mm(ct_hu_on_pet: sitk.Image) -> tuple[float, float] | None:
    """(lowest, highest) patient z (mm) of the lungs on the CT, or None when none is seen.

    Parameters
    ----------
    ct_hu_on_pet
        CT in HU (on any grid; normally the PET grid).
    """
    hu = sitk.GetArrayFromImage(ct_hu_on_pet).astype(np.float64)
    air = filled_body(hu) & (hu < LUNG_HU)
    labels, _ = labels_of(air)
    voxel_ml = float(np.prod(ct_hu_on_pet.GetSpacing())) / 1000.0
    counts = component_sizes(labels)
    big = [int(lab) for lab in np.flatnonzero(counts * voxel_ml >= LUNG_MIN_ML)]
    if not big:
        return None
    z = voxel_z_mm(ct_hu_on_pet)
    extents = {lab: (float(z[labels == lab].min()), float(z[labels == lab].max())) for lab in big}
    largest = max(big, key=lambda lab: counts[lab])
    low, high = extents[largest]
    for lo, hi in extents.values():
        if lo <= high and hi >= low:
            low, high = min(low, lo), max(high, hi)
    return low, high


def search_mask(
    suv: sitk.Image, settings: QuantSettings, ct_hu_on_pet: sitk.Image | None = None
) -> np.ndarray | None:
    """The voxels the automatic search may report, or None when it is not restricted.

    Parameters
    ----------
    suv
        The PET image (its grid).
    settings
        ``search_z_range_mm`` and ``search_region``; both may be set (intersection).
    ct_hu_on_pet
        CT on the PET grid; needed for ``search_region``.

    Raises
    ------
    QuantificationError
        ``search_region`` set but no CT, or no lungs on the CT.
    """
    if settings.search_z_range_mm is None and settings.search_region is None:
        return None
    z = voxel_z_mm(suv)
    mask = np.ones(z.shape, dtype=bool)
    if settings.search_z_range_mm is not None:
        low, high = settings.search_z_range_mm
        mask &= (z >= low) & (z <= high)
    region = settings.search_region
    if region is not None:
        if ct_hu_on_pet is None:
            raise QuantificationError(
                f"search_region '{region}' needs the CT (it is placed from the lungs); "
                "send the CT or use search_z_range_mm"
            )
        lungs = lung_z_extent_mm(ct_hu_on_pet)
        if lungs is None:
            raise QuantificationError(
                f"search_region '{region}' is placed from the lungs, and no lung is in the CT "
                "field of view; use search_z_range_mm instead"
            )
        apex, base = lungs[1], lungs[0]
        if region == "thorax":
            mask &= (z >= base) & (z <= apex)
        elif region == "head_neck":
            mask &= z > apex
        else:
            mask &= z < base
    return mask
