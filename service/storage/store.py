"""Durable instance store: every acknowledged instance is a complete file on disk.

Layout under ``data_dir``::

    instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    results/<StudyInstanceUID>/<kind>-<SOPInstanceUID>.dcm
    quarantine/                (acknowledged files the node could not keep indexed: never
                                deleted, see InstanceStore.quarantine)
    tmp/                       (partial writes and data sets being received, see
                                service.receive._pynetdicom.spool; emptied at start-up)
    locks/NN.lock              (study locks, see InstanceStore.study_lock)

A UID becomes a path component only after :func:`is_valid_uid` accepted it (digits and dots,
at most 64 characters), so no received value can climb out of ``data_dir``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
UID_MAX_LENGTH = 64
LOCK_STRIPES = 64
"""Study locks are this many files; studies share one by a hash of their UID."""


def is_valid_uid(value: object) -> bool:
    """True for a DICOM UID (PS3.5 9.1): dot-separated numbers, no leading zeros, <= 64 chars."""
    return isinstance(value, str) and len(value) <= UID_MAX_LENGTH and bool(_UID_RE.match(value))


class StoreError(Exception):
    """The instance could not be made durable (disk full, permissions, ...)."""


class InstanceConflictError(StoreError):
    """The SOPInstanceUID is already held in another study or series, or with other
    content: an acknowledged instance is never replaced nor moved."""


@dataclass(frozen=True)
class StoredFile:
    """Where an instance landed and how large it is."""

    path: Path
    size_bytes: int


class InstanceStore:
    """Writes instances and results atomically below one data directory.

    Parameters
    ----------
    data_dir
        Root of everything the node keeps. Created if missing.
    min_free_bytes
        Free-space floor: :meth:`has_room` is False below it.
    tmp_name
        A folder of ``tmp/`` of this node's own, when several nodes share ``data_dir``
        (``[cluster]``): each clears only its own partial files.
    """

    def __init__(self, data_dir: Path, min_free_bytes: int = 0, tmp_name: str = "") -> None:
        self.root = Path(data_dir).resolve()
        self.min_free_bytes = min_free_bytes
        self.instances_dir = self.root / "instances"
        self.results_dir = self.root / "results"
        self.tmp_dir = self.root / "tmp" / tmp_name if tmp_name else self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.quarantine_dir = self.root / "quarantine"
        for directory in (self.instances_dir, self.results_dir, self.tmp_dir, self.locks_dir):
            directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def study_lock(self, study_instance_uid: str, exclusive: bool) -> Iterator[None]:
        """Hold a study's lock, across threads and processes.

        Storing an instance (file and index row) holds it shared; purging the study holds it
        exclusive, so a purge never removes a file that is being stored, nor its row, and
        never removes a folder a store is about to rename a file into. ``flock`` on a fresh
        open of one of :data:`LOCK_STRIPES` files: locks of different opens exclude each
        other within one process too, and the kernel drops them if the process dies.
        """
        stripe = zlib.crc32(study_instance_uid.encode()) % LOCK_STRIPES
        fd = os.open(self.locks_dir / f"{stripe:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def has_room(self, incoming_bytes: int = 0) -> bool:
        """Whether the disk stays above the free-space floor after ``incoming_bytes``."""
        if self.min_free_bytes <= 0:
            return True
        free = shutil.disk_usage(self.root).free
        return free - incoming_bytes >= self.min_free_bytes

    def instance_path(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Path:
        """The final path of an instance; every UID must be valid."""
        for name, uid in (
            ("StudyInstanceUID", study_instance_uid),
            ("SeriesInstanceUID", series_instance_uid),
            ("SOPInstanceUID", sop_instance_uid),
        ):
            if not is_valid_uid(uid):
                raise ValueError(f"{name} is not a valid UID: {uid!r}")
        return self.instances_dir / study_instance_uid / series_instance_uid / (
            sop_instance_uid + ".dcm"
        )

    def write_instance(
        self,
        data: bytes,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
    ) -> StoredFile:
        """Write one encoded Part 10 instance durably (temporary file, fsync, rename, fsync dir).

        A re-sent instance (same SOPInstanceUID) replaces the earlier file atomically.
        """
        final = self.instance_path(study_instance_uid, series_instance_uid, sop_instance_uid)
        self._atomic_write(final, data)
        return StoredFile(final, len(data))

    def adopt_instance(
        self,
        spooled: Path,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
    ) -> StoredFile:
        """Move a complete Part 10 file from ``tmp/``, already fsynced by its writer
        (:meth:`service.receive._pynetdicom.spool.SpoolFile.make_durable`), into place: rename,
        fsync of the
        folder.

        A re-sent instance (same SOPInstanceUID) replaces the earlier file atomically.
        """
        final = self.instance_path(study_instance_uid, series_instance_uid, sop_instance_uid)
        try:
            size = os.stat(spooled).st_size
            _move_into_place(spooled, final)
        except OSError as exc:
            raise StoreError(f"could not write {final.name}: {exc.strerror or exc}") from exc
        return StoredFile(final, size)

    def result_path(self, study_instance_uid: str, kind: str, sop_instance_uid: str) -> Path:
        """Where a result object of ``kind`` (SEG, SR, SC) is kept."""
        if not is_valid_uid(study_instance_uid) or not is_valid_uid(sop_instance_uid):
            raise ValueError("result UIDs must be valid UIDs")
        if not kind.isalnum():
            raise ValueError(f"bad result kind {kind!r}")
        return self.results_dir / study_instance_uid / f"{kind}-{sop_instance_uid}.dcm"

    def write_result(self, data: bytes, study_instance_uid: str, kind: str, uid: str) -> Path:
        """Write a result object durably and return its path."""
        final = self.result_path(study_instance_uid, kind, uid)
        self._atomic_write(final, data)
        return final

    def instance_files(self) -> Iterator[Path]:
        """Every file under ``instances/`` (for reconciliation with the index)."""
        for dirpath, _dirs, files in os.walk(self.instances_dir):
            for name in files:
                yield Path(dirpath) / name

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move an instance file the node will not index into ``quarantine/``, with a
        ``.reason.txt`` beside it; returns its new path. Never deletes it: a file under
        ``instances/`` was acknowledged to a sender.
        """
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.quarantine_dir / f"{stamp}-{path.name}"
        counter = 1
        while target.exists():
            target = self.quarantine_dir / f"{stamp}-{counter}-{path.name}"
            counter += 1
        _move_into_place(path, target)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
        return target

    def quarantined(self) -> list[dict[str, str]]:
        """Files in ``quarantine/``, newest first: name and reason (for the status page)."""
        if not self.quarantine_dir.is_dir():
            return []
        out = []
        for path in sorted(self.quarantine_dir.iterdir(), reverse=True):
            if path.name.endswith(".reason.txt") or not path.is_file():
                continue
            note = path.with_name(path.name + ".reason.txt")
            reason = note.read_text().strip() if note.is_file() else ""
            out.append({"file": path.name, "reason": reason})
        return out

    def clear_tmp(self) -> int:
        """Remove partial writes left by a crash; returns how many were removed."""
        removed = 0
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def _atomic_write(self, final: Path, data: bytes) -> None:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                _move_into_place(Path(tmp_name), final)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(f"could not write {final.name}: {exc.strerror or exc}") from exc


def _move_into_place(durable: Path, final: Path) -> None:
    """Rename a file whose data is on disk to ``final`` so that the rename survives a crash
    too: missing folders created durably, the folder fsynced after the rename."""
    _make_dirs_durably(final.parent)
    os.replace(durable, final)
    _fsync_dir(final.parent)


def _make_dirs_durably(directory: Path) -> None:
    """Create missing directories and fsync each parent so the new entries survive a crash."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for new_dir in reversed(missing):
        new_dir.mkdir(exist_ok=True)
        _fsync_dir(new_dir.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
