"""The DICOM listener: C-ECHO and C-STORE.

The C-STORE handler persists and records, then returns; it never computes. The success status
goes back only after the instance is a complete file on disk and a row in the index.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from service import dimse_status
from service.config import Config
from service.identity import identity_verdict
from service.index import Index, InstanceRecord
from service.metrics import Metrics
from service.prompt_reactor import DispatchedAssociationServer, dispatched_server, start_server
from service.spool import SpoolFile, SpoolReserve, spooled
from service.store import InstanceStore, StoredFile, StoreError, is_valid_uid
from service.tls import server_context

log = logging.getLogger("hypoxnode.listener")
audit = logging.getLogger("hypoxnode.audit")

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
"""Accepted transfer syntaxes: uncompressed, deflate, and the lossless/lossy codecs for which
pylibjpeg decoders are installed (JPEG lossless, JPEG-LS, JPEG 2000, RLE)."""


class _Counter(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...


class _LabelledCounter(Protocol):
    def labels(self, *values: str) -> _Counter: ...


class ListenerMetrics(Protocol):
    """The counters the listener moves: :class:`~service.metrics.Metrics`, or in a receiver
    process :class:`~service.receivers.ForwardedMetrics`."""

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


def _peer(event: Event) -> str:
    """``CALLING_AE@address:port`` of the association's requestor."""
    requestor = event.assoc.requestor
    title = requestor.ae_title
    if not title and requestor.primitive is not None:  # before negotiation (EVT_REQUESTED)
        title = str(requestor.primitive.calling_ae_title or "").strip()
    return f"{title}@{requestor.address}:{requestor.port}"


def handle_echo(event: Event) -> int:
    """C-ECHO: always success."""
    return dimse_status.SUCCESS


ROUTING_TAGS = [
    Tag("SOPClassUID"), Tag("SOPInstanceUID"), Tag("Modality"),
    Tag("StudyInstanceUID"), Tag("SeriesInstanceUID"),
]
"""What the handler reads of a data set: where the instance goes and what it is."""

_LAST_ROUTING_TAG = max(ROUTING_TAGS)


def _past_routing_tags(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return tag > _LAST_ROUTING_TAG


def routing_attributes(event: Event, spool: SpoolFile | None) -> Dataset:
    """The :data:`ROUTING_TAGS` of the C-STORE data set: read from the head of its spool
    file (:mod:`service.spool`), or decoded from memory when it was not spooled."""
    if spool is None:
        return event.dataset
    syntax = spool.transfer_syntax
    with open(spool.name, "rb") as handle:
        if syntax.is_deflated:  # pydicom inflates it
            return read_partial(cast(BinaryIO, handle), stop_when=_past_routing_tags,
                                specific_tags=list(ROUTING_TAGS))
        handle.seek(spool.data_set_offset)  # the file meta is ours: straight to the data set
        return read_dataset(cast(BinaryIO, handle), syntax.is_implicit_VR,
                            syntax.is_little_endian, stop_when=_past_routing_tags)


def handle_store(
    event: Event,
    store: InstanceStore,
    index: Index,
    assoc_log: AssociationLog,
) -> int | tuple[int, Dataset]:
    """C-STORE: make the instance durable, index it, then answer.

    Returns
    -------
    int
        A status from :mod:`service.dimse_status`.
    """
    spool = spooled(event.request)
    write_error = spool.make_durable() if spool is not None else None
    if write_error is not None:
        log.error("C-STORE from %s refused: could not write the data set to disk (%s)",
                  _peer(event), write_error.strerror or write_error)
        assoc_log.refused(event.assoc)
        return dimse_status.OUT_OF_RESOURCES
    try:
        dataset = routing_attributes(event, spool)
        study_uid = dataset.get("StudyInstanceUID")
        series_uid = dataset.get("SeriesInstanceUID")
        sop_uid = dataset.get("SOPInstanceUID")
        sop_class_uid = dataset.get("SOPClassUID")
        modality = str(dataset.get("Modality", ""))
    except Exception as exc:  # any decoding failure of a malformed dataset
        log.warning("C-STORE from %s refused: cannot decode dataset (%s)", _peer(event), exc)
        assoc_log.refused(event.assoc)
        return dimse_status.CANNOT_UNDERSTAND

    for name, uid in (
        ("StudyInstanceUID", study_uid),
        ("SeriesInstanceUID", series_uid),
        ("SOPInstanceUID", sop_uid),
    ):
        if not is_valid_uid(str(uid) if uid is not None else None):
            log.warning("C-STORE from %s refused: %s missing or invalid", _peer(event), name)
            assoc_log.refused(event.assoc)
            return dimse_status.INVALID_UID
    affected_sop_class = str(event.request.AffectedSOPClassUID)
    if sop_class_uid is not None and str(sop_class_uid) != affected_sop_class:
        log.warning(
            "C-STORE from %s refused: SOPClassUID %s does not match the request's %s",
            _peer(event), sop_class_uid, affected_sop_class,
        )
        assoc_log.refused(event.assoc)
        return dimse_status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    affected_sop_instance = str(getattr(event.request, "AffectedSOPInstanceUID", ""))
    if str(sop_uid) != affected_sop_instance:
        audit.warning("C-STORE from %s refused: data set SOPInstanceUID %s is not the"
                      " command's AffectedSOPInstanceUID %s", _peer(event), sop_uid,
                      affected_sop_instance)
        assoc_log.refused(event.assoc)
        return dimse_status.SOP_INSTANCE_MISMATCH

    encoded = event.encoded_dataset(include_meta=True) if spool is None else b""
    if not store.has_room(len(encoded)):
        log.error("C-STORE from %s refused: free disk space below the floor", _peer(event))
        assoc_log.refused(event.assoc)
        return dimse_status.OUT_OF_RESOURCES
    try:
        with store.study_lock(str(study_uid), exclusive=False):  # no purge meanwhile
            uids = (str(study_uid), str(series_uid), str(sop_uid))
            known = index.known_instance(uids[2])
            final = Path(known.path) if known is not None else store.instance_path(*uids)
            verdict = identity_verdict(known, final if final.exists() else None, *uids[:2],
                                       Path(spool.name) if spool else None, encoded)
            if verdict.conflict is not None:
                audit.warning("C-STORE from %s refused: %s (SOPInstanceUID %s, kept as"
                              " stored)", _peer(event), verdict.conflict, sop_uid)
                assoc_log.refused(event.assoc)
                return dimse_status.INSTANCE_CONFLICT
            if verdict.same:  # an identical resend: the acknowledged file stays as it is
                stored = StoredFile(final, final.stat().st_size)
            else:
                stored = store.write_instance(encoded, *uids) if spool is None \
                    else store.adopt_instance(Path(spool.name), *uids)
            index.record_instance(
                InstanceRecord(
                    sop_instance_uid=str(sop_uid),
                    sop_class_uid=affected_sop_class,
                    study_instance_uid=str(study_uid),
                    series_instance_uid=str(series_uid),
                    modality=modality,
                    path=str(stored.path),
                    size_bytes=stored.size_bytes,
                    calling_ae_title=event.assoc.requestor.ae_title,
                    received_at=time.time(),
                )
            )
    except (StoreError, OSError, sqlite3.Error) as exc:  # disk or index full, I/O error
        log.error("C-STORE from %s refused: %s", _peer(event), exc)
        assoc_log.refused(event.assoc)
        return dimse_status.OUT_OF_RESOURCES
    assoc_log.stored(event.assoc, stored.size_bytes, str(study_uid))
    log.debug("stored %s (study %s)", sop_uid, study_uid)
    return dimse_status.SUCCESS


UNCOUNTED_ASSOCIATIONS = 1_000_000
"""pynetdicom's ``maximum_associations``, out of the way of the node's own count."""


def _on_requested(event: Event, config: Config, assoc_log: AssociationLog) -> None:
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
    elif getattr(event.assoc, "over_limit", False) or _over_limit_here(event, config):
        # Rejected (transient), service provider (presentation), local limit exceeded: what
        # pynetdicom answers beyond its own maximum_associations in one process.
        event.assoc.acse.send_reject(0x02, 0x03, 0x02)
        why = f"Local limit exceeded: node.max_associations ({config.node.max_associations})"
    else:
        return
    event.assoc.kill()
    assoc_log.metrics.associations.labels("rejected").inc()
    audit.warning("association rejected from %s: %s", _peer(event), why)


def _over_limit_here(event: Event, config: Config) -> bool:
    """Whether the node process, receiving itself, holds ``max_associations`` already.

    Only connections that sent their A-ASSOCIATE-RQ count: idle ones do not lock scanners
    out. (Receiver processes are counted by the node's dispatcher instead, with a grace:
    :mod:`service.association_grace`.)
    """
    if getattr(event.assoc, "grace", None) is not None:
        return False
    requested = [assoc for assoc in event.assoc.ae.active_associations
                 if assoc.is_acceptor and assoc is not event.assoc
                 and assoc.requestor.primitive is not None]
    return len(requested) >= config.node.max_associations


def _on_accepted(event: Event, assoc_log: AssociationLog) -> None:
    assoc_log.metrics.associations.labels("accepted").inc()
    audit.info("association accepted from %s%s", _peer(event), _tls_peer(event))


def _on_rejected(event: Event, assoc_log: AssociationLog) -> None:
    assoc_log.metrics.associations.labels("rejected").inc()
    primitive = event.assoc.acceptor.primitive
    reason = getattr(primitive, "reason_str", "") if primitive is not None else ""
    audit.warning("association rejected from %s: %s", _peer(event), reason or "no reason")


def _on_ended(event: Event, assoc_log: AssociationLog, how: str) -> None:
    assoc_log.metrics.associations.labels(how).inc()
    counts = assoc_log.pop_counts(event.assoc)
    studies = ", ".join(f"{uid} ({n})" for uid, n in sorted(counts.studies.items()))
    audit.info(
        "association %s from %s: %d instances stored (%d bytes), %d refused%s",
        how, _peer(event), counts.stored, counts.bytes, counts.refused,
        f"; studies: {studies}" if studies else "",
    )


def _on_connection_open(event: Event) -> None:
    """Send C-STORE responses at once (no Nagle delay on the small response PDUs)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _on_connection_closed(event: Event) -> None:
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


def _tls_peer(event: Event) -> str:
    """`` over TLS (client certificate CN=...)`` for TLS associations, else empty."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    cert: dict[str, Any] = dict(sock.getpeercert() or {})
    subject: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())
    names = [value for rdn in subject for key, value in rdn if key == "commonName"]
    return " over TLS" + (f" (client certificate CN={names[0]})" if names else "")


def build_ae(config: Config) -> AE:
    """An AE with the node's title, limits, allow-list and accepted presentation contexts."""
    ae = AE(ae_title=config.node.ae_title)
    # The node counts associations itself (the dispatcher, or _over_limit_here), only those
    # whose request came; pynetdicom's own count includes idle connections.
    ae.maximum_associations = UNCOUNTED_ASSOCIATIONS
    ae.maximum_pdu_size = config.node.max_pdu_bytes
    ae.network_timeout = config.node.network_timeout_s
    ae.association_request_deadline_s = config.node.association_request_timeout_s  # type: ignore[attr-defined]
    ae.acse_timeout = config.node.network_timeout_s
    ae.dimse_timeout = config.node.network_timeout_s
    if config.node.allowed_calling_ae_titles:
        ae.require_calling_aet = list(config.node.allowed_calling_ae_titles)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    return ae


def _handlers_and_tls(
    config: Config, store: InstanceStore, index: Index, metrics: ListenerMetrics | None,
) -> tuple[list[Any], ssl.SSLContext | None]:
    assoc_log = AssociationLog(metrics)
    handlers: list[Any] = [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [store, index, assoc_log]),
        (evt.EVT_REQUESTED, _on_requested, [config, assoc_log]),
        (evt.EVT_CONN_OPEN, _on_connection_open),
        (evt.EVT_CONN_CLOSE, _on_connection_closed),
        (evt.EVT_ACCEPTED, _on_accepted, [assoc_log]),
        (evt.EVT_REJECTED, _on_rejected, [assoc_log]),
        (evt.EVT_RELEASED, _on_ended, [assoc_log, "released"]),
        (evt.EVT_ABORTED, _on_ended, [assoc_log, "aborted"]),
    ]
    context = server_context(config.tls, config.node.network_timeout_s) if config.tls.enabled \
        else None
    return handlers, context


def start_listener(
    config: Config,
    store: InstanceStore,
    index: Index,
    metrics: ListenerMetrics | None = None,
) -> ThreadedAssociationServer:
    """Start the C-ECHO/C-STORE server in background threads and return it.

    Over TLS when ``[tls] enabled``; peers outside ``node.allowed_calling_hosts`` or
    ``node.allowed_calling_ae_titles`` are rejected, and every association is audited.
    """
    handlers, context = _handlers_and_tls(config, store, index, metrics)
    node = config.node
    return start_server(build_ae(config), (node.host, node.port), handlers,
                        ssl_context=context,
                        spool=SpoolReserve(store.tmp_dir, min_free_bytes=store.min_free_bytes),
                        host_allowed=node.host_allowed if node.allowed_calling_hosts else None)


def dispatched_listener(
    config: Config,
    store: InstanceStore,
    index: Index,
    metrics: ListenerMetrics | None = None,
) -> DispatchedAssociationServer:
    """The same C-ECHO/C-STORE service for connections another process accepted.

    Feed it with :meth:`~service.prompt_reactor.DispatchedAssociationServer.serve_connection`
    (see :mod:`service.receivers`).
    """
    handlers, context = _handlers_and_tls(config, store, index, metrics)
    return dispatched_server(build_ae(config), (config.node.host, config.node.port), handlers,
                             ssl_context=context,
                             spool=SpoolReserve(store.tmp_dir,
                                                min_free_bytes=store.min_free_bytes))
