"""Delivery to a real Orthanc that is down, or that refuses the node: retried, or failed visibly."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from service.synthetic import make_study, write_study
from tests.peers import (
    free_port,
    result_object_count,
    start_node,
    start_orthanc,
    storescu,
    wait_for,
)
from tests.reliability import http_json

pytestmark = pytest.mark.e2e


def _config(data_dir: Path, port: int, http_port: int, pacs_port: int, *,
            give_up_s: float = 3600.0) -> str:
    return f"""
[node]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
[study]
stable_seconds = 1
check_interval_seconds = 0.5
[export]
check_interval_seconds = 0.5
retry_initial_seconds = 2
retry_max_seconds = 8
give_up_after_seconds = {give_up_s}
[http]
port = {http_port}
[[destinations]]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {pacs_port}
"""


def _page(http_port: int, study_uid: str) -> str:
    url = f"http://127.0.0.1:{http_port}/studies/{study_uid}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_pacs_down_then_up_receives_everything_without_anyone_acting(tmp_path: Path) -> None:
    study = make_study(field_of_view="pelvis", seed=3)
    study_uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    # Hold the PACS port bound but not listening during the outage: connections are refused
    # and nothing else on the machine can take the port meanwhile.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    pacs_port = int(reserved.getsockname()[1])
    port, http_port = free_port(), free_port()
    node = start_node(tmp_path / "node",
                      _config(tmp_path / "node" / "data", port, http_port, pacs_port), port)
    pacs = None
    try:
        assert storescu(files, port, "HYPOXNODE").returncode == 0

        def failed_attempts() -> bool:
            info = http_json(http_port, f"/api/studies/{study_uid}")
            exports = info["exports"]
            return info["state"] == "done" and len(exports) == result_object_count(
                info["result"]) and all(e["attempts"] >= 2 for e in exports)

        wait_for(failed_attempts, 120, "two failed export attempts while the PACS is down")
        info = http_json(http_port, f"/api/studies/{study_uid}")
        assert info["state"] == "done"
        for export in info["exports"]:
            assert export["state"] == "pending"
            assert "could not associate" in export["last_error"]
        assert "could not associate" in _page(http_port, study_uid)

        # the outage lasts as long as two failed attempts took; then the PACS comes up
        reserved.close()
        pacs = start_orthanc(tmp_path / "orthanc", dicom_port=pacs_port)

        segs = result_object_count(info["result"]) - 2

        def delivered() -> bool:
            found = pacs.instances_by_modality()  # type: ignore[union-attr]
            return [len(found.get(m, [])) for m in ("SEG", "SR", "OT")] == [segs, 1, 1]

        wait_for(delivered, 120, "SEG, SR and summary in Orthanc after it came up")
        wait_for(lambda: all(e["state"] == "sent"
                             for e in http_json(http_port, f"/api/studies/{study_uid}")["exports"]),
                 30, "exports recorded as sent")
    finally:
        reserved.close()
        node.stop()
        if pacs is not None:
            pacs.stop()


def test_pacs_refusing_the_node_shows_the_failure_with_its_reason(tmp_path: Path) -> None:
    pacs = start_orthanc(tmp_path / "orthanc", allow_any_store=False)
    study = make_study(field_of_view="pelvis", seed=4)
    study_uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    port, http_port = free_port(), free_port()
    node = start_node(tmp_path / "node", _config(tmp_path / "node" / "data", port, http_port,
                                                 pacs.dicom_port, give_up_s=5), port)
    try:
        assert storescu(files, port, "HYPOXNODE").returncode == 0

        def given_up() -> bool:
            info = http_json(http_port, f"/api/studies/{study_uid}")
            exports = info["exports"]
            return info["state"] == "done" and len(exports) == result_object_count(
                info["result"]) and all(e["state"] == "failed" for e in exports)

        wait_for(given_up, 120, "the refused exports to be marked failed")
        for export in http_json(http_port, f"/api/studies/{study_uid}")["exports"]:
            assert export["last_error"], export
            assert "ORTHANC" in export["last_error"]
        page = _page(http_port, study_uid)
        assert "failed" in page and "ORTHANC" in page
        assert pacs.instances_by_modality() == {}
    finally:
        node.stop()
        pacs.stop()
    assert "given up" in node.log()
