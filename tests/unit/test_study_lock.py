"""A purge and the storing of an instance of the same study never interleave.

Without the study lock a purge could list a study's files, an instance of it be sent again
(file replaced, row written, success answered), and the purge then remove that file and its
row: an acknowledged instance lost. Here a store and a purge race for real, in threads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from service.storage.index import Index, InstanceRecord
from service.storage.retention import purge_study
from service.storage.store import InstanceStore
from service.storage.study_state import StudyState

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = STUDY + ".1"


def _store(store: InstanceStore, index: Index, sop_uid: str, payload: bytes) -> Path:
    """What the C-STORE handler does, with its lock."""
    with store.study_lock(STUDY, exclusive=False):
        stored = store.write_instance(payload, STUDY, SERIES, sop_uid)
        index.record_instance(InstanceRecord(
            sop_uid, "1.2.840.10008.5.1.4.1.1.128", STUDY, SERIES, "PT", str(stored.path),
            stored.size_bytes, "SCANNER", time.time()))
    return stored.path


def _done_study(tmp_path: Path) -> tuple[InstanceStore, Index]:
    store = InstanceStore(tmp_path)
    index = Index(tmp_path / "index.sqlite")
    _store(store, index, STUDY + ".1.1", b"first")
    assert index.set_study_state(STUDY, StudyState.DONE)
    return store, index


def _purge_while_storing(store: InstanceStore, index: Index, sop_uid: str,
                         payload: bytes) -> bool:
    """Start storing ``sop_uid`` (holding the study shared), start a purge, check that it
    waits, let the store finish; returns what the purge returned."""
    in_store = threading.Event()
    release = threading.Event()

    def slow_store_holding() -> None:
        with store.study_lock(STUDY, exclusive=False):
            in_store.set()
            release.wait(10)
            stored = store.write_instance(payload, STUDY, SERIES, sop_uid)
            index.record_instance(InstanceRecord(
                sop_uid, "1.2.840.10008.5.1.4.1.1.128", STUDY, SERIES, "PT",
                str(stored.path), stored.size_bytes, "SCANNER", time.time()))

    sender = threading.Thread(target=slow_store_holding)
    sender.start()
    assert in_store.wait(10)
    outcome: list[bool] = []
    purger = threading.Thread(target=lambda: outcome.append(purge_study(index, store, STUDY)))
    purger.start()
    purger.join(0.5)
    assert purger.is_alive(), "the purge did not wait for the store in progress"
    release.set()
    sender.join(10)
    purger.join(10)
    assert not purger.is_alive()
    return outcome[0]


def test_instance_sent_again_while_a_purge_waits_keeps_the_study(tmp_path: Path) -> None:
    store, index = _done_study(tmp_path)
    try:
        # A study sent again is receiving again: the purge, once it may go on, leaves it.
        # Never a row whose file is gone (an acknowledged instance lost).
        assert _purge_while_storing(store, index, STUDY + ".1.1", b"again") is False
        path = store.instance_path(STUDY, SERIES, STUDY + ".1.1")
        rows = index.study_instances(STUDY)
        assert [row.path for row in rows] == [str(path)] and path.read_bytes() == b"again"
    finally:
        index.close()


def test_new_instance_stored_while_a_purge_waits_keeps_the_whole_study(tmp_path: Path) -> None:
    store, index = _done_study(tmp_path)
    try:
        assert _purge_while_storing(store, index, STUDY + ".1.2", b"late") is False
        rows = index.study_instances(STUDY)
        assert sorted(row.sop_instance_uid for row in rows) == [STUDY + ".1.1", STUDY + ".1.2"]
        assert all(Path(row.path).is_file() for row in rows)
        info = index.study(STUDY)
        assert info is not None and info["state"] == StudyState.RECEIVING.value
    finally:
        index.close()


def test_store_waits_for_a_purge_in_progress_and_is_kept(tmp_path: Path) -> None:
    store, index = _done_study(tmp_path)
    try:
        with store.study_lock(STUDY, exclusive=True):  # as purge_study holds it
            sender = threading.Thread(target=_store, args=(store, index, STUDY + ".1.2", b"x"))
            sender.start()
            sender.join(0.5)
            assert sender.is_alive(), "the store did not wait for the purge"
        sender.join(10)
        rows = index.study_instances(STUDY)
        assert STUDY + ".1.2" in {row.sop_instance_uid for row in rows}
        assert all(Path(row.path).is_file() for row in rows)
    finally:
        index.close()
