"""Forwarding original instances, unchanged, to the destinations a routing rule names.

Each instance file is sent by C-STORE from the file itself (pynetdicom reads the data set from
the file and sends its bytes as they are, in the transfer syntax they were received in): the
peer receives the data set byte for byte. Instances due for one destination share one
association; failures are retried on the ``[export]`` schedule
(:func:`service.sender.next_delay_s`) and given up after ``give_up_after_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE

from service import dimse_status
from service.config import Config
from service.routing_store import ForwardRow, RoutingStore
from service.sender import next_delay_s

log = logging.getLogger("hypoxnode.routing")
audit = logging.getLogger("hypoxnode.audit")


class Forwarder:
    """Sends due forwards; one :meth:`run_once` per scheduler tick."""

    def __init__(self, config: Config, store: RoutingStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.peers: dict[str, tuple[str, str, int]] = {
            d.key: (d.ae_title, d.host, d.port) for d in config.destinations}
        self.peers.update({d.key: (d.ae_title, d.host, d.port)
                           for d in config.routing.destinations})

    def run_once(self) -> int:
        """Attempt every due forward; returns how many were delivered."""
        by_destination: dict[str, list[ForwardRow]] = defaultdict(list)
        for row in self.store.due_forwards(self.clock()):
            by_destination[row.destination].append(row)
        delivered = 0
        for key, rows in by_destination.items():
            peer = self.peers.get(key)
            if peer is None:
                for row in rows:
                    self.store.forward_failed(row.id, f"destination {key!r} not configured", None)
                continue
            try:
                delivered += self._send(key, peer, rows)
            except Exception as exc:  # one destination's fault must not stop the others
                log.exception("forwarding to %s failed unexpectedly", key)
                for row in rows:
                    self._retry(row, f"internal error while forwarding: {exc!r}")
        return delivered

    def _send(self, key: str, peer: tuple[str, str, int], rows: list[ForwardRow]) -> int:
        ae_title, host, port = peer
        where = f"{ae_title}@{host}:{port}"
        contexts: dict[int, tuple[str, str]] = {}
        for row in rows:
            try:
                meta = read_file_meta_info(row.path)
                contexts[row.id] = (str(meta.MediaStorageSOPClassUID),
                                    str(meta.TransferSyntaxUID))
            except (OSError, ValueError) as exc:
                self.store.forward_failed(row.id, f"original unreadable: {exc}", None)
        ae = AE(ae_title=self.config.node.ae_title)
        for timeout in ("network_timeout", "acse_timeout", "dimse_timeout"):
            setattr(ae, timeout, self.config.node.network_timeout_s)
        by_class: dict[str, set[str]] = defaultdict(set)
        for sop_class, syntax in contexts.values():
            by_class[sop_class].add(syntax)
        for sop_class, syntaxes in sorted(by_class.items()):
            ae.add_requested_context(sop_class, sorted(syntaxes))
        if not by_class:
            return 0
        assoc = ae.associate(host, port, ae_title=ae_title)
        pending = [row for row in rows if row.id in contexts]
        if not assoc.is_established:
            for row in pending:
                self._retry(row, f"could not associate with {where}")
            return 0
        delivered = 0
        try:
            for row in pending:
                if not assoc.is_established:
                    self._retry(row, f"association with {where} lost")
                    continue
                try:
                    status = assoc.send_c_store(Path(row.path))
                except (ValueError, RuntimeError, OSError) as exc:
                    self._retry(row, f"C-STORE to {where} failed: {exc}")
                    continue
                code = int(status.Status) if status and "Status" in status else None
                if code is not None and (code == 0 or 0xB000 <= code <= 0xBFFF):
                    self.store.forward_done(row.id)
                    delivered += 1
                    audit.info("forward %s to %s: %s", row.sop_instance_uid, key,
                               dimse_status.describe(code))
                else:
                    detail = dimse_status.describe(code) if code is not None else "no response"
                    self._retry(row, f"C-STORE to {where}: {detail}")
        finally:
            if assoc.is_established:
                assoc.release()
        return delivered

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
