"""Priors from PACS end to end: the prior is only in a real Orthanc, which is down at first.

A baseline of one patient is stored in Orthanc "PACS" only; the PACS is stopped. The follow-up
(30 days later, tumour 1.5x hotter) is sent to ``hypoxnode serve`` with ``[follow_up.pacs]``
on: its first SR reaches the results destination (a second Orthanc) without a comparison, and
the status page says the comparison is pending and why. The PACS is started again (same
storage, same port): the node finds the baseline (C-FIND), retrieves it (C-MOVE to itself),
quantifies it without sending its results, and processes the follow-up again; the second SR
names the baseline and carries its figures and the changes.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from service.synthetic import make_study, write_study
from tests.peers import Orthanc, free_port, start_orthanc, storescu, wait_for
from tests.reliability import destination_toml, http_json, start_test_node
from tests.sr_reading import all_texts, measurement_groups

pytestmark = pytest.mark.e2e

FACTOR = 1.5
FRAME = "1.2.826.0.1.3680043.8.498.4343"


def _srs(dest: Orthanc, study_uid: str) -> list[Dataset]:
    out = []
    for instance in dest.instances_by_modality().get("SR", []):
        sr = pydicom.dcmread(BytesIO(dest.get_bytes(f"/instances/{instance}/file")))
        if sr.StudyInstanceUID == study_uid:
            out.append(sr)
    return sorted(out, key=lambda ds: int(ds.InstanceNumber))


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = start_orthanc(tmp_path / "dest", ae_title="DEST")
    yield pacs
    pacs.stop()


def test_prior_retrieved_from_pacs_once_it_is_back(tmp_path: Path, dest: Orthanc) -> None:
    injected = datetime(2024, 3, 5, 9, 0)
    baseline = make_study(patient_id="PACSPRIOR1", seed=51, frame_of_reference_uid=FRAME,
                          injection_time=injected)
    follow_up = make_study(patient_id="PACSPRIOR1", seed=52, frame_of_reference_uid=FRAME,
                           injection_time=injected + timedelta(days=30),
                           tumour_uptake_factor=FACTOR)
    baseline_uid = str(baseline.pet[0].StudyInstanceUID)
    follow_up_uid = str(follow_up.pet[0].StudyInstanceUID)
    node_port = free_port()
    modalities: dict[str, list[Any]] = {"hypoxnode": ["HYPOXNODE", "127.0.0.1", node_port]}
    pacs_dir = tmp_path / "pacs"
    pacs = start_orthanc(pacs_dir, ae_title="PACS", modalities=modalities)
    try:
        stored = storescu(write_study(baseline, tmp_path / "baseline"), pacs.dicom_port, "PACS")
        assert stored.returncode == 0, stored.stderr
    finally:
        pacs.stop()
    pacs_port = pacs.dicom_port
    sections = destination_toml(dest.ae_title, dest.dicom_port) + f"""
[follow_up.pacs]
enabled = true
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
timeout_s = 5
retry_initial_seconds = 1
retry_max_seconds = 2
check_interval_seconds = 0.5
"""
    node = start_test_node(tmp_path / "node", port=node_port, sections=sections)
    assert node.http_port is not None
    http_port = node.http_port
    restarted: Orthanc | None = None
    try:
        sent = storescu(write_study(follow_up, tmp_path / "follow-up"), node.port, "HYPOXNODE")
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: len(_srs(dest, follow_up_uid)) == 1, 90, "the first SR at DEST")
        first = _srs(dest, follow_up_uid)[0]
        assert not [g for g in measurement_groups(first) if "vs prior" in g.tracking_identifier]

        def request() -> dict[str, Any]:
            requests = http_json(http_port, "/api/status")["priors_from_pacs"]
            return dict(next(r for r in requests if r["study_instance_uid"] == follow_up_uid))

        wait_for(lambda: request()["attempts"] >= 1, 30, "a failed PACS look-up")
        pending = request()
        assert pending["state"] == "pending"
        assert "comparison pending: PACS PACS@127.0.0.1" in pending["detail"]
        assert "unreachable" in pending["detail"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=10) as response:
            page = response.read().decode()
        assert "<table id=priors>" in page and "comparison pending" in page

        restarted = start_orthanc(pacs_dir, ae_title="PACS", dicom_port=pacs_port,
                                  modalities=modalities)
        wait_for(lambda: request()["state"] == "compared", 120,
                 "the prior retrieved, quantified and compared")
        assert request()["priors"] == [baseline_uid]
        wait_for(lambda: len(_srs(dest, follow_up_uid)) == 2, 60, "the second SR at DEST")
        record = http_json(http_port, f"/api/studies/{follow_up_uid}")
        assert record["result"]["comparison"]["prior_study_instance_uid"] == baseline_uid
        routed = {d["study_instance_uid"]: d for d in
                  http_json(http_port, "/api/status")["routing"]}
        assert routed[baseline_uid]["rule"] == "prior from PACS"
        assert routed[follow_up_uid]["rule"] == "default"
    finally:
        exit_code = node.stop()
        if restarted is not None:
            restarted.stop()
    assert exit_code == 0, node.log()[-3000:]

    second = _srs(dest, follow_up_uid)[1]
    assert any(baseline_uid in text for text in all_texts(second))
    assert f"Note: prior study {baseline_uid} retrieved from PACS PACS by this node" in \
        all_texts(second)
    groups = {g.tracking_identifier: g for g in measurement_groups(second)}
    lesion = groups["Lesion 1 vs prior Lesion 1"]
    assert lesion.find(("99HYPOX", "SUVMAX-PRIOR"))[0].value == pytest.approx(
        baseline.truth.suv_max, rel=0.01)
    assert lesion.find(("99HYPOX", "SUVMAX-RELCHG"))[0].value == pytest.approx(50.0, abs=1.0)
    # The prior's own results stay at the node: nothing of it reaches the destination.
    assert _srs(dest, baseline_uid) == []
