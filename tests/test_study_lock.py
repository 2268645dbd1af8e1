"""A purge and the storing of an instance of the same study never interleave.

Without the study lock a purge could list a study's files, an instance of it be sent again
(file replaced, row written, success answered), and the purge then remove that file and its
row: an acknowledged instance lost. Here a store and a purge race for real, in threads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from service.index import Index, InstanceRecord, StudyState
from service.retention import purge_study
from service.store import InstanceStore

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


def test_instance_sent_again_while_a_purge_waits_keeps_the_study(tmp_path: Path) -> None:
    store, index = _done_study(tmp_path)
    try:
        in_store = threading.Event()
        release = threading.Event()

        def slow_resend() -> None:  # the same instance sent again, slowly
            with store.study_lock(STUDY, exclusive=False):
                in_store.set()
                release.wait(10)
                stored = store.write_instance(b"again", STUDY, SERIES, STUDY + ".1.1")
                index.record_instance(InstanceRecord(
                    STUDY + ".1.1", "1.2.840.10008.5.1.4.1.1.128", STUDY, SERIES, "PT",
                    str(stored.path), stored.size_bytes, "SCANNER", time.time()))

        sender = threading.Thread(target=slow_resend)
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
        # A study sent again is receiving again: the purge, once it may go on, leaves it. Never
        # a row whose file is gone (an acknowledged instance lost).
        assert outcome == [False]
        path = store.instance_path(STUDY, SERIES, STUDY + ".1.1")
        rows = index.study_instances(STUDY)
        assert [row.path for row in rows] == [str(path)] and path.read_bytes() == b"again"
    finally:
        index.close()


def test_new_instance_stored_while_a_purge_waits_keeps_the_whole_study(tmp_path: Path) -> None:
    store, index = _done_study(tmp_path)
    try:
        in_store = threading.Event()
        release = threading.Event()

        def late_series() -> None:  # a new instance of the done study, slowly
            with store.study_lock(STUDY, exclusive=False):
                in_store.set()
                release.wait(10)
                stored = store.write_instance(b"late", STUDY, SERIES, STUDY + ".1.2")
                index.record_instance(InstanceRecord(
                    STUDY + ".1.2", "1.2.840.10008.5.1.4.1.1.128", STUDY, SERIES, "PT",
                    str(stored.path), stored.size_bytes, "SCANNER", time.time()))

        sender = threading.Thread(target=late_series)
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
        assert outcome == [False]  # the study is receiving again: nothing purged
        rows = index.study_instances(STUDY)
        assert sorted(row.sop_instance_uid for row in rows) == [STUDY + ".1.1", STUDY + ".1.2"]
        assert all(Path(row.path).is_file() for row in rows)
        info = index.study(STUDY)
        assert info is not None and info["state"] == StudyState.RECEIVING.value
    finally:
        index.close()
