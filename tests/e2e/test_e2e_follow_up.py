"""Follow-up end to end: ``hypoxnode serve`` pairs studies of one patient and reports changes.

Real peers: DCMTK storescu sends, the node runs as a subprocess, a real Orthanc receives.

1. A baseline and, 30 days later, a follow-up of one patient in one frame of reference, the
   follow-up's tumour 1.5x hotter: the follow-up's SR (fetched from Orthanc) holds the prior
   values and the changes, says the SUVmax change exceeds the repeatability coefficient, and
   dciodvfy reports no errors.
2. Two 64Cu-ATSM scans of one injection of another patient, 1 h and 20 h after it: the later
   one is reported as an early/delayed pair, in the SR (code and text) and in the API.
"""

from __future__ import annotations

import urllib.request
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from service.synthetic import SyntheticStudy, make_study, write_study
from tests.dicomcheck import dciodvfy_errors
from tests.peers import (
    NodeProcess,
    Orthanc,
    storescu,
    wait_for,
)
from tests.reliability import http_json
from tests.sr_reading import all_texts, measurement_groups

pytestmark = pytest.mark.e2e

FACTOR = 1.5
FRAME = "1.2.826.0.1.3680043.8.498.4242"
YES = ("SCT", "373066001")


def _process(node: NodeProcess, http_port: int, study: SyntheticStudy, folder: Path
             ) -> dict[str, Any]:
    """Send a study and wait until the node has quantified it; its API record."""
    sent = storescu(write_study(study, folder), node.port, node.ae_title)
    assert sent.returncode == 0, sent.stderr
    uid = str(study.pet[0].StudyInstanceUID)

    def done() -> bool:
        try:
            state = http_json(http_port, f"/api/studies/{uid}")["state"]
        except OSError:
            return False
        assert state != "failed", node.log()[-3000:]
        return bool(state == "done")

    wait_for(done, 60, f"study {uid} done")
    return dict(http_json(http_port, f"/api/studies/{uid}"))


def _sr_of(pacs: Orthanc, study_uid: str, tmp_path: Path) -> tuple[Dataset, Path]:
    def found() -> bool:
        return _fetch(pacs, study_uid, tmp_path) is not None

    wait_for(found, 60, f"the SR of study {study_uid} in Orthanc")
    result = _fetch(pacs, study_uid, tmp_path)
    assert result is not None
    return result


def _fetch(pacs: Orthanc, study_uid: str, tmp_path: Path) -> tuple[Dataset, Path] | None:
    for instance in pacs.instances_by_modality().get("SR", []):
        data = pacs.get_bytes(f"/instances/{instance}/file")
        sr = pydicom.dcmread(BytesIO(data))
        if sr.StudyInstanceUID == study_uid:
            path = tmp_path / f"sr-{instance}.dcm"
            path.write_bytes(data)
            return sr, path
    return None


def _code_items(sr: Dataset) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Concept name -> values of every CODE item in the SR."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def walk(items: Any) -> None:
        for item in items or []:
            if item.get("ValueType") == "CODE":
                name, value = item.ConceptNameCodeSequence[0], item.ConceptCodeSequence[0]
                out.setdefault((name.CodingSchemeDesignator, name.CodeValue), []).append(
                    (value.CodingSchemeDesignator, value.CodeValue))
            walk(item.get("ContentSequence"))

    walk(sr.ContentSequence)
    return out


def test_follow_up_and_early_delayed_pairs(
    tmp_path: Path, node_and_pacs: tuple[NodeProcess, Orthanc, int]
) -> None:
    node, pacs, http_port = node_and_pacs
    injected = datetime(2024, 3, 5, 9, 0)
    baseline = make_study(patient_id="FOLLOW1", seed=21, frame_of_reference_uid=FRAME,
                          injection_time=injected)
    follow_up = make_study(patient_id="FOLLOW1", seed=22, frame_of_reference_uid=FRAME,
                           injection_time=injected + timedelta(days=30),
                           tumour_uptake_factor=FACTOR)
    first = _process(node, http_port, baseline, tmp_path / "baseline")
    assert "comparison" not in first["result"]
    later = _process(node, http_port, follow_up, tmp_path / "follow-up")
    comparison = later["result"]["comparison"]
    assert comparison["kind"] == "follow_up"
    assert comparison["prior_study_instance_uid"] == baseline.pet[0].StudyInstanceUID
    assert comparison["interval_days"] == pytest.approx(30.0)

    sr, path = _sr_of(pacs, str(follow_up.pet[0].StudyInstanceUID), tmp_path)
    assert dciodvfy_errors(path) == []
    groups = {g.tracking_identifier: g for g in measurement_groups(sr)}
    lesion = groups["Lesion 1 vs prior Lesion 1"]
    prior_max = lesion.find(("99HYPOX", "SUVMAX-PRIOR"))[0].value
    assert prior_max == pytest.approx(baseline.truth.suv_max, rel=0.01)
    assert lesion.find(("99HYPOX", "SUVMAX-CHG"))[0].value == pytest.approx(
        (FACTOR - 1) * baseline.truth.suv_max, rel=0.02)
    assert lesion.find(("99HYPOX", "SUVMAX-RELCHG"))[0].value == pytest.approx(50.0, abs=1.0)
    assert lesion.find(("99HYPOX", "SUVMAX-RC"))[0].value == pytest.approx(32.0)
    codes = _code_items(sr)
    assert codes[("99HYPOX", "SUVMAX-EXCRC")] == [YES]
    assert codes[("99HYPOX", "PAIRKIND")] == [("99HYPOX", "FOLLOWUP")]
    texts = all_texts(sr)
    assert any(t.startswith("SUVmax: prior") and "exceeds the repeatability coefficient" in t
               and "DOMAIN.md" in t for t in texts), texts

    # Early and delayed scans of one 64Cu-ATSM injection (another patient).
    early = make_study(patient_id="EARLYDELAY1", seed=31, frame_of_reference_uid=FRAME,
                       injection_time=injected, injection_to_scan_s=3600.0)
    delayed = make_study(patient_id="EARLYDELAY1", seed=32, frame_of_reference_uid=FRAME,
                         injection_time=injected, injection_to_scan_s=20 * 3600.0)
    _process(node, http_port, early, tmp_path / "early")
    record = _process(node, http_port, delayed, tmp_path / "delayed")
    pair = record["result"]["comparison"]
    assert pair["kind"] == "early_delayed"
    assert pair["interval_days"] == pytest.approx(19 / 24)
    assert pair["prior_study_instance_uid"] == early.pet[0].StudyInstanceUID
    sr, path = _sr_of(pacs, str(delayed.pet[0].StudyInstanceUID), tmp_path)
    assert dciodvfy_errors(path) == []
    assert _code_items(sr)[("99HYPOX", "PAIRKIND")] == [("99HYPOX", "EARLYDELAYED")]
    assert any("early and delayed scans of one injection" in t for t in all_texts(sr))

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/studies/"
                                f"{delayed.pet[0].StudyInstanceUID}", timeout=10) as response:
        page = response.read().decode()
    assert "data-kind='early_delayed'" in page
