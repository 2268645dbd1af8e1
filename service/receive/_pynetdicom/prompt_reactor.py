"""Event-driven pynetdicom acceptor: wait for the peer instead of sleeping a millisecond.

pynetdicom 3.0 runs each association in two threads that poll: the DUL thread sleeps 1 ms
whenever its socket has nothing to read and nothing is queued to send, and the association
thread sleeps 1 ms before every look at its DIMSE message queue (pynetdicom's own comment
there plans an event-based loop). A C-STORE sender that waits for each response before it sends
the next instance (DCMTK ``storescu``, most scanners) pays those sleeps on every instance
(how much: ``docs/bench/README.md``, "Measurements behind design choices"). Here both threads
wait on the thing they are waiting for:

- the DUL thread waits in :func:`select.select` on its socket and on a wake-up socket pair
  that :meth:`PromptDUL.send_pdu` (a response to send) and the stop calls write to;
- the association thread blocks on its DIMSE message queue, which the DUL thread fills.

and the socket reads each PDU with ``recv_into`` a buffer of the PDU's size
(:class:`PromptSocket`) where pynetdicom reads 4,096 bytes per call and appends.

Only the waiting and the reading change; every PDU, event and state transition is
pynetdicom's own.
The servers that hand these associations out are in
:mod:`service.receive._pynetdicom.prompt_server`.
``tests/integration/test_prompt_reactor.py`` pins the upstream methods this module re-implements, so
an upgrade of pynetdicom that changes them fails a test instead of drifting silently.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket

from service.receive._pynetdicom.spool import SpoolingDIMSE
from service.receive.association_grace import GraceCount

LOGGER = logging.getLogger("pynetdicom.assoc")
"""pynetdicom's own logger: the messages below are the upstream reactor's."""

AUDIT = logging.getLogger("hypoxnode.audit")

DUL_IDLE_WAIT_S = 0.01
"""Longest wait of the DUL thread with nothing to do (it re-checks its ARTIM timer then)."""

QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
"""``TCP_QUICKACK`` where the platform has it (Linux); it lasts until the kernel's next
delayed-ACK decision, so it is set again before every read."""

RECV_PREALLOCATE_BYTES = 1 << 20

ASSOCIATION_PDU_MAX_BYTES = 64 * 1024
"""Largest PDU accepted whatever the negotiated maximum: an A-ASSOCIATE-RQ proposing 128
presentation contexts with several transfer syntaxes each is about 15 KB."""

UNLIMITED_PDU_CAP_BYTES = 64 * 1024 * 1024
"""Largest PDU accepted when ``node.max_pdu_bytes`` is 0 (no maximum announced)."""

ASSOCIATION_REQUEST_DEADLINE_S = 10.0
"""Default time a connection has, in all, to deliver its A-ASSOCIATE-RQ (not per read: a
peer trickling a byte at a time is cut off too); ``node.association_request_timeout_s``
sets it on the AE (``association_request_deadline_s``)."""
"""Most a PDU read allocates ahead of the data arriving (a PDU length is the peer's claim)."""

ASSOCIATION_POLL_S = 0.001
"""Longest wait of the association thread for a DIMSE message before it re-checks release,
abort and the network timeout: the interval of pynetdicom's own loop."""


class PromptDUL(DULServiceProvider):
    """A DUL service provider that waits on its socket and a wake-up pair, not on a timer."""

    _wake_receive: socket.socket
    _wake_send: socket.socket

    def _init_wake_up(self) -> None:
        self._wake_receive, self._wake_send = socket.socketpair()
        self._wake_receive.setblocking(False)
        self._wake_send.setblocking(False)
        self._run_loop_delay = 0.0  # the wait is in _is_transport_event

    def wake(self) -> None:
        """Make the DUL thread look at its queues and flags now."""
        with contextlib.suppress(OSError):  # a byte already pending, or the pair closed
            self._wake_send.send(b"\0")

    def send_pdu(self, primitive: Any) -> None:
        """Queue ``primitive`` for sending, as upstream, and wake the DUL thread to send it."""
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        """Stop the reactor (upstream) without waiting for its next look at the flag."""
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if in ``'Sta1'``, as upstream, waking it instead of polling."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake()
        if threading.current_thread() is not self:
            self.join()
        return True

    def _is_transport_event(self) -> bool:
        """Upstream's check for incoming data; when there is none, wait for data or a wake-up.

        The reactor calls this only when nothing was queued to send, and sleeps
        ``_run_loop_delay`` (here 0) after it when no event resulted, so the waiting of the
        whole loop happens here.
        """
        if super()._is_transport_event():
            return True
        if self._kill_thread or not self.event_queue.empty() or self.to_provider_queue.qsize():
            return False
        watched: list[Any] = [self._wake_receive]
        peer = self.socket.socket if self.socket is not None else None
        if peer is not None and peer.fileno() >= 0:
            watched.append(peer)
        try:
            ready, _, _ = select.select(watched, [], [], DUL_IDLE_WAIT_S)
        except (OSError, ValueError):  # the socket was closed by another thread meanwhile
            return False
        if self._wake_receive in ready:
            self._drain_wake_ups()
        return super()._is_transport_event() if peer in ready else False

    def _drain_wake_ups(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_receive.recv(4096):
                pass

    def run(self) -> None:
        """The thread: upstream's reactor; the wake-up pair is closed when it ends."""
        try:
            super().run()
        finally:
            self._wake_send.close()
            self._wake_receive.close()


class PromptSocket(AssociationSocket):
    """pynetdicom's association socket, reading a PDU in as few calls as the kernel allows."""

    def pdu_limit(self) -> int:
        """The largest PDU read: the maximum this node announces (``node.max_pdu_bytes``),
        at least :data:`ASSOCIATION_PDU_MAX_BYTES`; :data:`UNLIMITED_PDU_CAP_BYTES` when it
        announces none."""
        ae = getattr(getattr(self, "_assoc", None), "ae", None)
        announced = int(getattr(ae, "maximum_pdu_size", 0) or 0)
        if announced <= 0:
            return UNLIMITED_PDU_CAP_BYTES
        return max(announced, ASSOCIATION_PDU_MAX_BYTES)

    def get_remote_address_text(self) -> str:
        """``host:port`` of the peer, for the audit line: the association's requestor (behind
        a load balancer the scanner named in the PROXY header), else the socket's peer."""
        requestor = getattr(getattr(self, "_assoc", None), "requestor", None)
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            if requestor is not None and requestor.address:
                return f"{requestor.address}:{requestor.port}"
        with contextlib.suppress(OSError, AttributeError):
            host, port = cast(socket.socket, self.socket).getpeername()[:2]
            return f"{host}:{port}"
        return "?"

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` (blocking, with the socket's timeout), as upstream.

        Returns fewer bytes only when the peer closed the connection, as upstream.

        Raises
        ------
        ConnectionAbortedError
            ``nr_bytes`` (a PDU length the peer claims) is above what this node announced it
            receives (:meth:`pdu_limit`): the connection is closed before anything of it is
            allocated or read.
        """
        limit = self.pdu_limit()
        if nr_bytes > limit:
            AUDIT.warning("connection from %s closed: PDU of %d bytes claimed, more than the "
                          "%d this node receives", self.get_remote_address_text(), nr_bytes,
                          limit)
            self.close()
            raise ConnectionAbortedError(f"PDU of {nr_bytes} bytes claimed (limit {limit})")
        peer = cast(socket.socket, self.socket)
        deadline = self._request_deadline()
        if deadline is None:
            return self._recv_all(peer, nr_bytes, None)
        timeout = peer.gettimeout()
        try:
            return self._recv_all(peer, nr_bytes, deadline)
        except TimeoutError:
            if time.monotonic() >= deadline:
                AUDIT.warning("connection from %s closed: no complete association request "
                              "within %.0f s", self.get_remote_address_text(),
                              self._request_deadline_s())
                self.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                peer.settimeout(timeout)

    def _request_deadline_s(self) -> float:
        ae = getattr(getattr(self, "_assoc", None), "ae", None)
        return float(getattr(ae, "association_request_deadline_s",
                             ASSOCIATION_REQUEST_DEADLINE_S))

    def _request_deadline(self) -> float | None:
        """Monotonic deadline for the association request; None once associated."""
        assoc = getattr(self, "_assoc", None)
        if assoc is None or assoc.is_established or not assoc.is_acceptor:
            return None
        deadline: float | None = getattr(self, "_deadline", None)
        if deadline is None:
            deadline = time.monotonic() + self._request_deadline_s()
            self._deadline = deadline
        return deadline

    def _recv_all(self, peer: socket.socket, nr_bytes: int, deadline: float | None
                  ) -> bytearray:
        if QUICKACK is not None:
            # Acknowledge at once: a sender with Nagle's algorithm on (DCMTK's default) holds
            # its next segment until our ACK, which Linux may otherwise delay up to 40 ms.
            with contextlib.suppress(OSError):
                peer.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        # Memory grows with what arrived, never with what the peer claims it will send.
        buffer = bytearray(min(nr_bytes, RECV_PREALLOCATE_BYTES))
        nr_read = 0
        while nr_read < nr_bytes:
            if nr_read == len(buffer):
                buffer.extend(bytes(min(nr_bytes - nr_read, RECV_PREALLOCATE_BYTES)))
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("association request deadline passed")
                peer.settimeout(remaining)
            with memoryview(buffer) as view:
                received = peer.recv_into(view[nr_read:], len(buffer) - nr_read)
            if not received:
                del buffer[nr_read:]
                return buffer
            nr_read += received
        return buffer


class PromptAssociation(Association):
    """An acceptor whose reactor blocks on the DIMSE queue instead of sleeping first."""

    on_end: Callable[[], None] | None = None
    """Called when the association's thread ends, however it ends."""

    over_limit = False
    """Handed over while the node held ``max_associations`` already: to be rejected."""

    grace: GraceCount | None = None
    """How its connection counts against ``max_associations``
    (:mod:`service.receive.association_grace`); the A-ASSOCIATE-RQ handler calls ``requested``."""

    def run(self) -> None:
        """The association thread (upstream), then :attr:`on_end`."""
        try:
            super().run()
        finally:
            if isinstance(self.dimse, SpoolingDIMSE):
                self.dimse.discard_unfinished()
            if self.on_end is not None:
                self.on_end()

    def _run_reactor(self) -> None:
        """pynetdicom 3.0's acceptor loop with ``time.sleep(0.001)`` + non-blocking get
        replaced by a get that waits up to :data:`ASSOCIATION_POLL_S`."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=ASSOCIATION_POLL_S)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                LOGGER.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                LOGGER.info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                LOGGER.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def make_prompt(assoc: Association) -> None:
    """Turn a freshly created, not yet started acceptor into a prompt one, in place.

    The classes are swapped rather than the objects rebuilt, so everything pynetdicom's
    request handler configured (contexts, titles, handlers, the socket and the connection
    event it already queued) stays as it is. Both subclasses add methods only.
    """
    assoc.__class__ = PromptAssociation
    assoc.dul.__class__ = PromptDUL
    if assoc.dul.socket is not None:
        assoc.dul.socket.__class__ = PromptSocket
    cast(PromptDUL, assoc.dul)._init_wake_up()
