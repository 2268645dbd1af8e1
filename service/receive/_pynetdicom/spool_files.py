"""Spool files: where a C-STORE data set is written as its fragments arrive
(:mod:`service.receive._pynetdicom.spool`), created ahead of need, kept above the disk floor, made
durable, and
removed when a receiver process that held them died.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta

log = logging.getLogger("hypoxnode.listener")

SPOOL_PREFIX = "store-"
"""Spool files are ``<tmp>/store-<pid>-<random>.part``: the node removes a dead receiver
process's by its pid (:func:`remove_orphans`)."""


RESERVE_FILES = 4
"""Empty spool files a :class:`SpoolReserve` keeps created ahead of need."""

FLOOR_CHUNK_BYTES = 4 * 1024 * 1024
"""A spool file asks :class:`DiskFloor` before its first byte and before each further chunk
of this size: one ``statvfs`` per 4 MB written."""


class DiskFloor:
    """The free-space floor (``node.min_free_mb``) applied while data sets are spooled.

    The floor was checked after a data set had been written: three 40 MB instances at once
    at the floor were all refused, but only after they had filled the disk to 0. Here a spool
    file may write its next :data:`FLOOR_CHUNK_BYTES` only while the free space, less one
    chunk for every spool file of this process still being written (what they may write
    before they ask again), stays at or above the floor. So a data set is refused at its
    start when the disk is at the floor, and the disk goes at most one chunk per spool file
    below it.
    """

    def __init__(self, directory: Path, min_free_bytes: int) -> None:
        self.directory = directory
        self.min_free_bytes = min_free_bytes
        self._writing: set[int] = set()
        self._lock = threading.Lock()

    def grant(self, spool_id: int) -> bool:
        """Whether spool file ``spool_id`` may write its next chunk."""
        if self.min_free_bytes <= 0:
            return True
        with self._lock:
            self._writing.add(spool_id)
            writing = len(self._writing)
        try:
            free = os.statvfs(self.directory)
        except OSError:
            return True  # the write itself will fail and say why
        return free.f_bavail * free.f_frsize - FLOOR_CHUNK_BYTES * writing \
            >= self.min_free_bytes

    def done(self, spool_id: int) -> None:
        """Spool file ``spool_id`` writes no more."""
        with self._lock:
            self._writing.discard(spool_id)


def below_floor() -> OSError:
    """The error of a spool file refused by :class:`DiskFloor`."""
    return OSError(errno.ENOSPC, "free disk space below the floor (node.min_free_mb)")


def _create(directory: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=directory, prefix=f"{SPOOL_PREFIX}{os.getpid()}-",
                            suffix=".part")


class SpoolReserve:
    """Empty spool files in ``directory``, created by a thread of their own ahead of need.

    Creating a file is the one costly step of spooling that need not wait for the data
    (measured: ``docs/bench/README.md``, "Measurements behind design choices"). A thread keeps
    :data:`RESERVE_FILES` created, so the DUL thread only takes one; it creates one itself
    when the reserve is empty. :meth:`close` removes what was not used.
    """

    def __init__(self, directory: Path, size: int = RESERVE_FILES,
                 min_free_bytes: int = 0) -> None:
        self.directory = directory
        self.floor = DiskFloor(directory, min_free_bytes)
        """The free-space floor its spool files keep (:class:`DiskFloor`)."""
        self._size = size
        self._ready: deque[tuple[int, str]] = deque()
        self._wanted = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def take(self) -> tuple[int, str]:
        """A new empty file (descriptor open for writing, name)."""
        with self._wanted:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._fill, name="spool-reserve",
                                                daemon=True)
                self._thread.start()
            taken = self._ready.popleft() if self._ready else None
            self._wanted.notify()
        return taken if taken is not None else _create(self.directory)

    def _fill(self) -> None:
        while True:
            with self._wanted:
                while not self._closed and len(self._ready) >= self._size:
                    self._wanted.wait()
                if self._closed:
                    return
            try:
                created = _create(self.directory)
            except OSError as exc:  # the store's folder is gone or full: take() will say
                log.warning("cannot create spool files in %s: %s", self.directory, exc)
                with self._wanted:
                    self._wanted.wait(1.0)
                continue
            with self._wanted:
                if self._closed:
                    _remove(*created)
                    return
                self._ready.append(created)

    def close(self) -> None:
        """Stop creating and remove the files not taken."""
        with self._wanted:
            self._closed = True
            self._wanted.notify_all()
            while self._ready:
                _remove(*self._ready.popleft())
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


def _remove(fd: int, name: str) -> None:
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


class SpoolFile:
    """A data set being received, appended to a file (the interface pynetdicom expects of a
    ``_data_set_file``: ``write``, ``file.flush``, ``close``, ``name``).

    A write that fails (disk full, I/O error) is kept in :attr:`error` and every later write
    is dropped: the association goes on, and the C-STORE handler refuses the instance.

    Parameters
    ----------
    reserve
        Where the (empty) file comes from.
    transfer_syntax
        The data set's transfer syntax.
    """

    def __init__(self, reserve: SpoolReserve, transfer_syntax: UID) -> None:
        fd, name = reserve.take()
        self._fd: int | None = fd
        self.name = name
        self.size = 0
        self.error: OSError | None = None
        self._floor = reserve.floor
        self._granted = 0
        """Bytes the floor allows before it is asked again."""
        self.transfer_syntax = transfer_syntax
        self.data_set_offset = 0
        """Where the data set starts, after the preamble and the file meta."""
        self.durable = False
        """Whether the file's data reached the disk (:meth:`make_durable`)."""
        self.on_close: Callable[[SpoolFile], None] | None = None
        """Called once closed (the association's bookkeeping of open spool files)."""
        self._lock = threading.Lock()

    @property
    def file(self) -> SpoolFile:
        """Itself: pynetdicom flushes ``_data_set_file.file`` after each fragment."""
        return self

    def write(self, data: bytes) -> None:
        """Append ``data`` (nothing once a write has failed, or once closed)."""
        with self._lock:  # never a write to a descriptor closed (and reused) meanwhile
            if self.error is not None or self._fd is None:
                return
            if self.size + len(data) > self._granted:
                if not self._floor.grant(id(self)):
                    self._refuse_below_floor()
                    return
                self._granted = self.size + len(data) + FLOOR_CHUNK_BYTES
            try:
                with memoryview(data) as view:
                    written = 0
                    while written < len(view):
                        written += os.write(self._fd, view[written:])
            except OSError as exc:
                self.error = exc
                return
            self.size += written

    def _refuse_below_floor(self) -> None:
        """Stop writing and give back what was written (the lock is held)."""
        self.error = below_floor()
        self._floor.done(id(self))
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)

    def flush(self) -> None:
        """Nothing buffered: every :meth:`write` is a system call."""

    def make_durable(self) -> OSError | None:
        """fsync the file, once, whichever thread asks first; a later caller waits for that
        one and gets its outcome. Returns the write or fsync error, if any (the C-STORE
        handler must see it: after a failed fsync a new descriptor may not report it)."""
        with self._lock:
            if not self.durable and self.error is None and self._fd is not None:
                try:
                    os.fsync(self._fd)
                    self.durable = True
                except OSError as exc:
                    self.error = exc
        self._floor.done(id(self))  # complete: it writes no more
        return self.error

    def close(self) -> None:
        """Close the file (it stays on disk: adopted by the store, or unlinked by
        pynetdicom's storage service class after the handler)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._floor.done(id(self))
        if self.on_close is not None:
            self.on_close(self)

    def discard(self) -> None:
        """Close and remove the file."""
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.name)


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information of a received data set, as
    ``pynetdicom.dsutils.create_file_meta`` and pydicom's ``write_file_meta_info`` encode it
    (what upstream's spooling writes).

    pydicom's encoding costs time in the DUL thread before the first data-set fragment is
    read; it is made once per SOP class, transfer syntax and instance UID length by pydicom
    and the instance UID is put into its place.
    """
    uid = sop_instance_uid.encode("ascii")
    template, offset = _file_meta_template(sop_class_uid, transfer_syntax, len(uid))
    return b"".join((template[:offset], uid, template[offset + len(uid):]))


_MEDIA_STORAGE_SOP_INSTANCE_UID = b"\x02\x00\x03\x00UI"
"""(0002,0003) UI, explicit VR little endian: the element header before the instance UID."""


@functools.lru_cache(maxsize=256)
def _file_meta_template(sop_class_uid: str, transfer_syntax: str,
                        uid_length: int) -> tuple[bytes, int]:
    """The encoded file meta for a placeholder instance UID of ``uid_length`` characters,
    and where that UID starts."""
    encoded = BytesIO()
    encoded.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(encoded, create_file_meta(  # type: ignore[arg-type]
        sop_class_uid=UID(sop_class_uid),
        sop_instance_uid=UID("9" * uid_length),
        transfer_syntax=UID(transfer_syntax),
    ))
    template = encoded.getvalue()
    offset = template.index(_MEDIA_STORAGE_SOP_INSTANCE_UID) + len(
        _MEDIA_STORAGE_SOP_INSTANCE_UID) + 2  # + the 2-byte length
    return template, offset


def remove_orphans(spool_dir: Path, pid: int) -> int:
    """Remove the spool files a process ``pid`` that died left behind; returns how many."""
    removed = 0
    for path in spool_dir.glob(f"{SPOOL_PREFIX}{pid}-*.part"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
