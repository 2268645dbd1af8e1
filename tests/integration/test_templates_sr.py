"""dicom_templates.sr: the TID 1500 report, read back figure by figure and validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_templates import codes
from dicom_templates.seg import build_seg, hypoxic_levels, ordered_lesions, segment_numbers
from dicom_templates.sr import build_sr
from dicom_templates.summary import build_summary
from dicom_templates.uids import derive_uid
from quant.results import ExcludedCandidate, StudyResult
from tests.dicom_fixtures import SPACING_MM, make_pet_series, make_result, phantom_suv
from tests.dicomcheck import dciodvfy_errors, dsrdump_text
from tests.sr_reading import OHIF_PROBE

SUVBW = ("126401", "DCM")
SUV_UNIT = "g/ml{SUVbw}"
MAXIMUM, MEAN, PEAK, SD = "56851009", "373098007", "126031", "386136009"


@dataclass
class Figure:
    """One NUM item of the report, flattened for lookups."""

    group: str
    concept: tuple[str, str]
    derivation: str | None
    unit: str
    value: float
    segment: int | None


def _segs(result: StudyResult, pet: list) -> dict[float | None, Any]:
    """The regions SEG (key None) and the hypoxic SEG of each level."""
    return {
        level: build_seg(
            result,
            pet,
            series_instance_uid=derive_uid("t", "seg", str(level)),
            sop_instance_uid=derive_uid("t", "seg", "1", str(level)),
            series_number=901 if level is None else 911 + k,
            level=level,
        )
        for k, level in enumerate([None, *hypoxic_levels(result)])
    }


def _hypoxic(segs: dict[float | None, Any]) -> dict[float, Any]:
    return {level: seg for level, seg in segs.items() if level is not None}


def _objects(
    result: StudyResult, with_summary: bool = False
) -> tuple[list, dict[float | None, Any], Any, Any]:
    pet = make_pet_series()
    segs = _segs(result, pet)
    summary = None
    if with_summary:
        summary = build_summary(
            result,
            phantom_suv(),
            None,
            SPACING_MM,
            pet,
            series_instance_uid=derive_uid("t", "sc"),
            sop_instance_uid=derive_uid("t", "sc", "1"),
            series_number=903,
        )
    sr = build_sr(
        result,
        pet,
        segs[None],
        series_instance_uid=derive_uid("t", "sr"),
        sop_instance_uid=derive_uid("t", "sr", "1"),
        series_number=902,
        hypoxic_segs=_hypoxic(segs),
        summary=summary,
    )
    return pet, segs, sr, summary


def _report(
    sr: hd.sr.EnhancedSR | hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR,
) -> hd.sr.MeasurementReport:
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content


def _write(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def _figures(report: hd.sr.MeasurementReport) -> list[Figure]:
    groups: list[Any] = [
        *report.get_volumetric_roi_measurement_groups(),
        *report.get_image_measurement_groups(),
    ]
    out = []
    for group in groups:
        segment = None
        if isinstance(group, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations):
            ref = group.referenced_segment
            assert ref is not None
            segment = int(ref[0].ReferencedSOPSequence[0].ReferencedSegmentNumber)
        for m in group.get_measurements():
            out.append(
                Figure(
                    group=str(group.tracking_identifier),
                    concept=(m.name.value, m.name.scheme_designator),
                    derivation=m.derivation.value if m.derivation is not None else None,
                    unit=m.unit.value,
                    value=float(m.value),
                    segment=segment,
                )
            )
    return out


def _find(
    figures: list[Figure], group: str, concept: tuple[str, str], derivation: str | None = None
) -> Figure:
    found = [
        f
        for f in figures
        if f.group == group and f.concept == concept and f.derivation == derivation
    ]
    assert len(found) == 1, f"{group} {concept} {derivation}: {found}"
    return found[0]


def _texts(sr: Dataset) -> list[str]:
    out: list[str] = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                out.append(str(item.TextValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return out


def _codes(sr: Dataset) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "CODE":
                value = item.ConceptCodeSequence[0]
                out.append((str(value.CodeValue), str(value.CodingSchemeDesignator)))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return out


@pytest.mark.parametrize(
    ("n_lesions", "empty_hypoxic", "with_summary"),
    [(0, False, False), (1, False, True), (1, True, False), (2, True, True)],
)
def test_objects_are_valid(
    tmp_path: Path, n_lesions: int, empty_hypoxic: bool, with_summary: bool
) -> None:
    result = make_result(n_lesions=n_lesions, empty_hypoxic=empty_hypoxic)
    _, segs, sr, summary = _objects(result, with_summary)
    sr_path = _write(sr, tmp_path / "sr.dcm")
    assert dciodvfy_errors(sr_path) == []
    for k, seg in enumerate(segs.values()):
        assert dciodvfy_errors(_write(seg, tmp_path / f"seg{k}.dcm")) == []
    if summary is not None:
        assert dciodvfy_errors(_write(summary, tmp_path / "sc.dcm")) == []
    read = hd.sr.srread(sr_path)
    assert read.StudyInstanceUID == result.study_instance_uid
    assert read.CompletionFlag == "COMPLETE"
    declared = {item.CodingSchemeDesignator for item in read.CodingSchemeIdentificationSequence}
    assert codes.PRIVATE_SCHEME in declared


def test_every_figure_of_the_json_is_in_the_report(tmp_path: Path) -> None:
    result = make_result(n_lesions=2, empty_hypoxic=True)
    _, _, sr, _ = _objects(result)
    read = hd.sr.srread(_write(sr, tmp_path / "sr.dcm"))
    figures = _figures(_report(read))
    numbers = segment_numbers(result)
    data = result.to_json()

    muscle = data["muscle"]
    segment = numbers[("muscle", None, None)].number
    for concept, derivation, unit, key in [
        (SUVBW, MEAN, SUV_UNIT, "suv_mean"),
        (SUVBW, SD, SUV_UNIT, "suv_sd"),
        (("118565006", "SCT"), None, "ml", "volume_ml"),
        (("126040", "DCM"), None, SUV_UNIT, "suv_mean"),
    ]:
        found = _find(figures, "Muscle reference", concept, derivation)
        assert (found.unit, found.segment) == (unit, segment)
        assert found.value == pytest.approx(muscle[key], rel=1e-9)

    for i, lesion in enumerate(data["lesions"], start=1):
        group = numbers[("lesion", i, None)]
        for concept, derivation, unit, key in [
            (SUVBW, MAXIMUM, SUV_UNIT, "suv_max"),
            (SUVBW, MEAN, SUV_UNIT, "suv_mean"),
            (SUVBW, PEAK, SUV_UNIT, "suv_peak"),
            (("118565006", "SCT"), None, "ml", "volume_ml"),
            (("126039", "DCM"), MAXIMUM, "{ratio}", "tm_max"),
            (("126039", "DCM"), MEAN, "{ratio}", "tm_mean"),
        ]:
            found = _find(figures, group.label, concept, derivation)
            assert (found.unit, found.segment) == (unit, group.number)
            assert found.value == pytest.approx(lesion[key], rel=1e-9)
        for sub in lesion["hypoxic"]:
            label = f"Lesion {i} hypoxic T/M>={sub['threshold']:g}"
            info = numbers.get(("hypoxic", i, sub["threshold"]))
            if info is None:  # no voxel: a text in the lesion's group, no figures
                assert not any(f.group == label for f in figures)
                assert any(
                    text.startswith(f"{label}: no voxel reaches the threshold")
                    for text in _texts(read)
                )
                continue
            expected_segment = info.number
            for concept, unit, key in [
                (("118565006", "SCT"), "ml", "volume_ml"),
                ((codes.HYPOXIC_FRACTION.value, codes.PRIVATE_SCHEME), "{ratio}", "fraction"),
                (("122411", "DCM"), "{ratio}", "threshold"),
            ]:
                found = _find(figures, label, concept)
                assert (found.unit, found.segment) == (unit, expected_segment)
                assert found.value == pytest.approx(sub[key], rel=1e-9)

    assert any(
        f"({data['suv']['uptake_time_s']:g} s after the start of injection)" in text
        for text in _texts(read)
    )
    assert ("422855001", "SCT") in _codes(read)  # 64Cu-ATSM
    assert ("3932008", "SCT") in _codes(read)  # Cu-64
    texts = _texts(read)
    assert f"Tracer: {data['tracer']}" in texts
    assert f"SUV type: {data['suv_type']}" in texts
    assert any(data["muscle"]["location"] in text for text in texts)
    for warning in data["warnings"]:
        assert f"Warning: {warning}" in texts
    for key, value in data["method"].items():
        assert f"Method {key}: {value}" in texts


def test_tracking_identifiers_match_the_seg(tmp_path: Path) -> None:
    """Each group references its segment in the SEG that holds it (the regions SEG, or the
    hypoxic SEG of its threshold), with that segment's tracking ID and UID; every SEG is
    evidence."""
    result = make_result(n_lesions=2)
    _, segs, sr, _ = _objects(result)
    read = hd.sr.srread(_write(sr, tmp_path / "sr.dcm"))
    segments = {(str(seg.SOPInstanceUID), int(s.SegmentNumber)): s
                for seg in segs.values() for s in seg.SegmentSequence}
    referenced = []
    for group in _report(read).get_volumetric_roi_measurement_groups():
        assert group.referenced_segment is not None
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        segment = segments[(str(ref.ReferencedSOPInstanceUID), int(ref.ReferencedSegmentNumber))]
        if str(group.tracking_identifier).startswith(OHIF_PROBE):
            continue  # a lesion's SUVmax point (its own test below)
        referenced.append((str(ref.ReferencedSOPInstanceUID), int(ref.ReferencedSegmentNumber)))
        assert group.tracking_uid == segment.TrackingUID
        assert str(group.tracking_identifier) == segment.TrackingID
    assert sorted(referenced) == sorted(segments)  # every segment has its group, one
    evidence = {item.ReferencedSOPInstanceUID
                for study in read.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence}
    assert {str(seg.SOPInstanceUID) for seg in segs.values()} <= evidence


def test_no_lesion_report(tmp_path: Path) -> None:
    result = make_result(n_lesions=0)
    _, _, sr, _ = _objects(result)
    read = hd.sr.srread(_write(sr, tmp_path / "sr.dcm"))
    groups = _report(read).get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["Muscle reference"]
    assert (codes.NO_LESION_FOUND.value, codes.PRIVATE_SCHEME) in _codes(read)
    assert "No lesion found" in _texts(read)


def test_dsrdump_shows_the_measurements(tmp_path: Path) -> None:
    result = make_result(n_lesions=1)
    _, _, sr, _ = _objects(result, with_summary=True)
    text = dsrdump_text(_write(sr, tmp_path / "sr.dcm"))
    for expected in [
        '(126401,DCM,"SUVbw")="4.5"',
        '(126031,DCM,"Peak Value Within ROI")',
        '(126039,DCM,"Lesion to Background SUV Ratio")="5.625"',
        '(118565006,SCT,"Volume")="5.472" (ml,UCUM',
        '(HYPFRAC,99HYPOX,"Hypoxic fraction")="0.0614"',
        '(122411,DCM,"Threshold Value")="2.0"',
        '"Referenced Segment")',
        '(111028,DCM,"Image Library")',
        "Warning: uptake time outside the tracer's window",
    ]:
        assert expected in text, expected


def test_summary_is_in_evidence(tmp_path: Path) -> None:
    result = make_result(n_lesions=1)
    _, _, sr, summary = _objects(result, with_summary=True)
    read = hd.sr.srread(_write(sr, tmp_path / "sr.dcm"))
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in read.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert summary.SOPInstanceUID in evidence
    assert set(result.pet_sop_instance_uids) <= evidence


def test_seg_from_another_result_is_refused() -> None:
    pet = make_pet_series()
    seg = build_seg(
        make_result(n_lesions=0),
        pet,
        series_instance_uid=derive_uid("a"),
        sop_instance_uid=derive_uid("b"),
        series_number=1,
    )
    with pytest.raises(ValueError, match="seg"):
        build_sr(
            make_result(n_lesions=1),
            pet,
            seg,
            series_instance_uid=derive_uid("c"),
            sop_instance_uid=derive_uid("d"),
            series_number=2,
        )


def test_non_bw_suv_type_uses_its_concept(tmp_path: Path) -> None:
    result = make_result(n_lesions=1)
    result.suv_type = "LBMJAMES128"
    _, _, sr, _ = _objects(result)
    read = hd.sr.srread(_write(sr, tmp_path / "sr.dcm"))
    found = _find(_figures(_report(read)), "Lesion 1", ("126406", "DCM"), MAXIMUM)
    assert found.unit == "g/ml{SUVlbm(James128)}"
    assert np.isclose(found.value, 4.5)


def test_superseding_report_names_its_predecessor(tmp_path: Path) -> None:
    result = make_result(n_lesions=1)
    result.warnings = []  # the only text then is the supersession note
    pet, segs, first, _ = _objects(result)
    second = build_sr(
        result,
        pet,
        segs[None],
        series_instance_uid=derive_uid("t", "sr"),
        sop_instance_uid=derive_uid("t", "sr", "2"),
        series_number=902,
        instance_number=2,
        hypoxic_segs=_hypoxic(segs),
        previous_report=first,
    )
    path = _write(second, tmp_path / "sr2.dcm")
    assert dciodvfy_errors(path) == []
    read = hd.sr.srread(path)
    predecessors = read.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessors.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert any(str(first.SOPInstanceUID) in text and "supersedes" in text
               for text in _texts(read))
    no_warning = build_sr(
        result, pet, segs[None], series_instance_uid=derive_uid("t", "sr"),
        sop_instance_uid=derive_uid("t", "sr", "3"), series_number=902,
        hypoxic_segs=_hypoxic(segs),
    )
    assert dciodvfy_errors(_write(no_warning, tmp_path / "sr3.dcm")) == []
    assert "PredecessorDocumentsSequence" not in no_warning


def _items(items: Any) -> list[Dataset]:
    out: list[Dataset] = []
    for item in items:
        out.append(item)
        if "ContentSequence" in item:
            out += _items(item.ContentSequence)
    return out


def _concept(item: Dataset) -> tuple[str, str]:
    name = item.ConceptNameCodeSequence[0]
    return (str(name.CodeValue), str(name.CodingSchemeDesignator))


def test_image_library_lists_the_pet_slices_the_points_select_from(tmp_path: Path) -> None:
    result = make_result(n_lesions=2)
    pet, _, sr, _ = _objects(result, with_summary=True)
    read = dcmread(_write(sr, tmp_path / "sr.dcm"))
    library = [i for i in _items(read.ContentSequence) if _concept(i) == ("111028", "DCM")]
    assert len(library) == 1
    images = [i for i in _items(library[0].ContentSequence) if i.ValueType == "IMAGE"]
    listed = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in images}
    by_uid = {str(ds.SOPInstanceUID): ds for ds in pet}
    selected = {
        str(point.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for point in _items(read.ContentSequence) if point.ValueType == "SCOORD"
    }
    assert {result.pet_sop_instance_uids[les.max_index[0]] for les in result.lesions} <= selected
    assert listed == selected  # the library is exactly the images the SCOORDs select from
    assert {by_uid[uid].Modality for uid in listed} == {"PT"}


def test_every_group_has_a_point_inside_its_region(tmp_path: Path) -> None:
    """OHIF 3.13 fails on a report with a measurement group without SCOORD."""
    result = make_result(n_lesions=2)
    _, segs, sr, _ = _objects(result)
    read = dcmread(_write(sr, tmp_path / "sr.dcm"))
    groups = [i for i in _items(read.ContentSequence) if _concept(i) == ("125007", "DCM")]
    numbers = {(str(segs[info.threshold].SOPInstanceUID), info.number): info
               for info in segment_numbers(result).values()}
    lesions = ordered_lesions(result)
    for group in groups:
        [point] = [i for i in group.ContentSequence if i.ValueType == "SCOORD"]
        [ref] = [i for i in group.ContentSequence if _concept(i) == ("121191", "DCM")]
        sop = ref.ReferencedSOPSequence[0]
        info = numbers[(str(sop.ReferencedSOPInstanceUID), int(sop.ReferencedSegmentNumber))]
        column, row = (int(v - 0.5) for v in point.GraphicData)
        uid = point.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        index = (result.pet_sop_instance_uids.index(uid), row, column)
        if info.kind == "muscle":
            mask = result.muscle.mask
        else:
            assert info.lesion_index is not None
            lesion = lesions[info.lesion_index - 1]
            mask = lesion.mask if info.kind == "lesion" else next(
                h.mask for h in lesion.hypoxic if float(h.threshold) == info.threshold)
        assert mask[index], (info.label, index)


def test_each_lesion_group_has_a_point_at_its_suvmax(tmp_path: Path) -> None:
    result = make_result(n_lesions=2)
    _, _, sr, _ = _objects(result)
    read = hd.sr.srread(_write(sr, tmp_path / "sr.dcm"))
    groups = {
        str(g.tracking_identifier): g
        for g in _report(read).get_volumetric_roi_measurement_groups()
    }
    numbers = segment_numbers(result)
    for i, lesion in enumerate(ordered_lesions(result), start=1):
        group = groups[numbers[("lesion", i, None)].label]
        points = [item for item in group[0].ContentSequence if item.ValueType == "SCOORD"]
        assert len(points) == 1
        point = points[0]
        assert _concept(point) == (codes.SUVMAX_LOCATION.value, codes.PRIVATE_SCHEME)
        assert point.GraphicType == "POINT"
        _, row, column = lesion.max_index
        assert [float(v) for v in point.GraphicData] == [column + 0.5, row + 0.5]
        source = point.ContentSequence[0]
        assert source.RelationshipType == "SELECTED FROM"
        assert (
            source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            == result.pet_sop_instance_uids[lesion.max_index[0]]
        )


def test_measurement_method_is_a_concept_modifier(tmp_path: Path) -> None:
    result = make_result(n_lesions=1)
    _, _, sr, _ = _objects(result)
    read = dcmread(_write(sr, tmp_path / "sr.dcm"))
    methods = [i for i in _items(read.ContentSequence) if _concept(i) == ("370129005", "SCT")]
    assert methods
    assert {m.RelationshipType for m in methods} == {"HAS CONCEPT MOD"}


def test_excluded_candidates_are_listed_for_the_reader(tmp_path: Path) -> None:
    result = make_result(n_lesions=1)
    result.excluded.append(
        ExcludedCandidate(
            reason="bladder (urine in the pelvic midline)",
            suv_max=23.456,
            volume_ml=250.0,
            mask=np.zeros((1, 1, 1), dtype=bool),
            centroid_mm=(1.0, -20.4, -700.6),
            label="Excluded 1",
        )
    )
    _, _, sr, _ = _objects(result)
    path = _write(sr, tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
    read = dcmread(path)
    evaluations = [
        i for i in read.ContentSequence
        if _concept(i) == (codes.QUALITATIVE_EVALUATIONS.value, "UMLS")
    ]
    assert len(evaluations) == 1
    texts = [
        str(i.TextValue) for i in evaluations[0].ContentSequence
        if i.ValueType == "TEXT"
        and _concept(i) == (codes.EXCLUDED_CANDIDATE.value, codes.PRIVATE_SCHEME)
    ]
    assert texts == [
        "Excluded 1: not reported as a lesion: bladder (urine in the pelvic midline)"
        " (SUVmax 23.46, 250.0 ml, centre (1, -20, -701) mm LPS)"
    ]


def test_each_lesion_has_a_suvmax_point_group_for_ohif(tmp_path: Path) -> None:
    """Per lesion one more group on its segment, named for OHIF's point tool, holding SUVmax
    and T/M max each inferred from the SUVmax voxel, and the lesion's figures as comment."""
    result = make_result(n_lesions=2)
    _, segs, sr, _ = _objects(result)
    read = dcmread(_write(sr, tmp_path / "sr.dcm"))
    groups = [i for i in _items(read.ContentSequence) if _concept(i) == ("125007", "DCM")]
    anchors = {
        str(item.TextValue): group for group in groups for item in group.ContentSequence
        if _concept(item) == ("112039", "DCM") and str(item.TextValue).startswith(OHIF_PROBE)
    }
    numbers = segment_numbers(result)
    assert len(anchors) == len(result.lesions)
    for i, lesion in enumerate(ordered_lesions(result), start=1):
        group = anchors[f"{OHIF_PROBE}:Lesion {i} SUVmax point"]
        [ref] = [x for x in group.ContentSequence if _concept(x) == ("121191", "DCM")]
        sop = ref.ReferencedSOPSequence[0]
        assert sop.ReferencedSOPInstanceUID == segs[None].SOPInstanceUID
        assert int(sop.ReferencedSegmentNumber) == numbers[("lesion", i, None)].number
        nums = [x for x in group.ContentSequence if x.ValueType == "NUM"]
        assert [float(x.MeasuredValueSequence[0].NumericValue) for x in nums] == pytest.approx(
            [lesion.suv_max, lesion.tm_max], rel=1e-9)
        _, row, column = lesion.max_index
        for num in nums:
            [point] = [x for x in num.ContentSequence if x.ValueType == "SCOORD"]
            assert point.RelationshipType == "INFERRED FROM"
            assert [float(v) for v in point.GraphicData] == [column + 0.5, row + 0.5]
            assert (point.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    == result.pet_sop_instance_uids[lesion.max_index[0]])
        [comment] = [str(x.TextValue) for x in group.ContentSequence
                     if _concept(x) == ("121106", "DCM")]
        assert comment.startswith(f"Lesion {i}: SUVmax {lesion.suv_max:.2f},")
        assert f"T/M max {lesion.tm_max:.2f}" in comment

