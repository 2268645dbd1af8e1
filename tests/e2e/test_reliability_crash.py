"""Durability: nothing acknowledged is ever lost, whatever moment the node is killed at.

DCMTK ``storescu`` sends a study of 672 instances (whole-body PET, its CT, and a
non-attenuation-corrected PET series) while ``hypoxnode serve`` is SIGKILLed at random moments,
at least ten times, restarted each time; the sender resends whatever got no success status.
Afterwards every instance that ever got a success is present and readable, and the study is
processed exactly once, with all its instances.

Also here: start-up reconciliation of index and disk, and a late series that makes a done study
processed again, superseding the earlier results.
"""

from __future__ import annotations

import copy
import random
import shutil
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from service.synthetic import make_study, write_study
from tests.peers import (
    NodeProcess,
    require_tool,
    result_object_count,
    stays,
    storescu,
    wait_for,
)
from tests.reliability import http_json, index_rows, start_test_node, store_results

KILL_ROUNDS = 12
STABLE_SECONDS = 12.0
"""Quiet time before processing: longer than a kill, a restart and the sender's retry."""


@pytest.fixture(autouse=True)
def _storescu_without_nagle(monkeypatch: pytest.MonkeyPatch) -> None:
    # DCMTK honours $TCP_NODELAY; without it each C-STORE waits ~40 ms on a delayed ACK.
    monkeypatch.setenv("TCP_NODELAY", "1")


def _nac_series(datasets: list[pydicom.Dataset], directory: Path) -> list[Path]:
    """A non-attenuation-corrected copy of the PET series, as scanners send alongside."""
    directory.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    paths = []
    for number, original in enumerate(datasets):
        ds = copy.deepcopy(original)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = "PET NAC"
        ds.SeriesNumber = 3
        ds.CorrectedImage = ["DECY", "RADL"]
        ds.AttenuationCorrectionMethod = ""
        path = directory / f"NAC{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


class _Sender:
    """``storescu -v`` sending ``files`` to ``node``, its output read line by line as it comes."""

    def __init__(self, files: list[Path], node: NodeProcess) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [require_tool("storescu"), "-v", "-nh", "-aet", "SCANNER", "-aec",
             node.ae_title, "127.0.0.1", str(node.port), *map(str, files)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_until(self, responses: int) -> None:
        """Until the association is requested (``responses`` -1), accepted (0), or that many
        store responses were received; or the sender ended."""
        def reached() -> bool:
            text = "".join(self.lines)
            if responses < 0:
                seen = "Requesting Association" in text
            elif responses == 0:
                seen = "Association Accepted" in text
            else:
                seen = text.count("Received Store Response") >= responses
            return seen or self.process.poll() is not None

        wait_for(reached, 120, f"storescu to reach {responses} store responses", 0.01)

    def finish(self) -> str:
        """The sender's whole output once it has ended."""
        self.process.wait(timeout=300)
        self._reader.join(30)
        return "".join(self.lines)


def _restart(node: NodeProcess) -> NodeProcess:
    return start_test_node(node.log_path.parent, stable_seconds=STABLE_SECONDS,
                           port=node.port, http_port=node.http_port)


def test_sigkill_while_receiving_loses_nothing_acknowledged(tmp_path: Path) -> None:
    study = make_study(field_of_view="whole_body", seed=11, patient_id="CRASH")
    files = write_study(study, tmp_path / "scanner")
    files += _nac_series(study.pet, tmp_path / "scanner" / "nac")
    assert len(files) >= 500
    uid_of = {str(path): _sop_uid(path) for path in files}
    study_uid = str(study.pet[0].StudyInstanceUID)
    rng = random.Random(6)

    workdir = tmp_path / "node"
    node = start_test_node(workdir, stable_seconds=STABLE_SECONDS)
    acknowledged: set[str] = set()
    pending = list(files)
    kills = 0
    rounds = 0
    try:
        while pending or kills < KILL_ROUNDS:
            rounds += 1
            assert rounds <= KILL_ROUNDS + 10, f"{len(pending)} instances never acknowledged"
            # Once everything was acknowledged, keep killing while duplicates are sent, so the
            # number of kills does not depend on how fast the node receives.
            sending = pending or files
            sender = _Sender(sending, node)
            if kills < KILL_ROUNDS:
                # Killed while the association is being set up, just after it is accepted,
                # or after a random number of acknowledged instances (mid-transfer).
                sender.wait_until(rng.randint(-1, 40))
                node.kill()
                kills += 1
            answered = store_results(sender.finish())
            acknowledged |= {uid_of[f] for f, status in answered.items() if status == "Success"}
            pending = [f for f in pending if answered.get(str(f)) != "Success"]
            if node.process.poll() is not None:
                node = _restart(node)
        assert node.http_port is not None
        port = node.http_port

        def processed() -> bool:
            info = http_json(port, f"/api/studies/{study_uid}")
            assert info["state"] != "failed", info["error"]
            return bool(info["state"] == "done")

        wait_for(processed, 180, "the study to be processed after the crashes")
        info = http_json(port, f"/api/studies/{study_uid}")
    finally:
        exit_code = node.stop()
    assert exit_code == 0, node.log()[-3000:]

    rows = index_rows(node.data_dir, "SELECT sop_instance_uid, path FROM instances")
    stored = {row["sop_instance_uid"]: row["path"] for row in rows}
    print(f"\ncrash test: {kills} SIGKILLs in {rounds} rounds; {len(acknowledged)} instances"
          f" acknowledged, {len(stored)} present; generation {info['generation']},"
          f" processed_count {info['processed_count']};"
          f" start-up logs: {node.log().count('were not in the index')} orphan recoveries,"
          f" {node.log().count('partial file(s)')} tmp clean-ups")
    assert kills >= 10
    assert acknowledged == set(uid_of.values())
    assert acknowledged <= set(stored)
    for sop_uid in acknowledged:
        ds = pydicom.dcmread(stored[sop_uid])
        assert str(ds.SOPInstanceUID) == sop_uid
        assert ds.pixel_array.shape == (int(ds.Rows), int(ds.Columns))
    assert not list((node.data_dir / "tmp").iterdir())
    # Processed exactly once (one generation, one set of results), with every instance.
    assert info["generation"] == 1
    assert info["processed_count"] == len(files)
    results = index_rows(node.data_dir, "SELECT kind, generation FROM results")
    segs = result_object_count(info["result"]) - 2  # the regions SEG and one per hypoxic level
    assert sorted((r["kind"], r["generation"]) for r in results) == [
        ("SC", 1), *[("SEG", 1)] * segs, ("SR", 1)
    ]
    assert node.log().count(f"processing study {study_uid}") == 1


def test_startup_reconciles_disk_and_index(tmp_path: Path) -> None:
    study = make_study(field_of_view="pelvis", seed=21, patient_id="RECONCILE")
    files = write_study(study, tmp_path / "scanner")
    study_uid = str(study.pet[0].StudyInstanceUID)
    workdir = tmp_path / "node"
    node = start_test_node(workdir, stable_seconds=600)  # nothing processed here
    try:
        assert storescu(files[:-2], node.port, node.ae_title).returncode == 0
    finally:
        node.kill()  # as a crash would
    data = node.data_dir
    indexed = {r["sop_instance_uid"]: r["path"] for r in index_rows(
        data, "SELECT sop_instance_uid, path FROM instances")}
    assert len(indexed) == len(files) - 2

    # A crash between the rename and the index commit leaves a complete unindexed file.
    orphans = []
    for path in files[-2:]:
        ds = pydicom.dcmread(path)
        target = (data / "instances" / study_uid / str(ds.SeriesInstanceUID)
                  / f"{ds.SOPInstanceUID}.dcm")
        shutil.copyfile(path, target)
        orphans.append(str(ds.SOPInstanceUID))
    # Junk where instances live, a partial write in tmp/, an indexed file that vanished.
    junk = data / "instances" / study_uid / "1.2.3" / "not-dicom.dcm"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"\x00" * 300)
    (data / "tmp" / "abc.part").write_bytes(b"partial")
    lost_uid, lost_path = next(iter(indexed.items()))
    Path(lost_path).unlink()

    node = _restart_with(node, stable_seconds=600)
    try:
        rows = {r["sop_instance_uid"]: r["path"] for r in index_rows(
            data, "SELECT sop_instance_uid, path FROM instances")}
    finally:
        assert node.stop() == 0
    assert set(orphans) <= set(rows)
    assert lost_uid not in rows
    assert len(rows) == len(files) - 1
    assert not junk.exists()  # moved, never deleted (issue 20): it may have been acknowledged
    assert [p.read_bytes() for p in (data / "quarantine").glob("*-not-dicom.dcm")] == [
        b"\x00" * 300]
    assert list((data / "tmp").iterdir()) == []
    assert "2 indexed again (2 of them make their study due), 1 quarantined" in node.log()


def _restart_with(node: NodeProcess, stable_seconds: float) -> NodeProcess:
    return start_test_node(node.log_path.parent, stable_seconds=stable_seconds,
                           port=node.port, http_port=node.http_port)


def test_late_series_reprocesses_and_supersedes(tmp_path: Path) -> None:
    study = make_study(field_of_view="pelvis", seed=31, patient_id="LATE")
    files = write_study(study, tmp_path / "scanner")
    late = _nac_series(study.pet, tmp_path / "scanner" / "late")
    study_uid = str(study.pet[0].StudyInstanceUID)
    node = start_test_node(tmp_path / "node", stable_seconds=1.0)
    try:
        assert node.http_port is not None
        port = node.http_port

        def at_generation(generation: int) -> bool:
            info = http_json(port, f"/api/studies/{study_uid}")
            assert info["state"] != "failed", info["error"]
            return bool(info["state"] == "done" and info["generation"] == generation)

        assert storescu(files, node.port, node.ae_title).returncode == 0
        wait_for(lambda: at_generation(1), 60, "the first processing")
        # Re-sending instances already processed changes nothing.
        assert storescu(files[:5], node.port, node.ae_title).returncode == 0
        # longer than stable_seconds + a scheduler tick: reprocessing would have started
        stays(lambda: at_generation(1), 2.5, "the study staying at generation 1")
        # A late series does: a new generation that supersedes the first.
        assert storescu(late, node.port, node.ae_title).returncode == 0
        wait_for(lambda: at_generation(2), 60, "the re-processing after the late series")
        info = http_json(port, f"/api/studies/{study_uid}")
    finally:
        assert node.stop() == 0
    assert info["processed_count"] == len(files) + len(late)
    by_generation: dict[int, dict[str, list[str]]] = {}
    for result in info["results"]:
        by_generation.setdefault(result["generation"], {}).setdefault(result["kind"], []).append(
            result["sop_instance_uid"])
    assert set(by_generation) == {1, 2}
    assert set(by_generation[1]) == set(by_generation[2]) == {"SEG", "SR", "SC"}
    assert len(by_generation[2]["SEG"]) == result_object_count(info["result"]) - 2
    first = {uid for uids in by_generation[1].values() for uid in uids}
    assert not first & {uid for uids in by_generation[2].values() for uid in uids}
    new_sr = pydicom.dcmread(next(r["path"] for r in info["results"]
                                  if r["generation"] == 2 and r["kind"] == "SR"))
    assert int(new_sr.InstanceNumber) == 2
    predecessors = [
        instance.ReferencedSOPInstanceUID
        for study_item in new_sr.PredecessorDocumentsSequence
        for series_item in study_item.ReferencedSeriesSequence
        for instance in series_item.ReferencedSOPSequence
    ]
    assert predecessors == by_generation[1]["SR"]
    assert f"generation 2 will supersede SR {by_generation[1]['SR'][0]}" in node.log()
