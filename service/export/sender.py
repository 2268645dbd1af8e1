"""Export of result objects to the configured PACS destinations, with retry and backoff.

Each due export is sent by C-STORE; the exports due for one destination share one
association (:func:`service.export.delivery.deliver`), run in that destination's own thread and
bounded by its deadline (``deadline_seconds``, default ``[export] attempt_deadline_seconds``),
so one slow or hostile PACS never holds up another. A failed attempt is retried after
``retry_initial_seconds``, doubling up to ``retry_max_seconds``, until
``give_up_after_seconds`` have passed since the export was queued; then it is marked failed
with the last reason (DICOM status included when there was one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from service.config import Config, Destination
from service.export.delivery import DestinationWorkers, Item, Outcome, Peer, deliver
from service.receive import dimse_status
from service.report.metrics import Metrics
from service.storage.index import Index
from service.storage.index_exports import ExportRecord

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
        self.workers = DestinationWorkers("export")

    def run_once(self, wait: bool = True) -> int:
        """Start an attempt for every destination with due exports and no attempt running.

        Parameters
        ----------
        wait
            Wait for the attempts started (each bounded by its destination's deadline); the
            scheduler's tick does not, so the next tick serves the destinations that are free.

        Returns
        -------
        int
            How many exports the attempts started here delivered (0 when not waiting).
        """
        return self.workers.run_due(self.index.due_exports(self.clock()),
                                    lambda export: export.destination, self._work_for, wait)

    def _work_for(self, key: str, exports: list[ExportRecord]) -> Callable[[], None] | None:
        destination = self.destinations.get(key)
        if destination is None:
            for export in exports:
                self._give_up(export, f"destination {key!r} is no longer configured", None)
            return None
        return partial(self._send_to, destination, exports)

    def _send_to(self, destination: Destination, exports: list[ExportRecord]) -> None:
        items = []
        by_id = {export.id: export for export in exports}
        for export in exports:
            try:
                dataset = dcmread(export.path)
                sop_class = str(dataset.SOPClassUID)
            except (OSError, ValueError, AttributeError, InvalidDicomError) as exc:
                self._give_up(export, f"result file unreadable: {exc}", None)
                continue
            items.append(Item(export.id, sop_class,
                              (ExplicitVRLittleEndian, ImplicitVRLittleEndian), dataset))
        deadline = destination.deadline_seconds or self.config.export.attempt_deadline_seconds
        peer = Peer(destination.key, destination.ae_title, destination.host, destination.port,
                    deadline)
        try:
            outcomes = deliver(self.config.node.ae_title, peer, items,
                               self.config.node.network_timeout_s, dimse_status.describe)
        except Exception as exc:  # a fault of ours: retried with backoff, not every tick
            log.exception("sending to %s failed unexpectedly", destination.key)
            outcomes = [Outcome(item.id, False, None, f"internal error while sending: {exc!r}",
                                final=False) for item in items]
        for outcome in outcomes:
            self._record(by_id[outcome.id], outcome)

    def _record(self, export: ExportRecord, outcome: Outcome) -> None:
        if outcome.delivered:
            assert outcome.status is not None
            self.index.export_sent(export.id, outcome.status)
            self.metrics.exports_sent.inc()
            self.workers.delivered_one()
            audit.info("export %s to %s: %s", export.sop_instance_uid, export.destination,
                       dimse_status.describe(outcome.status))
        elif outcome.final:
            self._give_up(export, outcome.reason, outcome.status)
        else:
            self._retry_or_give_up(export, outcome.reason, outcome.status)

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
