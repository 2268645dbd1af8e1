"""Bone, lung and skull landmarks on the CT, and the field of view they imply.

Computed once per study on the CT resampled onto the PET grid (``[slice, row, col]``, slices
by ascending patient z, LPS: x to the patient's left, y to the back, z to the head). The
muscle reference (:mod:`quant.segmentation.muscle`) and the organ rules
(:mod:`quant.segmentation.physiology`) place
themselves with these landmarks rather than with CT numbers alone.

Rules
-----
body
    Largest 26-connected region above -500 HU, holes of each axial slice filled.
bone
    Body voxels >= :data:`BONE_HU` (200 HU: cortical and most trabecular bone on a PET grid).
lungs
    Air (< -400 HU) enclosed by the body in its slice, regions of >= :data:`LUNG_MIN_ML`.
skull
    Slices where the area enclosed by bone (:func:`quant.segmentation.physiology.enclosed_by_bone`)
    is at
    least :data:`SKULL_MIN_CM2` (a cranial cavity, not a vertebral canal or marrow).
field of view
    ``head_neck`` (skull, no lung), ``thorax`` (lungs, no skull, less than
    :data:`ABDOMEN_BELOW_LUNG_MM` below them), ``trunk`` (lungs and abdomen below, or skull
    and lungs: whole body), ``abdomen_pelvis`` (no lung, no skull, a trunk-sized body) and
    ``limb`` (no lung, no skull, and a body narrower than :data:`TRUNK_MIN_WIDTH_MM` or cut by
    the left or right edge of the field of view in most slices: a limb or a field cropped
    round a tumour, where no trunk organ can be placed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.image.masks import components_at_least
from quant.segmentation.physiology import enclosed_by_bone
from quant.segmentation.search_region import LUNG_HU, LUNG_MIN_ML, filled_body

BONE_HU = 200.0
SKULL_MIN_CM2 = 40.0
TRUNK_MIN_WIDTH_MM = 200.0
ABDOMEN_BELOW_LUNG_MM = 100.0
FOV_KINDS = ("head_neck", "thorax", "trunk", "abdomen_pelvis", "limb")


@dataclass(frozen=True)
class Landmarks:
    """Landmarks of one CT on the PET grid (see the module docstring).

    Attributes
    ----------
    hu, body, bone, lungs, enclosed
        CT numbers and bool masks ``[slice, row, col]``.
    lung_slices, skull_slices
        (first, last) slice index holding lung / a cranial cavity, or None.
    fov
        One of :data:`FOV_KINDS`.
    spacing
        Voxel spacing (x, y, z) mm.
    body_centre_col
        Mean column of the body (the left-right centre; the midline when not cropped).
    cropped
        Whether the body is cut by the left or right edge of the image in most slices.
    """

    hu: np.ndarray
    body: np.ndarray
    bone: np.ndarray
    lungs: np.ndarray
    enclosed: np.ndarray
    lung_slices: tuple[int, int] | None
    skull_slices: tuple[int, int] | None
    fov: str
    spacing: tuple[float, float, float]
    body_centre_col: float
    cropped: bool

    @property
    def trunk(self) -> bool:
        """Whether trunk organs (liver, kidneys, bowel, bladder, heart) can be in the field."""
        return self.fov in ("thorax", "trunk", "abdomen_pelvis")


def _extent(rows: np.ndarray) -> tuple[int, int] | None:
    return (int(rows[0]), int(rows[-1])) if rows.size else None


def _lungs(hu: np.ndarray, body: np.ndarray, voxel_ml: float) -> np.ndarray:
    return components_at_least(body & (hu < LUNG_HU), LUNG_MIN_ML, voxel_ml)


def landmarks_from_ct(ct_hu_on_pet: sitk.Image) -> Landmarks:
    """Landmarks of a CT on the PET grid (rules in the module docstring)."""
    hu = sitk.GetArrayFromImage(ct_hu_on_pet).astype(np.float64)
    sx, sy, sz = (float(s) for s in ct_hu_on_pet.GetSpacing())
    voxel_ml = sx * sy * sz / 1000.0
    body = filled_body(hu)
    bone = body & (hu >= BONE_HU)
    lungs = _lungs(hu, body, voxel_ml)
    enclosed = enclosed_by_bone(hu)
    skull_rows = np.flatnonzero(enclosed.sum(axis=(1, 2)) * sx * sy / 100.0 >= SKULL_MIN_CM2)
    lung_rows = np.flatnonzero(lungs.any(axis=(1, 2)))
    in_body = np.flatnonzero(body.any(axis=(1, 2)))
    cols: np.ndarray = np.asarray(body.any(axis=1))  # [slice, col]
    widths = cols.sum(axis=1) * sx
    edge = cols[:, 0] | cols[:, -1]
    cropped = bool(in_body.size and edge[in_body].mean() > 0.5)
    narrow = bool(in_body.size == 0 or np.percentile(widths[in_body], 90) < TRUNK_MIN_WIDTH_MM)
    if skull_rows.size and not lung_rows.size:
        fov = "head_neck"
    elif lung_rows.size:
        below_mm = (lung_rows[0] - (in_body[0] if in_body.size else 0)) * sz
        fov = "trunk" if skull_rows.size or below_mm >= ABDOMEN_BELOW_LUNG_MM else "thorax"
    elif narrow or cropped:
        fov = "limb"
    else:
        fov = "abdomen_pelvis"
    body_cols = np.nonzero(body)[2]
    return Landmarks(
        hu=hu,
        body=body,
        bone=bone,
        lungs=lungs,
        enclosed=enclosed,
        lung_slices=_extent(lung_rows),
        skull_slices=_extent(skull_rows),
        fov=fov,
        spacing=(sx, sy, sz),
        body_centre_col=float(body_cols.mean()) if body_cols.size else hu.shape[2] / 2.0,
        cropped=cropped,
    )


def distance_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Euclidean distance (mm, float32) of every voxel to ``mask`` (0 inside; inf when empty)."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    dist = sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    out: np.ndarray = np.clip(sitk.GetArrayFromImage(dist), 0.0, None).astype(np.float32)
    return out
