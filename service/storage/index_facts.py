"""The ``study_facts`` table: who, which tracer and when, for every quantified PET series.

Written when a study is done (and replaced when it is done again). It keeps a copy of the
result document, so pairing and the cohort statistics still see a study whose images
retention has purged. A mixin of :class:`service.storage.index.Index` (same connection and lock).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from quant.longitudinal.pairing import StudyFacts

FACTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS study_facts (
    study_instance_uid       TEXT NOT NULL,
    pet_series_instance_uid  TEXT NOT NULL,
    patient_id               TEXT NOT NULL,
    issuer_of_patient_id     TEXT NOT NULL,
    tracer                   TEXT NOT NULL,
    scan_time                TEXT,
    injection_time           TEXT,
    result_json              TEXT NOT NULL,
    recorded_at              REAL NOT NULL,
    PRIMARY KEY (study_instance_uid, pet_series_instance_uid)
);
CREATE INDEX IF NOT EXISTS study_facts_subject
    ON study_facts (patient_id, issuer_of_patient_id, tracer);
"""


@dataclass(frozen=True)
class FactsRow:
    """One quantified PET series: its facts and its result document."""

    facts: StudyFacts
    result: dict[str, Any]


def _iso(value: object) -> str | None:
    return value.isoformat() if value is not None else None  # type: ignore[attr-defined]


class StudyFactsMixin:
    """Methods of :class:`service.storage.index.Index` over ``study_facts``."""

    _lock: threading.RLock
    _db: Any
    _transaction: Callable[[], AbstractContextManager[Any]]
    _now: Callable[[], float]
    """Provided by :class:`service.storage.index.Index`."""

    def record_study_facts(self, result: dict[str, Any]) -> StudyFacts:
        """Record (or replace) the facts of one result document; returns them."""
        facts = StudyFacts.from_result_json(result)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO study_facts (study_instance_uid, pet_series_instance_uid,"
                " patient_id, issuer_of_patient_id, tracer, scan_time, injection_time,"
                " result_json, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (study_instance_uid, pet_series_instance_uid) DO UPDATE SET"
                " patient_id = excluded.patient_id,"
                " issuer_of_patient_id = excluded.issuer_of_patient_id,"
                " tracer = excluded.tracer, scan_time = excluded.scan_time,"
                " injection_time = excluded.injection_time, result_json = excluded.result_json,"
                " recorded_at = excluded.recorded_at",
                (
                    facts.study_instance_uid,
                    facts.pet_series_instance_uid,
                    facts.patient_id,
                    facts.issuer_of_patient_id,
                    facts.tracer,
                    _iso(facts.scan_time),
                    _iso(facts.injection_time),
                    json.dumps(result),
                    self._now(),
                ),
            )
        return facts

    def _facts_rows(self, where: str = "", values: tuple[Any, ...] = ()) -> Iterator[FactsRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT result_json FROM study_facts {where} ORDER BY scan_time", values
            ).fetchall()
        for row in rows:
            result = json.loads(row[0])
            yield FactsRow(StudyFacts.from_result_json(result), result)

    def subject_facts(self, patient_id: str, issuer_of_patient_id: str, tracer: str
                      ) -> list[FactsRow]:
        """Every quantified series of one subject and tracer, earliest scan first."""
        return list(self._facts_rows(
            "WHERE patient_id = ? AND issuer_of_patient_id = ? AND tracer = ?",
            (patient_id, issuer_of_patient_id, tracer),
        ))

    def all_facts(self, tracer: str | None = None) -> list[FactsRow]:
        """Every quantified series (of one tracer when given), earliest scan first."""
        if tracer is None:
            return list(self._facts_rows())
        return list(self._facts_rows("WHERE tracer = ?", (tracer,)))

    def latest_results(self, study_uid: str) -> list[tuple[str, str, str]]:
        """``(kind, sop_instance_uid, path)`` of a study's latest generation of results."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, sop_instance_uid, path FROM results WHERE study_instance_uid = ?"
                " AND generation = (SELECT MAX(generation) FROM results"
                " WHERE study_instance_uid = ?) ORDER BY kind",
                (study_uid, study_uid),
            ).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]
