"""Start-up reconciliation after lost index rows, and an index the node cannot use.

Issue 20: after losing instance rows (what ``synchronous=NORMAL`` may lose in a power cut),
reconciliation deleted an acknowledged file it could not parse and sent every study back to
"receiving" (to be processed and exported again); a corrupt or read-only index stopped the node
with a bare traceback. ``hypoxnode serve`` runs as a subprocess; DCMTK ``storescu`` sends.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.synthetic import make_study, write_study
from tests.peers import REPO, free_port, stays, storescu, wait_for
from tests.reliability import http_json, index_rows, node_toml, start_test_node


def test_lost_rows_keep_a_done_study_done_and_unreadable_files_are_quarantined(
    tmp_path: Path,
) -> None:
    study = make_study(field_of_view="pelvis", seed=41, patient_id="LOSTROWS")
    files = write_study(study, tmp_path / "scanner")
    study_uid = str(study.pet[0].StudyInstanceUID)
    node = start_test_node(tmp_path / "node", stable_seconds=1.0)
    assert node.http_port is not None
    try:
        assert storescu(files, node.port, node.ae_title).returncode == 0

        def done() -> bool:
            info = http_json(node.http_port, f"/api/studies/{study_uid}")  # type: ignore[arg-type]
            assert info["state"] != "failed", info["error"]
            return bool(info["state"] == "done")

        wait_for(done, 90, "the study to be processed")
    finally:
        assert node.stop() == 0
    data = node.data_dir
    results_before = sorted(tuple(r) for r in index_rows(
        data, "SELECT sop_instance_uid, generation FROM results"))
    # A power cut loses the last instance rows (NORMAL) but not the study's state (FULL).
    db = sqlite3.connect(data / "index.sqlite")
    with db:
        lost = [r[0] for r in db.execute(
            "SELECT sop_instance_uid FROM instances ORDER BY received_at DESC LIMIT 10")]
        db.executemany("DELETE FROM instances WHERE sop_instance_uid = ?",
                       [(uid,) for uid in lost])
    db.close()
    # An acknowledged file that no longer parses (a torn sector) has no row either.
    torn = next(Path(p) for p in (r["path"] for r in index_rows(
        data, "SELECT path FROM instances")))
    torn_bytes = torn.read_bytes()[:200]
    torn.write_bytes(torn_bytes)
    with sqlite3.connect(data / "index.sqlite") as db:
        db.execute("DELETE FROM instances WHERE path = ?", (str(torn),))
    db.close()

    node = start_test_node(tmp_path / "node", stable_seconds=1.0, port=node.port,
                           http_port=node.http_port)
    try:
        http_port = node.http_port
        assert http_port is not None
        # longer than stable_seconds + a scheduler tick: reprocessing would have started
        stays(lambda: http_json(http_port, f"/api/studies/{study_uid}")["state"] == "done",
              2.5, "the study staying done (no new generation)")
        info = http_json(http_port, f"/api/studies/{study_uid}")
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/", timeout=10) as page:
            home = page.read().decode()
    finally:
        assert node.stop() == 0
    assert info["state"] == "done"
    assert info["generation"] == 1
    assert sorted(tuple(r) for r in index_rows(
        data, "SELECT sop_instance_uid, generation FROM results")) == results_before
    rows = {r[0] for r in index_rows(data, "SELECT sop_instance_uid FROM instances")}
    assert set(lost) <= rows
    assert len(rows) == len(files) - 1
    assert node.log().count(f"processing study {study_uid}") == 1  # not again
    # the torn file is kept, byte for byte, with its reason, and shown on the status page
    assert not torn.exists()
    kept = [p for p in (data / "quarantine").iterdir() if p.name.endswith(torn.name)]
    assert len(kept) == 1 and kept[0].read_bytes() == torn_bytes
    assert "unreadable" in (kept[0].parent / (kept[0].name + ".reason.txt")).read_text()
    assert "Quarantined instance files (1)" in home and kept[0].name in home
    assert "quarantined as" in node.log()


def _serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: not even root may write the file (skips where the file system or the
    user cannot set the attribute)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("chattr +i not permitted here: cannot make a file read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.parametrize("damage", ["corrupt", "read-only"])
def test_an_unusable_index_stops_the_node_with_one_clear_line(tmp_path: Path,
                                                              damage: str) -> None:
    data = tmp_path / "data"
    config = tmp_path / "hypoxnode.toml"
    config.write_text(node_toml(data, free_port()))
    data.mkdir()
    index = data / "index.sqlite"
    if damage == "corrupt":
        index.write_bytes(b"this is not an SQLite database\n" * 200)
        served = _serve_once(config)
    else:
        sqlite3.connect(index).close()
        with _immutable(index):
            served = _serve_once(config)
    output = served.stdout + served.stderr
    assert served.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "cannot start" in line]
    assert len(lines) == 1, output
    assert "cannot open the index" in lines[0] and str(index) in lines[0]
