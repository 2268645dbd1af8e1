"""Studies that cannot be quantified: one clear reason, visible; the node keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from service.synthetic import SyntheticStudy, make_study, write_study
from tests.peers import REPO, echoscu, storescu, wait_for
from tests.reliability import start_test_node


def _drop_weight(pet: Dataset) -> None:
    del pet.PatientWeight


def _drop_dose(pet: Dataset) -> None:
    del pet.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose


def _drop_injection_time(pet: Dataset) -> None:
    item = pet.RadiopharmaceuticalInformationSequence[0]
    for keyword in ("RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime"):
        if keyword in item:
            delattr(item, keyword)


def _injection_after_scan(pet: Dataset) -> None:
    item = pet.RadiopharmaceuticalInformationSequence[0]
    item.RadiopharmaceuticalStartDateTime = pet.SeriesDate + "235959"
    if "RadiopharmaceuticalStartTime" in item:
        del item.RadiopharmaceuticalStartTime


# (how to break the PET header, words the reason must contain)
BROKEN: dict[str, tuple[Callable[[Dataset], None], str]] = {
    "no weight": (_drop_weight, "PatientWeight"),
    "no dose": (_drop_dose, "RadionuclideTotalDose"),
    "no injection time": (_drop_injection_time, "RadiopharmaceuticalStart"),
    "injection after scan": (_injection_after_scan, "uptake"),
}


def _broken_study(name: str, seed: int) -> SyntheticStudy:
    study = make_study(field_of_view="pelvis", seed=seed, patient_id=f"BROKEN{seed}")
    breaker, _ = BROKEN[name]
    for pet in study.pet:
        breaker(pet)
    return study


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_quantify_refuses_with_exit_2_and_the_reason(tmp_path: Path, name: str) -> None:
    study = _broken_study(name, seed=10)
    write_study(study, tmp_path)
    run = subprocess.run([sys.executable, "-m", "service", "quantify", str(tmp_path), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    output = json.loads(run.stdout)
    assert set(output) == {"error"}
    assert BROKEN[name][1].lower() in output["error"].lower()


def _api(http_port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=10) as response:
        body = response.read()
    return json.loads(body) if path.startswith("/api") else body.decode()


@pytest.mark.e2e
def test_node_marks_each_refused_study_failed_and_keeps_serving(tmp_path: Path) -> None:
    node = start_test_node(tmp_path / "node")
    port, http_port = node.port, node.http_port
    assert http_port is not None
    try:
        expected = {}
        for seed, name in enumerate(sorted(BROKEN), start=20):
            study = _broken_study(name, seed)
            files = write_study(study, tmp_path / name.replace(" ", "_"))
            assert storescu(files, port, "HYPOXNODE").returncode == 0
            expected[str(study.pet[0].StudyInstanceUID)] = BROKEN[name][1]
        good = make_study(field_of_view="pelvis", seed=99)
        good_uid = str(good.pet[0].StudyInstanceUID)
        assert storescu(write_study(good, tmp_path / "good"), port, "HYPOXNODE").returncode == 0

        def all_settled() -> bool:
            states = {s["study_instance_uid"]: s["state"] for s in _api(http_port, "/api/studies")}
            return len(states) == 5 and all(v in ("done", "failed") for v in states.values())

        wait_for(all_settled, 180, "every study processed or refused")
        for study_uid, words in expected.items():
            info = _api(http_port, f"/api/studies/{study_uid}")
            assert info["state"] == "failed"
            assert words.lower() in info["error"].lower(), info["error"]
            assert info["results"] == [] and info["exports"] == []
            page = _api(http_port, f"/studies/{study_uid}")
            assert "Not quantified" in page
        assert _api(http_port, f"/api/studies/{good_uid}")["state"] == "done"
        assert echoscu(port, "HYPOXNODE")
    finally:
        assert node.stop() == 0
    log = node.log()
    for study_uid in expected:
        assert f"study {study_uid} not quantified" in log
