"""Automatic regions: the skeletal-muscle reference and candidate lesions.

First honest versions, rule-based and documented rule by rule. Inputs are SimpleITK images on
the PET grid (the CT already resampled onto it); outputs are bool masks ``[slice, row, col]``.

Muscle reference (:func:`muscle_reference`)
    1. Candidates: CT voxels in ``settings.muscle_hu_range`` (default -29..150 HU) inside the
       body (largest connected region above -500 HU).
    2. Voxels enclosed by bone in their axial slice (bone >= 300 HU, closed by one voxel,
       holes filled) are removed: brain inside the skull, marrow and spinal canal.
    3. Candidates are eroded by ``round(5 mm / spacing)`` voxels per axis (at least one) with
       a ball, away from fat, bone, air and organ borders and from PET partial volume.
    4. 26-connected components of at least ``MUSCLE_MIN_COMPONENT_ML`` are ranked by their
       median SUV. Skeletal muscle is taken to be the lowest-uptake soft tissue of that size:
       the component with the lowest median is kept, with every other component whose median
       is within ``MUSCLE_MEDIAN_BAND`` (15 %) of it, largest first, until
       ``MUSCLE_TARGET_ML`` is reached. Organs with more uptake than muscle (liver, heart,
       bowel, bladder, tumour) fall out here; organs with less uptake than muscle and a CT
       number in the muscle window would not, and none is known besides the brain (rule 2).
    5. Voxels farther than 3 x 1.4826 x MAD from the median SUV of the kept voxels are
       dropped (robust trim of hot or cold outliers; the spread is floored at 1 % of the
       median so that a noiseless image keeps its voxels).
    Without a CT the reference is refused: PET alone cannot tell muscle from other tissue of
    similar uptake. The pipeline may use a supplied muscle contour instead.

Lesions (:func:`detect_lesions`)
    1. Candidates: voxels with ``SUV > settings.lesion_tm_threshold x muscle SUVmean``,
       26-connected components of at least ``settings.lesion_min_volume_ml``.
    2. Physiological uptake is excluded when a CT is given, by the rules of
       :mod:`quant.physiology` for the organs in ``settings.excluded_organs`` (from the tracer
       profile: liver, urine, brain and bowel for every tracer, the heart too for FDG).
       Without a CT nothing is excluded.
    3. With ``settings.search_z_range_mm`` or ``settings.search_region`` set, each remaining
       component is cut to the search region (:mod:`quant.search_region`) and dropped when
       less than the minimum volume is left. Exclusion is judged on the whole component first.
    4. Each remaining component is delineated (``settings.delineation``): ``percent_of_max``,
       the voxels of the component at or above ``delineation_fraction_of_max`` x its SUVmax;
       ``tm_threshold``, at or above the lowest hypoxic threshold x muscle SUVmean; in both
       cases 26-connected to the maximum, with enclosed holes filled, and never beyond the
       candidate component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.errors import QuantificationError
from quant.figures import component_at, muscle_figures, peak_index, voxel_volume_ml
from quant.physiology import (
    anatomy_from_ct,
    bounding_box,
    enclosed_by_bone,
    physiological_reason,
)
from quant.results import MuscleResult
from quant.search_region import search_mask
from quant.settings import QuantSettings

BODY_HU = -500.0
MUSCLE_EROSION_MM = 5.0
MUSCLE_MIN_COMPONENT_ML = 5.0
MUSCLE_MEDIAN_BAND = 0.15
MUSCLE_TARGET_ML = 50.0
MUSCLE_TRIM_MADS = 3.0
MUSCLE_MIN_MAD = 0.01
"""Floor of the robust spread, as a fraction of the median (a noiseless image keeps its voxels)."""


@dataclass(frozen=True)
class _Grid:
    suv: np.ndarray
    hu: np.ndarray | None
    spacing: tuple[float, float, float]
    voxel_ml: float


def _arrays(suv: sitk.Image, ct_hu_on_pet: sitk.Image | None, *, with_hu: bool = True) -> _Grid:
    """SUV (and, ``with_hu``, CT numbers) as float64 arrays, the CT checked to be on the grid."""
    if suv.GetDimension() != 3:
        raise ValueError(f"suv must be a 3-D image, got {suv.GetDimension()}-D")
    spacing = (float(suv.GetSpacing()[0]), float(suv.GetSpacing()[1]), float(suv.GetSpacing()[2]))
    hu = None
    if ct_hu_on_pet is not None:
        if ct_hu_on_pet.GetSize() != suv.GetSize() or not np.allclose(
            ct_hu_on_pet.GetSpacing(), suv.GetSpacing(), rtol=1e-4
        ):
            raise ValueError(
                "ct_hu_on_pet must be on the PET grid (resample it with quant.volume.resample_to)"
            )
        if with_hu:
            hu = sitk.GetArrayFromImage(ct_hu_on_pet).astype(np.float64)
    return _Grid(
        suv=sitk.GetArrayFromImage(suv).astype(np.float64),
        hu=hu,
        spacing=spacing,
        voxel_ml=voxel_volume_ml(spacing),
    )


def _labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected component labels (1..n) of ``mask`` and their count."""
    image = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    labels = sitk.GetArrayFromImage(image)
    return labels, int(labels.max())


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, n = _labels(mask)
    if n == 0:
        return mask.copy()
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    out: np.ndarray = labels == int(np.argmax(counts))
    return out


def _erode(mask: np.ndarray, spacing: tuple[float, float, float], mm: float) -> np.ndarray:
    radius = [max(1, int(round(mm / s))) for s in spacing]
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    eroded = sitk.BinaryErode(image, radius, sitk.sitkBall, 0, 1)
    out: np.ndarray = sitk.GetArrayFromImage(eroded).astype(bool)
    return out


def _side(columns: np.ndarray, body_centre_col: float, n_cols: int) -> str:
    """Patient side of voxels, columns growing towards the patient's left (LPS)."""
    margin = max(1.0, 0.05 * n_cols)
    left = bool(np.any(columns > body_centre_col + margin))
    right = bool(np.any(columns < body_centre_col - margin))
    if left and right:
        return "both sides"
    return "patient left" if left else ("patient right" if right else "midline")


def _muscle_components(
    candidates: np.ndarray, suv: np.ndarray, voxel_ml: float
) -> tuple[np.ndarray, list[tuple[float, int, int]]]:
    """Component labels, and (median SUV, voxel count, label) of each component large enough,
    lowest median first (labels, not masks: a whole-body CT can have dozens of them)."""
    labels, n = _labels(candidates)
    if n == 0:
        return labels, []
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    out = []
    for lab in np.flatnonzero(counts * voxel_ml >= MUSCLE_MIN_COMPONENT_ML):
        if lab == 0:
            continue
        out.append((float(np.median(suv[labels == lab])), int(counts[lab]), int(lab)))
    out.sort(key=lambda item: item[0])
    return labels, out


def muscle_reference(
    suv: sitk.Image, ct_hu_on_pet: sitk.Image | None, settings: QuantSettings
) -> MuscleResult:
    """Automatic skeletal-muscle reference region (rules in the module docstring).

    Parameters
    ----------
    suv
        SUV image on the PET grid.
    ct_hu_on_pet
        CT in HU resampled onto the PET grid, or None when the study has no CT.
    settings
        ``muscle_hu_range`` is used.

    Raises
    ------
    QuantificationError
        No CT, or no region of skeletal-muscle CT numbers large enough.
    """
    if ct_hu_on_pet is None:
        raise QuantificationError(
            "no CT in the study: the automatic muscle reference needs a CT "
            "(send the CT, or a muscle contour in an RTSTRUCT)"
        )
    grid = _arrays(suv, ct_hu_on_pet)
    assert grid.hu is not None
    lo, hi = settings.muscle_hu_range
    body = _largest(grid.hu > BODY_HU)
    candidates = body & (grid.hu >= lo) & (grid.hu <= hi) & ~enclosed_by_bone(grid.hu)
    candidates = _erode(candidates, grid.spacing, MUSCLE_EROSION_MM)
    labels, components = _muscle_components(candidates, grid.suv, grid.voxel_ml)
    if not components:
        raise QuantificationError(
            f"no skeletal muscle found: no region of {lo:g}..{hi:g} HU larger than "
            f"{MUSCLE_MIN_COMPONENT_ML:g} ml after a {MUSCLE_EROSION_MM:g} mm erosion"
        )
    lowest = components[0][0]
    chosen = np.zeros_like(candidates)
    kept = 0
    for median, count, lab in sorted(components, key=lambda c: -c[1]):
        similar = median <= lowest * (1.0 + MUSCLE_MEDIAN_BAND)
        if similar and kept * grid.voxel_ml < MUSCLE_TARGET_ML:
            chosen |= labels == lab
            kept += count
    del labels
    values = grid.suv[chosen]
    median = float(np.median(values))
    mad = max(float(np.median(np.abs(values - median))) * 1.4826, MUSCLE_MIN_MAD * median)
    mask = chosen & (np.abs(grid.suv - median) <= MUSCLE_TRIM_MADS * mad + 1e-12)
    mean, sd, volume = muscle_figures(grid.suv, mask, grid.spacing)
    slices, _, columns = np.nonzero(mask)
    body_cols = np.nonzero(body)[2]
    side = _side(columns, float(body_cols.mean()), mask.shape[2])
    location = (
        f"skeletal muscle ({lo:g}..{hi:g} HU on CT), {side}, "
        f"PET slices {int(slices.min()) + 1}-{int(slices.max()) + 1} of {mask.shape[0]}"
    )
    return MuscleResult(suv_mean=mean, suv_sd=sd, volume_ml=volume, mask=mask, location=location)


def delineate(
    suv: np.ndarray,
    region: np.ndarray,
    fraction_of_max: float,
    *,
    level: float | None = None,
) -> np.ndarray:
    """One lesion VOI inside a candidate region, holes filled.

    The voxels of ``region`` at or above a level that are 26-connected to the region's SUVmax,
    enclosed holes filled. The level is ``fraction_of_max`` x SUVmax (``percent_of_max``), or
    ``level`` when given (``tm_threshold``: lowest hypoxic threshold x muscle SUVmean).
    """
    peak = peak_index(suv, region)
    if level is None:
        level = fraction_of_max * float(suv[peak])
    lesion = component_at(region & (suv >= level), peak)
    box = bounding_box(lesion, margin=1)  # holes lie inside the box: same result, faster
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(lesion[box].astype(np.uint8)), True, 1)
    out = np.zeros_like(lesion, dtype=bool)
    out[box] = sitk.GetArrayFromImage(filled).astype(bool)
    return out


def detect_lesions(
    suv: sitk.Image,
    muscle_suv_mean: float,
    settings: QuantSettings,
    *,
    ct_hu_on_pet: sitk.Image | None = None,
) -> list[np.ndarray]:
    """Candidate lesions above a tumour-to-muscle threshold (rules in the module docstring).

    Parameters
    ----------
    suv
        SUV image on the PET grid.
    muscle_suv_mean
        Reference muscle SUVmean (> 0).
    settings
        ``lesion_tm_threshold``, ``lesion_min_volume_ml``, ``delineation``,
        ``delineation_fraction_of_max``, ``hypoxic_thresholds`` (``tm_threshold``
        delineation), ``search_z_range_mm``, ``search_region``; unset tracer-dependent values
        take the unknown tracer's defaults (the pipeline resolves them for the tracer first).
    ct_hu_on_pet
        CT in HU on the PET grid; enables the exclusion of physiological uptake.

    Returns
    -------
    list[numpy.ndarray]
        One bool mask ``[slice, row, col]`` per lesion, highest SUVmax first.

    Raises
    ------
    QuantificationError
        ``settings.search_region`` cannot be placed (no CT, no lungs).
    """
    if not np.isfinite(muscle_suv_mean) or muscle_suv_mean <= 0:
        raise ValueError(f"muscle_suv_mean must be > 0, got {muscle_suv_mean}")
    settings = settings.for_tracer(None) if settings.tracers or _unresolved(settings) else settings
    assert settings.lesion_tm_threshold is not None
    level = (
        settings.lowest_hypoxic_threshold * muscle_suv_mean
        if settings.delineation == "tm_threshold"
        else None
    )
    grid = _arrays(suv, ct_hu_on_pet, with_hu=False)  # the CT rules take it from the image
    allowed = search_mask(suv, settings, ct_hu_on_pet)
    labels, n = _labels(grid.suv > settings.lesion_tm_threshold * muscle_suv_mean)
    if n == 0:
        return []
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    anatomy = anatomy_from_ct(ct_hu_on_pet) if ct_hu_on_pet is not None else None
    organs = settings.excluded_organs or ()
    min_voxels = settings.lesion_min_volume_ml / grid.voxel_ml
    lesions = []
    for lab in range(1, n + 1):
        if counts[lab] < min_voxels:
            continue
        region = labels == lab
        if anatomy is not None and physiological_reason(region, grid.suv, anatomy, organs):
            continue
        if allowed is not None:
            region &= allowed
            if region.sum() < min_voxels:
                continue
        lesions.append(
            delineate(grid.suv, region, settings.delineation_fraction_of_max, level=level)
        )
    lesions.sort(key=lambda m: -float(grid.suv[m].max()))
    return lesions


def _unresolved(settings: QuantSettings) -> bool:
    return (
        settings.lesion_tm_threshold is None
        or settings.delineation is None
        or settings.hypoxic_thresholds is None
        or settings.excluded_organs is None
    )
