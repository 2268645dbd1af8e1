"""The ``results`` and ``exports`` tables: result objects written for a study, and their
delivery to each destination (queued, retried, sent or given up).

A mixin of :class:`service.storage.index.Index` (same connections and lock), as
:mod:`service.storage.index_facts` is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

RESULTS_EXPORTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    sop_instance_uid     TEXT PRIMARY KEY,
    study_instance_uid   TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    path                 TEXT NOT NULL,
    generation           INTEGER NOT NULL,
    created_at           REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_study ON results (study_instance_uid);

CREATE TABLE IF NOT EXISTS exports (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid     TEXT NOT NULL,
    study_instance_uid   TEXT NOT NULL,
    destination          TEXT NOT NULL,
    path                 TEXT NOT NULL,
    state                TEXT NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      REAL NOT NULL,
    last_error           TEXT,
    last_status          INTEGER,
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL,
    UNIQUE (sop_instance_uid, destination)
);
CREATE INDEX IF NOT EXISTS exports_pending ON exports (state, next_attempt_at);
"""


class ExportState(StrEnum):
    """Delivery state of one result object to one destination."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class ExportRecord:
    """One row of ``exports``."""

    id: int
    sop_instance_uid: str
    study_instance_uid: str
    destination: str
    path: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    last_status: int | None
    created_at: float


class ResultsExportsMixin:
    """Methods of :class:`service.storage.index.Index` over ``results`` and ``exports``."""

    _lock: threading.RLock
    _db: Any
    _transaction: Callable[[], AbstractContextManager[Any]]
    _now: Callable[[], float]
    """Provided by :class:`service.storage.index.Index`."""

    def record_results(
        self,
        study_uid: str,
        outputs: list[tuple[str, str, str]],
        destinations: list[str],
        generation: int,
    ) -> None:
        """Record result objects ``(kind, sop_instance_uid, path)`` and queue their exports."""
        now = self._now()
        with self._transaction() as db:
            for kind, sop_uid, path in outputs:
                db.execute(
                    "INSERT INTO results (sop_instance_uid, study_instance_uid, kind, path,"
                    " generation, created_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (sop_instance_uid) DO UPDATE SET"
                    " study_instance_uid = excluded.study_instance_uid, kind = excluded.kind,"
                    " path = excluded.path, generation = excluded.generation,"
                    " created_at = excluded.created_at",
                    (sop_uid, study_uid, kind, path, generation, now),
                )
                for destination in destinations:
                    db.execute(
                        "INSERT INTO exports (sop_instance_uid, study_instance_uid,"
                        " destination, path, state, next_attempt_at, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (sop_uid, study_uid, destination, path, ExportState.PENDING.value,
                         now, now, now),
                    )

    def previous_results(self, study_uid: str, generation: int) -> list[tuple[str, str, str]]:
        """``(kind, sop_instance_uid, path)`` of the latest results older than ``generation``.

        What a re-processing supersedes: its SR names the earlier SR as a predecessor.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, sop_instance_uid, path FROM results WHERE study_instance_uid = ?"
                " AND generation = (SELECT MAX(generation) FROM results"
                " WHERE study_instance_uid = ? AND generation < ?) ORDER BY kind",
                (study_uid, study_uid, generation),
            ).fetchall()
        return [(row["kind"], row["sop_instance_uid"], row["path"]) for row in rows]

    def due_exports(self, now: float) -> list[ExportRecord]:
        """Pending exports whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sop_instance_uid, study_instance_uid, destination, path, state,"
                " attempts, next_attempt_at, last_error, last_status, created_at FROM exports"
                " WHERE state = ? AND next_attempt_at <= ? ORDER BY id",
                (ExportState.PENDING.value, now),
            ).fetchall()
        return [ExportRecord(**dict(row)) for row in rows]

    def export_sent(self, export_id: int, status: int) -> None:
        """Mark one export delivered."""
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, attempts = attempts + 1, last_status = ?,"
                " last_error = NULL, updated_at = ? WHERE id = ?",
                (ExportState.SENT.value, status, self._now(), export_id),
            )

    def export_failed(
        self,
        export_id: int,
        error: str,
        status: int | None,
        next_attempt_at: float | None,
    ) -> None:
        """Record a failed attempt; ``next_attempt_at`` None means give up (state failed)."""
        state = ExportState.PENDING if next_attempt_at is not None else ExportState.FAILED
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, attempts = attempts + 1, last_error = ?,"
                " last_status = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (state.value, error, status, next_attempt_at or 0.0, self._now(), export_id),
            )

    def retry_exports(self, study_uid: str, destination: str | None = None) -> int:
        """Put a study's failed exports back in the queue, due now."""
        now = self._now()
        sql = (
            "UPDATE exports SET state = ?, next_attempt_at = ?, created_at = ?, updated_at = ?"
            " WHERE study_instance_uid = ? AND state = ?"
        )
        values: list[Any] = [ExportState.PENDING.value, now, now, now, study_uid,
                             ExportState.FAILED.value]
        if destination is not None:
            sql += " AND destination = ?"
            values.append(destination)
        with self._transaction() as db:
            return db.execute(sql, values).rowcount

    def queue_exports(self, study_uid: str, destinations: list[str]) -> int:
        """(Re)queue the latest results of a study for ``destinations``, due now."""
        now = self._now()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT sop_instance_uid, path FROM results WHERE study_instance_uid = ? AND"
                " generation = (SELECT MAX(generation) FROM results WHERE study_instance_uid = ?)",
                (study_uid, study_uid),
            ).fetchall()
            for row in rows:
                for destination in destinations:
                    db.execute(
                        "INSERT INTO exports (sop_instance_uid, study_instance_uid, destination,"
                        " path, state, next_attempt_at, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (sop_instance_uid, destination) DO UPDATE SET"
                        " state = excluded.state, next_attempt_at = excluded.next_attempt_at,"
                        " created_at = excluded.created_at, updated_at = excluded.updated_at",
                        (row["sop_instance_uid"], study_uid, destination, row["path"],
                         ExportState.PENDING.value, now, now, now),
                    )
        return len(rows) * len(destinations)

    def export_counts(self) -> dict[str, int]:
        """Number of exports per state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM exports GROUP BY state").fetchall()
        return {row[0]: row[1] for row in rows}
