"""The quantification of one study, from loaded datasets to a :class:`StudyResult`.

The service's worker processes and ``hypoxnode quantify`` both call :func:`quantify`, so the
figures in PACS and on the command line come from the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.errors import QuantificationError
from quant.figures import lesion_figures
from quant.image.supplied_contours import supplied_tumour_masks
from quant.image.volume import PetVolume, load_ct_hu, load_pet_suv, resample_to
from quant.provenance import detection_method, method_record
from quant.results import ExcludedCandidate, LesionResult, StudyResult
from quant.segmentation.candidates import Detection
from quant.segmentation.landmarks import landmarks_from_ct
from quant.segmentation.regions import detect, muscle_reference
from quant.settings import QuantSettings
from quant.suv.tracers import identify_tracer

TUMOUR_ROI_PATTERN = r"(?i)\b(gtv|tumou?r|lesion|ctv_?t?)|^gtv"
"""Default rule for a supplied contour that names the tumour (RTSTRUCT ROIName, SEG
SegmentLabel; searched case-insensitively): GTV..., tumour/tumor, lesion, CTV/CTVt. Override
with ``[quant] tumour_roi_pattern``."""

CT_AIR_HU = -1024.0


@dataclass
class QuantifiedStudy:
    """A result together with the images it was computed on (for the summary picture)."""

    result: StudyResult
    pet: PetVolume
    ct_on_pet: sitk.Image | None


def centroid_mm(mask: np.ndarray, grid: sitk.Image) -> tuple[float, float, float] | None:
    """Centre of mass of a ``[slice, row, col]`` mask in patient coordinates (LPS, mm).

    Parameters
    ----------
    mask
        Boolean mask on the grid of ``grid``.
    grid
        The image whose origin, spacing and direction place the mask.

    Returns
    -------
    tuple of float or None
        ``(x, y, z)``; None for an empty mask.
    """
    indices = np.argwhere(mask)
    if indices.size == 0:
        return None
    k, j, i = (float(v) for v in indices.mean(axis=0))
    point = grid.TransformContinuousIndexToPhysicalPoint((i, j, k))
    return (float(point[0]), float(point[1]), float(point[2]))


def quantify(
    pet: Sequence[Dataset],
    ct: Sequence[Dataset],
    structures: Sequence[Dataset],
    settings: QuantSettings,
    *,
    tumour_roi_pattern: str | None = None,
) -> QuantifiedStudy:
    """Quantify one PET series with its CT and any supplied tumour contour.

    The tracer is identified first; its profile gives the defaults that ``settings`` does not
    set (:meth:`QuantSettings.for_tracer`: per-tracer override, then ``[quant]``, then the
    profile). The figures, the method and where each tracer-dependent value came from are
    recorded in :attr:`StudyResult.method`.

    Parameters
    ----------
    pet
        The slices (or the one Enhanced PET object) of one PET series.
    ct
        The CT series on the same frame of reference, or empty.
    structures
        RTSTRUCT and SEG datasets of the study; a tumour ROI among them (see
        :mod:`quant.image.supplied_contours`) is quantified instead of searching.
    settings
        Thresholds and method parameters.
    tumour_roi_pattern
        Overrides ``settings.tumour_roi_pattern`` (default :data:`TUMOUR_ROI_PATTERN`).

    Raises
    ------
    QuantificationError
        With one reason a person can act on.
    """
    if not pet:
        raise QuantificationError("no PET series in the study")
    tracer = identify_tracer(pet[0])
    resolved = settings.for_tracer(tracer)
    assert resolved.hypoxic_thresholds is not None
    pattern = tumour_roi_pattern or settings.tumour_roi_pattern or TUMOUR_ROI_PATTERN
    volume = load_pet_suv(pet, suv_type=resolved.suv_type)
    ct_on_pet = None
    if ct:
        ct_on_pet = resample_to(load_ct_hu(ct), volume.suv, CT_AIR_HU)

    spacing = tuple(float(s) for s in volume.suv.GetSpacing())
    voxel_ml = float(np.prod(spacing)) / 1000.0

    marks = landmarks_from_ct(ct_on_pet) if ct_on_pet is not None else None
    muscle = muscle_reference(volume.suv, ct_on_pet, resolved, marks=marks)
    if not np.isfinite(muscle.suv_mean) or muscle.suv_mean <= 0:
        raise QuantificationError(
            "the muscle reference has no positive uptake: check the PET units and dose"
        )

    supplied = supplied_tumour_masks(structures, volume.suv, volume.frame_of_reference_uid, pattern)
    found: Detection | None = None
    if supplied:
        source, regions = "contour", supplied
    else:
        masks, found = detect(
            volume.suv,
            muscle.suv_mean,
            resolved,
            ct_hu_on_pet=ct_on_pet,
            muscle_suv_sd=muscle.suv_sd,
            marks=marks,
        )
        source, regions = "detected", [("", mask) for mask in masks]
    # made only now: the segmentation steps above hold float64 copies of their own
    suv_array = sitk.GetArrayViewFromImage(volume.suv).astype(np.float64)
    lesions: list[LesionResult] = [
        lesion_figures(
            suv_array,
            mask,
            muscle.suv_mean,
            resolved.hypoxic_thresholds,
            spacing,
            source=source,
            label=label,
        )
        for label, mask in regions
    ]
    lesions.sort(key=lambda les: les.suv_max, reverse=True)
    for number, lesion in enumerate(lesions, start=1):
        if not lesion.label:
            lesion.label = f"Lesion {number}"
        lesion.centroid_mm = centroid_mm(lesion.mask, volume.suv)

    excluded = _excluded(found, suv_array, volume.suv, voxel_ml)
    method = method_record(settings, resolved, tracer, source, pattern, muscle.location)
    if found is not None:
        method.update(detection_method(found, marks.fov if marks is not None else None))
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
        warnings=list(volume.facts.warnings) + list(muscle.warnings),
        patient_id=str(pet[0].get("PatientID", "") or ""),
        issuer_of_patient_id=str(pet[0].get("IssuerOfPatientID", "") or ""),
        frame_of_reference_uid=volume.frame_of_reference_uid,
        excluded=excluded,
    )
    return QuantifiedStudy(result=result, pet=volume, ct_on_pet=ct_on_pet)


def _excluded(
    found: Detection | None, suv: np.ndarray, grid: sitk.Image, voxel_ml: float
) -> list[ExcludedCandidate]:
    """The detector's excluded candidates as result records, highest SUVmax first."""
    if found is None:
        return []
    out = []
    for reason, mask in found.excluded:
        if not mask.any():
            continue
        flat = np.flatnonzero(mask)
        peak = flat[int(np.argmax(suv.ravel()[flat]))]
        k, j, i = (int(v) for v in np.unravel_index(peak, mask.shape))
        out.append(
            ExcludedCandidate(
                reason=reason,
                suv_max=float(suv.ravel()[peak]),
                volume_ml=float(flat.size) * voxel_ml,
                mask=mask,
                max_index=(k, j, i),
                centroid_mm=centroid_mm(mask, grid),
            )
        )
    out.sort(key=lambda cand: cand.suv_max, reverse=True)
    for number, cand in enumerate(out, start=1):
        cand.label = f"Excluded {number}"
    return out
