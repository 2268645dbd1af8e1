"""Retention: the APScheduler job purges studies whose results were all delivered.

``hypoxnode serve`` sends its results to a pynetdicom storage SCP (a real second AE); with a
retention of about a second the delivered study's instances, results and rows disappear. A
study whose results could not be delivered is kept.
"""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

from service.synthetic import make_study, write_study
from tests.peers import free_port, result_object_count, stays, storescu, wait_for
from tests.reliability import http_json, index_rows, start_test_node

RETENTION_DAYS = 1.5 / 86400  # 1.5 s


def _sections(pacs_port: int, retention_days: float | None) -> str:
    retention = (f"delivered_after_days = {retention_days}\n" if retention_days is not None
                 else "")
    return f"""
[retention]
{retention}check_interval_seconds = 0.5
[[destinations]]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
"""


def _http_status(port: int, path: str) -> int:
    try:
        http_json(port, path)
        return 200
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_delivered_study_is_purged_after_the_retention_time(
    tmp_path: Path, pacs: tuple[int, list[str]]
) -> None:
    pacs_port, received = pacs
    study = make_study(field_of_view="pelvis", seed=41, patient_id="RETAIN")
    files = write_study(study, tmp_path / "scanner")
    study_uid = str(study.pet[0].StudyInstanceUID)
    node = start_test_node(tmp_path / "node", sections=_sections(pacs_port, RETENTION_DAYS))
    try:
        assert storescu(files, node.port, node.ae_title).returncode == 0
        assert node.http_port is not None
        port = node.http_port
        instances = node.data_dir / "instances" / study_uid
        objects: list[int] = []

        def delivered() -> bool:
            info = http_json(port, f"/api/studies/{study_uid}")
            if info["state"] != "done":
                return False
            objects[:] = [result_object_count(info["result"])]
            return len(received) == objects[0]

        wait_for(delivered, 90, "every result delivered to the PACS")
        delivered_at = time.monotonic()
        wait_for(lambda: _http_status(port, f"/api/studies/{study_uid}") == 404, 30,
                 "the delivered study to be purged")
        purged_after = time.monotonic() - delivered_at
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    assert purged_after >= 1.0  # not before the retention time
    assert not instances.exists()
    assert not (node.data_dir / "results" / study_uid).exists()
    for table in ("instances", "results", "exports", "studies"):
        assert index_rows(node.data_dir, f"SELECT * FROM {table}") == [], table
    purged = f"purged study {study_uid}: {len(files)} instance(s), {objects[0]} result object(s)"
    assert purged in node.log()


def test_undelivered_study_is_kept(tmp_path: Path) -> None:
    study = make_study(field_of_view="pelvis", seed=42, patient_id="KEEP")
    files = write_study(study, tmp_path / "scanner")
    study_uid = str(study.pet[0].StudyInstanceUID)
    nobody = free_port()  # a PACS that is down: the results stay pending
    node = start_test_node(tmp_path / "node", sections=_sections(nobody, RETENTION_DAYS))
    try:
        assert storescu(files, node.port, node.ae_title).returncode == 0
        assert node.http_port is not None
        port = node.http_port
        wait_for(lambda: http_json(port, f"/api/studies/{study_uid}")["state"] == "done", 90,
                 "the study to be processed")
        # two retention times and several purge runs: an undelivered study is never purged
        stays(lambda: http_json(port, f"/api/studies/{study_uid}")["state"] == "done", 3.0,
              "the undelivered study staying (not purged)")
        info = http_json(port, f"/api/studies/{study_uid}")
    finally:
        assert node.stop() == 0
    assert info["state"] == "done"
    assert {e["state"] for e in info["exports"]} == {"pending"}
    assert len(index_rows(node.data_dir, "SELECT * FROM instances")) == len(files)
