"""Connections from hosts outside ``node.allowed_calling_hosts`` are closed at accept.

Before, the allow-list was consulted only once a whole A-ASSOCIATE-RQ had been read, so a
refused host could hold connections open by trickling bytes and use up the node's
associations. Now the peer address decides before anything is read; refusals are audited in
summary (at most one line per :data:`SUMMARY_INTERVAL_S`), so a flood of connections cannot
flood the log either.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

from service.config import NodeConfig
from service.receive.proxy_header import ProxyGate
from service.runtime.audit import audit

SUMMARY_INTERVAL_S = 10.0


class RefusedAtAccept:
    """Closes connections from hosts ``host_allowed`` says no to, and audits them in summary.

    Parameters
    ----------
    host_allowed
        ``node.host_allowed``; None lets everyone connect.
    clock
        Monotonic seconds (injected by tests).
    setting
        The setting that lists the hosts allowed, for the audit line.
    """

    def __init__(self, host_allowed: Callable[[str], bool] | None,
                 clock: Callable[[], float] = time.monotonic,
                 setting: str = "node.allowed_calling_hosts") -> None:
        self._host_allowed = host_allowed
        self._setting = setting
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._since = clock()
        self.total = 0

    def refuse(self, connection: socket.socket, address: tuple[str, int]) -> bool:
        """Close ``connection`` and return True when its peer is not allowed."""
        if self._host_allowed is None or self._host_allowed(str(address[0])):
            return False
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()  # with linger 0: a reset, nothing left in TIME_WAIT
        self._note(str(address[0]))
        return True

    def _note(self, host: str) -> None:
        with self._lock:
            self._count += 1
            self.total += 1
            now = self._clock()
            if self._count > 1 and now - self._since < SUMMARY_INTERVAL_S:
                return
            count, seconds = self._count, now - self._since
            self._count, self._since = 0, now
        audit.warning("connection refused at accept from %s: host not in %s (%d refused in"
                      " the last %.0f s)", host, self._setting, count, seconds)


def accept_checks(node: NodeConfig) -> tuple[RefusedAtAccept, ProxyGate | None]:
    """What the node checks when it accepts a connection, and the PROXY gate behind it.

    Without ``node.proxy_from`` the peer must be in ``node.allowed_calling_hosts`` (when set)
    and there is no gate. With it, the peer must be one of the balancers, and the gate reads
    each connection's PROXY v2 header and checks the scanner's address in it.
    """
    if not node.proxy_from:
        return RefusedAtAccept(node.host_allowed if node.allowed_calling_hosts else None), None
    gate = ProxyGate(node.host_allowed, node.association_request_timeout_s)
    return RefusedAtAccept(node.from_balancer, setting="node.proxy_from"), gate
