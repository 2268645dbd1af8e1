"""One delivery attempt to one peer: one association, bounded in total time.

Both result export (:mod:`service.export.sender`) and forwarding of originals
(:mod:`service.routing.forward`) send through :func:`deliver`. pynetdicom bounds each wait on
the peer (``network_timeout_s``) but, as a requestor, clears the socket timeout once
connected: a peer that trickles an endless A-ASSOCIATE-AC or P-DATA one byte at a time keeps
a C-STORE waiting forever. :func:`deliver` therefore arms a watchdog for the whole attempt
(association, every C-STORE, release); when it fires, the connection is shut down under
pynetdicom, which then aborts the association, and every instance not yet acknowledged is
reported back with the reason, to be retried on the destination's schedule.

:class:`DestinationWorkers` runs each destination's attempt in its own thread, so a slow or
hostile peer delays only the instances queued for it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

log = logging.getLogger("hypoxnode.delivery")

T = TypeVar("T")


@dataclass(frozen=True)
class Peer:
    """Where an attempt goes: a configured destination."""

    key: str
    """The destination's name in the index and the configuration."""
    ae_title: str
    host: str
    port: int
    deadline_s: float
    """Total time one attempt may take, association and release included."""

    @property
    def where(self) -> str:
        """``AE@host:port``, for messages."""
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Item:
    """One instance to send."""

    id: int
    """The caller's row id, handed back in its :class:`Outcome`."""
    sop_class_uid: str
    transfer_syntaxes: tuple[str, ...]
    """Transfer syntaxes proposed for its presentation context."""
    payload: Dataset | Path
    """The data set, or the file sent byte for byte (pynetdicom reads it)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one :class:`Item`."""

    id: int
    delivered: bool
    status: int | None
    """The C-STORE response status, when one came."""
    reason: str
    """Why it was not delivered (empty when it was)."""
    final: bool
    """A failure that retrying cannot cure (the peer rejected the SOP class)."""


def accepted(status: int) -> bool:
    """Whether a C-STORE response status means the peer holds the instance (success or
    warning, PS3.7 Annex C)."""
    return code_to_category(status) in (STATUS_SUCCESS, STATUS_WARNING)


def deliver(calling_ae_title: str, peer: Peer, items: list[Item],
            network_timeout_s: float,
            describe: Callable[[int], str]) -> list[Outcome]:
    """Send ``items`` to ``peer`` on one association, within ``peer.deadline_s`` in total.

    Parameters
    ----------
    calling_ae_title
        This node's AE title.
    peer
        The destination and its deadline.
    items
        What to send; one presentation context per SOP class.
    network_timeout_s
        Bound on each single wait (connection, association, each response).
    describe
        Turns a DIMSE status into the words used in reasons.

    Returns
    -------
    list of Outcome
        One per item, in order.
    """
    if not items:
        return []
    wait_s = min(network_timeout_s, peer.deadline_s)
    ae = AE(ae_title=calling_ae_title)
    for attribute in ("network_timeout", "acse_timeout", "dimse_timeout", "connection_timeout"):
        setattr(ae, attribute, wait_s)
    syntaxes: dict[str, set[str]] = defaultdict(set)
    for item in items:
        syntaxes[item.sop_class_uid].update(item.transfer_syntaxes)
    for sop_class, proposed in sorted(syntaxes.items()):
        ae.add_requested_context(sop_class, sorted(proposed))

    watchdog = _Watchdog(peer.deadline_s)
    outcomes: dict[int, Outcome] = {}
    try:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                             evt_handlers=[(evt.EVT_CONN_OPEN, watchdog.watch)])
        if not assoc.is_established:
            reason = watchdog.reason(peer) or _association_failure(assoc, peer)
            return [_retry(item, reason) for item in items]
        try:
            taken = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
            for item in items:
                outcomes[item.id] = _store(assoc, item, taken, peer, watchdog, describe)
        finally:
            if assoc.is_established and not watchdog.expired:
                assoc.release()
            if assoc.is_established:
                assoc.abort()
    finally:
        watchdog.cancel()
    return [outcomes.get(item.id) or _retry(item, "not sent") for item in items]


def _store(assoc: Association, item: Item, taken: set[str], peer: Peer, watchdog: _Watchdog,
           describe: Callable[[int], str]) -> Outcome:
    if item.sop_class_uid not in taken:
        return Outcome(item.id, False, None,
                       f"{peer.where} does not accept SOP class {item.sop_class_uid}"
                       f" ({UID(item.sop_class_uid).name}): presentation context rejected",
                       final=True)
    if watchdog.expired or not assoc.is_established:
        return _retry(item, watchdog.reason(peer) or f"association with {peer.where} lost")
    try:
        response = assoc.send_c_store(item.payload)
    except (ValueError, RuntimeError, OSError) as exc:
        return _retry(item, watchdog.reason(peer) or f"C-STORE to {peer.where} failed: {exc}")
    code = int(response.Status) if response and "Status" in response else None
    if code is None:
        return _retry(item, watchdog.reason(peer) or (
            f"no C-STORE response from {peer.where}: the association was closed or timed out"
            f" (does it accept calling AE title {assoc.ae.ae_title}?)"))
    if accepted(code):
        return Outcome(item.id, True, code, "", final=False)
    return Outcome(item.id, False, code, f"C-STORE refused by {peer.where}: {describe(code)}",
                   final=False)


def _retry(item: Item, reason: str) -> Outcome:
    return Outcome(item.id, False, None, reason, final=False)


class _Watchdog:
    """Shuts the attempt's connection down when its deadline passes."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._expired = threading.Event()
        self._associations: list[Association] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(deadline_s, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._expired.is_set()

    def reason(self, peer: Peer) -> str:
        """The failure reason when the deadline cut the attempt short, else ``""``."""
        if not self.expired:
            return ""
        return (f"delivery to {peer.where} took longer than its deadline of"
                f" {self.deadline_s:g} s: connection closed")

    def watch(self, event: Event) -> None:
        """EVT_CONN_OPEN handler: remember the association (cut at once if already late)."""
        with self._lock:
            self._associations.append(event.assoc)
            late = self.expired
        if late:
            _shut_down(event.assoc)

    def cancel(self) -> None:
        """The attempt ended on its own."""
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self._expired.set()
            associations = list(self._associations)
        for assoc in associations:
            log.warning("delivery to %s exceeded its deadline of %g s: closing the connection",
                        assoc.acceptor.ae_title, self.deadline_s)
            _shut_down(assoc)


def _shut_down(assoc: Association) -> None:
    """Wake pynetdicom's reader: a shut-down socket reads as closed by the peer."""
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)


def _association_failure(assoc: Association, peer: Peer) -> str:
    if assoc.is_rejected:
        primitive = getattr(assoc.acceptor, "primitive", None)
        result = getattr(primitive, "result_str", None) or getattr(primitive, "result", "")
        diagnostic = getattr(primitive, "reason_str", None) or getattr(primitive, "diagnostic",
                                                                         "")
        return f"association rejected by {peer.where}: {result} {diagnostic}".strip()
    # pynetdicom reports a refused TCP connection as an aborted association.
    return f"could not associate with {peer.where} (connection refused, aborted or timed out)"


class DestinationWorkers:
    """One worker thread per destination at a time: a busy destination is skipped.

    Parameters
    ----------
    name
        Prefix of the thread names (``export``, ``forward``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._delivered = 0

    def delivered_one(self) -> None:
        """Count one delivered item (for :meth:`run_due`'s return value)."""
        with self._lock:
            self._delivered += 1

    def run_due(self, due: Iterable[T], destination_of: Callable[[T], str],
                work_for: Callable[[str, list[T]], Callable[[], object] | None],
                wait: bool) -> int:
        """Start an attempt for every destination with due items and no attempt running.

        Parameters
        ----------
        due
            The items due now, in queue order.
        destination_of
            The destination key of an item.
        work_for
            The attempt for one destination's items; None when there is none (the caller
            dealt with them, e.g. gave up on a destination no longer configured).
        wait
            Wait for the attempts started (each bounded by its destination's deadline); the
            scheduler's tick does not, so the next tick serves the destinations that are free.

        Returns
        -------
        int
            Items the attempts started here delivered (0 when not waiting).
        """
        by_destination: dict[str, list[T]] = defaultdict(list)
        for item in due:
            by_destination[destination_of(item)].append(item)
        busy = set(self.busy())
        started = []
        before = self._delivered
        for key, items in by_destination.items():
            if key in busy:
                continue  # its attempt is still running: its items are not due twice
            work = work_for(key, items)
            if work is not None:
                started.append(self.start(key, work))
        if not wait:
            return 0
        self.join(started)
        return self._delivered - before

    def busy(self) -> list[str]:
        """Destinations whose attempt is still running."""
        with self._lock:
            return sorted(key for key, thread in self._threads.items() if thread.is_alive())

    def start(self, key: str, work: Callable[[], object]) -> threading.Thread | None:
        """Run ``work`` in the destination's thread, unless one is already running."""
        with self._lock:
            running = self._threads.get(key)
            if running is not None and running.is_alive():
                return None
            thread = threading.Thread(target=_logged(work, key), name=f"{self.name}-{key}",
                                      daemon=True)
            self._threads[key] = thread
            thread.start()
            return thread

    def join(self, threads: Iterable[threading.Thread | None]) -> None:
        """Wait for the given attempts (each is bounded by its own deadline)."""
        for thread in threads:
            if thread is not None:
                thread.join()


def _logged(work: Callable[[], object], key: str) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except Exception:  # one destination's fault must not go unseen
            log.exception("delivery to %s failed unexpectedly", key)
    return run
