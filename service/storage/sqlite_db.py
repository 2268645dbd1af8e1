"""The node's SQLite files opened one way: WAL journal, a busy timeout, explicit transactions.

The index (:mod:`service.storage.index`), the routing decisions (:mod:`service.routing.store`) and
the
priors fetched from PACS (:mod:`service.routing.priors_from_pacs`) each keep one file in the data
folder and share these two helpers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 10000
"""How long a writer waits for another process's write transaction (receiver processes)."""


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection to ``path`` usable from any thread (callers serialise with a lock),
    autocommit unless in :func:`transaction`, rows by column name.

    ``synchronous``: FULL (on disk when a transaction returns) or NORMAL (kept if the process
    dies, may be lost in a power cut; no fsync per transaction).
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return db


@contextmanager
def transaction(db: sqlite3.Connection, lock: threading.RLock) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db``, holding ``lock``: committed, or rolled back on error."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
