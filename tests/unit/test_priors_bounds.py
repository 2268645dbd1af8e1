"""Priors from PACS, the node's side without a PACS: bounds, retries and giving up.

A real index, store and router in ``tmp_path``; the "PACS" is a loopback port nobody listens
on. Time is a replaceable clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydicom.uid import generate_uid

from service.config import load_config
from service.routing.priors_from_pacs import GAVE_UP, PENDING, WAITING, PriorsFromPacs
from service.routing.router import Router
from service.storage.index import Index, InstanceRecord
from service.storage.store import InstanceStore
from tests.peers import free_port

RESULT = {"study_instance_uid": "", "pet_series_instance_uid": "1.2.3.4",
          "patient_id": "BOUND1", "issuer_of_patient_id": "", "tracer": "64Cu-ATSM",
          "scan_datetime": "2024-04-04T10:00:00", "lesions": []}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _setup(tmp_path: Path, **pacs: object) -> tuple[PriorsFromPacs, Index, InstanceStore,
                                                     Clock]:
    settings = {"enabled": True, "port": free_port(), "timeout_s": 2,
                "retry_initial_seconds": 10, "retry_max_seconds": 20,
                "give_up_after_seconds": 100, **pacs}
    config = load_config(None, node={"data_dir": tmp_path / "data"},
                         follow_up={"pacs": settings})
    index = Index(config.data_dir / "index.sqlite")
    store = InstanceStore(config.data_dir)
    clock = Clock()
    priors = PriorsFromPacs(config, index, Router(config, index, store), lambda uid: False,
                            clock)
    return priors, index, store, clock


def test_pacs_down_is_retried_then_given_up_with_the_reason(tmp_path: Path) -> None:
    priors, _index, _store, clock = _setup(tmp_path)
    study_uid = generate_uid()
    priors.study_done(study_uid, {**RESULT, "study_instance_uid": study_uid})
    priors.study_done(study_uid, {**RESULT, "study_instance_uid": study_uid})  # once only
    priors.run_once()
    [request] = priors.recent()
    assert request["state"] == PENDING and request["attempts"] == 1
    assert "comparison pending: PACS PACS@127.0.0.1" in request["detail"]
    assert "next try in 10 s" in request["detail"]
    priors.run_once()  # not due yet: no second attempt
    assert priors.recent()[0]["attempts"] == 1
    clock.now += 101
    priors.run_once()
    [request] = priors.recent()
    assert request["state"] == GAVE_UP
    assert request["detail"].startswith("gave up after 100 s: PACS PACS@127.0.0.1")


def test_study_with_a_comparison_or_without_patient_asks_nothing(tmp_path: Path) -> None:
    priors, _index, _store, _clock = _setup(tmp_path)
    priors.study_done("1.2.5", {**RESULT, "study_instance_uid": "1.2.5",
                                "comparison": {"kind": "follow_up"}})
    priors.study_done("1.2.6", {**RESULT, "study_instance_uid": "1.2.6", "patient_id": ""})
    assert priors.recent() == []


def test_prior_received_larger_than_max_mb_is_purged_unprocessed(tmp_path: Path) -> None:
    priors, index, store, _clock = _setup(tmp_path, max_mb=0.004)  # 4.2 kB
    study_uid, prior_uid, series_uid = generate_uid(), generate_uid(), generate_uid()
    priors.study_done(study_uid, {**RESULT, "study_instance_uid": study_uid})
    paths = []
    for _ in range(3):
        sop_uid = generate_uid()
        stored = store.write_instance(bytes(2000), prior_uid, series_uid, sop_uid)
        paths.append(stored.path)
        index.record_instance(InstanceRecord(sop_uid, "1.2.840.10008.5.1.4.1.1.128", prior_uid,
                                             series_uid, "PT", str(stored.path),
                                             stored.size_bytes, "PACS", time.time()))
    with priors._transaction() as db:  # as _query_and_move leaves it after the C-MOVE
        db.execute("INSERT INTO fetched VALUES (?, ?)", (prior_uid, study_uid))
        db.execute("UPDATE requests SET state = ?, priors = ? WHERE study_instance_uid = ?",
                   (WAITING, json.dumps([prior_uid]), study_uid))
    priors.run_once()
    [request] = priors.recent()
    assert request["state"] == GAVE_UP
    assert "dropped: 0.00572 MB received, more than max_mb 0.004" in request["detail"]
    assert index.study(prior_uid) is None
    assert not any(path.exists() for path in paths)
