"""dicom_templates: UIDs, codes and the DICOM SEG (round trip through a file, dciodvfy)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from dicom_templates import codes, palette
from dicom_templates.seg import (
    build_seg,
    hypoxic_levels,
    in_seg,
    ordered_lesions,
    segment_numbers,
)
from dicom_templates.uids import derive_uid
from quant.results import StudyResult
from tests.dicom_fixtures import make_pet_series, make_result
from tests.dicomcheck import dciodvfy_errors


def _build(
    result: StudyResult, pet: list | None = None, level: float | None = None
) -> hd.seg.Segmentation:
    return build_seg(
        result,
        pet if pet is not None else make_pet_series(),
        series_instance_uid=derive_uid("test", "seg-series", str(level)),
        sop_instance_uid=derive_uid("test", "seg-instance", str(level)),
        series_number=901,
        level=level,
    )


def _write_and_read(seg: hd.seg.Segmentation, tmp_path: Path) -> tuple[Path, hd.seg.Segmentation]:
    path = tmp_path / f"seg-{seg.SOPInstanceUID}.dcm"
    seg.save_as(path, enforce_file_format=True)
    return path, hd.seg.segread(path)


def test_derive_uid_is_deterministic_and_unambiguous() -> None:
    assert derive_uid("a", "b") == derive_uid("a", "b")
    assert derive_uid("a", "b") != derive_uid("ab")
    assert derive_uid("a", "b") != derive_uid("b", "a")
    assert len(derive_uid("x" * 500)) <= 64
    assert derive_uid("a", prefix="1.2.3.").startswith("1.2.3.")
    with pytest.raises(ValueError, match="parts"):
        derive_uid()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("64Cu-ATSM", "422855001"),
        ("Cu-64 ATSM", "422855001"),
        ("62Cu-ATSM", "126702"),
        ("[18F]FMISO", "422598008"),
        ("18F-FDG", "35321007"),
        ("18F-FAZA", "FAZA"),
        ("ATSM", None),
        ("unknown", None),
    ],
)
def test_tracer_code(name: str, value: str | None) -> None:
    code = codes.tracer_code(name)
    assert (code.value if code else None) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Cu-64", "3932008"),
        ("18F", "77004003"),
        ("F-18", "77004003"),
        ("Cu-61", "71425003"),
        ("Ga68", "35337001"),
        ("Tc-99m", None),
        (None, None),
    ],
)
def test_nuclide_code(name: str | None, value: str | None) -> None:
    code = codes.nuclide_code(name)
    assert (code.value if code else None) == value


@pytest.mark.parametrize(
    ("suv_type", "concept", "unit"),
    [
        ("BW", "126401", "g/ml{SUVbw}"),
        ("LBMJAMES128", "126406", "g/ml{SUVlbm(James128)}"),
        ("LBMJANMA", "126405", "g/ml{SUVlbm(Janma)}"),
        ("BSA", "126403", "cm2/ml{SUVbsa}"),
        ("ibw", "126404", "g/ml{SUVibw}"),
    ],
)
def test_suv_concept(suv_type: str, concept: str, unit: str) -> None:
    found = codes.suv_concept(suv_type)
    assert (found.concept.value, found.unit.value) == (concept, unit)


def test_suv_concept_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="suv_type"):
        codes.suv_concept("XYZ")


@pytest.mark.parametrize(
    ("n_lesions", "empty_hypoxic", "expected_segments"),
    [(0, False, [1]), (1, False, [2, 1, 1]), (1, True, [2, 1]), (2, False, [3, 2, 2]),
     (2, True, [3, 2, 1])],
)
def test_seg_round_trip_is_valid(
    tmp_path: Path, n_lesions: int, empty_hypoxic: bool, expected_segments: list[int]
) -> None:
    """The regions SEG and one SEG per hypoxic level, each valid, none with overlapping
    segments, together holding every region with its own voxels."""
    result = make_result(n_lesions=n_lesions, empty_hypoxic=empty_hypoxic)
    levels: list[float | None] = [None, *hypoxic_levels(result)]
    numbers = segment_numbers(result)
    lesions = ordered_lesions(result)
    counts = []
    for level in levels:
        path, seg = _write_and_read(_build(result, level=level), tmp_path)
        assert dciodvfy_errors(path) == []
        assert seg.SegmentationType == "BINARY"
        assert seg.StudyInstanceUID == result.study_instance_uid
        assert any(
            item.CodingSchemeDesignator == codes.PRIVATE_SCHEME
            for item in seg.CodingSchemeIdentificationSequence
        )
        counts.append(seg.number_of_segments)
        mine = {key: info for key, info in numbers.items() if in_seg(info, level)}
        assert seg.number_of_segments == len(mine)
        covered = np.zeros(result.muscle.mask.shape, dtype=int)
        for (kind, index, threshold), info in mine.items():
            description = seg.get_segment_description(info.number)
            assert description.segment_label == info.label
            assert description.tracking_id == info.label
            if kind == "muscle":
                expected = result.muscle.mask
                assert description.segmented_property_type == codes.TYPE_SKELETAL_MUSCLE
            elif kind == "lesion":
                assert index is not None
                expected = lesions[index - 1].mask
                assert description.segmented_property_type == codes.TYPE_NEOPLASM
            else:
                assert index is not None and threshold == level
                sub = next(s for s in lesions[index - 1].hypoxic if s.threshold == threshold)
                expected = sub.mask
                assert description.segmented_property_type == codes.HYPOXIC_SUBVOLUME
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=result.pet_sop_instance_uids,
                segment_numbers=[info.number],
            )[..., 0].astype(bool)
            np.testing.assert_array_equal(pixels, expected)
            covered += pixels
        assert covered.max() <= 1, "segments of one SEG overlap"
    assert counts == expected_segments
    assert sum(counts) == len(numbers)


def test_segment_numbers_muscle_first_then_lesions_by_suvmax() -> None:
    result = make_result(n_lesions=2)
    result.lesions.reverse()  # the builder must not depend on the input order
    numbers = segment_numbers(result)
    assert numbers[("muscle", None, None)].number == 1
    assert numbers[("lesion", 1, None)].number == 2
    assert numbers[("lesion", 2, None)].number == 3
    assert numbers[("hypoxic", 1, 1.5)].number == 1  # the first segment of the T/M 1.5 SEG
    assert numbers[("hypoxic", 2, 1.5)].number == 2
    assert ordered_lesions(result)[0].suv_max == 4.5


def test_a_level_without_voxels_gets_no_seg() -> None:
    result = make_result(n_lesions=1, empty_hypoxic=True)
    assert hypoxic_levels(result) == [1.5]
    with pytest.raises(ValueError, match="no hypoxic sub-volume"):
        _build(result, level=2.0)


def test_empty_hypoxic_subvolume_gets_no_segment() -> None:
    numbers = segment_numbers(make_result(n_lesions=1, empty_hypoxic=True))
    assert ("hypoxic", 1, 2.0) not in numbers
    assert ("hypoxic", 1, 1.5) in numbers


def test_pet_order_does_not_matter(tmp_path: Path) -> None:
    result = make_result(n_lesions=1)
    pet = make_pet_series()
    forward = _build(result, pet)
    backward = _build(result, list(reversed(pet)))
    assert forward.PixelData == backward.PixelData


@pytest.mark.parametrize(
    ("source", "algorithm_type"), [("detected", "AUTOMATIC"), ("contour", "SEMIAUTOMATIC")]
)
def test_algorithm_type_follows_lesion_source(source: str, algorithm_type: str) -> None:
    result = make_result(n_lesions=1, source=source)
    seg = _build(result)
    numbers = segment_numbers(result)
    lesion = seg.get_segment_description(numbers[("lesion", 1, None)].number)
    muscle = seg.get_segment_description(numbers[("muscle", None, None)].number)
    assert lesion.algorithm_type.value == algorithm_type
    assert muscle.algorithm_type.value == "AUTOMATIC"
    assert lesion.algorithm_identification is not None
    assert lesion.algorithm_identification[0].AlgorithmName == "hypoxnode"
    if source == "contour":
        assert "GTV" in lesion.segment_label


def test_missing_pet_instance_is_reported() -> None:
    result = make_result(n_lesions=1)
    with pytest.raises(ValueError, match="pet_datasets"):
        _build(result, make_pet_series()[1:])


def test_same_inputs_give_the_same_seg() -> None:
    result = make_result(n_lesions=2)
    first, second = _build(result), _build(result)
    assert first.SOPInstanceUID == second.SOPInstanceUID
    assert [s.TrackingUID for s in first.SegmentSequence] == [
        s.TrackingUID for s in second.SegmentSequence
    ]


def test_every_known_tracer_has_codes() -> None:
    from quant.suv.tracers import PROFILES

    for name, profile in PROFILES.items():
        assert codes.tracer_code(name) is not None, name
        assert codes.nuclide_code(profile.nuclide) is not None, profile.nuclide


def test_segment_colours_are_the_palette_read_back_in_rgb(tmp_path: Path) -> None:
    """RecommendedDisplayCIELabValue decodes to the palette colour (not near-black)."""
    result = make_result(n_lesions=1)
    expected = {"muscle": palette.MUSCLE.rgb, "lesion": palette.LESION.rgb,
                "hypoxic": palette.HYPOXIC.rgb}
    for level in [None, *hypoxic_levels(result)]:
        kinds = {info.number: info.kind for info in segment_numbers(result).values()
                 if in_seg(info, level)}
        _, read = _write_and_read(_build(result, level=level), tmp_path)
        for item in read.SegmentSequence:
            lab = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue)
            rgb = lab.to_rgb()
            want = expected[kinds[int(item.SegmentNumber)]]
            assert max(abs(a - b) for a, b in zip(rgb, want, strict=True)) <= 2, (rgb, want)
            assert int(item.RecommendedDisplayCIELabValue[0]) > 30000  # L* > 45: not black
