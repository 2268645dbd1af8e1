"""Lesion matching, changes, the repeatability decision, Dice and rigid registration."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest
import SimpleITK as sitk

from quant.image.registration import point_mapper, register_rigid, resample_mask
from quant.image.volume import load_ct_hu, load_pet_suv, resample_to
from quant.longitudinal.comparison import (
    NOT_ALIGNED,
    RcInUse,
    compare,
    dice,
    exceeds_rc,
    figure_change,
    match_lesions,
)
from quant.longitudinal.pairing import Pair, PairKind, StudyFacts
from quant.pipeline import CT_AIR_HU, centroid_mm
from quant.results import HypoxicSubvolume, LesionResult, MuscleResult, StudyResult, SuvFacts
from service.synthetic import make_study


@pytest.mark.parametrize(
    ("prior", "current", "rc", "expected"),
    [
        (4.0, 5.0, 0.25, False),  # ratio 1.25 = 1 + RC: on the limit, not beyond
        (4.0, 5.01, 0.25, True),
        (5.0, 4.0, 0.25, False),  # ratio 0.8 = 1 / 1.25: on the limit
        (5.0, 3.99, 0.25, True),
        (5.0, 4.1, 0.25, False),  # a 18% fall is inside 1 - 1/1.25 = 20%
        (2.0, 0.0, 0.25, True),  # gone entirely
        (0.0, 1.0, 0.25, None),  # no ratio from a prior of 0
        (4.0, 9.0, None, None),  # no RC: not judged
        (math.nan, 1.0, 0.25, None),
    ],
)
def test_exceeds_rc(prior: float, current: float, rc: float | None, expected: bool | None
                    ) -> None:
    assert exceeds_rc(prior, current, rc) is expected


def test_exceeds_rc_rejects_negative_rc() -> None:
    with pytest.raises(ValueError, match="relative_rc"):
        exceeds_rc(1.0, 2.0, -0.1)


def test_figure_change_hand_computed() -> None:
    change = figure_change("suv_max", 4.0, 6.0, RcInUse(0.32, "reference"))
    assert change.absolute == pytest.approx(2.0)
    assert change.relative == pytest.approx(0.5)
    assert change.exceeds is True
    assert change.rc_source == "reference"
    fall = figure_change("hypoxic_volume_ml", 0.0, 3.0, None)
    assert fall.relative is None and fall.exceeds is None
    assert "no repeatability coefficient" in fall.rc_source


@pytest.mark.parametrize(
    ("prior", "current", "tolerance", "expected"),
    [
        # identical positions, listed in another order
        ([(0, 0, 0), (50, 0, 0)], [(50, 1, 0), (0, 0, 2)], 20,
         [(1, 0, 1.0), (0, 1, 2.0)]),
        # closest pair first: prior 0 takes current 1 (3 mm), so current 0 (5 mm from prior 0)
        # is left: prior 1 is 25 mm from it, beyond the tolerance
        ([(0, 0, 0), (30, 0, 0)], [(5, 0, 0), (3, 0, 0)], 20,
         [(0, 1, 3.0)]),
        ([(0, 0, 0), (20, 0, 0)], [(0, 0, 21)], 20, []),  # beyond the tolerance
        ([(0, 0, 0)], [(0, 0, 20)], 20, [(0, 0, 20.0)]),  # on the tolerance
        ([None, (0, 0, 0)], [(0, 0, 1), None], 20, [(1, 0, 1.0)]),  # unknown positions
    ],
)
def test_match_lesions(prior: list, current: list, tolerance: float,
                       expected: list[tuple[int, int, float]]) -> None:
    matches = match_lesions(prior, current, tolerance)
    got = sorted((m.prior_index, m.current_index, m.distance_mm) for m in matches)
    assert [g[:2] for g in got] == [e[:2] for e in sorted(expected)]
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in sorted(expected)])


def test_match_lesions_through_a_transform() -> None:
    # The prior frame is the current one shifted by +40 mm in x.
    matches = match_lesions([(40, 0, 0)], [(0, 0, 0)], 5,
                            to_prior=lambda p: (p[0] + 40, p[1], p[2]))
    assert [(m.prior_index, m.current_index) for m in matches] == [(0, 0)]
    assert match_lesions([(40, 0, 0)], [(0, 0, 0)], 5) == []


def test_dice() -> None:
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    assert dice(a, b) is None
    a[0, :2, :2] = True  # 4 voxels
    b[0, :2, :3] = True  # 6 voxels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 10)
    with pytest.raises(ValueError, match="shape"):
        dice(a, b[0])


def _result(suv_max: float, centroid: tuple[float, float, float], hypoxic_voxels: int,
            muscle: float = 1.0) -> StudyResult:
    mask = np.zeros((4, 8, 8), bool)
    mask[1:3, 2:6, 2:6] = True
    sub = np.zeros_like(mask)
    sub.reshape(-1)[np.flatnonzero(mask)[:hypoxic_voxels]] = True
    facts = SuvFacts("BQML", "START", "BW", datetime(2024, 4, 5, 10), datetime(2024, 4, 5, 9),
                     3600.0, 2e8, 45721.0, "Cu-64", 70.0, 1.7, "F", 1.0)
    lesion = LesionResult(
        suv_max=suv_max, suv_mean=suv_max / 2, suv_peak=suv_max * 0.9, volume_ml=3.2,
        tm_max=suv_max / muscle, tm_mean=suv_max / 2 / muscle,
        hypoxic=[HypoxicSubvolume(1.5, 0.1 * hypoxic_voxels, hypoxic_voxels / 32, sub)],
        mask=mask, source="detected", label="Lesion 1", centroid_mm=centroid,
    )
    return StudyResult(
        "1.2.2", "1.2.2.1", ["1"], "64Cu-ATSM", "BW", facts,
        MuscleResult(muscle, 0.1, 50.0, np.zeros_like(mask), "thigh"), [lesion], 0.1,
        patient_id="P1", issuer_of_patient_id="H", frame_of_reference_uid="1.9",
    )


def test_compare_hand_computed() -> None:
    prior_result = _result(4.0, (10.0, 20.0, 30.0), hypoxic_voxels=8, muscle=1.0)
    prior_doc = prior_result.to_json()
    current = _result(6.0, (12.0, 20.0, 30.0), hypoxic_voxels=16, muscle=1.1)
    pair = Pair(
        StudyFacts("1.2.1", "1.2.1.1", "P1", "H", "64Cu-ATSM", datetime(2024, 3, 5, 10), None),
        StudyFacts.from_result_json(current.to_json()),
        PairKind.FOLLOW_UP,
    )
    rc = {"suv_max": RcInUse(0.25, "ref"), "suv_mean": RcInUse(0.6, "ref"),
          "muscle_suv_mean": RcInUse(0.25, "ref")}
    prior_masks = {(1, 1.5): prior_result.lesions[0].hypoxic[0].mask}
    comparison = compare(pair, prior_doc, current, rc, tolerance_mm=5, prior_masks=prior_masks)

    assert comparison.kind == PairKind.FOLLOW_UP
    assert comparison.interval_days == pytest.approx(31.0)
    assert comparison.muscle.relative == pytest.approx(0.1)
    assert comparison.muscle.exceeds is False
    [lesion] = comparison.lesions
    assert lesion.distance_mm == pytest.approx(2.0)
    changes = {c.figure: c for c in lesion.changes}
    assert changes["suv_max"].prior == 4.0 and changes["suv_max"].current == 6.0
    assert changes["suv_max"].relative == pytest.approx(0.5)
    assert changes["suv_max"].exceeds is True  # 1.5 > 1.25
    assert changes["suv_mean"].exceeds is False  # 1.5 < 1.6
    assert changes["suv_peak"].exceeds is None  # no RC given for SUVpeak
    assert changes["tm_max"].current == pytest.approx(6.0 / 1.1)
    [hyp] = lesion.hypoxic
    assert hyp.volume.prior == pytest.approx(0.8) and hyp.volume.current == pytest.approx(1.6)
    assert hyp.fraction.relative == pytest.approx(1.0)
    assert hyp.dice == pytest.approx(2 * 8 / (8 + 16))  # the first 8 voxels are shared
    assert comparison.unmatched_current == [] and comparison.unmatched_prior == []

    far = compare(pair, prior_doc, current, rc, tolerance_mm=1.5)
    assert far.lesions == [] and far.unmatched_current == [1] and far.unmatched_prior == [1]
    unaligned = compare(pair, prior_doc, current, rc, alignment=NOT_ALIGNED, aligned=False)
    assert unaligned.lesions == [] and unaligned.alignment == NOT_ALIGNED
    assert unaligned.muscle.prior == 1.0  # the study-level figure is still compared


def test_centroid_in_patient_coordinates() -> None:
    grid = sitk.Image(8, 6, 4, sitk.sitkUInt8)  # x 8, y 6, z 4
    grid.SetSpacing((2.0, 3.0, 4.0))
    grid.SetOrigin((-10.0, 5.0, 100.0))
    mask = np.zeros((4, 6, 8), bool)
    mask[2, 1, 3] = mask[2, 1, 5] = True  # slice 2, row 1, columns 3 and 5
    assert centroid_mm(mask, grid) == pytest.approx((-10 + 4 * 2.0, 5 + 3.0, 100 + 8.0))
    assert centroid_mm(np.zeros_like(mask), grid) is None


def test_rigid_registration_recovers_a_shift_and_moves_masks() -> None:
    study = make_study(field_of_view="pelvis")
    pet = load_pet_suv(study.pet)
    ct = resample_to(load_ct_hu(study.ct), pet.suv, CT_AIR_HU)
    shift = (12.0, -8.0, 9.0)
    moved = sitk.Image(ct)  # the "prior": the same anatomy with coordinates shifted
    moved.SetOrigin(tuple(o + s for o, s in zip(ct.GetOrigin(), shift, strict=True)))
    transform, _metric = register_rigid(ct, moved)
    np.testing.assert_allclose(transform.GetTranslation(), shift, atol=1.5)
    to_prior = point_mapper(transform)
    assert to_prior is not None
    np.testing.assert_allclose(to_prior((0.0, 0.0, 0.0)), shift, atol=1.5)

    # The tumour mask on the shifted grid comes back onto the original grid.
    prior_grid = sitk.Image(pet.suv)
    prior_grid.SetOrigin(moved.GetOrigin())
    back = resample_mask(study.truth.tumour_mask, prior_grid, pet.suv, transform)
    score = dice(back, study.truth.tumour_mask)
    assert score is not None and score > 0.8
    same = resample_mask(study.truth.tumour_mask, pet.suv, pet.suv)
    assert np.array_equal(same, study.truth.tumour_mask)


def test_scan_interval_uses_scan_times() -> None:
    a = StudyFacts("a", "s", "P", "", "x", datetime(2024, 1, 1), None)
    b = StudyFacts("b", "s", "P", "", "x", datetime(2024, 1, 1) + timedelta(hours=36), None)
    assert Pair(a, b, PairKind.TEST_RETEST).interval_days == pytest.approx(1.5)
