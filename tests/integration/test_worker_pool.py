"""The worker pool is recycled when idle after worker_max_studies studies, without losing any."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from service.config import load_config
from service.node import Node
from service.synthetic import make_study, write_study
from tests.peers import storescu, wait_for


def _pool_workers() -> list[multiprocessing.process.BaseProcess]:
    """The node's processing workers: its children but the receiver processes."""
    return [child for child in multiprocessing.active_children()
            if child.name != "hypoxnode-receiver"]


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from ``/proc/<pid>/stat``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_until_a_worker_works() -> None:
    """Until a worker has spent 0.1 s of CPU since now: it is inside the study's work."""
    before = {child.pid: _cpu_s(child.pid) for child in _pool_workers() if child.pid}
    wait_for(lambda: any(_cpu_s(pid) - spent >= 0.1 for pid, spent in before.items()), 60,
             "a worker to be quantifying", interval_s=0.02)

def test_pool_recycled_between_studies_and_every_study_processed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(
        None,
        node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path / "data"},
        study={"stable_seconds": 0.5, "check_interval_seconds": 0.25},
        quant={"worker_max_studies": 1},
        http={"enabled": False},
    )
    node = Node(config)
    node.start()
    caplog.set_level(logging.INFO, logger="hypoxnode.node")
    try:
        uids = []
        for seed in range(3):  # two arrive together, one after the pool was recycled
            study = make_study(field_of_view="pelvis", seed=40 + seed, patient_id=f"POOL{seed}")
            uids.append(str(study.pet[0].StudyInstanceUID))
            assert storescu(write_study(study, tmp_path / f"s{seed}"), node.port,
                            "HYPOXNODE").returncode == 0
            if seed == 1:
                wait_for(lambda: all(node.index.study(u)["state"] == "done" for u in uids),
                         120, "the first two studies processed")
                wait_for(lambda: "worker pool recycled" in caplog.text, 30,
                         "the pool recycled after two studies")
        wait_for(lambda: all(node.index.study(u)["state"] == "done" for u in uids), 120,
                 "every study processed")
    finally:
        node.stop()
    assert "worker pool recycled" in caplog.text


def _kill_workers_while_processing(node: Node, uids: list[str], what: str) -> None:
    """SIGKILL the worker processes (children of this test process) once a study is running."""
    wait_for(lambda: any(node.index.study(u)["state"] == "processing" for u in uids), 120,
             f"{what} to start processing")
    _wait_until_a_worker_works()
    for child in _pool_workers():
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]


def _node(tmp_path: Path, stable_seconds: float = 0.5) -> Node:
    config = load_config(
        None,
        node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path / "data"},
        study={"stable_seconds": stable_seconds, "check_interval_seconds": 0.25},
        http={"enabled": False},
    )
    node = Node(config)
    node.start()
    return node


def test_worker_killed_with_two_studies_in_the_pool_fails_neither(tmp_path: Path) -> None:
    node = _node(tmp_path, stable_seconds=2)
    try:
        uids, files = [], []
        for seed in range(2):
            study = make_study(field_of_view="whole_body", seed=50 + seed,
                               patient_id=f"CRASH{seed}")
            uids.append(str(study.pet[0].StudyInstanceUID))
            files.append(write_study(study, tmp_path / f"s{seed}"))
        # Interleaved in one association: both studies fall quiet at once and share the pool.
        mixed = [path for pair in zip(*files, strict=False) for path in pair]
        assert storescu(mixed, node.port, "HYPOXNODE").returncode == 0
        wait_for(lambda: all(node.index.study(u)["state"] == "processing" for u in uids), 120,
                 "both studies in the worker pool")
        _kill_workers_while_processing(node, uids, "the first study")
        # Second crash, during the retry: under a rule that gave every study in a broken pool
        # a strike, both would now have two and fail; only the one running alone is blamed.
        wait_for(lambda: any(node.index.study(u)["generation"] == 2
                             and node.index.study(u)["state"] == "processing" for u in uids),
                 120, "a retry to start processing")
        _wait_until_a_worker_works()
        for child in _pool_workers():
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        wait_for(lambda: all(node.index.study(u)["state"] in ("done", "failed") for u in uids),
                 180, "both studies settled")
        assert [node.index.study(u)["state"] for u in uids] == ["done", "done"]
    finally:
        node.stop()


def test_study_whose_worker_dies_twice_alone_fails_with_the_reason(tmp_path: Path) -> None:
    node = _node(tmp_path)
    try:
        study = make_study(field_of_view="whole_body", seed=60, patient_id="CULPRIT")
        uid = str(study.pet[0].StudyInstanceUID)
        assert storescu(write_study(study, tmp_path / "s"), node.port,
                        "HYPOXNODE").returncode == 0
        for attempt in (1, 2):  # each start of processing opens a new generation
            wait_for(lambda a=attempt: node.index.study(uid)["generation"] == a
                     and node.index.study(uid)["state"] == "processing", 120,
                     f"processing attempt {attempt}")
            _wait_until_a_worker_works()
            for child in _pool_workers():
                os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        wait_for(lambda: node.index.study(uid)["state"] == "failed", 60, "the study failed")
        assert "died twice" in node.index.study(uid)["error"]
        assert node.listening
    finally:
        node.stop()


def test_clean_stop_leaves_queued_studies_to_be_requeued(tmp_path: Path) -> None:
    node = _node(tmp_path)
    uids = []
    for seed in range(3):
        study = make_study(field_of_view="whole_body", seed=70 + seed, patient_id=f"STOP{seed}")
        uids.append(str(study.pet[0].StudyInstanceUID))
        assert storescu(write_study(study, tmp_path / f"s{seed}"), node.port,
                        "HYPOXNODE").returncode == 0
    wait_for(lambda: any(node.index.study(u)["state"] == "processing" for u in uids), 120,
             "processing to start")
    node.stop()
    restarted = Node(node.config)
    try:
        states = [restarted.index.study(u)["state"] for u in uids]
        assert "failed" not in states, states
        restarted.start()
        wait_for(lambda: all(restarted.index.study(u)["state"] == "done" for u in uids), 180,
                 "every study processed after the restart")
    finally:
        restarted.stop()
