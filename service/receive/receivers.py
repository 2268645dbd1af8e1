"""More than one receiving process.

One Python process receives at most one core's worth of C-STOREs (the GIL), and pynetdicom
spends ~3 ms of CPU per instance; with several scanners sending at once that, not the disk,
is the limit. With ``[node] receiver_processes`` above 1, the node process starts that many
*receiver processes*, accepts every DICOM connection itself and hands it to the least busy
of them (:mod:`service.receive.dispatch`). Each receiver runs the node's own C-ECHO/C-STORE service
(same AE, allow-lists, TLS, handler), writes to the same store and index (SQLite serialises
the writers), and forwards its log records and metric increments to the node process, which
logs them and serves them on ``/metrics``. Processing, the scheduler, the sender and the HTTP
interface stay in the node process.

A receiver process that dies is restarted within :data:`SUPERVISE_INTERVAL_S` (its open
associations are lost: their senders get no success for the instance in flight and send it
again; every instance already acknowledged is on disk). When the node stops, its receivers
let open associations finish (up to :data:`STOP_GRACE_S`); when the node process is killed,
they die with it at once (``PR_SET_PDEATHSIG`` on Linux, and a check of the parent process id
every :data:`~service.receive.receiver_process.PARENT_CHECK_S` elsewhere).
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import socket
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from service.config import Config
from service.receive._pynetdicom.spool_files import remove_orphans
from service.receive.accept_guard import accept_checks
from service.receive.dispatch import Dispatcher
from service.receive.receiver_process import STOP_GRACE_S, receiver_main
from service.receive.tls import server_context
from service.report.metrics import Metrics
from service.storage.store import InstanceStore

log = logging.getLogger("hypoxnode.receivers")

SUPERVISE_INTERVAL_S = 1.0
"""How often the node process looks for receiver processes that died."""

RESTART_BACKOFF_MAX_S = 60.0
"""Longest wait before restarting a receiver process that keeps dying."""

QUICK_DEATH_S = 30.0
"""A receiver process that dies sooner than this after its start counts toward back-off."""


def resolved_count(config: Config) -> int:
    """Receiving processes for ``config``; 1 means the node process itself receives.

    ``receiver_processes = 0`` means one per CPU core, at most 4 (measured:
    ``docs/bench/README.md``, "Measurements behind design choices").
    """
    wanted = config.node.receiver_processes
    return wanted if wanted > 0 else max(1, min(os.cpu_count() or 1, 4))


def _apply_metrics(metrics: Metrics, increments: dict[tuple[str, tuple[str, ...]], float]) -> None:
    for (name, labels), amount in increments.items():
        counter = getattr(metrics, name, None)
        if counter is None:
            continue
        (counter.labels(*labels) if labels else counter).inc(amount)


class ReceiverPool:
    """The receiver processes of one node and the node's dispatcher (module docstring).

    Parameters
    ----------
    config
        The node's configuration.
    metrics
        The node process's metrics, which the receivers' increments are added to.
    """

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        count = resolved_count(config)
        self.size = count if count > 1 else 0
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._dispatcher: Dispatcher | None = None
        self._receiver_config = config
        self._spool_dir = InstanceStore(config.data_dir, tmp_name=config.cluster.tmp_name).tmp_dir
        """Where receivers spool data sets (a dead one's partial files are removed)."""
        self._processes: dict[int, BaseProcess] = {}
        self._event_readers: dict[Connection, int] = {}
        self._started_at: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}
        """Slot -> deaths in a row, each soon after its start (for the back-off)."""
        self._restart_at: dict[int, float] = {}
        """Slot -> when its dead process may be replaced."""
        self._stopped_outside: set[int] = set()
        self._stop = threading.Event()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether receiver processes, not the node process, receive."""
        return self._dispatcher is not None

    @property
    def port(self) -> int:
        """The DICOM port the node accepts connections on."""
        if self._dispatcher is None:
            raise RuntimeError("receivers not started")
        return self._dispatcher.port

    @property
    def pids(self) -> list[int]:
        """Process ids of the receiver processes running now."""
        with self._lock:
            return [p.pid for p in self._processes.values()
                    if p.pid is not None and p.is_alive()]

    @property
    def ready_count(self) -> int:
        """How many receiver processes take connections now."""
        return self._dispatcher.ready_count if self._dispatcher is not None else 0

    def loads(self) -> list[int]:
        """Connections each ready receiver process holds now."""
        return self._dispatcher.loads() if self._dispatcher is not None else []

    def start(self) -> None:
        """Listen on the configured port and start the receiver processes."""
        if self.size <= 0:
            return
        node = self.config.node
        if self.config.tls.enabled:  # a bad certificate fails the start, not each receiver
            server_context(self.config.tls, node.network_timeout_s)
        self._dispatcher = Dispatcher(
            node.host, node.port,
            on_all_ready=lambda: log.info("all %d receiving processes take connections",
                                          self.size),
            max_connections=node.max_associations,
            refused=accept_checks(node)[0],
        )
        # Receivers describe the node by the address actually bound (port 0, host names).
        host, port = self._dispatcher.address
        self._receiver_config = self.config.model_copy(update={
            "node": node.model_copy(update={"host": host, "port": port})})
        self._threads = [
            threading.Thread(target=self._drain, name="receivers-events", daemon=True),
            threading.Thread(target=self._supervise, name="receivers", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._dispatcher.start()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop accepting, SIGTERM every receiver process, wait up to ``grace_s``, then kill
        what is left."""
        if self._dispatcher is None:
            return
        with self._lock:
            self._stopping = True  # the supervisor starts nothing from here on
            processes = list(self._processes.values())
        self._dispatcher.stop()
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + min(grace_s, STOP_GRACE_S) + 2.0
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("receiver process %s did not stop in time: killed", process.pid)
                process.kill()
                process.join(5)
        # Only now may the supervisor thread end: its end SIGKILLs the processes it started.
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            for reader in self._event_readers:
                reader.close()
            self._event_readers.clear()
        self._dispatcher = None

    def _spawn(self, slot: int) -> None:
        """Start the receiver process of ``slot`` (under ``self._lock``)."""
        assert self._dispatcher is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        events_reader, events_writer = self._context.Pipe(duplex=False)
        try:
            process = self._context.Process(
                target=receiver_main,
                args=(self._receiver_config, theirs, events_writer, os.getpid()),
                name="hypoxnode-receiver", daemon=True,
            )
            process.start()
        except BaseException:
            ours.close()
            events_reader.close()
            raise
        finally:
            theirs.close()
            events_writer.close()
        self._processes[slot] = process
        self._event_readers[events_reader] = slot
        self._dispatcher.add(slot, ours)

    def _supervise(self) -> None:
        """Start the processes, then restart any that dies, from this one long-lived thread.

        ``PR_SET_PDEATHSIG`` fires when the *thread* that started a process ends, so all of
        them are started here and this thread lives as long as the pool; it never lets an
        exception end it. A process that dies soon after it started is restarted after a
        growing delay (up to :data:`RESTART_BACKOFF_MAX_S`), not in a loop.
        """
        slots = list(range(self.size))
        while True:
            with self._lock:
                # Stopping: start nothing more, but live on until stop() has let the
                # processes finish (this thread's end would SIGKILL them).
                for slot in slots if not self._stopping else ():
                    try:
                        self._check_slot(slot)
                    except Exception:  # a start that failed (no descriptors, ...): retry
                        log.exception("could not start receiver process %d", slot)
                        self._note_failure(slot)
            if self._stop.wait(SUPERVISE_INTERVAL_S):
                return

    def _check_slot(self, slot: int) -> None:
        process = self._processes.get(slot)
        now = time.monotonic()
        if process is not None:
            if process.is_alive() or process.pid is None:
                return
            if process.exitcode == 0:
                # SIGTERM from outside (the service manager stopping us all): a clean stop,
                # not a crash; the node stops too or runs with fewer.
                if process.pid not in self._stopped_outside:
                    log.warning("receiver process %s was stopped by SIGTERM", process.pid)
                    self._stopped_outside.add(process.pid)
                return
            if slot not in self._restart_at:  # first sight of this death
                log.error("receiver process %s ended (exit code %s); starting another",
                          process.pid, process.exitcode)
                assert self._dispatcher is not None
                self._dispatcher.remove(slot)
                self.restarts += 1
                removed = remove_orphans(self._spool_dir, process.pid)
                if removed:
                    log.warning("removed %d partial data set(s) that receiver process %s was"
                                " receiving", removed, process.pid)
                quick = now - self._started_at.get(slot, 0.0) < QUICK_DEATH_S
                self._note_failure(slot, quick)
        if now < self._restart_at.get(slot, 0.0):
            return  # backing off
        self._restart_at.pop(slot, None)
        self._spawn(slot)
        self._started_at[slot] = time.monotonic()

    def _note_failure(self, slot: int, quick: bool = True) -> None:
        """Restart ``slot`` after a delay that doubles with each death soon after a start."""
        count = self._quick_deaths.get(slot, 0) + 1 if quick else 0
        self._quick_deaths[slot] = count
        delay = min(RESTART_BACKOFF_MAX_S, SUPERVISE_INTERVAL_S * 2 ** (count - 1)) if count \
            else 0.0
        self._restart_at[slot] = time.monotonic() + delay

    def _drain(self) -> None:
        """Log the receivers' records and add their metric increments, in the node process."""
        while not self._stop.is_set():
            with self._lock:
                readers = list(self._event_readers)
            if not readers:
                self._stop.wait(0.2)
                continue
            for reader in wait(readers, timeout=0.5):
                assert isinstance(reader, Connection)
                try:
                    event = reader.recv()
                except (EOFError, OSError):  # that receiver ended: its pipe goes with it
                    with self._lock:
                        self._event_readers.pop(reader, None)
                    reader.close()
                    continue
                except Exception:  # a message it could not finish (killed mid-send)
                    log.exception("unreadable message from a receiver process")
                    continue
                self._handle(event)

    def _handle(self, event: Any) -> None:
        if isinstance(event, logging.LogRecord):
            logging.getLogger(event.name).handle(event)
        elif isinstance(event, tuple) and event and event[0] == "metrics":
            _apply_metrics(self.metrics, event[1])
