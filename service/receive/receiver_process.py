"""The receiver process: one of the node's receiving processes (see
:mod:`service.receive.receivers`).

It serves the connections the node process hands over on its channel with the node's own
C-ECHO/C-STORE service, forwards its log records and metric increments to the node process,
reports each connection's end (and idleness, :mod:`service.receive.association_grace`) to the
dispatcher, lets open associations finish on SIGTERM, and dies with the node process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from service.config import Config
from service.receive._pynetdicom.prompt_server import DispatchedAssociationServer
from service.receive.dispatch import DONE, READY
from service.receive.listener import dispatched_listener
from service.runtime.logs import set_levels
from service.storage.index_open import open_index
from service.storage.store import InstanceStore

log = logging.getLogger("hypoxnode.receivers")

PARENT_CHECK_S = 0.5
"""How often a receiver process checks that the node process still runs."""

METRICS_FLUSH_S = 0.25
"""How often a receiver process sends its metric increments to the node process."""

STOP_GRACE_S = 10.0
"""How long a stopping receiver process lets its open associations finish."""

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15

PROCESS_NAME = b"hypoxnode-recv"
"""What ``ps``, ``top`` and ``/proc/<pid>/comm`` call a receiver process (Linux)."""


class _ForwardedCounter:
    """A counter (or one labelled child of it) whose increments go to the node process."""

    def __init__(self, sink: ForwardedMetrics, name: str, labels: tuple[str, ...] = ()) -> None:
        self._sink, self._name, self._labels = sink, name, labels

    def inc(self, amount: float = 1.0) -> None:
        self._sink.add(self._name, self._labels, amount)

    def labels(self, *values: str) -> _ForwardedCounter:
        return _ForwardedCounter(self._sink, self._name, tuple(values))


class EventSink:
    """A receiver process's end of its own pipe to the node process (log records, metrics).

    One pipe per receiver process, so a receiver killed half-way through a message spoils
    nothing but its own pipe, which goes with it. Sending takes a lock local to the process
    (several threads log) and never raises: logging must not fail a C-STORE.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        """Send ``item`` (picklable) to the node process."""
        with self._lock, contextlib.suppress(Exception):
            self._connection.send(item)

    put_nowait = put
    """For :class:`logging.handlers.QueueHandler`."""


class ForwardedMetrics:
    """The listener's metrics in a receiver process.

    Increments are summed here and sent to the node process every :data:`METRICS_FLUSH_S`
    (one message, whatever the number of instances).
    """

    def __init__(self, events: EventSink) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, tuple[str, ...]], float] = {}
        self.instances_received = _ForwardedCounter(self, "instances_received")
        self.bytes_received = _ForwardedCounter(self, "bytes_received")
        self.instances_refused = _ForwardedCounter(self, "instances_refused")
        self.associations = _ForwardedCounter(self, "associations")

    def add(self, name: str, labels: tuple[str, ...], amount: float) -> None:
        """Count ``amount`` more for the counter ``name`` (with ``labels``)."""
        with self._lock:
            self._pending[(name, labels)] = self._pending.get((name, labels), 0.0) + amount
        if name == "associations" and labels and labels[0] != "accepted":
            self.flush()  # an association ended: its counts reach /metrics now, not later

    def flush(self) -> None:
        """Send what was counted since the last flush."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            self._events.put(("metrics", pending))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that started it ends (and to call
    it :data:`PROCESS_NAME`).

    A killed node takes its receivers with it, as if it were one process: nothing keeps
    accepting instances for a node that is gone (or being restarted). What they had
    acknowledged is on disk; what they had not, their senders send again.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(PROCESS_NAME))


class _StopFlag:
    """Set by SIGTERM. A plain attribute: a signal handler must not take locks (a second
    SIGTERM inside ``threading.Event.set`` would deadlock on its condition)."""

    requested = False

    def request(self, *_: Any) -> None:
        self.requested = True


def receiver_main(config: Config, channel: socket.socket, events: Connection,
                  parent_pid: int) -> None:
    """A receiver process: serve the connections the node hands over on ``channel`` until
    SIGTERM (then let open associations finish) or until the node process is gone (then end
    at once)."""
    _die_with_parent()
    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.request)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal: the node stops us
    sink = EventSink(events)
    logging.getLogger().handlers[:] = [logging.handlers.QueueHandler(sink)]  # type: ignore[arg-type]
    set_levels(config.log.level)
    logging.getLogger("hypoxnode.audit").setLevel(logging.INFO)  # kept whatever the level

    store = InstanceStore(config.data_dir, min_free_bytes=config.node.min_free_bytes,
                          tmp_name=config.cluster.tmp_name)
    index = open_index(config)
    metrics = ForwardedMetrics(sink)
    server = dispatched_listener(config, store, index, metrics)
    send_lock = threading.Lock()

    def tell(message: bytes) -> None:
        with send_lock, contextlib.suppress(OSError):
            channel.send(message)

    server.tell = tell  # type: ignore[method-assign]
    server.association_grace_s = config.node.association_grace_s
    threading.Thread(target=_take_connections,
                     args=(channel, server, config.node.network_timeout_s, tell),
                     name="take", daemon=True).start()
    tell(READY)
    while not stop.requested:
        time.sleep(min(PARENT_CHECK_S, METRICS_FLUSH_S))
        metrics.flush()
        if os.getppid() != parent_pid:  # where PR_SET_PDEATHSIG is not available
            os._exit(1)
    # Stopping: the node sees the channel end and hands us nothing more; open associations
    # finish (the store and index stay open for them), then this process ends.
    with contextlib.suppress(OSError):
        channel.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + STOP_GRACE_S
    while server.active_associations and time.monotonic() < deadline:
        for assoc in server.active_associations:
            assoc.join(max(0.0, min(0.5, deadline - time.monotonic())))
    server.server_close()
    metrics.flush()
    index.close()


def _take_connections(channel: socket.socket, server: DispatchedAssociationServer,
                      timeout_s: float, tell: Callable[[bytes], None]) -> None:
    """Serve each connection the node hands over, until the channel closes."""
    while True:
        try:
            payload, fds, _flags, _address = socket.recv_fds(channel, 1024, 1)
        except OSError:
            return
        if not payload and not fds:
            return
        if not fds:  # the descriptor did not make it (our descriptor limit): count it done
            log.error("a connection handed over arrived without its descriptor")
            tell(DONE)
            continue
        for fd in fds:
            connection = socket.socket(fileno=fd)
            try:
                # A peer that stalls half-way through a PDU is dropped, not waited on forever
                connection.settimeout(timeout_s)
                host, port, over_limit = json.loads(payload)
                server.serve_connection(connection, (str(host), int(port)), bool(over_limit))
            except Exception:  # never let one connection stop the hand-over
                log.exception("could not serve a handed-over connection")
                connection.close()
                server.abandon(fd)


