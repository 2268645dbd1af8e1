"""Patient consistency and malformed attributes, in the worker's own function
(:func:`service.pipeline.processing.process_study`) and, for the status page, through the node.

Issue 20: a CT of another patient inside a PET study was quantified (muscle reference and
fused summary from the other patient's CT, results labelled with the PET's patient); a
PatientBirthDate written ``1961-03-05`` failed the whole study and put the birth date into an
ERROR log line and onto the status page.
"""

from __future__ import annotations

import logging
import urllib.request
import warnings
from pathlib import Path

import pydicom
import pytest

from service.config import load_config
from service.pipeline.processing import process_study
from service.synthetic import make_study, write_study
from tests.peers import storescu, wait_for
from tests.reliability import http_json, start_test_node

OTHER = {"PatientID": "OTHER7731", "PatientName": "Other^Person", "PatientBirthDate": "19450707"}


def _other_patient_ct(seed: int, **changes: str):  # type: ignore[no-untyped-def]
    study = make_study(field_of_view="pelvis", seed=seed, patient_id="PETPATIENT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the malformed ones written here
        for ds in study.ct:
            for keyword, value in changes.items():
                setattr(ds, keyword, value)
    return study


@pytest.mark.parametrize("changes", [OTHER, {"PatientSex": "M"}],
                         ids=["other-patient", "other-sex"])
def test_a_ct_of_another_patient_fails_the_study_and_nothing_is_quantified(
    tmp_path: Path, changes: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    study = _other_patient_ct(51, **changes)
    files = write_study(study, tmp_path / "scanner")
    config = load_config(None, node={"data_dir": tmp_path / "data"})
    with caplog.at_level(logging.DEBUG):
        outcome = process_study(config, str(study.pet[0].StudyInstanceUID),
                                [str(f) for f in files], 1)
    assert not outcome.ok
    assert outcome.result is None and outcome.outputs == []
    assert not (tmp_path / "data" / "results").exists() or not any(
        (tmp_path / "data" / "results").rglob("*.dcm"))
    assert outcome.error is not None
    assert "not of one patient" in outcome.error
    assert str(study.ct[0].SeriesInstanceUID) in outcome.error
    for keyword in changes:
        assert keyword in outcome.error
    for value in [*changes.values(), "PETPATIENT", "Synthetic", "19600101"]:
        assert value not in outcome.error  # names the attributes, never the values
        assert not any(value in r.getMessage() for r in caplog.records
                       if r.levelno > logging.DEBUG)


def test_the_same_patient_written_differently_is_one_patient(tmp_path: Path) -> None:
    """A birth date with separators and a name in other case are the same identity."""
    study = _other_patient_ct(52, PatientBirthDate="1960-01-01",
                              PatientName="SYNTHETIC^PATIENT^^")
    files = write_study(study, tmp_path / "scanner")
    config = load_config(None, node={"data_dir": tmp_path / "data"})
    outcome = process_study(config, str(study.pet[0].StudyInstanceUID),
                            [str(f) for f in files], 1)
    assert outcome.ok, outcome.error


def test_malformed_dates_do_not_fail_the_study_nor_reach_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = make_study(field_of_view="pelvis", seed=53)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while the test writes them
        for ds in study.pet + study.ct:
            ds.PatientBirthDate = "1961-03-05"
            ds.StudyDate = "2024/01/02"
            ds.StudyTime = "10:30:00"
            ds.ReferringPhysicianName = "x" * 80  # longer than PN allows
    files = write_study(study, tmp_path / "scanner")
    config = load_config(None, node={"data_dir": tmp_path / "data"})
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = process_study(config, str(study.pet[0].StudyInstanceUID),
                                [str(f) for f in files], 1)
    assert outcome.ok, outcome.error
    above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    for value in ("1961-03-05", "2024/01/02", "10:30:00"):
        assert not any(value in m for m in above_debug), above_debug
        assert not any(value in str(w.message) for w in caught)
    seg = pydicom.dcmread(next(p for kind, _uid, p in outcome.outputs if kind == "SEG"))
    assert seg.PatientBirthDate == "19610305"  # the same date, in its standard form
    assert seg.StudyDate == "20240102" and seg.StudyTime == "103000"


def test_two_patient_study_shows_the_reason_on_the_status_page(tmp_path: Path) -> None:
    study = _other_patient_ct(54, **OTHER)
    files = write_study(study, tmp_path / "scanner")
    study_uid = str(study.pet[0].StudyInstanceUID)
    node = start_test_node(tmp_path / "node", stable_seconds=0.5)
    assert node.http_port is not None
    try:
        assert storescu(files, node.port, node.ae_title).returncode == 0
        wait_for(lambda: http_json(node.http_port, f"/api/studies/{study_uid}")[  # type: ignore[arg-type]
            "state"] == "failed", 60, "the study to fail")
        with urllib.request.urlopen(
                f"http://127.0.0.1:{node.http_port}/studies/{study_uid}", timeout=10) as page:
            detail = page.read().decode()
    finally:
        assert node.stop() == 0
    assert "not of one patient" in detail
    log = node.log()
    assert "not of one patient" in log
    for value in OTHER.values():
        assert value not in log
    assert "PETPATIENT" not in log
