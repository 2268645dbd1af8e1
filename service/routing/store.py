"""``routing.sqlite``: the routing decision of each study and the queue of forwarded originals.

Kept apart from the main index (its own file in ``data_dir``) so that a decision outlives the
purge of an ignored or forwarded study: the status page still says what happened to it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.routing.rules import Decision
from service.storage import sqlite_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    study_instance_uid   TEXT PRIMARY KEY,
    rule                 TEXT NOT NULL,
    action               TEXT NOT NULL,
    profile              TEXT,
    forward_to           TEXT NOT NULL,
    why                  TEXT NOT NULL,
    outcome              TEXT NOT NULL DEFAULT '',
    decided_at           REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS forwards (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid     TEXT NOT NULL,
    study_instance_uid   TEXT NOT NULL,
    destination          TEXT NOT NULL,
    path                 TEXT NOT NULL,
    state                TEXT NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      REAL NOT NULL,
    last_error           TEXT,
    created_at           REAL NOT NULL,
    UNIQUE (sop_instance_uid, destination)
);
CREATE INDEX IF NOT EXISTS forwards_due ON forwards (state, next_attempt_at);
"""

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True)
class ForwardRow:
    """One original instance to forward to one destination."""

    id: int
    sop_instance_uid: str
    study_instance_uid: str
    destination: str
    path: str
    attempts: int
    created_at: float


class RoutingStore:
    """Decisions and forwards, in ``data_dir/routing.sqlite``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite_db.connect(path)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_db.transaction(self._db, self._lock)

    def record_decision(self, study_uid: str, decision: Decision) -> None:
        """Record (or replace) the decision for a study."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, '', ?)",
                (study_uid, decision.rule, decision.action, decision.profile,
                 json.dumps(list(decision.forward_to)), decision.why, time.time()))

    def set_outcome(self, study_uid: str, outcome: str) -> None:
        """What became of the study (``"purged: ignored by rule"``, ...)."""
        with self._transaction() as db:
            db.execute("UPDATE decisions SET outcome = ? WHERE study_instance_uid = ?",
                       (outcome, study_uid))

    def decision(self, study_uid: str) -> Decision | None:
        """The recorded decision of a study, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM decisions WHERE study_instance_uid = ?",
                                   (study_uid,)).fetchone()
        if row is None:
            return None
        return Decision(row["rule"], row["action"], row["profile"],
                        tuple(json.loads(row["forward_to"])), row["why"])

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest decisions with their forwarding counts, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.*, (SELECT COUNT(*) FROM forwards f WHERE f.study_instance_uid ="
                " d.study_instance_uid AND f.state = 'sent') AS forwarded,"
                " (SELECT COUNT(*) FROM forwards f WHERE f.study_instance_uid ="
                " d.study_instance_uid AND f.state = 'pending') AS forward_pending,"
                " (SELECT COUNT(*) FROM forwards f WHERE f.study_instance_uid ="
                " d.study_instance_uid AND f.state = 'failed') AS forward_failed"
                " FROM decisions d ORDER BY decided_at DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for row in rows:
            entry = dict(row)
            entry["forward_to"] = json.loads(entry["forward_to"])
            out.append(entry)
        return out

    def queue_forwards(self, study_uid: str, instances: list[tuple[str, str]],
                       destinations: tuple[str, ...]) -> int:
        """Queue ``(sop_instance_uid, path)`` for each destination (an instance already queued
        for a destination is not queued again); returns how many were new."""
        now = time.time()
        added = 0
        with self._transaction() as db:
            for sop_uid, path in instances:
                for destination in destinations:
                    added += db.execute(
                        "INSERT OR IGNORE INTO forwards (sop_instance_uid, study_instance_uid,"
                        " destination, path, state, next_attempt_at, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (sop_uid, study_uid, destination, path, PENDING, now, now)).rowcount
        return added

    def due_forwards(self, now: float) -> list[ForwardRow]:
        """Pending forwards whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sop_instance_uid, study_instance_uid, destination, path, attempts,"
                " created_at FROM forwards WHERE state = ? AND next_attempt_at <= ? ORDER BY id",
                (PENDING, now)).fetchall()
        return [ForwardRow(**dict(row)) for row in rows]

    def forward_done(self, forward_id: int) -> None:
        """Mark one forward delivered."""
        with self._transaction() as db:
            db.execute("UPDATE forwards SET state = ?, attempts = attempts + 1,"
                       " last_error = NULL WHERE id = ?", (SENT, forward_id))

    def forward_failed(self, forward_id: int, error: str, next_attempt_at: float | None) -> None:
        """A failed attempt; ``next_attempt_at`` None: given up."""
        state = PENDING if next_attempt_at is not None else FAILED
        with self._transaction() as db:
            db.execute("UPDATE forwards SET state = ?, attempts = attempts + 1, last_error = ?,"
                       " next_attempt_at = ? WHERE id = ?",
                       (state, error, next_attempt_at or 0.0, forward_id))

    def forward_states(self, study_uid: str) -> dict[str, int]:
        """Number of a study's forwards per state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM forwards WHERE study_instance_uid = ?"
                " GROUP BY state", (study_uid,)).fetchall()
        return {row[0]: row[1] for row in rows}

    def studies_awaiting_purge(self) -> list[str]:
        """Forward-only studies not purged yet."""
        with self._lock:
            rows = self._db.execute(
                "SELECT study_instance_uid FROM decisions WHERE action = 'forward'"
                " AND outcome = ''").fetchall()
        return [row[0] for row in rows]
