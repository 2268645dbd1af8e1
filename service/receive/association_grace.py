"""How one handed-over connection counts against ``node.max_associations``.

The process that accepts connections (:mod:`service.receive.dispatch`) counts what each receiver
holds and hands connections beyond ``max_associations`` over marked to be rejected. A
connection that sends no A-ASSOCIATE-RQ (a port scan, a health check, a clumsy or hostile
host on the allow-list) would count until it is closed, ``network_timeout_s`` later: a few of
them would lock scanners out. :class:`GraceCount` therefore reports a connection *idle* once
``node.association_grace_s`` passed without its request, and the dispatcher stops counting it;
if the request comes after all, it counts again. The connection itself stays open (and is
closed by the node's request deadlines), so a slow but genuine peer is still served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from service.receive.dispatch import COUNTED, DONE, IDLE, IDLE_DONE


class GraceCount:
    """The count of one connection, reported to the dispatcher through ``tell``.

    Parameters
    ----------
    tell
        Sends one message (:mod:`service.receive.dispatch` constants) to the dispatcher.
    grace_s
        Time the connection has to send its association request before it stops counting;
        None: it counts until it ends.
    """

    def __init__(self, tell: Callable[[bytes], None], grace_s: float | None) -> None:
        self._tell = tell
        self._lock = threading.Lock()
        self._idle = False
        self._settled = False  # its request came, or it ended
        self._ended = False
        self._timer: threading.Timer | None = None
        if grace_s is not None:
            self._timer = threading.Timer(grace_s, self._grace_over)
            self._timer.daemon = True
            self._timer.start()

    @property
    def idle(self) -> bool:
        """Whether the connection is reported idle now."""
        return self._idle

    def requested(self) -> None:
        """Its A-ASSOCIATE-RQ arrived: it counts (again, if it had been idle)."""
        with self._lock:
            self._settled = True
            self._cancel()
            if self._idle and not self._ended:
                self._idle = False
                self._tell(COUNTED)  # under the lock: messages keep their order

    def end(self) -> None:
        """The connection is done with (once; later calls do nothing)."""
        with self._lock:
            if self._ended:
                return
            self._ended = self._settled = True
            self._cancel()
            self._tell(IDLE_DONE if self._idle else DONE)

    def _grace_over(self) -> None:
        with self._lock:
            if self._settled:
                return
            self._idle = True
            self._tell(IDLE)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
