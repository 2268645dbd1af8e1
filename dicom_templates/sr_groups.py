"""Measurement groups of the hypoxnode TID 1500 report (one function per kind of group).

Each measurement group is a TID 1411 volumetric ROI referencing its SEG segment. Every group
of the report must be one: PixelMed's validator picks the template of the measurement groups
for the whole "Imaging Measurements" container, so a single TID 1501 group among TID 1411
ones is reported as an error. What has no region (the acquisition context, a hypoxic
sub-volume with no voxel, the excluded candidates) goes into the report's "Qualitative
Evaluations" container (:func:`report_evaluations`) or into its lesion's group as text.

A lesion group also holds a SCOORD POINT at its SUVmax voxel, selected from the PET image of
that slice: viewers that only draw spatially anchored measurements (OHIF's SR viewport) show
the group there with its figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_templates import codes
from dicom_templates.seg import SegmentInfo
from quant.results import (
    ExcludedCandidate,
    HypoxicSubvolume,
    LesionResult,
    MuscleResult,
    StudyResult,
)

Group = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)
MEASUREMENT_METHOD = ("370129005", "SCT")


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


def referenced_segment(
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
        referenced_segment=referenced_segment(seg, info.number, pet_series_uid),
        finding_type=codes.TYPE_SKELETAL_MUSCLE,
        finding_category=codes.CATEGORY_TISSUE,
        algorithm_id=_algorithm(version),
        measurements=[
            _suv(codes.MEAN, muscle.suv_mean, suv_type),
            _suv(codes.STANDARD_DEVIATION, muscle.suv_sd, suv_type),
            _measurement(codes.VOLUME, muscle.volume_ml, codes.UNIT_ML),
            _measurement(codes.BACKGROUND_FOR_RATIO, muscle.suv_mean, unit),
        ],
    )
    # The role as text, not a second "Finding" item: readers keep one Finding per group
    # (dcmqi's tid1500reader drops the second) and this group's Finding is skeletal muscle.
    add_text(
        group,
        codes.COMMENT,
        "Reference region: background of the lesion to background SUV ratios",
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
    pet_at_max: Dataset | None = None,
) -> Group:
    """TID 1411 group of lesion ``index``: SUV figures, volume and tumour-to-muscle ratios.

    ``pet_at_max`` is the PET instance of the slice of the lesion's SUVmax: with it, the
    group holds a SCOORD POINT there (:func:`suvmax_point`).
    """
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(seg, info),
        referenced_segment=referenced_segment(seg, info.number, pet_series_uid),
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
    if pet_at_max is not None:
        group[0].ContentSequence.append(suvmax_point(lesion.max_index, pet_at_max))
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
    info: SegmentInfo,
    pet_series_uid: str,
    version: str,
) -> Group:
    """TID 1411 group of the hypoxic sub-volume of lesion ``index`` at ``sub.threshold``.

    Only for a sub-volume with voxels (it has a segment); an empty one is reported in its
    lesion's group by :func:`add_empty_hypoxic`.
    """
    measurements = [
        _measurement(codes.VOLUME, sub.volume_ml, codes.UNIT_ML),
        _measurement(codes.HYPOXIC_FRACTION, sub.fraction, codes.UNIT_RATIO),
        _measurement(codes.THRESHOLD_VALUE, sub.threshold, codes.UNIT_RATIO),
    ]
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(seg, info),
        referenced_segment=referenced_segment(seg, info.number, pet_series_uid),
        finding_type=codes.HYPOXIC_SUBVOLUME,
        finding_category=codes.CATEGORY_MORPHOLOGICALLY_ABNORMAL,
        method=codes.HYPOXIC_METHOD,
        algorithm_id=_algorithm(version),
        measurements=measurements,
    )
    _method_as_concept_modifier(group)
    add_text(
        group,
        codes.COMMENT,
        f"Sub-volume of Lesion {index}: voxels with SUV >= {sub.threshold:g} x muscle SUVmean",
    )
    return group


def add_empty_hypoxic(group: Group, index: int, sub: HypoxicSubvolume) -> None:
    """Report, in lesion ``index``'s group, a hypoxic sub-volume with no voxel (no segment)."""
    add_text(
        group,
        codes.COMMENT,
        f"Lesion {index} hypoxic T/M>={sub.threshold:g}: no voxel reaches the threshold"
        f" (volume {sub.volume_ml:g} ml, hypoxic fraction {sub.fraction:g}; no segment)",
    )


def _method_as_concept_modifier(group: Group) -> None:
    """TID 1411 row 13: Measurement Method is HAS CONCEPT MOD (highdicom writes CONTAINS)."""
    for item in group[0].ContentSequence:
        name = item.ConceptNameCodeSequence[0]
        if (str(name.CodeValue), str(name.CodingSchemeDesignator)) == MEASUREMENT_METHOD:
            item.RelationshipType = "HAS CONCEPT MOD"


def inner_voxel(mask: np.ndarray) -> tuple[int, int, int]:
    """The voxel of ``mask`` nearest its centre of mass (a point inside any region shape)."""
    voxels = np.argwhere(mask)
    centre = voxels.mean(axis=0)
    nearest = voxels[int(np.argmin(((voxels - centre) ** 2).sum(axis=1)))]
    return (int(nearest[0]), int(nearest[1]), int(nearest[2]))


def anchor(group: Group, index: tuple[int, int, int], pet: Dataset, name: Code) -> None:
    """Append to ``group`` a SCOORD POINT named ``name`` at voxel ``index`` of ``pet``.

    OHIF 3.x only draws (and, without a point, fails on: "Cannot read properties of undefined
    (reading 'ReferencedSOPSequence')") measurement groups that hold a SCOORD; every group of
    the report has one.
    """
    group[0].ContentSequence.append(suvmax_point(index, pet, name))


def suvmax_point(
    max_index: tuple[int, int, int], pet: Dataset, name: Code = codes.SUVMAX_LOCATION
) -> hd.sr.ScoordContentItem:
    """SCOORD POINT (CONTAINS) at voxel ``max_index`` (slice, row, column) of ``pet``'s slice.

    Pixel coordinates: the centre of the top left pixel is (0.5, 0.5) (PS3.3 C.18.6.1.1).
    """
    _, row, column = max_index
    point = hd.sr.ScoordContentItem(
        name=name,
        graphic_type=hd.sr.GraphicTypeValues.POINT,
        graphic_data=np.array([[column + 0.5, row + 0.5]], dtype=float),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    point.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=str(pet.SOPClassUID),
                referenced_sop_instance_uid=str(pet.SOPInstanceUID),
            )
        ]
    )
    return point


def context_evaluations(result: StudyResult) -> list[hd.sr.ContentItem]:
    """Tracer and nuclide (CODE) and the acquisition and method facts (TEXT), for the report's
    "Qualitative Evaluations" container (TID 1500 rows 13-14)."""
    items: list[hd.sr.ContentItem] = []
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    tracer = codes.tracer_code(result.tracer)
    if tracer is not None:
        items.append(
            hd.sr.CodeContentItem(
                codes.RADIOPHARMACEUTICAL_AGENT, tracer, relationship_type=contains
            )
        )
    nuclide = codes.nuclide_code(result.suv.radionuclide)
    if nuclide is not None:
        items.append(
            hd.sr.CodeContentItem(codes.RADIONUCLIDE, nuclide, relationship_type=contains)
        )
    texts = [f"Tracer: {result.tracer}"]
    if result.suv.radionuclide:
        texts.append(f"Radionuclide: {result.suv.radionuclide}")
    texts.append(f"SUV type: {result.suv_type}")
    if result.suv.uptake_time_s is not None:
        texts.append(
            f"Uptake time: {result.suv.uptake_time_s / 60.0:.1f} min"
            f" ({result.suv.uptake_time_s:g} s after the start of injection)"
        )
    texts += [f"Method {key}: {value}" for key, value in sorted(result.method.items())]
    items += [
        hd.sr.TextContentItem(name=codes.COMMENT, value=text, relationship_type=contains)
        for text in texts
    ]
    return items


def excluded_evaluations(excluded: Sequence[ExcludedCandidate]) -> list[hd.sr.ContentItem]:
    """One TEXT item per hot region that was found and not reported as a lesion, with why."""
    items: list[hd.sr.ContentItem] = []
    for i, cand in enumerate(excluded, start=1):
        where = ""
        if cand.centroid_mm is not None:
            x, y, z = cand.centroid_mm
            where = f", centre ({x:.0f}, {y:.0f}, {z:.0f}) mm LPS"
        items.append(
            hd.sr.TextContentItem(
                name=codes.EXCLUDED_CANDIDATE,
                value=(
                    f"{cand.label or f'Excluded {i}'}: not reported as a lesion: {cand.reason}"
                    f" (SUVmax {cand.suv_max:.2f}, {cand.volume_ml:.1f} ml{where})"
                ),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return items


def report_evaluations(result: StudyResult, warnings: Sequence[str]) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 "Qualitative Evaluations": context, no lesion, exclusions, warnings."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence()
    for item in context_evaluations(result):
        container.ContentSequence.append(item)
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
    for item in excluded_evaluations(result.excluded):
        container.ContentSequence.append(item)
    for warning in warnings:
        container.ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=f"Warning: {warning}",
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return container
