"""The DICOM listener: C-ECHO and C-STORE.

The C-STORE handler persists and records, then returns; it never computes. The success status
goes back only after the instance is a complete file on disk and a row in the index.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
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
from service.index import Index, InstanceRecord
from service.metrics import Metrics
from service.store import InstanceStore, StoreError, is_valid_uid

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


class AssociationLog:
    """Counts what each association stored, for one audit line when it ends, and the metrics."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._lock = threading.Lock()
        self._stored: dict[int, list[int]] = {}
        self.metrics = metrics or Metrics()

    def stored(self, assoc: Any, size: int) -> None:
        """Count one stored instance of ``size`` bytes on ``assoc``."""
        with self._lock:
            counts = self._stored.setdefault(id(assoc), [0, 0, 0])
            counts[0] += 1
            counts[1] += size
        self.metrics.instances_received.inc()
        self.metrics.bytes_received.inc(size)

    def refused(self, assoc: Any) -> None:
        """Count one refused instance on ``assoc``."""
        with self._lock:
            self._stored.setdefault(id(assoc), [0, 0, 0])[2] += 1
        self.metrics.instances_refused.inc()

    def pop(self, assoc: Any) -> tuple[int, int, int]:
        """Stored count, bytes and refused count of ``assoc``; forgets it."""
        with self._lock:
            counts = self._stored.pop(id(assoc), [0, 0, 0])
        return counts[0], counts[1], counts[2]


def _peer(event: Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"


def handle_echo(event: Event) -> int:
    """C-ECHO: always success."""
    return dimse_status.SUCCESS


def handle_store(
    event: Event,
    store: InstanceStore,
    index: Index,
    assoc_log: AssociationLog,
) -> int | tuple[int, Dataset]:
    """C-STORE: write the instance durably, index it, then answer.

    Returns
    -------
    int
        A status from :mod:`service.dimse_status`.
    """
    try:
        dataset = event.dataset
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

    encoded = event.encoded_dataset(include_meta=True)
    if not store.has_room(len(encoded)):
        log.error("C-STORE from %s refused: free disk space below the floor", _peer(event))
        assoc_log.refused(event.assoc)
        return dimse_status.OUT_OF_RESOURCES
    try:
        stored = store.write_instance(encoded, str(study_uid), str(series_uid), str(sop_uid))
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
    except (StoreError, OSError) as exc:
        log.error("C-STORE from %s refused: %s", _peer(event), exc)
        assoc_log.refused(event.assoc)
        return dimse_status.OUT_OF_RESOURCES
    assoc_log.stored(event.assoc, stored.size_bytes)
    log.debug("stored %s (study %s)", sop_uid, study_uid)
    return dimse_status.SUCCESS


def _on_accepted(event: Event, assoc_log: AssociationLog) -> None:
    assoc_log.metrics.associations.labels("accepted").inc()
    audit.info("association accepted from %s", _peer(event))


def _on_rejected(event: Event, assoc_log: AssociationLog) -> None:
    assoc_log.metrics.associations.labels("rejected").inc()
    audit.warning("association rejected from %s", _peer(event))


def _on_ended(event: Event, assoc_log: AssociationLog, how: str) -> None:
    assoc_log.metrics.associations.labels(how).inc()
    count, size, refused = assoc_log.pop(event.assoc)
    audit.info(
        "association %s from %s: %d instances stored (%d bytes), %d refused",
        how, _peer(event), count, size, refused,
    )


def build_ae(config: Config) -> AE:
    """An AE with the node's title, limits, allow-list and accepted presentation contexts."""
    ae = AE(ae_title=config.node.ae_title)
    ae.maximum_associations = config.node.max_associations
    ae.maximum_pdu_size = config.node.max_pdu_bytes
    ae.network_timeout = config.node.network_timeout_s
    ae.acse_timeout = config.node.network_timeout_s
    ae.dimse_timeout = config.node.network_timeout_s
    if config.node.allowed_calling_ae_titles:
        ae.require_calling_aet = list(config.node.allowed_calling_ae_titles)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    return ae


def start_listener(
    config: Config,
    store: InstanceStore,
    index: Index,
    metrics: Metrics | None = None,
) -> ThreadedAssociationServer:
    """Start the C-ECHO/C-STORE server in background threads and return it."""
    ae = build_ae(config)
    assoc_log = AssociationLog(metrics)
    handlers: list[Any] = [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [store, index, assoc_log]),
        (evt.EVT_ACCEPTED, _on_accepted, [assoc_log]),
        (evt.EVT_REJECTED, _on_rejected, [assoc_log]),
        (evt.EVT_RELEASED, _on_ended, [assoc_log, "released"]),
        (evt.EVT_ABORTED, _on_ended, [assoc_log, "aborted"]),
    ]
    server = ae.start_server(
        (config.node.host, config.node.port), block=False, evt_handlers=handlers
    )
    assert server is not None
    return server
