"""C-STORE data sets written to disk as their fragments arrive, not after.

pynetdicom keeps a received data set in memory until its last fragment, and the handler then
decodes it, re-encodes it with its file meta and writes it: three copies of every byte, all
of them after the sender has finished sending, while the sender waits for the response. Here
the DUL thread appends each data-set fragment to a file in the store's temporary folder as it
arrives, so the write overlaps with the sender sending the rest, and the file is fsynced in
the DUL thread as soon as the data set is complete, while the association thread gets the
handler going. (Asking the kernel to start writing each fragment out at once,
``sync_file_range``, shortened that fsync but cost more CPU than it saved: node CPU per
instance with it against without, in two rounds of 4 alternating runs of the 600-instance
bench study, was 3.4/2.8 and 4.0/3.6 ms with one association, 4.0/3.6 and 5.2/4.3 ms with
four.)
The C-STORE handler then renames the file into place
(:meth:`service.store.InstanceStore.adopt_instance`).

This is pynetdicom's own ``STORE_RECV_CHUNKED_DATASET`` mechanism (the message's
``_data_set_file``/``_data_set_path``, read back by ``Event.dataset_path``, closed and
unlinked after the handler by the storage service class) with three differences that the
process-wide switch does not allow: the file is in the store's folder (a rename, never a copy
across file systems), a failed write (disk full) is recorded for the handler to refuse the
instance instead of raising in the DUL thread, and a data set that never completed (aborted
association) is removed when the association ends.

A data set whose first fragment travels in the same P-DATA as the end of its command set is
spooled from its next P-DATA on (what arrived is copied to the file first); one that arrives
whole in that P-DATA stays in memory as upstream has it, and the handler writes it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta
from pynetdicom.pdu_primitives import P_DATA

from service.dimse_status import SOP_CLASS_NOT_SUPPORTED
from service.store_response import c_store_rsp_command

log = logging.getLogger("hypoxnode.listener")
audit = logging.getLogger("hypoxnode.audit")

STORAGE_SOP_CLASSES = frozenset(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)
"""SOP classes a C-STORE may name: the storage contexts the listener accepts."""

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

    Creating a file is the one costly step of spooling that need not wait for the data: on
    the benchmark machine a create took 0.4-0.9 ms under the checkout's ``var/`` (a loop of
    ``open(O_CREAT)``), more than writing 512 KB into the file. A thread keeps
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

    pydicom takes about 0.2 ms per call, in the DUL thread before the first data-set
    fragment is read; the encoding for a SOP class, transfer syntax and instance UID length
    is made once by pydicom and the instance UID is put into its place.
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


class SpoolingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider of a receiving association: C-STORE-RQ data sets go to
    files of :attr:`reserve` as they arrive, and C-STORE responses are encoded by
    :mod:`service.store_response`."""

    reserve: SpoolReserve
    _open_spools: set[SpoolFile]
    """This association's spool files not closed yet (each removes itself when closed)."""

    def receive_primitive(self, primitive: Any) -> None:
        """Upstream's handling of one P-DATA, then: a C-STORE request whose command set is
        complete and whose data set is not gets a :class:`SpoolFile` for its next
        fragments."""
        receiving = self.message._data_set_file if self.message is not None else None
        super().receive_primitive(primitive)
        message = self.message
        if message is None and isinstance(receiving, SpoolFile):
            # Complete and queued: the association thread takes it from here. The fsync it
            # needs runs now, in this thread and outside the GIL, while that thread prepares
            # the handler (which waits for it: SpoolFile.make_durable).
            receiving.make_durable()
        # self.message is None once a message is complete; a C_STORE_RQ here has its
        # command set decoded (the class is set from it) and awaits data-set fragments.
        if isinstance(message, C_STORE_RQ) and message._data_set_file is None:
            self._spool(message)

    def _spool(self, message: C_STORE_RQ) -> None:
        try:
            command = message.command_set
            context = self.assoc._accepted_cx[cast(int, message.context_id)]
            transfer_syntax = UID(context.transfer_syntax[0])
            meta = file_meta(str(command.AffectedSOPClassUID),
                             str(command.AffectedSOPInstanceUID), transfer_syntax)
        except Exception:  # an odd request: upstream's in-memory path, and its checks
            log.debug("C-STORE data set not spooled", exc_info=True)
            return
        try:
            spool = SpoolFile(self.reserve, transfer_syntax)
        except OSError as exc:
            log.error("cannot spool a C-STORE data set in %s: %s", self.reserve.directory, exc)
            return  # in memory; the handler's write will meet the same problem and refuse
        spool.write(meta)
        spool.data_set_offset = spool.size
        received = cast(BytesIO, message.data_set)
        spool.write(received.getvalue())
        message.data_set = BytesIO()
        message._data_set_file = spool  # type: ignore[assignment]
        message._data_set_path = Path(spool.name)
        self._open_spools.add(spool)
        spool.on_close = self._open_spools.discard

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """A C-STORE response as one P-DATA encoded by :mod:`service.store_response`;
        everything else, and any response with more than the required elements, upstream's
        way. Upstream also triggers ``EVT_DIMSE_SENT`` here: only when nothing is bound to it
        (pynetdicom's logging handlers are off, see :func:`service.logs.set_levels`) is the
        short way taken."""
        command = c_store_rsp_command(primitive) if isinstance(primitive, C_STORE) else None
        limit = self.maximum_pdu_size
        if (command is None or (limit and len(command) + 6 > limit)
                or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            super().send_msg(primitive, context_id)
            return
        p_data = P_DATA()
        # Message control header 0x03: command information, last fragment (PS3.8 E.2)
        p_data.presentation_data_value_list.append((context_id, b"\x03" + command))
        self.dul.send_pdu(p_data)

    def discard_unfinished(self) -> None:
        """When the association has ended: remove every spool file of it still open. That
        is a data set cut off mid-transfer, a request still queued, or one whose handler
        raised (pynetdicom then skips its close and unlink). pynetdicom closes every other
        one after its handler; a file adopted by the store is no longer under its name."""
        for spool in list(self._open_spools):
            spool.discard()


class StorageGate(queue.Queue):  # type: ignore[type-arg]
    """The DIMSE provider's queue of received messages, refusing a C-STORE request that is
    not on a storage presentation context of its own SOP class.

    pynetdicom chooses the service class by the request's AffectedSOPClassUID: a C-STORE
    naming Verification got a C-ECHO response (Success) and a C-STORE of a CT image sent on
    the Verification context went to the storage handler. Such a request is answered here
    with 0x0122 (SOP class not supported) and its data set discarded; it never reaches a
    service class.
    """

    def __init__(self, dimse: SpoolingDIMSE) -> None:
        super().__init__()
        self._dimse = dimse

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Queue ``(context_id, primitive)``, or answer a misplaced C-STORE request."""
        context_id, primitive = item
        if isinstance(primitive, C_STORE) and primitive.MessageID is not None:
            context = self._dimse.assoc._accepted_cx.get(context_id)
            sop_class = str(primitive.AffectedSOPClassUID)
            if context is not None and (sop_class not in STORAGE_SOP_CLASSES
                                        or str(context.abstract_syntax) != sop_class):
                self._refuse(primitive, context_id, str(context.abstract_syntax))
                return
        super().put(item, block, timeout)

    def _refuse(self, request: C_STORE, context_id: int, abstract_syntax: str) -> None:
        spool = spooled(request)
        if spool is not None:
            spool.discard()
        response = C_STORE()
        response.MessageIDBeingRespondedTo = request.MessageID
        response.AffectedSOPClassUID = request.AffectedSOPClassUID
        response.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
        response.Status = SOP_CLASS_NOT_SUPPORTED
        requestor = self._dimse.assoc.requestor
        audit.warning("C-STORE from %s@%s:%s refused: SOP class %r on the presentation"
                      " context of %s (not a storage context of that class)",
                      requestor.ae_title, requestor.address, requestor.port,
                      str(request.AffectedSOPClassUID), abstract_syntax)
        self._dimse.send_msg(response, context_id)


def make_spooling(dimse: DIMSEServiceProvider, reserve: SpoolReserve) -> None:
    """Turn an association's DIMSE provider into a :class:`SpoolingDIMSE`, in place."""
    dimse.__class__ = SpoolingDIMSE
    dimse.msg_queue = StorageGate(cast(SpoolingDIMSE, dimse))
    cast(SpoolingDIMSE, dimse).reserve = reserve
    cast(SpoolingDIMSE, dimse)._open_spools = set()


def spooled(request: Any) -> SpoolFile | None:
    """The spool file of a C-STORE request's data set; None when it stayed in memory."""
    spool = getattr(request, "_dataset_file", None)
    return spool if isinstance(spool, SpoolFile) else None


def remove_orphans(spool_dir: Path, pid: int) -> int:
    """Remove the spool files a process ``pid`` that died left behind; returns how many."""
    removed = 0
    for path in spool_dir.glob(f"{SPOOL_PREFIX}{pid}-*.part"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
