"""Retention: purge studies whose results every destination received, after a delay.

Run by an APScheduler job when ``retention.delivered_after_days`` is set (off by default). A
study is purged when it is done, every one of its exports was sent, and the last delivery and
the last received instance are older than the delay. The purge marks the study ``purging``,
removes the files, then the rows; a stop half-way is resumed by the next run, and the rows of
files already removed are dropped by start-up reconciliation either way. An instance received
during the purge is kept, and its study becomes a receiving study again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from service.runtime.audit import audit
from service.storage.index import Index
from service.storage.store import InstanceStore
from service.storage.study_state import StudyState

log = logging.getLogger("hypoxnode.retention")

SECONDS_PER_DAY = 86400.0

__all__ = ["purge_delivered", "purge_study"]


def purge_delivered(
    index: Index,
    store: InstanceStore,
    delivered_after_days: float,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Purge every study delivered more than ``delivered_after_days`` ago.

    Returns
    -------
    list[str]
        StudyInstanceUIDs purged.
    """
    if delivered_after_days < 0:
        raise ValueError(f"delivered_after_days must be >= 0, got {delivered_after_days}")
    cutoff = clock() - delivered_after_days * SECONDS_PER_DAY
    purged = []
    for study_uid in index.purgeable_studies(cutoff):
        if purge_study(index, store, study_uid, clock):
            purged.append(study_uid)
    return purged


def purge_study(
    index: Index, store: InstanceStore, study_uid: str, clock: Callable[[], float] = time.time
) -> bool:
    """Remove one done (or half-purged) study's files and rows; False if it changed state."""
    if not (index.set_study_state(study_uid, StudyState.PURGING, expected=StudyState.DONE)
            or _is_purging(index, study_uid)):
        return False
    # Exclusive: no instance of the study is being stored (file and row) while its files,
    # rows and folders go; one sent meanwhile waits, then is stored and kept.
    with store.study_lock(study_uid, exclusive=True):
        if not _is_purging(index, study_uid):
            return False  # a new instance arrived while we waited: receiving again, keep all
        started_at = clock()
        instances, results = index.study_files(study_uid)
        for path in [*instances.values(), *results.values()]:
            Path(path).unlink(missing_ok=True)
        removed_study = index.forget_purged(study_uid, list(instances), list(results),
                                            started_at)
        for directory in (store.instances_dir / study_uid, store.results_dir / study_uid):
            _remove_empty_dirs(directory)
    audit.info(
        "purged study %s: %d instance(s), %d result object(s), results delivered%s",
        study_uid, len(instances), len(results),
        "" if removed_study else "; instances received during the purge kept",
    )
    return True


def _is_purging(index: Index, study_uid: str) -> bool:
    info = index.study(study_uid)
    return info is not None and info["state"] == StudyState.PURGING.value


def _remove_empty_dirs(root: Path) -> None:
    """Remove ``root`` and its sub-folders that are empty (deepest first)."""
    if not root.is_dir():
        return
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()
