"""The quantification of one study, from loaded datasets to a :class:`StudyResult`.

The service's worker processes and ``hypoxnode quantify`` both call :func:`quantify`, so the
figures in PACS and on the command line come from the same code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.contours import rasterise_rtstruct
from quant.errors import QuantificationError
from quant.figures import PEAK_SPHERE_DIAMETER_MM, lesion_figures
from quant.results import LesionResult, StudyResult
from quant.segmentation import detect_lesions, muscle_reference
from quant.settings import QuantSettings
from quant.tracers import identify_tracer
from quant.volume import PetVolume, load_ct_hu, load_pet_suv, resample_to

TUMOUR_ROI_PATTERN = r"(?i)\b(gtv|tumou?r|lesion|ctv_?t?)|^gtv"
"""Default rule for a supplied contour that names the tumour (RTSTRUCT ROIName)."""

CT_AIR_HU = -1024.0


@dataclass
class QuantifiedStudy:
    """A result together with the images it was computed on (for the summary picture)."""

    result: StudyResult
    pet: PetVolume
    ct_on_pet: sitk.Image | None


def quantify(
    pet: Sequence[Dataset],
    ct: Sequence[Dataset],
    structures: Sequence[Dataset],
    settings: QuantSettings,
    *,
    tumour_roi_pattern: str = TUMOUR_ROI_PATTERN,
) -> QuantifiedStudy:
    """Quantify one PET series with its CT and any supplied tumour contour.

    Parameters
    ----------
    pet
        The slices (or the one Enhanced PET object) of one PET series.
    ct
        The CT series on the same frame of reference, or empty.
    structures
        RTSTRUCT datasets of the study; ROIs whose name matches ``tumour_roi_pattern`` are
        used as the tumour instead of automatic detection.
    settings
        Thresholds and method parameters.

    Raises
    ------
    QuantificationError
        With one reason a person can act on.
    """
    if not pet:
        raise QuantificationError("no PET series in the study")
    tracer = identify_tracer(pet[0])
    volume = load_pet_suv(pet, suv_type=settings.suv_type)
    ct_on_pet = None
    if ct:
        ct_on_pet = resample_to(load_ct_hu(ct), volume.suv, CT_AIR_HU)

    suv_array = sitk.GetArrayViewFromImage(volume.suv).astype(np.float64)
    spacing = tuple(float(s) for s in volume.suv.GetSpacing())
    voxel_ml = float(np.prod(spacing)) / 1000.0

    muscle = muscle_reference(volume.suv, ct_on_pet, settings)
    if not np.isfinite(muscle.suv_mean) or muscle.suv_mean <= 0:
        raise QuantificationError(
            "the muscle reference has no positive uptake: check the PET units and dose"
        )

    contour_masks = _supplied_tumour_masks(structures, volume, tumour_roi_pattern)
    lesions: list[LesionResult] = []
    thresholds = settings.hypoxic_thresholds
    if contour_masks:
        source = "contour"
        for label, mask in contour_masks:
            lesions.append(
                lesion_figures(suv_array, mask, muscle.suv_mean, thresholds, spacing,
                               source=source, label=label)
            )
    else:
        source = "detected"
        masks = detect_lesions(volume.suv, muscle.suv_mean, settings, ct_hu_on_pet=ct_on_pet)
        for mask in masks:
            lesions.append(
                lesion_figures(suv_array, mask, muscle.suv_mean, thresholds, spacing,
                               source=source, label="")
            )
    lesions.sort(key=lambda les: les.suv_max, reverse=True)
    for number, lesion in enumerate(lesions, start=1):
        if not lesion.label:
            lesion.label = f"Lesion {number}"

    warnings = list(volume.facts.warnings)
    method = {
        "tumour_source": source,
        "tumour_roi_pattern": tumour_roi_pattern if source == "contour" else None,
        "lesion_tm_threshold": settings.lesion_tm_threshold,
        "lesion_min_volume_ml": settings.lesion_min_volume_ml,
        "delineation_fraction_of_max": settings.delineation_fraction_of_max,
        "hypoxic_thresholds": list(thresholds),
        "muscle_hu_range": list(settings.muscle_hu_range),
        "muscle_location": muscle.location,
        "suvpeak": f"highest mean in a {PEAK_SPHERE_DIAMETER_MM:g} mm sphere (PERCIST),"
        " partial-voxel weighted",
        "hypoxic_connectivity": "26-connected to the lesion maximum, inside the lesion VOI",
    }
    result = StudyResult(
        study_instance_uid=volume.study_instance_uid,
        pet_series_instance_uid=volume.series_instance_uid,
        pet_sop_instance_uids=list(volume.sop_instance_uids),
        tracer=tracer.name,
        suv_type=volume.facts.suv_type,
        suv=volume.facts,
        muscle=muscle,
        lesions=lesions,
        voxel_volume_ml=voxel_ml,
        method=method,
        warnings=warnings,
    )
    return QuantifiedStudy(result=result, pet=volume, ct_on_pet=ct_on_pet)


def _supplied_tumour_masks(
    structures: Sequence[Dataset], volume: PetVolume, pattern: str
) -> list[tuple[str, np.ndarray]]:
    """Tumour ROIs of the RTSTRUCTs on the PET's frame of reference, rasterised onto the PET."""
    regex = re.compile(pattern)
    found: list[tuple[str, np.ndarray]] = []
    for rtstruct in structures:
        frames = {
            str(item.get("FrameOfReferenceUID", ""))
            for item in rtstruct.get("StructureSetROISequence", [])
        }
        if volume.frame_of_reference_uid not in frames:
            continue
        for name, mask in rasterise_rtstruct(rtstruct, volume.suv).items():
            if regex.search(name) and mask.any():
                found.append((name, mask))
    # One tumour contoured on both PET and CT (e.g. GTV_PET and GTV_CT) would count twice:
    # of ROIs that overlap keep one, preferring a name that says PET.
    found.sort(key=lambda item: "PET" not in item[0].upper())
    kept: list[tuple[str, np.ndarray]] = []
    for name, mask in found:
        if all(not (mask & other).any() for _, other in kept):
            kept.append((name, mask))
    return kept
