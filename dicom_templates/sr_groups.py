"""Measurement groups of the hypoxnode TID 1500 report (one function per kind of group).

Each function returns a highdicom template: TID 1411 (volumetric ROI, referencing a SEG
segment) when the region has voxels, TID 1501 (measurements without an image region) for a
hypoxic sub-volume that came out empty and for the acquisition context.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_templates import codes
from dicom_templates.seg import SegmentInfo
from quant.results import HypoxicSubvolume, LesionResult, MuscleResult, StudyResult

Group = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def _measurement(
    name: Code,
    value: float,
    unit: Code,
    *,
    derivation: Code | None = None,
    method: Code | None = None,
) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=name, value=float(value), unit=unit, derivation=derivation, method=method
    )


def _suv(kind: Code, value: float, suv_type: str) -> hd.sr.Measurement:
    concept = codes.suv_concept(suv_type)
    return _measurement(
        concept.concept, value, concept.unit, derivation=kind, method=concept.method
    )


def add_text(group: Group | hd.sr.ContentSequence, name: Code, text: str) -> None:
    """Append a TEXT item (relationship CONTAINS) to the first container of ``group``."""
    item = hd.sr.TextContentItem(
        name=name, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    group[0].ContentSequence.append(item)


def _referenced_segment(
    seg: Dataset, number: int, series_instance_uid: str
) -> hd.sr.ReferencedSegment:
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(series_instance_uid),
    )


def _tracking(seg: Dataset, info: SegmentInfo) -> hd.sr.TrackingIdentifier:
    """Tracking ID and UID as recorded in the SEG's segment, so both objects agree."""
    item = next(s for s in seg.SegmentSequence if int(s.SegmentNumber) == info.number)
    return hd.sr.TrackingIdentifier(uid=str(item.TrackingUID), identifier=str(item.TrackingID))


def _algorithm(version: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=codes.ALGORITHM_NAME, version=version)


def muscle_group(
    muscle: MuscleResult,
    suv_type: str,
    seg: Dataset,
    info: SegmentInfo,
    pet_series_uid: str,
    version: str,
) -> Group:
    """TID 1411 group of the skeletal-muscle reference (the T/M background)."""
    unit = codes.suv_concept(suv_type).unit
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(seg, info),
        referenced_segment=_referenced_segment(seg, info.number, pet_series_uid),
        finding_type=codes.TYPE_SKELETAL_MUSCLE,
        finding_category=codes.CATEGORY_TISSUE,
        algorithm_id=_algorithm(version),
        measurements=[
            _suv(codes.MEAN, muscle.suv_mean, suv_type),
            _suv(codes.STANDARD_DEVIATION, muscle.suv_sd, suv_type),
            _measurement(codes.VOLUME, muscle.volume_ml, codes.UNIT_ML),
            _measurement(codes.BACKGROUND_FOR_RATIO, muscle.suv_mean, unit),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.FINDING, codes.REFERENCE_REGION),
        ],
    )
    add_text(group, codes.COMMENT, f"Muscle reference location: {muscle.location}")
    return group


def lesion_group(
    index: int,
    lesion: LesionResult,
    suv_type: str,
    seg: Dataset,
    info: SegmentInfo,
    muscle_info: SegmentInfo,
    pet_series_uid: str,
    version: str,
) -> Group:
    """TID 1411 group of lesion ``index``: SUV figures, volume and tumour-to-muscle ratios."""
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(seg, info),
        referenced_segment=_referenced_segment(seg, info.number, pet_series_uid),
        finding_type=codes.TYPE_NEOPLASM,
        finding_category=codes.CATEGORY_MORPHOLOGICALLY_ABNORMAL,
        algorithm_id=_algorithm(version),
        measurements=[
            _suv(codes.MAXIMUM, lesion.suv_max, suv_type),
            _suv(codes.MEAN, lesion.suv_mean, suv_type),
            _suv(codes.PEAK, lesion.suv_peak, suv_type),
            _measurement(codes.VOLUME, lesion.volume_ml, codes.UNIT_ML),
            _measurement(
                codes.LESION_TO_BACKGROUND,
                lesion.tm_max,
                codes.UNIT_RATIO,
                derivation=codes.MAXIMUM,
            ),
            _measurement(
                codes.LESION_TO_BACKGROUND,
                lesion.tm_mean,
                codes.UNIT_RATIO,
                derivation=codes.MEAN,
            ),
        ],
    )
    source = "supplied contour" if lesion.source == "contour" else "automatic detection"
    if lesion.label:
        source += f" ({lesion.label})"
    add_text(group, codes.COMMENT, f"Lesion {index} source: {source}")
    add_text(
        group,
        codes.COMMENT,
        f"Lesion to background ratios use the muscle reference (segment {muscle_info.number},"
        f" tracking ID {muscle_info.label!r}) SUVmean as background",
    )
    return group


def hypoxic_group(
    index: int,
    sub: HypoxicSubvolume,
    seg: Dataset,
    info: SegmentInfo | None,
    pet_series_uid: str,
    version: str,
    tracking_uid: str,
) -> Group:
    """Group of the hypoxic sub-volume of lesion ``index`` at ``sub.threshold``.

    TID 1411 referencing the hypoxic segment when it has voxels (``info`` given); otherwise a
    TID 1501 group with the same measurements (volume 0, fraction 0) and no region.
    """
    measurements = [
        _measurement(codes.VOLUME, sub.volume_ml, codes.UNIT_ML),
        _measurement(codes.HYPOXIC_FRACTION, sub.fraction, codes.UNIT_RATIO),
        _measurement(codes.THRESHOLD_VALUE, sub.threshold, codes.UNIT_RATIO),
    ]
    label = f"Lesion {index} hypoxic T/M>={sub.threshold:g}"
    group: Group
    if info is not None:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(seg, info),
            referenced_segment=_referenced_segment(seg, info.number, pet_series_uid),
            finding_type=codes.HYPOXIC_SUBVOLUME,
            finding_category=codes.CATEGORY_MORPHOLOGICALLY_ABNORMAL,
            method=codes.HYPOXIC_METHOD,
            algorithm_id=_algorithm(version),
            measurements=measurements,
        )
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=label),
            finding_type=codes.HYPOXIC_SUBVOLUME,
            method=codes.HYPOXIC_METHOD,
            algorithm_id=_algorithm(version),
            measurements=measurements,
        )
        add_text(group, codes.COMMENT, f"{label}: no voxel reaches the threshold (no segment)")
    add_text(
        group,
        codes.COMMENT,
        f"Sub-volume of Lesion {index}: voxels with SUV >= {sub.threshold:g} x muscle SUVmean",
    )
    return group


def context_group(result: StudyResult, tracking_uid: str, version: str) -> Group:
    """TID 1501 group with the tracer, nuclide, uptake time, SUV type and method."""
    evaluations = []
    tracer = codes.tracer_code(result.tracer)
    if tracer is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(codes.RADIOPHARMACEUTICAL_AGENT, tracer))
    nuclide = codes.nuclide_code(result.suv.radionuclide)
    if nuclide is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(codes.RADIONUCLIDE, nuclide))
    measurements = []
    if result.suv.uptake_time_s is not None:
        measurements.append(
            _measurement(codes.UPTAKE_TIME, result.suv.uptake_time_s, codes.UNIT_SECOND)
        )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier="PET acquisition and method"
        ),
        algorithm_id=_algorithm(version),
        measurements=measurements or None,
        qualitative_evaluations=evaluations or None,
    )
    add_text(group, codes.COMMENT, f"Tracer: {result.tracer}")
    if result.suv.radionuclide:
        add_text(group, codes.COMMENT, f"Radionuclide: {result.suv.radionuclide}")
    add_text(group, codes.COMMENT, f"SUV type: {result.suv_type}")
    if result.suv.uptake_time_s is not None:
        add_text(group, codes.COMMENT, f"Uptake time: {result.suv.uptake_time_s / 60.0:.1f} min")
    for key, value in sorted(result.method.items()):
        add_text(group, codes.COMMENT, f"Method {key}: {value}")
    return group


def report_evaluations(result: StudyResult, warnings: Sequence[str]) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 "Qualitative Evaluations" container: no-lesion finding and warnings."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence()
    if not result.lesions:
        container.ContentSequence.append(
            hd.sr.CodeContentItem(
                name=codes.FINDING,
                value=codes.NO_LESION_FOUND,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
        container.ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value="No lesion found",
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    for warning in warnings:
        container.ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=f"Warning: {warning}",
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return container
