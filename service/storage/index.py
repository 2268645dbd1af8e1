"""SQLite index of instances, studies, results and exports.

Two connections guarded by one lock, WAL journal. Study, result and export state is written with
``synchronous=FULL``: on disk when the call returns. Instance rows
(:meth:`Index.record_instance`, before each C-STORE success) are written with
``synchronous=NORMAL``: committed and visible at once and kept if the process dies, but a power
cut may lose the last ones. That loses nothing acknowledged: the instance file itself was
fsynced first, and start-up reconciliation indexes every file that has no row
(``Node._reconcile``). It saves an fsync per received instance.

Study states::

    receiving -> queued -> processing -> done | failed
        ^                                   |
        +---- a new instance arrives -------+
    done -> purging -> (rows deleted)       retention, once every result was delivered
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

from service.receive.identity import KnownInstance
from service.storage import sqlite_db
from service.storage.errors import IndexUnavailableError
from service.storage.index_exports import ResultsExportsMixin
from service.storage.index_facts import StudyFactsMixin
from service.storage.index_retention import RetentionMixin
from service.storage.index_schema import SCHEMA, SCHEMA_VERSION, UPSERT_INSTANCE
from service.storage.postgres_db import PgConnection, create_schema
from service.storage.store import InstanceConflictError
from service.storage.study_state import StudyState


@dataclass(frozen=True)
class InstanceRecord:
    """One row of ``instances``."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    path: str
    size_bytes: int
    calling_ae_title: str
    received_at: float


class Index(ResultsExportsMixin, RetentionMixin, StudyFactsMixin):
    """The node's SQLite index.

    Parameters
    ----------
    path
        Database file; created with the schema if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._pg: PgConnection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db: Any = self._connect("FULL")
            with self._lock:
                # executescript commits on its own
                self._db.executescript(SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._db.execute("SELECT COUNT(*) FROM studies").fetchone()
            self._instance_db: Any = self._connect("NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise IndexUnavailableError(
                f"cannot open the index {self.path}: {exc} (restore it from a backup, or move"
                " it aside: start-up then re-indexes every stored instance and processes every"
                " study again)"
            ) from exc

    @classmethod
    def on_postgres(cls, database_url: str) -> Index:
        """The index in a PostgreSQL database shared by several nodes (``[cluster]``): same
        methods, timestamps from the database server (:mod:`service.storage.postgres_db`).

        Raises
        ------
        IndexUnavailableError
            The database cannot be reached or holds a newer schema.
        """
        index = cls.__new__(cls)
        index.path = Path(database_url.split("?", 1)[0])
        index._lock = threading.RLock()
        index._pg = PgConnection(database_url)
        create_schema(index._pg, SCHEMA, SCHEMA_VERSION)
        index._db = index._instance_db = index._pg
        return index

    def _now(self) -> float:
        """Seconds since the epoch: the database server's clock on PostgreSQL."""
        return time.time() if self._pg is None else self._pg.now()

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        return sqlite_db.connect(self.path, synchronous)

    def close(self) -> None:
        """Close the connections."""
        with self._lock:
            if self._pg is not None:
                self._pg.close()
                return
            self._instance_db.close()
            self._db.close()

    def _transaction(self, db: Any = None) -> AbstractContextManager[Any]:
        """One write transaction, on the FULL connection unless ``db`` is given."""
        if self._pg is not None:
            return self._pg.transaction(self._lock)
        return sqlite_db.transaction(self._db if db is None else db, self._lock)

    # -- instances ---------------------------------------------------------------------------

    def record_instance(self, record: InstanceRecord) -> bool:
        """Record a stored instance and mark its study as receiving.

        Returns
        -------
        bool
            True when the instance is new, False for a re-sent one (idempotent).

        Raises
        ------
        InstanceConflictError
            The SOPInstanceUID is indexed in another study or series: the row never moves.
        """
        with self._transaction(self._instance_db) as db:
            existing = db.execute(
                "SELECT study_instance_uid, series_instance_uid FROM instances"
                " WHERE sop_instance_uid = ?",
                (record.sop_instance_uid,),
            ).fetchone()
            if existing is not None and (
                existing[0] != record.study_instance_uid
                or existing[1] != record.series_instance_uid
            ):
                raise InstanceConflictError(
                    f"SOPInstanceUID {record.sop_instance_uid} is indexed in study {existing[0]}"
                    f" series {existing[1]}"
                )
            db.execute(
                UPSERT_INSTANCE,
                (
                    record.sop_instance_uid,
                    record.sop_class_uid,
                    record.study_instance_uid,
                    record.series_instance_uid,
                    record.modality,
                    record.path,
                    record.size_bytes,
                    record.calling_ae_title,
                    record.received_at,
                ),
            )
            is_new = existing is None
            self._touch_study(db, record.study_instance_uid, record.received_at, is_new)
            return is_new

    def _touch_study(
        self, db: Any, study_uid: str, when: float, new_instance: bool
    ) -> None:
        row = db.execute(
            "SELECT state FROM studies WHERE study_instance_uid = ?", (study_uid,)
        ).fetchone()
        if row is None:  # another receiving process or node may create it at the same time
            if db.execute(
                "INSERT INTO studies (study_instance_uid, state, first_received_at,"
                " last_received_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (study_instance_uid) DO NOTHING",
                (study_uid, StudyState.RECEIVING.value, when, when, when),
            ).rowcount == 1:
                return
            row = db.execute(
                "SELECT state FROM studies WHERE study_instance_uid = ?", (study_uid,)
            ).fetchone()
        # New data after processing (or during it, or during a purge) makes the study due
        # again; a re-sent duplicate of an instance already processed changes nothing.
        if new_instance or row["state"] in (
            StudyState.RECEIVING.value, StudyState.QUEUED.value, StudyState.PURGING.value
        ):
            db.execute(
                "UPDATE studies SET state = ?, last_received_at = ?, updated_at = ?"
                " WHERE study_instance_uid = ?",
                (StudyState.RECEIVING.value, when, when, study_uid),
            )

    def known_instance(self, sop_instance_uid: str) -> KnownInstance | None:
        """Study, series and path of an indexed SOPInstanceUID, or None (one primary-key
        look-up: cheap enough for every C-STORE)."""
        with self._lock:
            row = self._instance_db.execute(
                "SELECT study_instance_uid, series_instance_uid, path FROM instances"
                " WHERE sop_instance_uid = ?", (sop_instance_uid,),
            ).fetchone()
        return None if row is None else KnownInstance(row[0], row[1], row[2])

    def recover_instance(self, record: InstanceRecord) -> bool:
        """Index a file that start-up found without a row (a row lost in a power cut, or a
        stop between the file's rename and the row's commit).

        Unlike :meth:`record_instance`, a study already done stays done when its recorded
        ``processed_count`` covers every instance now indexed: the lost row was of an instance
        it processed, and its results (and their exports) remain its results.

        Returns
        -------
        bool
            Whether the study is due for processing because of this instance.

        Raises
        ------
        InstanceConflictError
            The SOPInstanceUID is indexed in another study or series.
        """
        with self._transaction() as db:
            existing = db.execute(
                "SELECT study_instance_uid, series_instance_uid FROM instances"
                " WHERE sop_instance_uid = ?", (record.sop_instance_uid,),
            ).fetchone()
            if existing is not None and (existing[0], existing[1]) != (
                    record.study_instance_uid, record.series_instance_uid):
                raise InstanceConflictError(
                    f"SOPInstanceUID {record.sop_instance_uid} is indexed in study"
                    f" {existing[0]} series {existing[1]}"
                )
            db.execute(
                UPSERT_INSTANCE,
                (record.sop_instance_uid, record.sop_class_uid, record.study_instance_uid,
                 record.series_instance_uid, record.modality, record.path,
                 record.size_bytes, record.calling_ae_title, record.received_at),
            )
            study = db.execute(
                "SELECT state, processed_count FROM studies WHERE study_instance_uid = ?",
                (record.study_instance_uid,),
            ).fetchone()
            if study is not None and study["state"] == StudyState.DONE.value:
                count = db.execute(
                    "SELECT COUNT(*) FROM instances WHERE study_instance_uid = ?",
                    (record.study_instance_uid,),
                ).fetchone()[0]
                if count <= study["processed_count"]:
                    return False
            self._touch_study(db, record.study_instance_uid, record.received_at,
                              existing is None)
            return True

    def study_instances(self, study_uid: str) -> list[InstanceRecord]:
        """All instances of a study."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM instances WHERE study_instance_uid = ? ORDER BY series_instance_uid",
                (study_uid,),
            ).fetchall()
        return [InstanceRecord(**dict(row)) for row in rows]

    def all_instance_paths(self) -> dict[str, str]:
        """SOPInstanceUID -> path of every indexed instance (for reconciliation)."""
        with self._lock:
            rows = self._db.execute("SELECT sop_instance_uid, path FROM instances").fetchall()
        return {row["sop_instance_uid"]: row["path"] for row in rows}

    def forget_instances(self, sop_instance_uids: list[str]) -> None:
        """Drop index rows whose files are gone."""
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM instances WHERE sop_instance_uid = ?",
                [(uid,) for uid in sop_instance_uids],
            )

    # -- studies -----------------------------------------------------------------------------

    def due_studies(self, quiet_before: float) -> list[str]:
        """Studies still receiving whose last instance arrived before ``quiet_before``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT study_instance_uid FROM studies WHERE state = ? AND last_received_at <= ?"
                " ORDER BY last_received_at",
                (StudyState.RECEIVING.value, quiet_before),
            ).fetchall()
        return [row[0] for row in rows]

    def set_study_state(
        self,
        study_uid: str,
        state: StudyState,
        *,
        expected: StudyState | None = None,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        processed_count: int | None = None,
    ) -> bool:
        """Move a study to ``state`` (only from ``expected`` when given).

        Returns
        -------
        bool
            Whether the row changed (False when the study was not in ``expected``).
        """
        sets = ["state = ?", "updated_at = ?", "error = ?"]
        values: list[Any] = [state.value, self._now(), error]
        if result is not None:
            sets.append("result_json = ?")
            values.append(json.dumps(result))
        if processed_count is not None:
            sets.append("processed_count = ?")
            values.append(processed_count)
        where = "study_instance_uid = ?"
        values.append(study_uid)
        if expected is not None:
            where += " AND state = ?"
            values.append(expected.value)
        with self._transaction() as db:
            cursor = db.execute(f"UPDATE studies SET {', '.join(sets)} WHERE {where}", values)
            return cursor.rowcount == 1

    def start_processing(self, study_uid: str) -> int | None:
        """Move a queued study to processing and open a new generation of its results.

        Returns
        -------
        int or None
            The new generation number, or None when the study was no longer queued.
        """
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET state = ?, generation = generation + 1, updated_at = ?"
                " WHERE study_instance_uid = ? AND state = ?",
                (StudyState.PROCESSING.value, self._now(), study_uid, StudyState.QUEUED.value),
            )
            if cursor.rowcount != 1:
                return None
            row = db.execute(
                "SELECT generation FROM studies WHERE study_instance_uid = ?", (study_uid,)
            ).fetchone()
            return int(row[0])

    def requeue_interrupted(self) -> list[str]:
        """At start-up: studies left queued or processing by a stop go back to receiving."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT study_instance_uid FROM studies WHERE state IN (?, ?)",
                (StudyState.QUEUED.value, StudyState.PROCESSING.value),
            ).fetchall()
            db.execute(
                "UPDATE studies SET state = ?, updated_at = ? WHERE state IN (?, ?)",
                (
                    StudyState.RECEIVING.value,
                    self._now(),
                    StudyState.QUEUED.value,
                    StudyState.PROCESSING.value,
                ),
            )
        return [row[0] for row in rows]

    def study(self, study_uid: str) -> dict[str, Any] | None:
        """One study with its counts, result and exports, for the API."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM studies WHERE study_instance_uid = ?", (study_uid,)
            ).fetchone()
            if row is None:
                return None
            series = self._db.execute(
                "SELECT series_instance_uid, modality, COUNT(*) AS instances FROM instances"
                " WHERE study_instance_uid = ? GROUP BY series_instance_uid, modality",
                (study_uid,),
            ).fetchall()
            exports = self._db.execute(
                "SELECT * FROM exports WHERE study_instance_uid = ? ORDER BY id", (study_uid,)
            ).fetchall()
            results = self._db.execute(
                "SELECT * FROM results WHERE study_instance_uid = ? ORDER BY created_at",
                (study_uid,),
            ).fetchall()
        out = dict(row)
        out["result"] = json.loads(out.pop("result_json")) if row["result_json"] else None
        out["series"] = [dict(s) for s in series]
        out["exports"] = [dict(e) for e in exports]
        out["results"] = [dict(r) for r in results]
        return out

    def studies(self, limit: int = 200, *, with_results: bool = False) -> list[dict[str, Any]]:
        """Most recent studies first, with their instance counts (and figures on request)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.study_instance_uid, s.state, s.first_received_at, s.last_received_at,"
                " s.error, s.updated_at, s.generation, s.result_json,"
                " (SELECT COUNT(*) FROM instances i"
                "  WHERE i.study_instance_uid = s.study_instance_uid) AS instances"
                " FROM studies s ORDER BY s.last_received_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        out = []
        for row in rows:
            entry = dict(row)
            result_json = entry.pop("result_json")
            if with_results:
                entry["result"] = json.loads(result_json) if result_json else None
            out.append(entry)
        return out

    def count_studies(self) -> dict[str, int]:
        """Number of studies per state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM studies GROUP BY state"
            ).fetchall()
        return {row[0]: row[1] for row in rows}
