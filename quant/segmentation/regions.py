"""Automatic regions: the skeletal-muscle reference and candidate lesions.

First honest versions, rule-based and documented rule by rule. Inputs are SimpleITK images on
the PET grid (the CT already resampled onto it); outputs are bool masks ``[slice, row, col]``.

Muscle reference (:func:`muscle_reference`)
    By anatomy and by uptake at the voxel level, not by connectivity: see
    :mod:`quant.segmentation.muscle`.

Lesions (:func:`detect_lesions`)
    1. Candidates: voxels with ``SUV > settings.lesion_tm_threshold x muscle SUVmean``,
       26-connected components of at least ``settings.lesion_min_volume_ml``.
    2. Every candidate is either reported or excluded with its reason
    (:mod:`quant.segmentation.candidates`):
       below the noise floor (SUVpeak <= muscle SUVmean + k x SD), physiological uptake by the
       rules of :mod:`quant.segmentation.physiology` placed by the CT landmarks
       (:mod:`quant.segmentation.landmarks`)
       for the organs in ``settings.excluded_organs`` (a tumour touching the organ is
       separated first), or outside the search region. Without a CT no organ is excluded.
    3. With ``settings.search_z_range_mm`` or ``settings.search_region`` set, each remaining
       component is cut to the search region (:mod:`quant.segmentation.search_region`) and dropped
       when
       less than the minimum volume is left. Exclusion is judged on the whole component first.
    4. Each remaining region is delineated (``settings.delineation``): ``percent_of_max``,
       the voxels of the component at or above ``delineation_fraction_of_max`` x its SUVmax;
       ``tm_threshold``, at or above the lowest hypoxic threshold x muscle SUVmean; in both
       cases 26-connected to the maximum, with enclosed holes filled, and never beyond the
       candidate component. A part of the region beyond the VOI, not next to it,
       with a maximum of its own, of at least the minimum volume and above the noise floor,
       is a further lesion (two foci in one region, e.g. a tumour merged with the bladder)
       when its own isocontour at ``delineation_fraction_of_max`` x its SUVmax does not
       touch a VOI already delineated in that region; otherwise it is part of that focus.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.figures import component_at, peak_index, suv_peak, voxel_volume_ml
from quant.image.masks import bounding_box
from quant.segmentation.candidates import Detection, find_candidates, separate
from quant.segmentation.landmarks import Landmarks, landmarks_from_ct
from quant.segmentation.muscle import muscle_reference
from quant.segmentation.physiology import anatomy_from_ct
from quant.segmentation.search_region import search_mask
from quant.settings import QuantSettings

__all__ = ["delineate", "detect", "detect_lesions", "muscle_reference"]


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
                "ct_hu_on_pet must be on the PET grid (resample it with"
                " quant.image.volume.resample_to)"
            )
        if with_hu:
            hu = sitk.GetArrayFromImage(ct_hu_on_pet).astype(np.float64)
    return _Grid(
        suv=sitk.GetArrayFromImage(suv).astype(np.float64),
        hu=hu,
        spacing=spacing,
        voxel_ml=voxel_volume_ml(spacing),
    )


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


def detect(
    suv: sitk.Image,
    muscle_suv_mean: float,
    settings: QuantSettings,
    *,
    ct_hu_on_pet: sitk.Image | None = None,
    muscle_suv_sd: float | None = None,
    marks: Landmarks | None = None,
) -> tuple[list[np.ndarray], Detection]:
    """Lesion VOIs and the whole detection record (excluded candidates, rules, noise floor).

    Parameters are those of :func:`detect_lesions`; ``muscle_suv_sd`` enables the noise floor
    (``settings.lesion_noise_sds``), ``marks`` reuses landmarks already computed.
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
    anatomy = None
    if ct_hu_on_pet is not None:
        marks = marks or landmarks_from_ct(ct_hu_on_pet)
        anatomy = replace(anatomy_from_ct(ct_hu_on_pet), fov=marks.fov)
    noise_floor = None
    if muscle_suv_sd is not None and settings.lesion_noise_sds is not None:
        noise_floor = muscle_suv_mean + settings.lesion_noise_sds * muscle_suv_sd
    found = find_candidates(
        grid.suv,
        settings.lesion_tm_threshold * muscle_suv_mean,
        settings.lesion_min_volume_ml / grid.voxel_ml,
        settings.excluded_organs or (),
        anatomy=anatomy,
        allowed=allowed,
        noise_floor=noise_floor,
        spacing=grid.spacing,
    )
    lesions = []
    min_voxels = settings.lesion_min_volume_ml / grid.voxel_ml
    fraction = settings.delineation_fraction_of_max
    for region, own_max in zip(found.regions, found.own_max, strict=True):
        own_level = level if level is not None or own_max is None else fraction * own_max
        first = delineate(grid.suv, region, fraction, level=own_level)
        lesions.append(first)
        taken = _grow(first)
        # another focus in the same candidate (a tumour merged with hot uptake beside it)
        for piece, _ in separate(region, first, grid.suv, min_voxels):
            peak = peak_index(grid.suv, piece)
            own = component_at(region & (grid.suv >= fraction * grid.suv[peak]), peak)
            above = noise_floor is None or suv_peak(grid.suv, own, grid.spacing) > noise_floor
            if above and not (own & taken).any():
                lesion = delineate(grid.suv, piece, fraction, level=level)
                lesions.append(lesion)
                taken |= _grow(lesion)
    lesions.sort(key=lambda m: -float(grid.suv[m].max()))
    return lesions, found


def _grow(mask: np.ndarray) -> np.ndarray:
    image = sitk.BinaryDilate(sitk.GetImageFromArray(mask.astype(np.uint8)), [1, 1, 1])
    out: np.ndarray = sitk.GetArrayFromImage(image).astype(bool)
    return out


def detect_lesions(
    suv: sitk.Image,
    muscle_suv_mean: float,
    settings: QuantSettings,
    *,
    ct_hu_on_pet: sitk.Image | None = None,
    muscle_suv_sd: float | None = None,
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
        delineation), ``search_z_range_mm``, ``search_region``, ``lesion_noise_sds``; unset
        tracer-dependent values take the unknown tracer's defaults (the pipeline resolves
        them for the tracer first).
    ct_hu_on_pet
        CT in HU on the PET grid; enables the exclusion of physiological uptake.
    muscle_suv_sd
        Reference muscle SD; enables the noise floor.

    Returns
    -------
    list[numpy.ndarray]
        One bool mask ``[slice, row, col]`` per lesion, highest SUVmax first.

    Raises
    ------
    QuantificationError
        ``settings.search_region`` cannot be placed (no CT, no lungs).
    """
    lesions, _ = detect(
        suv, muscle_suv_mean, settings, ct_hu_on_pet=ct_hu_on_pet, muscle_suv_sd=muscle_suv_sd
    )
    return lesions


def _unresolved(settings: QuantSettings) -> bool:
    return (
        settings.lesion_tm_threshold is None
        or settings.delineation is None
        or settings.hypoxic_thresholds is None
        or settings.excluded_organs is None
    )
