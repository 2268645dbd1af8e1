"""Physiological uptake: which candidate regions are organs, not lesions (CT-based rules).

Every rule looks at one 26-connected candidate region (voxels above the lesion threshold) on
the PET grid together with the CT resampled onto it. Volumes are of the candidate region.

``liver``
    At least half the voxels in 45..80 HU, and at least :data:`ORGAN_MIN_VOLUME_ML` (300 ml)
    or cut by the first or last slice of the field of view (a truncated liver dome or tip).
``urine``
    At least half the voxels in fluid, -10..25 HU (urinary bladder), or the region's SUVmax
    voxel in fluid with no air (< -200 HU) among its 26 neighbours (hot urine in a renal
    pelvis, ureter or bladder, with the kidney or the bladder wall around it; the air test
    keeps out voxels whose CT number is a partial-volume mix of air and soft tissue).
``brain``
    At least half the voxels enclosed by bone in their axial slice, and at least 300 ml.
``bowel``
    The region, closed by one voxel and its cavities filled, wholly encloses at least
    :data:`BOWEL_GAS_MIN_ML` of gas (< -500 HU inside the body, not lung): uptake in a bowel
    wall around its gas-filled lumen.
``spleen``
    At least half the voxels in 35..60 HU, and at least :data:`SPLEEN_MIN_ML` (50 ml) or cut
    by the first or last slice; placed like the liver but on the patient's left.
``heart``
    (tracers whose profile lists it: 18F-FDG) at least :data:`HEART_MIN_ML`, its centre within
    the lungs' z extent, within :data:`HEART_MIDLINE_MM` of the body's left-right centre and
    in front of the body's antero-posterior centre (the myocardium between the lungs).

Anatomical gates (:func:`organ_placed`, from :mod:`quant.segmentation.landmarks`): no trunk organ
rule fires in
a limb, cropped or head-and-neck field of view, the brain rule only where a skull is seen;
the liver (spleen) must lie on the patient's right (left, at least 30 mm from the centre)
with its centre no more than 20 mm above the lung bases, and reach to within 40 mm of them
(or, without lungs, of the cranial end of the field); urine must lie below the
lungs, either within 60 mm of the body's left-right centre and not behind it (bladder)
or 30..130 mm beside it and not in front (renal pelvis). The heart rule places itself
between the lungs.

A tumour touching an organ is separated from it (:mod:`quant.segmentation.candidates`): the
organ's own voxels (:func:`organ_part`) and its blur halo
(:mod:`quant.segmentation.spill_out`) are removed and what is left is judged again.

Known gaps: gallbladder, kidney parenchyma without hot urine, and bowel without gas are not
recognised; a tumour with the CT number of the organ it touches is not separated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.figures import peak_index
from quant.image.grid import index_to_mm_affine, indices_to_mm
from quant.image.masks import bounding_box, component_sizes, labels_of
from quant.segmentation.search_region import BODY_HU, LUNG_MIN_ML, filled_body

ORGANS = ("liver", "urine", "brain", "bowel", "heart", "spleen")
LIVER_HU = (45.0, 80.0)
SPLEEN_HU = (35.0, 60.0)
SPLEEN_MIN_ML = 50.0
SPLEEN_LATERAL_MM = 30.0
DOME_MM = 40.0
"""Liver and spleen reach to within this of the lung bases (or of the cranial end of a field
without lungs)."""
FLUID_HU = (-10.0, 25.0)
AIR_EDGE_HU = -200.0
BONE_HU = 300.0
ORGAN_MIN_VOLUME_ML = 300.0
ORGAN_MIN_FRACTION = 0.5
BOWEL_GAS_MIN_ML = 0.2
HEART_MIN_ML = 50.0
HEART_MIDLINE_MM = 40.0
URINE_MIDLINE_MM = 60.0
KIDNEY_LATERAL_MM = (30.0, 130.0)


def enclosed_by_bone(hu: np.ndarray) -> np.ndarray:
    """Voxels enclosed by bone in their axial slice (holes of the bone mask closed by 1 voxel).

    Parameters
    ----------
    hu
        CT numbers ``[slice, row, col]``.

    Notes
    -----
    The slice-by-slice hole filling is done in one 3D call: the bone slices are interleaved
    with slices of ones (and framed by them), so no background can connect across slices and
    a 3D fill-hole equals the 2D fill-hole of every slice.
    """
    out = np.zeros(hu.shape, dtype=bool)
    bone = hu >= BONE_HU
    with_bone = np.flatnonzero(bone.any(axis=(1, 2)))
    if with_bone.size == 0:
        return out
    rows, cols = hu.shape[1:]
    dilated = sitk.BinaryDilate(sitk.GetImageFromArray(bone[with_bone].astype(np.uint8)),
                                [1, 1, 0])  # in-plane only
    ring_array = np.ones((2 * with_bone.size + 1, rows, cols), dtype=bool)
    ring_array[1::2] = sitk.GetArrayFromImage(dilated).astype(bool)
    separated = sitk.GetImageFromArray(ring_array.astype(np.uint8))
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(separated, True, 1)).astype(bool)
    out[with_bone] = (filled & ~ring_array)[1::2]
    return out


@dataclass(frozen=True)
class Anatomy:
    """What the rules need from the CT, computed once per study (see :func:`anatomy_from_ct`).

    Attributes
    ----------
    hu
        CT numbers on the PET grid.
    enclosed
        Voxels enclosed by bone in their axial slice.
    gas_labels
        26-connected labels of gas inside the body that is not lung (0 elsewhere).
    lung_slices
        (first, last) slice index holding lung, or None.
    body_centre_mm
        (x, y) patient coordinates of the body's centre of mass.
    voxel_ml, index_to_mm
        Voxel volume; the affine (4 x 4) from (col, row, slice) index to patient mm.
    """

    hu: np.ndarray
    enclosed: np.ndarray
    gas_labels: np.ndarray
    lung_slices: tuple[int, int] | None
    body_centre_mm: tuple[float, float]
    voxel_ml: float
    index_to_mm: np.ndarray
    fov: str = "trunk"
    """Field of view (:data:`quant.segmentation.landmarks.FOV_KINDS`): where organ rules may fire.
    """


def anatomy_from_ct(ct_hu_on_pet: sitk.Image) -> Anatomy:
    """The CT context of the exclusion rules.

    Parameters
    ----------
    ct_hu_on_pet
        CT in HU on the PET grid.
    """
    hu = sitk.GetArrayFromImage(ct_hu_on_pet).astype(np.float64)
    voxel_ml = float(np.prod(ct_hu_on_pet.GetSpacing())) / 1000.0
    body = filled_body(hu)
    air_labels, _ = labels_of(body & (hu < BODY_HU))
    lung = np.isin(air_labels, np.flatnonzero(component_sizes(air_labels) * voxel_ml
                                              >= LUNG_MIN_ML))
    gas_labels = np.where(lung, 0, air_labels)
    lung_rows = np.flatnonzero(lung.any(axis=(1, 2)))
    affine = index_to_mm_affine(ct_hu_on_pet)
    body_index = np.argwhere(body)
    centre = (
        indices_to_mm(affine, body_index.mean(axis=0, keepdims=True))[0]
        if body_index.size
        else (np.zeros(3))
    )
    return Anatomy(
        hu=hu,
        enclosed=enclosed_by_bone(hu),
        gas_labels=gas_labels,
        lung_slices=(int(lung_rows[0]), int(lung_rows[-1])) if lung_rows.size else None,
        body_centre_mm=(float(centre[0]), float(centre[1])),
        voxel_ml=voxel_ml,
        index_to_mm=affine,
    )


def _fraction_in(values: np.ndarray, window: tuple[float, float]) -> float:
    return float(np.mean((values >= window[0]) & (values <= window[1])))


def _encloses_gas(component: np.ndarray, anatomy: Anatomy) -> bool:
    # Closing (radius 1) and hole filling only reach 1 voxel beyond the component: working on
    # its bounding box plus a margin gives the same result as on the whole image, much faster.
    box = bounding_box(component, margin=3)
    image = sitk.GetImageFromArray(component[box].astype(np.uint8))
    closed = sitk.BinaryMorphologicalClosing(image, [1, 1, 1], sitk.sitkBall, 1)
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(closed, True, 1)).astype(bool)
    labels = anatomy.gas_labels[box]
    touched = np.unique(labels[filled])
    touched = touched[touched > 0]
    if touched.size == 0:
        return False
    sizes = np.bincount(anatomy.gas_labels.ravel(), minlength=int(touched.max()) + 1)
    enclosed_ml = 0.0
    for lab in touched:
        inside = int((filled & (labels == lab)).sum())
        if inside == sizes[lab]:  # the whole gas pocket lies inside the filled component
            enclosed_ml += float(sizes[lab]) * anatomy.voxel_ml
    return enclosed_ml >= BOWEL_GAS_MIN_ML


def _is_heart(component: np.ndarray, volume_ml: float, anatomy: Anatomy) -> bool:
    if volume_ml < HEART_MIN_ML or anatomy.lung_slices is None:
        return False
    centre_index = np.argwhere(component).mean(axis=0)
    first, last = anatomy.lung_slices
    if not first <= centre_index[0] <= last:
        return False
    x, y, _ = indices_to_mm(anatomy.index_to_mm, centre_index[np.newaxis, :])[0]
    cx, cy = anatomy.body_centre_mm
    return abs(x - cx) <= HEART_MIDLINE_MM and y < cy  # LPS: y grows towards the back


def _centre_mm(component: np.ndarray, anatomy: Anatomy) -> np.ndarray:
    return indices_to_mm(anatomy.index_to_mm, np.argwhere(component).mean(axis=0)[np.newaxis, :])[0]


def organ_placed(organ: str, component: np.ndarray, anatomy: Anatomy) -> bool:
    """Whether ``organ`` can be where ``component`` lies (the anatomical gates)."""
    if organ == "brain":
        return anatomy.fov in ("head_neck", "trunk")
    if anatomy.fov not in ("thorax", "trunk", "abdomen_pelvis"):
        return False  # limb, cropped field or head and neck: no trunk organ can be there
    x, y, _ = _centre_mm(component, anatomy)
    cx, cy = anatomy.body_centre_mm
    slices = np.flatnonzero(component.any(axis=(1, 2)))
    if organ in ("liver", "spleen"):
        # under the right (liver) or left (spleen) hemidiaphragm, reaching the lung bases
        # or, without lungs in the field, the cranial end of the field
        if (x > cx) if organ == "liver" else (x < cx + SPLEEN_LATERAL_MM):
            return False
        slice_mm = abs(float(anatomy.index_to_mm[2, 2])) or 1.0
        reach = int(np.ceil(DOME_MM / slice_mm))
        if anatomy.lung_slices is None:
            return bool(slices[-1] >= component.shape[0] - 1 - reach)
        centre = float(np.argwhere(component)[:, 0].mean())
        below = centre <= anatomy.lung_slices[0] + reach / 2.0  # not between the lungs
        return below and bool(slices[-1] >= anatomy.lung_slices[0] - reach)
    if organ == "urine":
        # bladder in the pelvic midline below the lungs, or a renal pelvis paravertebral
        below_lungs = anatomy.lung_slices is None or slices[0] < anatomy.lung_slices[0]
        bladder = abs(x - cx) <= URINE_MIDLINE_MM and y < cy + URINE_MIDLINE_MM
        kidney = KIDNEY_LATERAL_MM[0] <= abs(x - cx) <= KIDNEY_LATERAL_MM[1] and y > cy - 20.0
        return below_lungs and (bladder or kidney)
    return True


def organ_part(reason: str, component: np.ndarray, anatomy: Anatomy) -> np.ndarray | None:
    """The voxels of ``component`` that are the organ itself, for separating a tumour.

    Liver: 45..80 HU; spleen: 35..60 HU; urine: fluid (-10..25 HU); brain: enclosed by the
    skull. Heart and bowel have no CT window of their own (None: the whole candidate is the organ).
    """
    if reason == "liver":
        window = (anatomy.hu >= LIVER_HU[0]) & (anatomy.hu <= LIVER_HU[1])
    elif reason == "spleen":
        window = (anatomy.hu >= SPLEEN_HU[0]) & (anatomy.hu <= SPLEEN_HU[1])
    elif reason.startswith("urine"):
        window = (anatomy.hu >= FLUID_HU[0]) & (anatomy.hu <= FLUID_HU[1])
    elif reason == "brain":
        window = anatomy.enclosed
    else:
        return None
    out: np.ndarray = component & window
    if not out.any():
        return out
    # an opening drops one-voxel rims of the window's CT numbers that partial volume paints
    # on a neighbouring tumour (an organ too thin for it keeps its voxels); done inside the
    # bounding box (margin 2 > the radius: the same result, without opening the whole study)
    box = bounding_box(out, margin=2)
    image = sitk.GetImageFromArray(out[box].astype(np.uint8))
    opened = np.zeros_like(out)
    opened[box] = sitk.GetArrayFromImage(
        sitk.BinaryMorphologicalOpening(image, [1, 1, 1])
    ).astype(bool)
    return opened if opened.any() else out


def physiological_reason(
    component: np.ndarray,
    suv: np.ndarray,
    anatomy: Anatomy,
    organs: tuple[str, ...] = ORGANS,
) -> str | None:
    """Which organ a candidate region is (rules in the module docstring), or None.

    Parameters
    ----------
    component
        One candidate region (bool ``[slice, row, col]``).
    suv
        SUV on the same grid.
    anatomy
        From :func:`anatomy_from_ct`.
    organs
        The rules to apply, a subset of :data:`ORGANS` (the tracer's profile says which).
    """
    organs = tuple(o for o in organs if organ_placed(o, component, anatomy))
    values = anatomy.hu[component]
    volume = int(component.sum()) * anatomy.voxel_ml
    large = volume >= ORGAN_MIN_VOLUME_ML
    truncated = bool(component[0].any() or component[-1].any())
    liver_like = _fraction_in(values, LIVER_HU) >= ORGAN_MIN_FRACTION
    if "liver" in organs and (large or truncated) and liver_like:
        return "liver"
    if "urine" in organs:
        peak = peak_index(suv, component)
        around = tuple(slice(max(int(i) - 1, 0), int(i) + 2) for i in peak)
        in_fluid = FLUID_HU[0] <= float(anatomy.hu[peak]) <= FLUID_HU[1]
        in_fluid = in_fluid and float(anatomy.hu[around].min()) > AIR_EDGE_HU
        if in_fluid or _fraction_in(values, FLUID_HU) >= ORGAN_MIN_FRACTION:
            return "urine (bladder, renal pelvis or ureter)"
    in_skull = float(anatomy.enclosed[component].mean()) >= ORGAN_MIN_FRACTION
    if "brain" in organs and large and in_skull:
        return "brain"
    if "bowel" in organs and _encloses_gas(component, anatomy):
        return "bowel (uptake around gas)"
    if "heart" in organs and _is_heart(component, volume, anatomy):
        return "heart"
    spleen_like = _fraction_in(values, SPLEEN_HU) >= ORGAN_MIN_FRACTION
    if "spleen" in organs and spleen_like and (volume >= SPLEEN_MIN_ML or truncated):
        return "spleen"
    return None
