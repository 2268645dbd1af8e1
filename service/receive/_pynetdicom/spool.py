"""C-STORE data sets written to disk as their fragments arrive, not after.

pynetdicom keeps a received data set in memory until its last fragment, and the handler then
decodes it, re-encodes it with its file meta and writes it: three copies of every byte, all
of them after the sender has finished sending, while the sender waits for the response. Here
the DUL thread appends each data-set fragment to a file in the store's temporary folder as it
arrives, so the write overlaps with the sender sending the rest, and the file is fsynced in
the DUL thread as soon as the data set is complete, while the association thread gets the
handler going. (Asking the kernel to start writing each fragment out at once,
``sync_file_range``, shortened that fsync but cost more CPU than it saved: measured in
``docs/bench/README.md``, "Measurements behind design choices".) The files themselves are
:mod:`service.receive._pynetdicom.spool_files`.
The C-STORE handler then renames the file into place
(:meth:`service.storage.store.InstanceStore.adopt_instance`).

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

import logging
import queue
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from pydicom.uid import UID
from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from service.receive._pynetdicom.spool_files import SpoolFile, SpoolReserve, file_meta
from service.receive._pynetdicom.store_response import c_store_rsp_command
from service.receive.dimse_status import SOP_CLASS_NOT_SUPPORTED

log = logging.getLogger("hypoxnode.listener")
audit = logging.getLogger("hypoxnode.audit")

STORAGE_SOP_CLASSES = frozenset(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)
"""SOP classes a C-STORE may name: the storage contexts the listener accepts."""

class SpoolingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider of a receiving association: C-STORE-RQ data sets go to
    files of :attr:`reserve` as they arrive, and C-STORE responses are encoded by
    :mod:`service.receive._pynetdicom.store_response`."""

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
        """A C-STORE response as one P-DATA encoded by
        :mod:`service.receive._pynetdicom.store_response`;
        everything else, and any response with more than the required elements, upstream's
        way. Upstream also triggers ``EVT_DIMSE_SENT`` here: only when nothing is bound to it
        (pynetdicom's logging handlers are off, see :func:`service.runtime.logs.set_levels`) is the
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


