"""Forwarding original instances, unchanged, to the destinations a routing rule names.

Each instance file is sent by C-STORE from the file itself (pynetdicom reads the data set from
the file and sends its bytes as they are, in the transfer syntax they were received in): the
peer receives the data set byte for byte. Instances due for one destination share one
association in that destination's own thread, bounded by its deadline
(:func:`service.export.delivery.deliver`); failures are retried on the ``[export]`` schedule
(:func:`service.export.sender.next_delay_s`) and given up after ``give_up_after_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from service.config import Config
from service.export.delivery import DestinationWorkers, Item, Outcome, Peer, deliver
from service.export.sender import next_delay_s
from service.receive import dimse_status
from service.routing.store import ForwardRow, RoutingStore

log = logging.getLogger("hypoxnode.routing")
audit = logging.getLogger("hypoxnode.audit")


class Forwarder:
    """Sends due forwards; one :meth:`run_once` per scheduler tick."""

    def __init__(self, config: Config, store: RoutingStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        default = config.export.attempt_deadline_seconds
        self.peers: dict[str, Peer] = {
            d.key: Peer(d.key, d.ae_title, d.host, d.port, d.deadline_seconds or default)
            for d in config.destinations}
        self.peers.update({
            d.key: Peer(d.key, d.ae_title, d.host, d.port, d.deadline_seconds or default)
            for d in config.routing.destinations})
        self.workers = DestinationWorkers("forward")

    def run_once(self, wait: bool = True) -> int:
        """Start an attempt for every destination with due forwards and none running.

        Parameters
        ----------
        wait
            Wait for the attempts started (each bounded by its destination's deadline).

        Returns
        -------
        int
            How many forwards the attempts started here delivered (0 when not waiting).
        """
        return self.workers.run_due(self.store.due_forwards(self.clock()),
                                    lambda row: row.destination, self._work_for, wait)

    def _work_for(self, key: str, rows: list[ForwardRow]) -> Callable[[], None] | None:
        peer = self.peers.get(key)
        if peer is None:
            for row in rows:
                self.store.forward_failed(row.id, f"destination {key!r} not configured", None)
            return None
        return partial(self._send, peer, rows)

    def _send(self, peer: Peer, rows: list[ForwardRow]) -> None:
        items = []
        for row in rows:
            try:
                meta = read_file_meta_info(row.path)
            except (OSError, ValueError) as exc:
                self.store.forward_failed(row.id, f"original unreadable: {exc}", None)
                continue
            items.append(Item(row.id, str(meta.MediaStorageSOPClassUID),
                              (str(meta.TransferSyntaxUID),), Path(row.path)))
        by_id = {row.id: row for row in rows}
        try:
            outcomes = deliver(self.config.node.ae_title, peer, items,
                               self.config.node.network_timeout_s, dimse_status.describe)
        except Exception as exc:  # a fault of ours: retried with backoff, not every tick
            log.exception("forwarding to %s failed unexpectedly", peer.key)
            outcomes = [Outcome(item.id, False, None,
                                f"internal error while forwarding: {exc!r}", final=False)
                        for item in items]
        for outcome in outcomes:
            self._record(by_id[outcome.id], outcome)

    def _record(self, row: ForwardRow, outcome: Outcome) -> None:
        if outcome.delivered:
            assert outcome.status is not None
            self.store.forward_done(row.id)
            self.workers.delivered_one()
            audit.info("forward %s to %s: %s", row.sop_instance_uid, row.destination,
                       dimse_status.describe(outcome.status))
        elif outcome.final:
            self.store.forward_failed(row.id, outcome.reason, None)
            log.error("forward of %s to %s given up: %s", row.sop_instance_uid,
                      row.destination, outcome.reason)
        else:
            self._retry(row, outcome.reason)

    def _retry(self, row: ForwardRow, reason: str) -> None:
        now = self.clock()
        export = self.config.export
        if now - row.created_at >= export.give_up_after_seconds:
            self.store.forward_failed(row.id, reason, None)
            log.error("forward of %s to %s given up: %s", row.sop_instance_uid,
                      row.destination, reason)
            return
        delay = next_delay_s(row.attempts + 1, export.retry_initial_seconds,
                             export.retry_max_seconds)
        self.store.forward_failed(row.id, reason, now + delay)
        log.warning("forward of %s to %s failed (attempt %d): %s; next try in %.0f s",
                    row.sop_instance_uid, row.destination, row.attempts + 1, reason, delay)
