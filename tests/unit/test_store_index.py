"""The instance store and the SQLite index."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.storage.index import Index, InstanceRecord
from service.storage.index_exports import ExportState
from service.storage.store import InstanceConflictError, InstanceStore, is_valid_uid
from service.storage.study_state import StudyState


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.1.2", True),
        ("1.2.3", True),
        ("0.1", True),
        ("1.02.3", False),
        ("../../x", False),
        ("1.2/3", False),
        ("1.2.3.", False),
        ("", False),
        ("1." + "1" * 63, False),
        (None, False),
    ],
)
def test_uid_validation(value: object, valid: bool) -> None:
    assert is_valid_uid(value) is valid


def test_write_instance_is_complete_and_inside_data_dir(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    stored = store.write_instance(b"abc", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert stored.path.read_bytes() == b"abc"
    assert stored.path.is_relative_to(tmp_path)
    assert list(store.tmp_dir.iterdir()) == []
    again = store.write_instance(b"abcd", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert again.path == stored.path and stored.path.read_bytes() == b"abcd"


def test_traversal_uid_never_becomes_a_path(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path / "data")
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        store.write_instance(b"x", "1.2.3", "1.2.3.4", "../../x")
    assert not (tmp_path / "x").exists()


def test_free_space_floor(tmp_path: Path) -> None:
    assert InstanceStore(tmp_path).has_room(10)
    assert not InstanceStore(tmp_path, min_free_bytes=2**62).has_room(10)


def _record(sop: str, study: str = "1.2.3", when: float | None = None) -> InstanceRecord:
    return InstanceRecord(sop, "1.2.840.10008.5.1.4.1.1.128", study, study + ".1", "PT",
                          f"/x/{sop}", 10, "SCANNER", when if when is not None else time.time())


def test_study_lifecycle(tmp_path: Path) -> None:
    index = Index(tmp_path / "i.sqlite")
    assert index.record_instance(_record("1.2.3.1.1", when=100.0))
    assert not index.record_instance(_record("1.2.3.1.1", when=101.0))  # duplicate: idempotent
    assert index.record_instance(_record("1.2.3.1.2", when=102.0))
    assert index.due_studies(quiet_before=101.0) == []
    assert index.due_studies(quiet_before=102.0) == ["1.2.3"]
    assert index.set_study_state("1.2.3", StudyState.QUEUED, expected=StudyState.RECEIVING)
    assert index.start_processing("1.2.3") == 1
    assert index.start_processing("1.2.3") is None  # not queued any more
    # a stop in the middle: requeued at the next start
    assert index.requeue_interrupted() == ["1.2.3"]
    assert index.study("1.2.3")["state"] == StudyState.RECEIVING.value
    index.set_study_state("1.2.3", StudyState.QUEUED)
    assert index.start_processing("1.2.3") == 2
    index.set_study_state("1.2.3", StudyState.DONE, expected=StudyState.PROCESSING, result={"a": 1})
    # a duplicate after processing changes nothing; a new instance makes the study due again
    index.record_instance(_record("1.2.3.1.2", when=200.0))
    assert index.study("1.2.3")["state"] == StudyState.DONE.value
    index.record_instance(_record("1.2.3.1.3", when=201.0))
    assert index.study("1.2.3")["state"] == StudyState.RECEIVING.value
    assert len(index.study_instances("1.2.3")) == 3


def test_exports_queue_and_backoff_records(tmp_path: Path) -> None:
    index = Index(tmp_path / "i.sqlite")
    index.record_instance(_record("1.2.3.1.1"))
    index.record_results("1.2.3", [("SEG", "1.9.1", "/r/seg"), ("SR", "1.9.2", "/r/sr")],
                         ["PACS", "ARCHIVE"], generation=1)
    due = index.due_exports(time.time() + 1)
    assert len(due) == 4
    index.export_failed(due[0].id, "down", None, time.time() + 1000)
    index.export_sent(due[1].id, 0)
    index.export_failed(due[2].id, "refused 0xA700", 0xA700, None)
    assert len(index.due_exports(time.time() + 1)) == 1
    counts = index.export_counts()
    assert counts == {ExportState.PENDING.value: 2, ExportState.SENT.value: 1,
                      ExportState.FAILED.value: 1}
    assert index.retry_exports("1.2.3") == 1
    assert len(index.due_exports(time.time() + 1)) == 2


def test_instance_rows_skip_the_fsync_that_state_changes_keep(tmp_path: Path) -> None:
    """Instance rows: synchronous=NORMAL (their files are fsynced and re-indexed at start-up);
    study, result and export state: FULL. Both visible to every reader at once."""
    index = Index(tmp_path / "index.sqlite")
    try:
        assert index._instance_db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert index._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        index.record_instance(_record("1.2.3.1.1"))
        assert index.all_instance_paths() == {"1.2.3.1.1": _record("1.2.3.1.1").path}
    finally:
        index.close()


def test_recovered_rows_keep_a_processed_study_done_and_never_move(tmp_path: Path) -> None:
    """Start-up re-indexing (Index.recover_instance): a row lost from a study processed with
    it stays done; one beyond the processed count makes the study due; a SOPInstanceUID
    indexed in another study is refused, the row kept where it was."""
    index = Index(tmp_path / "index.sqlite")
    for sop in ("1", "2"):
        index.record_instance(_record(sop))
    index.set_study_state("1.2.3", StudyState.DONE, processed_count=2)
    index.forget_instances(["2"])  # what a power cut may lose
    assert index.recover_instance(_record("2")) is False
    assert index.study("1.2.3")["state"] == "done"  # type: ignore[index]
    assert index.recover_instance(_record("3")) is True  # not processed with the study
    assert index.study("1.2.3")["state"] == "receiving"  # type: ignore[index]
    with pytest.raises(InstanceConflictError):
        index.recover_instance(_record("1", study="1.2.4"))
    with pytest.raises(InstanceConflictError):
        index.record_instance(_record("1", study="1.2.4"))
    known = index.known_instance("1")
    assert known is not None and known.study_instance_uid == "1.2.3"
    assert index.study("1.2.4") is None
    index.close()
