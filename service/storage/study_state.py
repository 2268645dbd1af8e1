"""The states a study goes through in the index (see :mod:`service.storage.index`)."""

from __future__ import annotations

from enum import StrEnum


class StudyState(StrEnum):
    """Where a study is in its life."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    PURGING = "purging"
    """Retention is removing it (its results were delivered long enough ago)."""
