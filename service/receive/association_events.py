"""Association-level events of the DICOM service: who connected, what was accepted or
rejected and why, what each association stored (one audit line when it ends), and the node's
own count of associations against ``node.max_associations``.

The C-ECHO/C-STORE handlers themselves are in :mod:`service.receive.listener`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from pynetdicom.events import Event

from service.config import Config
from service.report.metrics import Metrics

audit = logging.getLogger("hypoxnode.audit")


class _Counter(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...


class _LabelledCounter(Protocol):
    def labels(self, *values: str) -> _Counter: ...


class ListenerMetrics(Protocol):
    """The counters the listener moves: :class:`~service.report.metrics.Metrics`, or in a receiver
    process :class:`~service.receive.receivers.ForwardedMetrics`."""

    @property
    def instances_received(self) -> _Counter: ...
    @property
    def bytes_received(self) -> _Counter: ...
    @property
    def instances_refused(self) -> _Counter: ...
    @property
    def associations(self) -> _LabelledCounter: ...


class AssociationLog:
    """What each association stored, for one audit line when it ends, and the metrics."""

    def __init__(self, metrics: ListenerMetrics | None = None) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, _Counts] = {}
        self.metrics: ListenerMetrics = metrics or Metrics()

    def _get(self, assoc: Any) -> _Counts:
        return self._counts.setdefault(id(assoc), _Counts())

    def stored(self, assoc: Any, size: int, study_uid: str = "") -> None:
        """Count one stored instance of ``size`` bytes of study ``study_uid`` on ``assoc``."""
        with self._lock:
            counts = self._get(assoc)
            counts.stored += 1
            counts.bytes += size
            if study_uid:
                counts.studies[study_uid] = counts.studies.get(study_uid, 0) + 1
        self.metrics.instances_received.inc()
        self.metrics.bytes_received.inc(size)

    def refused(self, assoc: Any) -> None:
        """Count one refused instance on ``assoc``."""
        with self._lock:
            self._get(assoc).refused += 1
        self.metrics.instances_refused.inc()

    def pop(self, assoc: Any) -> tuple[int, int, int]:
        """Stored count, bytes and refused count of ``assoc``; forgets it."""
        counts = self.pop_counts(assoc)
        return counts.stored, counts.bytes, counts.refused

    def pop_counts(self, assoc: Any) -> _Counts:
        """Everything counted for ``assoc``; forgets it."""
        with self._lock:
            return self._counts.pop(id(assoc), _Counts())


@dataclass
class _Counts:
    stored: int = 0
    bytes: int = 0
    refused: int = 0
    studies: dict[str, int] = field(default_factory=dict)
    """StudyInstanceUID -> instances stored (the *what* of the audit line)."""


def peer(event: Event) -> str:
    """``CALLING_AE@address:port`` of the association's requestor."""
    requestor = event.assoc.requestor
    title = requestor.ae_title
    if not title and requestor.primitive is not None:  # before negotiation (EVT_REQUESTED)
        title = str(requestor.primitive.calling_ae_title or "").strip()
    return f"{title}@{requestor.address}:{requestor.port}"


UNCOUNTED_ASSOCIATIONS = 1_000_000
"""pynetdicom's ``maximum_associations``, out of the way of the node's own count."""


def on_requested(event: Event, config: Config, assoc_log: AssociationLog) -> None:
    """A-ASSOCIATE-RQ received: refuse hosts outside ``node.allowed_calling_hosts``, and
    associations beyond ``node.max_associations`` across receiver processes."""
    grace = getattr(event.assoc, "grace", None)
    if grace is not None:  # the request came: the connection counts (again, if it was idle)
        grace.requested()
    address = str(event.assoc.requestor.address)
    if not config.node.host_allowed(address):
        # Rejected (permanent), service user, no reason given: PS3.8 has no "host unknown".
        event.assoc.acse.send_reject(0x01, 0x01, 0x01)
        why = "host not in node.allowed_calling_hosts"
    elif getattr(event.assoc, "over_limit", False) or over_limit_here(event, config):
        # Rejected (transient), service provider (presentation), local limit exceeded: what
        # pynetdicom answers beyond its own maximum_associations in one process.
        event.assoc.acse.send_reject(0x02, 0x03, 0x02)
        why = f"Local limit exceeded: node.max_associations ({config.node.max_associations})"
    else:
        return
    event.assoc.kill()
    assoc_log.metrics.associations.labels("rejected").inc()
    audit.warning("association rejected from %s: %s", peer(event), why)


def over_limit_here(event: Event, config: Config) -> bool:
    """Whether the node process, receiving itself, holds ``max_associations`` already.

    Only connections that sent their A-ASSOCIATE-RQ count: idle ones do not lock scanners
    out. (Receiver processes are counted by the node's dispatcher instead, with a grace:
    :mod:`service.receive.association_grace`.)
    """
    if getattr(event.assoc, "grace", None) is not None:
        return False
    requested = [assoc for assoc in event.assoc.ae.active_associations
                 if assoc.is_acceptor and assoc is not event.assoc
                 and assoc.requestor.primitive is not None]
    return len(requested) >= config.node.max_associations


def on_accepted(event: Event, assoc_log: AssociationLog) -> None:
    assoc_log.metrics.associations.labels("accepted").inc()
    audit.info("association accepted from %s%s", peer(event), tls_peer(event))


def on_rejected(event: Event, assoc_log: AssociationLog) -> None:
    assoc_log.metrics.associations.labels("rejected").inc()
    primitive = event.assoc.acceptor.primitive
    reason = getattr(primitive, "reason_str", "") if primitive is not None else ""
    audit.warning("association rejected from %s: %s", peer(event), reason or "no reason")


def on_ended(event: Event, assoc_log: AssociationLog, how: str) -> None:
    assoc_log.metrics.associations.labels(how).inc()
    counts = assoc_log.pop_counts(event.assoc)
    studies = ", ".join(f"{uid} ({n})" for uid, n in sorted(counts.studies.items()))
    audit.info(
        "association %s from %s: %d instances stored (%d bytes), %d refused%s",
        how, peer(event), counts.stored, counts.bytes, counts.refused,
        f"; studies: {studies}" if studies else "",
    )


def on_connection_open(event: Event) -> None:
    """Send C-STORE responses at once (no Nagle delay on the small response PDUs)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def on_connection_closed(event: Event) -> None:
    """Audit connections that ended before an A-ASSOCIATE-RQ, and free their thread.

    pynetdicom's acceptor thread would otherwise wait ``acse_timeout`` for a request that can
    no longer come, and count against ``max_associations`` meanwhile: a port scan, a TCP
    health check or failed TLS handshakes could then lock scanners out.
    """
    if event.assoc.requestor.primitive is not None:
        return
    audit.warning(
        "connection from %s:%s closed before any association request"
        " (TLS handshake failed, timeout or not DICOM)",
        event.assoc.requestor.address, event.assoc.requestor.port,
    )
    # None wakes the reactor waiting for the request: it reads "no request" and ends
    event.assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


def tls_peer(event: Event) -> str:
    """`` over TLS (client certificate CN=...)`` for TLS associations, else empty."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    cert: dict[str, Any] = dict(sock.getpeercert() or {})
    subject: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())
    names = [value for rdn in subject for key, value in rdn if key == "commonName"]
    return " over TLS" + (f" (client certificate CN={names[0]})" if names else "")
