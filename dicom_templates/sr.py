"""TID 1500 Measurement Report of a quantification, as a Comprehensive 3D SR.

Document tree (all measurement groups TID 1411, in this order inside "Imaging Measurements"):

1. muscle reference (segment 1): SUVmean, SUV SD, volume and the
   "Background for Lesion to Background SUV Ratio" (DCM 126040), a SCOORD POINT inside it;
2. per lesion: SUVmax / SUVmean / SUVpeak (DCM 12640x with derivation Maximum, Mean, Peak
   Value Within ROI), Volume (ml), T/M max and mean (DCM 126039 with derivation), a SCOORD
   POINT at the SUVmax voxel, and a text for each hypoxic sub-volume with no voxel;
3. per lesion and threshold with voxels: hypoxic Volume, hypoxic fraction (private code) and
   the threshold (DCM 122411), on its segment of the hypoxic SEG of that threshold, a SCOORD
   POINT at the lesion's SUVmax;
4. per lesion, its SUVmax voxel as a group of its own (:mod:`dicom_templates.sr_anchors`):
   SUVmax and T/M max at that point, the lesion's figures as its comment (what OHIF lists in
   its measurements panel);
5. with a prior scan of the subject, the comparison groups of
   :mod:`dicom_templates.sr_comparison` (pair kind, prior values, changes, RC decisions).

After it, a "Qualitative Evaluations" container holds the tracer and nuclide (CODE), the
acquisition and method facts, the "No lesion found" finding, each excluded candidate and each
warning (TEXT). The Image Library lists the PET slices the SCOORDs select from; the summary
Secondary Capture is in the evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from dicom_templates import codes, sr_anchors, sr_comparison, sr_groups
from dicom_templates.seg import (
    hypoxic_levels,
    in_seg,
    ordered_lesions,
    segment_numbers,
    sort_like_result,
)
from dicom_templates.uids import derive_uid
from quant.longitudinal.comparison import PairComparison
from quant.results import StudyResult


def _observation_context(manufacturer: str, version: str) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derive_uid("hypoxnode", "device", manufacturer),
        name="hypoxnode",
        manufacturer_name=manufacturer,
        model_name=f"hypoxnode {version}",
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept.from_code(codes.OBSERVER_DEVICE),
            observer_identifying_attributes=device,
        )
    )


def _groups(
    result: StudyResult,
    sources: Sequence[Dataset],
    seg: Dataset,
    hypoxic_segs: Mapping[float, Dataset],
    sop_instance_uid: str,
    version: str,
    comparison: PairComparison | None = None,
) -> list[sr_groups.Group]:
    numbers = segment_numbers(result)
    pet_series = result.pet_series_instance_uid
    muscle_info = numbers[("muscle", None, None)]
    muscle = sr_groups.muscle_group(
        result.muscle, result.suv_type, seg, muscle_info, pet_series, version
    )
    muscle_point = sr_groups.inner_voxel(result.muscle.mask)
    sr_groups.anchor(muscle, muscle_point, sources[muscle_point[0]], codes.REGION_POINT)
    groups: list[sr_groups.Group] = [muscle]
    lesions = ordered_lesions(result)
    hypoxic_groups: list[sr_groups.Group] = []
    for i, lesion in enumerate(lesions, start=1):
        group = sr_groups.lesion_group(
            i,
            lesion,
            result.suv_type,
            seg,
            numbers[("lesion", i, None)],
            muscle_info,
            pet_series,
            version,
            pet_at_max=sources[lesion.max_index[0]],
        )
        groups.append(group)
        for sub in lesion.hypoxic:
            info = numbers.get(("hypoxic", i, float(sub.threshold)))
            if info is None:
                sr_groups.add_empty_hypoxic(group, i, sub)
            else:
                hypoxic = sr_groups.hypoxic_group(
                    i, sub, hypoxic_segs[float(sub.threshold)], info, pet_series, version
                )
                # the lesion's SUVmax voxel lies in each of its non-empty hypoxic sub-volumes
                sr_groups.anchor(
                    hypoxic, lesion.max_index, sources[lesion.max_index[0]],
                    codes.SUVMAX_LOCATION,
                )
                hypoxic_groups.append(hypoxic)
    groups += hypoxic_groups
    groups += [
        sr_anchors.anchor_group(
            i, lesion, result, sources[lesion.max_index[0]], (seg, numbers[("lesion", i, None)]),
            derive_uid(sop_instance_uid, "suvmax-point", str(i)), version,
        )
        for i, lesion in enumerate(lesions, start=1)
    ]
    if comparison is not None:

        def where(number: int | None, threshold: float | None) -> sr_comparison.Region:
            if number is None:
                return sr_comparison.Region(
                    seg, muscle_info, pet_series, muscle_point, sources[muscle_point[0]]
                )
            lesion = lesions[number - 1]
            pet = sources[lesion.max_index[0]]
            info = numbers.get(("hypoxic", number, threshold)) if threshold is not None else None
            if info is not None and threshold is not None:
                return sr_comparison.Region(
                    hypoxic_segs[threshold], info, pet_series, lesion.max_index, pet
                )
            return sr_comparison.Region(
                seg, numbers[("lesion", number, None)], pet_series, lesion.max_index, pet
            )

        groups += sr_comparison.comparison_groups(
            comparison, result.suv_type, sop_instance_uid, version, where
        )
    return groups


def _check_segments(
    result: StudyResult, level: float | None, seg: Dataset | None, name: str
) -> None:
    """Refuse a SEG that does not hold the segments of ``level`` the result expects."""
    expected = {info.number for info in segment_numbers(result).values() if in_seg(info, level)}
    present = {int(item.SegmentNumber) for item in getattr(seg, "SegmentSequence", [])}
    if seg is None or expected != present:
        raise ValueError(
            f"{name}: segment numbers {sorted(present)} do not match the result "
            f"(expected {sorted(expected)}); build the SEG from the same result"
        )


def library_images(result: StudyResult, sources: Sequence[Dataset]) -> list[Dataset]:
    """The PET instances of the Image Library: the slices the report's SCOORDs select from
    (each lesion's SUVmax, the muscle reference's inner point)."""
    slices = sorted(
        {lesion.max_index[0] for lesion in result.lesions}
        | {sr_groups.inner_voxel(result.muscle.mask)[0]}
    )
    return [sources[i] for i in slices]


def build_sr(
    result: StudyResult,
    pet_datasets: Sequence[Dataset],
    seg: Dataset,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    hypoxic_segs: Mapping[float, Dataset] | None = None,
    summary: Dataset | None = None,
    manufacturer: str = "hypoxnode",
    software_version: str | None = None,
    previous_report: Dataset | None = None,
    comparison: PairComparison | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Measurement Report of a quantification.

    Parameters
    ----------
    result
        The quantification.
    pet_datasets
        The PET instances the figures were computed on (evidence; matched by SOPInstanceUID).
    seg
        The regions SEG built by :func:`dicom_templates.seg.build_seg` from the same
        ``result``.
    series_instance_uid, sop_instance_uid, series_number, instance_number
        Identity of the new instance.
    hypoxic_segs
        The hypoxic SEG of each threshold of :func:`dicom_templates.seg.hypoxic_levels`
        (``build_seg(..., level=threshold)``); needed when the result has hypoxic voxels.
    summary
        The rendered summary Secondary Capture, listed in the evidence (the Image Library
        lists PET images only: TID 1602 allows the modalities of CID 29, not OT).
    manufacturer
        Manufacturer of the SR and of the observer device.
    software_version
        SoftwareVersions and algorithm version; the installed hypoxnode version by default.
    previous_report
        The earlier report of this study that this one supersedes (re-processing after new
        instances arrived, or on request): listed in the Predecessor Documents Sequence and
        named in a text item.
    comparison
        The comparison with the subject's prior scan
        (:func:`quant.longitudinal.comparison.compare`):
        reported in its own measurement groups.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        Complete, unverified, final-state document.

    Raises
    ------
    ValueError
        If ``seg`` or ``hypoxic_segs`` do not hold the segments :func:`segment_numbers`
        expects, or the PET instances do not match the result.
    """
    sources = sort_like_result(result, pet_datasets)
    hypoxic_segs = dict(hypoxic_segs or {})
    _check_segments(result, None, seg, "seg")
    for level in sorted(set(hypoxic_levels(result)) | set(hypoxic_segs)):
        _check_segments(result, level, hypoxic_segs.get(level), f"hypoxic_segs[{level:g}]")
    version = software_version or codes.software_version()
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(manufacturer, version),
        procedure_reported=codes.PROCEDURE_PET,
        imaging_measurements=_groups(
            result, sources, seg, hypoxic_segs, sop_instance_uid, version, comparison
        ),
        referenced_images=library_images(result, sources),
    )
    evaluations = sr_groups.report_evaluations(result, result.warnings)
    if previous_report is not None:
        evaluations.ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=(
                    "This report supersedes the earlier report of this study"
                    f" (SOPInstanceUID {previous_report.SOPInstanceUID}): the study was"
                    " quantified again"
                ),
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    if len(evaluations.ContentSequence) > 0:  # an empty container is a dciodvfy error
        report[0].ContentSequence.append(evaluations)
    evidence = [*sources, seg, *(hypoxic_segs[level] for level in sorted(hypoxic_segs))]
    if summary is not None:
        evidence.append(summary)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=True,
        series_description="hypoxnode measurement report",
        software_versions=version,
        previous_versions=[previous_report] if previous_report is not None else None,
    )
    sr.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    return sr
