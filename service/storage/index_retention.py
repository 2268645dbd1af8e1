"""Retention's queries of the index: which studies may be purged, their files, and the
removal of their rows once the files are gone.

A mixin of :class:`service.storage.index.Index` (same connections and lock), as
:mod:`service.storage.index_facts` is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from service.storage.index_exports import ExportState
from service.storage.study_state import StudyState


class RetentionMixin:
    """Methods of :class:`service.storage.index.Index` for :mod:`service.storage.retention`."""

    _lock: threading.RLock
    _db: Any
    _transaction: Callable[[], AbstractContextManager[Any]]
    _now: Callable[[], float]
    """Provided by :class:`service.storage.index.Index`."""

    def purgeable_studies(self, delivered_before: float) -> list[str]:
        """Done studies whose every export was sent before ``delivered_before``; and purges
        interrupted by a stop (state purging), which are resumed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.study_instance_uid FROM studies s WHERE s.state = ? OR (s.state = ?"
                " AND s.last_received_at < ?"
                " AND EXISTS (SELECT 1 FROM exports e WHERE"
                "  e.study_instance_uid = s.study_instance_uid)"
                " AND NOT EXISTS (SELECT 1 FROM exports e WHERE"
                "  e.study_instance_uid = s.study_instance_uid AND (e.state != ?"
                "  OR e.updated_at >= ?)))"
                " ORDER BY s.last_received_at",
                (StudyState.PURGING.value, StudyState.DONE.value, delivered_before,
                 ExportState.SENT.value, delivered_before),
            ).fetchall()
        return [row[0] for row in rows]

    def study_files(self, study_uid: str) -> tuple[dict[str, str], dict[str, str]]:
        """SOPInstanceUID -> path of a study's instances, and of its result objects."""
        with self._lock:
            instances = self._db.execute(
                "SELECT sop_instance_uid, path FROM instances WHERE study_instance_uid = ?",
                (study_uid,),
            ).fetchall()
            results = self._db.execute(
                "SELECT sop_instance_uid, path FROM results WHERE study_instance_uid = ?",
                (study_uid,),
            ).fetchall()
        return ({r[0]: r[1] for r in instances}, {r[0]: r[1] for r in results})

    def forget_purged(
        self, study_uid: str, instance_uids: list[str], result_uids: list[str], started_at: float
    ) -> bool:
        """Delete the rows of purged files; the study row too unless new instances arrived.

        Instance rows written at or after ``started_at`` (the instance was sent again during
        the purge) are kept.

        Returns
        -------
        bool
            Whether the study row was deleted (False: an instance arrived during the purge;
            the study is receiving again with that instance).
        """
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM instances WHERE sop_instance_uid = ? AND received_at < ?",
                [(uid, started_at) for uid in instance_uids],
            )
            db.executemany("DELETE FROM exports WHERE sop_instance_uid = ?",
                           [(uid,) for uid in result_uids])
            db.executemany("DELETE FROM results WHERE sop_instance_uid = ?",
                           [(uid,) for uid in result_uids])
            cursor = db.execute(
                "DELETE FROM studies WHERE study_instance_uid = ? AND state = ? AND NOT EXISTS"
                " (SELECT 1 FROM instances WHERE study_instance_uid = ?)",
                (study_uid, StudyState.PURGING.value, study_uid),
            )
            return cursor.rowcount == 1
