"""Accept DICOM connections in the node process and hand each to the least busy receiver.

The node process owns the listening socket. Each receiver process (:mod:`service.receive.receivers`)
is linked to it by a Unix ``SOCK_SEQPACKET`` socket pair, its *channel*: the node sends an
accepted connection down the channel (the file descriptor itself, ``SCM_RIGHTS``, with the
peer's address), the receiver answers ``R`` once when it is ready and ``-`` each time a
connection it was given is done with. The node counts what each receiver holds and gives a
new connection to the ready receiver holding fewest: four scanners on two receivers get two
each, which the kernel's ``SO_REUSEPORT`` hashing does not promise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from service.receive.accept_guard import RefusedAtAccept

log = logging.getLogger("hypoxnode.dispatch")

READY = b"R"
"""Receiver -> node: listening for connections."""

DONE = b"-"
"""Receiver -> node: one connection it was given is done with."""

IDLE = b"i"
"""Receiver -> node: a connection sent no A-ASSOCIATE-RQ within ``node.association_grace_s``;
it no longer counts against ``max_associations`` (it still holds the receiver)."""

COUNTED = b"+"
"""Receiver -> node: an idle connection's A-ASSOCIATE-RQ came after all: it counts again."""

IDLE_DONE = b"~"
"""Receiver -> node: an idle connection is done with."""

PENDING_TIMEOUT_S = 10.0
"""How long an accepted connection waits for a ready receiver before it is closed."""


@dataclass
class _Receiver:
    channel: socket.socket
    load: int = 0
    idle: int = 0
    """Of :attr:`load`, connections without an association request past the grace."""
    ready: bool = False
    given: int = 0
    """When it was last given a connection (a counter): ties go to the longest idle."""


class Dispatcher:
    """The listening socket and the hand-over loop (one thread).

    Parameters
    ----------
    host, port
        Where to listen (port 0: any free port, see :attr:`port`).
    on_all_ready
        Called once, the first time every receiver added so far is ready.
    max_connections
        Connections beyond this many held are handed over marked *over the limit*, for the
        receiver to reject the association (``node.max_associations`` for the whole node).
        A connection its receiver reports :data:`IDLE` (no association request within the
        grace) is not counted until it reports :data:`COUNTED`.
    refused
        Closes a connection from a host not allowed at accept, before a byte of it is read
        (:func:`~service.receive.accept_guard.accept_checks`; None: everyone may connect).
    """

    def __init__(self, host: str, port: int, on_all_ready: Callable[[], None] | None = None,
                 max_connections: int | None = None,
                 refused: RefusedAtAccept | None = None) -> None:
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        # "::" takes IPv4 scanners too, as the node's own listener does on Linux.
        dualstack = family == socket.AF_INET6 and host in ("::", "") and \
            socket.has_dualstack_ipv6()
        self._listener = socket.create_server((host, port), family=family, backlog=128,
                                              dualstack_ipv6=dualstack)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_receive, self._wake_send = socket.socketpair()
        self._wake_receive.setblocking(False)
        self._selector.register(self._wake_receive, selectors.EVENT_READ, "wake")
        self._receivers: dict[int, _Receiver] = {}
        self._commands: deque[tuple[str, int, socket.socket | None]] = deque()
        self._pending: deque[tuple[socket.socket, tuple[str, int], float]] = deque()
        self._on_all_ready = on_all_ready
        self._max_connections = max_connections
        self._refused = refused if refused is not None else RefusedAtAccept(None)
        self._stop = False
        self._handed_over = 0
        self._thread = threading.Thread(target=self._run, name="dispatch", daemon=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._listener.getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        """The bound address, numeric."""
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def ready_count(self) -> int:
        """Receivers ready for connections."""
        return sum(1 for receiver in list(self._receivers.values()) if receiver.ready)

    def loads(self) -> list[int]:
        """Connections each ready receiver holds now."""
        return [r.load for r in list(self._receivers.values()) if r.ready]

    def start(self) -> None:
        """Start accepting and handing over."""
        self._thread.start()

    def add(self, key: int, channel: socket.socket) -> None:
        """Hand connections to the receiver at the other end of ``channel`` once it is ready."""
        channel.setblocking(False)
        self._command("add", key, channel)

    def remove(self, key: int) -> None:
        """Stop handing connections to receiver ``key`` and close its channel."""
        self._command("remove", key, None)

    def stop(self) -> None:
        """Close the listening socket and every channel; connections not handed over close."""
        self._stop = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(10)
        self._listener.close()
        for receiver in self._receivers.values():
            receiver.channel.close()
        for connection, _, _ in self._pending:
            connection.close()
        self._selector.close()
        self._wake_send.close()
        self._wake_receive.close()

    def _command(self, what: str, key: int, channel: socket.socket | None) -> None:
        self._commands.append((what, key, channel))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_send.send(b"\0")

    def _run(self) -> None:
        announced = False
        while not self._stop:
            for key, _ in self._selector.select(timeout=0.5):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        while self._wake_receive.recv(4096):
                            pass
                else:
                    self._read_channel(int(key.data))
            self._apply_commands()
            self._hand_over()
            if not announced and self._receivers and self.ready_count == len(self._receivers):
                announced = True
                if self._on_all_ready is not None:
                    self._on_all_ready()

    def _apply_commands(self) -> None:
        while self._commands:
            what, key, channel = self._commands.popleft()
            if what == "add" and channel is not None:
                self._receivers[key] = _Receiver(channel)
                self._selector.register(channel, selectors.EVENT_READ, key)
            elif what == "remove" and key in self._receivers:
                receiver = self._receivers.pop(key)
                self._selector.unregister(receiver.channel)
                receiver.channel.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. too many open files: keep serving the rest
                log.error("accepting a DICOM connection failed: %s", exc)
                time.sleep(0.1)  # the socket stays readable: do not spin on it
                return
            if self._refused.refuse(connection, address):
                continue
            self._pending.append((connection, address, time.monotonic()))

    def _read_channel(self, key: int) -> None:
        receiver = self._receivers.get(key)
        if receiver is None:
            return
        while True:
            try:
                message = receiver.channel.recv(16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:  # the receiver process is gone; the supervisor replaces it
                self._selector.unregister(receiver.channel)
                receiver.channel.close()
                del self._receivers[key]
                return
            if message == READY:
                receiver.ready = True
            elif message == DONE:
                receiver.load = max(0, receiver.load - 1)
            elif message == IDLE:
                receiver.idle = min(receiver.load, receiver.idle + 1)
            elif message == COUNTED:
                receiver.idle = max(0, receiver.idle - 1)
            elif message == IDLE_DONE:
                receiver.load = max(0, receiver.load - 1)
                receiver.idle = max(0, min(receiver.load, receiver.idle - 1))

    def _hand_over(self) -> None:
        full: set[int] = set()  # receivers whose channel is full this turn
        while self._pending:
            connection, address, accepted_at = self._pending[0]
            ready = [r for r in self._receivers.values() if r.ready and id(r) not in full]
            if not ready:
                if time.monotonic() - accepted_at > PENDING_TIMEOUT_S:
                    self._pending.popleft()
                    log.error("no receiver process ready for %ss: connection from %s:%s "
                              "closed", PENDING_TIMEOUT_S, *address[:2])
                    connection.close()
                    continue
                return
            target = min(ready, key=lambda r: (r.load, r.given))
            # Beyond the limit it is still handed over: a receiver answers A-ASSOCIATE-RJ
            # (transient), as a DICOM peer expects, rather than a closed connection.
            # Connections idle past the grace hold no association: they do not count.
            held = sum(r.load - r.idle for r in self._receivers.values())
            over = self._max_connections is not None and held >= self._max_connections
            payload = json.dumps([address[0], address[1], over]).encode()
            try:
                socket.send_fds(target.channel, [payload], [connection.fileno()])
            except (BlockingIOError, InterruptedError):
                full.add(id(target))  # its channel is full: another one, or the next turn
                continue
            except OSError:
                target.ready = False  # gone; its channel's end of file will remove it
                continue
            target.load += 1
            self._handed_over += 1
            target.given = self._handed_over
            self._pending.popleft()
            connection.close()  # the receiver holds its own descriptor now
