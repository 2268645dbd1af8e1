"""What the index does, whichever database holds it: scenarios run on SQLite in
``tests/unit/test_store_index.py`` and on SQLite and a real PostgreSQL in
``tests/integration/test_index_postgres.py``."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from service.storage.index import Index, InstanceRecord
from service.storage.index_exports import ExportState
from service.storage.store import InstanceConflictError
from service.storage.study_state import StudyState


def record(sop: str, study: str = "1.2.3", when: float | None = None) -> InstanceRecord:
    return InstanceRecord(sop, "1.2.840.10008.5.1.4.1.1.128", study, study + ".1", "PT",
                          f"/x/{sop}", 10, "SCANNER", when if when is not None else time.time())


def study_lifecycle(index: Index) -> None:
    """Receiving, due after the quiet period, queued, generations, interrupted, done, due again."""
    assert index.record_instance(record("1.2.3.1.1", when=100.0))
    assert not index.record_instance(record("1.2.3.1.1", when=101.0))  # duplicate: idempotent
    assert index.record_instance(record("1.2.3.1.2", when=102.0))
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
    index.record_instance(record("1.2.3.1.2", when=200.0))
    assert index.study("1.2.3")["state"] == StudyState.DONE.value
    index.record_instance(record("1.2.3.1.3", when=201.0))
    assert index.study("1.2.3")["state"] == StudyState.RECEIVING.value
    assert len(index.study_instances("1.2.3")) == 3


def exports_queue_and_backoff(index: Index) -> None:
    """Result objects queue one export per destination; sent, failed, retried."""
    index.record_instance(record("1.2.3.1.1"))
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


def recovered_rows_keep_a_processed_study_done(index: Index) -> None:
    """Start-up re-indexing (Index.recover_instance): a row lost from a study processed with
    it stays done; one beyond the processed count makes the study due; a SOPInstanceUID
    indexed in another study is refused, the row kept where it was."""
    for sop in ("1", "2"):
        index.record_instance(record(sop))
    index.set_study_state("1.2.3", StudyState.DONE, processed_count=2)
    index.forget_instances(["2"])  # what a power cut may lose
    assert index.recover_instance(record("2")) is False
    assert index.study("1.2.3")["state"] == "done"  # type: ignore[index]
    assert index.recover_instance(record("3")) is True  # not processed with the study
    assert index.study("1.2.3")["state"] == "receiving"  # type: ignore[index]
    with pytest.raises(InstanceConflictError):
        index.recover_instance(record("1", study="1.2.4"))
    with pytest.raises(InstanceConflictError):
        index.record_instance(record("1", study="1.2.4"))
    known = index.known_instance("1")
    assert known is not None and known.study_instance_uid == "1.2.3"
    assert index.study("1.2.4") is None


def facts_and_latest_results(index: Index) -> None:
    """Facts are replaced, not duplicated; the latest generation's results are listed."""
    result = {"study_instance_uid": "1.2.3", "pet_series_instance_uid": "1.2.3.1",
              "patient_id": "P1", "issuer_of_patient_id": "", "tracer": "64Cu-ATSM",
              "scan_datetime": "2026-01-02T10:00:00", "injection_datetime": None}
    index.record_study_facts(result)
    index.record_study_facts(result)
    facts = index.all_facts()
    assert len(facts) == 1 and facts[0].facts.scan_time is not None
    assert facts[0].result["patient_id"] == "P1"
    index.record_results("1.2.3", [("SR", "1.9.1", "/r/sr1")], [], generation=1)
    index.record_results("1.2.3", [("SR", "1.9.2", "/r/sr2")], [], generation=2)
    assert index.latest_results("1.2.3") == [("SR", "1.9.2", "/r/sr2")]


def purge_keeps_what_arrived_during_it(index: Index) -> None:
    """A delivered study is purgeable; rows of instances received during the purge stay."""
    index.record_instance(record("1", when=100.0))
    index.record_results("1.2.3", [("SR", "1.9.1", "/r/sr")], ["PACS"], generation=1)
    index.set_study_state("1.2.3", StudyState.DONE, processed_count=1)
    export = index.due_exports(time.time() + 10)[0]
    index.export_sent(export.id, 0)
    assert index.purgeable_studies(delivered_before=time.time() + 3600) == ["1.2.3"]
    assert index.set_study_state("1.2.3", StudyState.PURGING, expected=StudyState.DONE)
    index.record_instance(record("2", when=time.time() + 60))  # arrives during the purge
    instances, results = index.study_files("1.2.3")
    assert set(instances) == {"1", "2"} and set(results) == {"1.9.1"}
    assert not index.forget_purged("1.2.3", ["1", "2"], ["1.9.1"], started_at=time.time())
    assert [r.sop_instance_uid for r in index.study_instances("1.2.3")] == ["2"]


SCENARIOS: list[Callable[[Index], None]] = [
    study_lifecycle, exports_queue_and_backoff, recovered_rows_keep_a_processed_study_done,
    facts_and_latest_results, purge_keeps_what_arrived_during_it,
]
