"""The DICOM listener: C-ECHO and C-STORE.

The C-STORE handler persists and records, then returns; it never computes. The success status
goes back only after the instance is a complete file on disk and a row in the index.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any, BinaryIO, cast

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

from service.config import Config
from service.receive import dimse_status
from service.receive._pynetdicom.prompt_server import (
    DispatchedAssociationServer,
    dispatched_server,
    start_server,
)
from service.receive._pynetdicom.spool import spooled
from service.receive._pynetdicom.spool_files import SpoolFile, SpoolReserve
from service.receive.accept_guard import accept_checks
from service.receive.association_events import (
    UNCOUNTED_ASSOCIATIONS,
    AssociationLog,
    ListenerMetrics,
    on_accepted,
    on_connection_closed,
    on_connection_open,
    on_ended,
    on_rejected,
    on_requested,
    peer,
)
from service.receive.identity import identity_verdict
from service.receive.tls import server_context
from service.storage.index import Index, InstanceRecord
from service.storage.store import InstanceStore, StoredFile, StoreError, is_valid_uid

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
    file (:mod:`service.receive._pynetdicom.spool`), or decoded from memory when it was not
    spooled."""
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
        A status from :mod:`service.receive.dimse_status`.
    """
    spool = spooled(event.request)
    write_error = spool.make_durable() if spool is not None else None
    if write_error is not None:
        log.error("C-STORE from %s refused: could not write the data set to disk (%s)",
                  peer(event), write_error.strerror or write_error)
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
        log.warning("C-STORE from %s refused: cannot decode dataset (%s)", peer(event), exc)
        assoc_log.refused(event.assoc)
        return dimse_status.CANNOT_UNDERSTAND

    for name, uid in (
        ("StudyInstanceUID", study_uid),
        ("SeriesInstanceUID", series_uid),
        ("SOPInstanceUID", sop_uid),
    ):
        if not is_valid_uid(str(uid) if uid is not None else None):
            log.warning("C-STORE from %s refused: %s missing or invalid", peer(event), name)
            assoc_log.refused(event.assoc)
            return dimse_status.INVALID_UID
    affected_sop_class = str(event.request.AffectedSOPClassUID)
    if sop_class_uid is not None and str(sop_class_uid) != affected_sop_class:
        log.warning(
            "C-STORE from %s refused: SOPClassUID %s does not match the request's %s",
            peer(event), sop_class_uid, affected_sop_class,
        )
        assoc_log.refused(event.assoc)
        return dimse_status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    affected_sop_instance = str(getattr(event.request, "AffectedSOPInstanceUID", ""))
    if str(sop_uid) != affected_sop_instance:
        audit.warning("C-STORE from %s refused: data set SOPInstanceUID %s is not the"
                      " command's AffectedSOPInstanceUID %s", peer(event), sop_uid,
                      affected_sop_instance)
        assoc_log.refused(event.assoc)
        return dimse_status.SOP_INSTANCE_MISMATCH

    encoded = event.encoded_dataset(include_meta=True) if spool is None else b""
    if not store.has_room(len(encoded)):
        log.error("C-STORE from %s refused: free disk space below the floor", peer(event))
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
                              " stored)", peer(event), verdict.conflict, sop_uid)
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
        log.error("C-STORE from %s refused: %s", peer(event), exc)
        assoc_log.refused(event.assoc)
        return dimse_status.OUT_OF_RESOURCES
    assoc_log.stored(event.assoc, stored.size_bytes, str(study_uid))
    log.debug("stored %s (study %s)", sop_uid, study_uid)
    return dimse_status.SUCCESS


def build_ae(config: Config) -> AE:
    """An AE with the node's title, limits, allow-list and accepted presentation contexts."""
    ae = AE(ae_title=config.node.ae_title)
    # The node counts associations itself (the dispatcher, or over_limit_here), only those
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
        (evt.EVT_REQUESTED, on_requested, [config, assoc_log]),
        (evt.EVT_CONN_OPEN, on_connection_open),
        (evt.EVT_CONN_CLOSE, on_connection_closed),
        (evt.EVT_ACCEPTED, on_accepted, [assoc_log]),
        (evt.EVT_REJECTED, on_rejected, [assoc_log]),
        (evt.EVT_RELEASED, on_ended, [assoc_log, "released"]),
        (evt.EVT_ABORTED, on_ended, [assoc_log, "aborted"]),
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
    refused, proxy = accept_checks(node)
    return start_server(build_ae(config), (node.host, node.port), handlers,
                        ssl_context=context,
                        spool=SpoolReserve(store.tmp_dir, min_free_bytes=store.min_free_bytes),
                        refused=refused, proxy=proxy)


def dispatched_listener(
    config: Config,
    store: InstanceStore,
    index: Index,
    metrics: ListenerMetrics | None = None,
) -> DispatchedAssociationServer:
    """The same C-ECHO/C-STORE service for connections another process accepted.

    Feed it with
    :meth:`~service.receive._pynetdicom.prompt_reactor.DispatchedAssociationServer.serve_connection`
    (see :mod:`service.receive.receivers`).
    """
    handlers, context = _handlers_and_tls(config, store, index, metrics)
    return dispatched_server(build_ae(config), (config.node.host, config.node.port), handlers,
                             ssl_context=context,
                             spool=SpoolReserve(store.tmp_dir,
                                                min_free_bytes=store.min_free_bytes),
                             proxy=accept_checks(config.node)[1])
