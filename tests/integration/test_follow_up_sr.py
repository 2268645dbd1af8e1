"""A follow-up compared with its baseline in the worker's code path, and the SR that reports it.

Baseline and follow-up are synthetic studies of one patient; the follow-up's tumour is 1.5x
hotter. The comparison goes through :func:`service.pipeline.follow_up.compare_with_prior` (prior
read
from files, SEG included), the SR is written, read back and checked by dciodvfy.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pydicom
import pytest

from quant.longitudinal.comparison import NOT_ALIGNED, RcInUse
from quant.longitudinal.pairing import PairKind
from quant.pipeline import QuantifiedStudy, quantify
from service.config import load_config
from service.pipeline.follow_up import REGISTERED, FollowUpInput, PriorCandidate, compare_with_prior
from service.pipeline.processing import build_result_objects, encode
from service.synthetic import make_study, write_study
from tests.dicomcheck import dciodvfy_errors, pixelmed_errors
from tests.sr_reading import all_texts, measurement_groups

FOR = "1.2.826.0.1.3680043.8.498.999"
FACTOR = 1.5


def _baseline(tmp_path: Path, frame: str | None = FOR) -> tuple[QuantifiedStudy, PriorCandidate]:
    config = load_config()
    study = make_study(patient_id="FU1", seed=11, frame_of_reference_uid=frame)
    paths = write_study(study, tmp_path / "baseline")
    quantified = quantify(study.pet, study.ct, [], config.quant.to_settings())
    seg_paths = []  # the regions SEG and the SEG of each hypoxic level
    for k, (kind, seg) in enumerate(build_result_objects(quantified, config, 1).by_kind()):
        if kind == "SEG":
            seg_paths.append(tmp_path / f"baseline-seg{k}.dcm")
            seg_paths[-1].write_bytes(encode(seg))
    candidate = PriorCandidate(quantified.result.to_json(), [str(p) for p in paths],
                               [str(p) for p in seg_paths])
    return quantified, candidate


def _follow_up(frame: str | None = FOR, **kwargs: object) -> QuantifiedStudy:
    study = make_study(patient_id="FU1", seed=12, frame_of_reference_uid=frame,
                       injection_time=datetime(2024, 4, 9, 9, 0),
                       tumour_uptake_factor=FACTOR, **kwargs)  # type: ignore[arg-type]
    return quantify(study.pet, study.ct, [], load_config().quant.to_settings())


def test_follow_up_sr_holds_prior_values_changes_and_rc(tmp_path: Path) -> None:
    config = load_config()
    baseline, candidate = _baseline(tmp_path)
    current = _follow_up()
    rc = {"suv_max": RcInUse(0.32, "reference value X"), "tm_max": RcInUse(0.60, "site Y")}
    comparison = compare_with_prior(current, FollowUpInput([candidate], rc), config.follow_up)
    assert comparison is not None
    assert comparison.kind == PairKind.FOLLOW_UP
    assert comparison.interval_days == pytest.approx(35.0)
    [lesion] = comparison.lesions
    changes = {c.figure: c for c in lesion.changes}
    assert changes["suv_max"].prior == pytest.approx(baseline.result.lesions[0].suv_max)
    assert changes["suv_max"].relative == pytest.approx(FACTOR - 1, abs=0.01)
    assert changes["suv_max"].exceeds is True  # +50% > 32%
    assert changes["tm_max"].exceeds is False  # +50% < 60%
    assert changes["suv_peak"].exceeds is None
    for hyp in lesion.hypoxic:
        # The hotter tumour's sub-volume contains the baseline's (same anatomy, same frame):
        # Dice = 2 |prior| / (|prior| + |current|).
        small, large = sorted((hyp.volume.prior, hyp.volume.current))
        assert hyp.dice == pytest.approx(2 * small / (small + large), rel=1e-6)
    assert any(h.dice is not None and h.dice < 0.5 for h in lesion.hypoxic)  # T/M >= 2 grew

    objects = build_result_objects(current, config, 1, None, comparison)
    path = tmp_path / "sr.dcm"
    path.write_bytes(encode(objects.sr))
    assert dciodvfy_errors(path) == []
    # the comparison groups are TID 1411 groups on the current regions (they were TID 1501
    # groups without region: 15 PixelMed errors), each with a point for OHIF's SR viewport
    assert pixelmed_errors(path, "DicomSRValidator") == []
    sr = pydicom.dcmread(path)
    groups = {g.tracking_identifier: g for g in measurement_groups(sr)}
    segs = {str(seg.SOPInstanceUID) for kind, seg in objects.by_kind() if kind == "SEG"}
    for group in groups.values():
        assert group.seg_uid in segs and group.segment_numbers, group.tracking_identifier
    lesion_group = groups["Lesion 1 vs prior Lesion 1"]
    prior_max = lesion_group.find(("99HYPOX", "SUVMAX-PRIOR"))
    assert prior_max[0].value == pytest.approx(changes["suv_max"].prior)
    relative = lesion_group.find(("99HYPOX", "SUVMAX-RELCHG"))
    assert relative[0].value == pytest.approx(100 * (FACTOR - 1), abs=1)
    assert relative[0].unit == "%"
    texts = all_texts(sr)
    assert any("SUVmax" in t and "exceeds the repeatability coefficient 32.0%" in t
               and "reference value X" in t for t in texts), texts
    assert any("T/M max" in t and "is within" in t and "site Y" in t for t in texts)
    assert any(t.startswith("Pair kind: follow-up (follow_up)") and
               baseline.result.study_instance_uid in t for t in texts)
    context = groups["Comparison with prior study"]
    assert context.find(("99HYPOX", "SCANINTVL"))[0].value == pytest.approx(35.0)
    schemes = [str(i.CodingSchemeDesignator) for i in sr.CodingSchemeIdentificationSequence]
    assert "99HYPOX" in schemes


def test_different_frames_are_registered_or_not_matched(tmp_path: Path) -> None:
    config = load_config()
    _, candidate = _baseline(tmp_path, frame="1.2.826.0.1.3680043.8.498.1")
    current = _follow_up(frame="1.2.826.0.1.3680043.8.498.2")
    registered = compare_with_prior(current, FollowUpInput([candidate], {}), config.follow_up)
    assert registered is not None and registered.alignment == REGISTERED
    assert len(registered.lesions) == 1 and registered.lesions[0].distance_mm < 3.0

    no_registration = config.follow_up.model_copy(update={"register_different_frames": False})
    plain = compare_with_prior(current, FollowUpInput([candidate], {}), no_registration)
    assert plain is not None
    assert plain.alignment == NOT_ALIGNED and plain.lesions == []
    objects = build_result_objects(current, config, 1, None, plain)
    path = tmp_path / "sr-unmatched.dcm"
    path.write_bytes(encode(objects.sr))
    assert dciodvfy_errors(path) == []
    assert any(NOT_ALIGNED in t for t in all_texts(pydicom.dcmread(path)))
