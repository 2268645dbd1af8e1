"""Export of result objects to the configured PACS destinations, with retry and backoff.

Each due export is sent by C-STORE; the exports due for one destination share one
association. A failed attempt is retried after ``retry_initial_seconds``, doubling up to
``retry_max_seconds``, until ``give_up_after_seconds`` have passed since the export was queued;
then it is marked failed with the last reason (DICOM status included when there was one).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from service import dimse_status
from service.config import Config, Destination
from service.index import ExportRecord, Index
from service.metrics import Metrics

log = logging.getLogger("hypoxnode.sender")
audit = logging.getLogger("hypoxnode.audit")


def next_delay_s(attempts: int, initial_s: float, maximum_s: float) -> float:
    """Backoff before the attempt after ``attempts`` failures: initial x 2^(attempts-1), capped.

    >>> [next_delay_s(n, 30, 600) for n in (1, 2, 3, 5, 6)]
    [30.0, 60.0, 120.0, 480.0, 600.0]
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    return float(min(maximum_s, initial_s * 2 ** (attempts - 1)))


class Sender:
    """Sends due exports; one :meth:`run_once` per scheduler tick.

    Parameters
    ----------
    config
        Node title and export policy; destinations by their key.
    index
        Where exports are queued and their outcome recorded.
    metrics
        Where sent, retried and given-up exports are counted.
    clock
        Time source (seconds), replaceable in tests.
    """

    def __init__(
        self,
        config: Config,
        index: Index,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.index = index
        self.clock = clock
        self.destinations = {d.key: d for d in config.destinations}
        self.metrics = metrics or Metrics()

    def run_once(self) -> int:
        """Attempt every due export; returns how many were delivered."""
        due = self.index.due_exports(self.clock())
        by_destination: dict[str, list[ExportRecord]] = defaultdict(list)
        for export in due:
            by_destination[export.destination].append(export)
        delivered = 0
        for key, exports in by_destination.items():
            destination = self.destinations.get(key)
            if destination is None:
                for export in exports:
                    self._give_up(export, f"destination {key!r} is no longer configured", None)
                continue
            try:
                delivered += self._send_to(destination, exports)
            except Exception as exc:  # one destination's fault must not starve the others
                log.exception("sending to %s failed unexpectedly", key)
                for export in exports:
                    self._retry_or_give_up(export, f"internal error while sending: {exc!r}", None)
        return delivered

    def _send_to(self, destination: Destination, exports: list[ExportRecord]) -> int:
        datasets = {}
        for export in exports:
            try:
                datasets[export.id] = dcmread(export.path)
            except (OSError, ValueError, InvalidDicomError) as exc:
                self._give_up(export, f"result file unreadable: {exc}", None)
        if not datasets:
            return 0
        ae = AE(ae_title=self.config.node.ae_title)
        ae.network_timeout = self.config.node.network_timeout_s
        ae.acse_timeout = self.config.node.network_timeout_s
        ae.dimse_timeout = self.config.node.network_timeout_s
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets.values()}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        pending = [e for e in exports if e.id in datasets]
        if not assoc.is_established:
            reason = _association_failure(assoc, destination)
            for export in pending:
                self._retry_or_give_up(export, reason, None)
            return 0
        delivered = 0
        where = f"{destination.ae_title}@{destination.host}:{destination.port}"
        accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
        try:
            for export in pending:
                sop_class = str(datasets[export.id].SOPClassUID)
                if sop_class not in accepted:
                    self._give_up(
                        export,
                        f"{where} does not accept SOP class {sop_class}"
                        f" ({_sop_class_name(sop_class)}): presentation context rejected",
                        None,
                    )
                    continue
                if not assoc.is_established:
                    self._retry_or_give_up(
                        export, f"association with {where} lost during sending", None
                    )
                    continue
                try:
                    status = assoc.send_c_store(datasets[export.id])
                except (ValueError, RuntimeError) as exc:
                    self._retry_or_give_up(export, f"C-STORE to {where} failed: {exc}", None)
                    continue
                code = int(status.Status) if status and "Status" in status else None
                if code is not None and (code == 0 or 0xB000 <= code <= 0xBFFF):
                    self.index.export_sent(export.id, code)
                    self.metrics.exports_sent.inc()
                    delivered += 1
                    audit.info(
                        "export %s to %s: %s", export.sop_instance_uid, destination.key,
                        dimse_status.describe(code),
                    )
                elif code is None:
                    reason = (
                        f"no C-STORE response from {where}: the association was closed or timed"
                        f" out (does it accept calling AE title {self.config.node.ae_title}?)"
                    )
                    self._retry_or_give_up(export, reason, None)
                else:
                    self._retry_or_give_up(
                        export, f"C-STORE refused by {where}: {dimse_status.describe(code)}", code
                    )
        finally:
            if assoc.is_established:
                assoc.release()
        return delivered

    def _retry_or_give_up(self, export: ExportRecord, reason: str, status: int | None) -> None:
        now = self.clock()
        if now - export.created_at >= self.config.export.give_up_after_seconds:
            self._give_up(export, reason, status)
            return
        self.metrics.export_retries.inc()
        delay = next_delay_s(
            export.attempts + 1,
            self.config.export.retry_initial_seconds,
            self.config.export.retry_max_seconds,
        )
        self.index.export_failed(export.id, reason, status, now + delay)
        log.warning(
            "export of %s to %s failed (attempt %d): %s; next try in %.0f s",
            export.sop_instance_uid, export.destination, export.attempts + 1, reason, delay,
        )

    def _give_up(self, export: ExportRecord, reason: str, status: int | None) -> None:
        self.metrics.export_failures.inc()
        self.index.export_failed(export.id, reason, status, None)
        log.error(
            "export of %s to %s given up: %s", export.sop_instance_uid, export.destination, reason
        )
        audit.info("export %s to %s: failed (%s)", export.sop_instance_uid, export.destination,
                   reason)


def _sop_class_name(uid: str) -> str:
    return str(UID(uid).name)


def _association_failure(assoc: object, destination: Destination) -> str:
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    if getattr(assoc, "is_rejected", False):
        acceptor = getattr(assoc, "acceptor", None)
        primitive = getattr(acceptor, "primitive", None)
        result = getattr(primitive, "result_str", None) or getattr(primitive, "result", "")
        diag = getattr(primitive, "reason_str", None) or getattr(primitive, "diagnostic", "")
        return f"association rejected by {where}: {result} {diag}".strip()
    # pynetdicom reports a refused TCP connection as an aborted association.
    return f"could not associate with {where} (connection refused, aborted or timed out)"
