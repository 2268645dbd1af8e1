"""Transport limits of the HTTP interface: a deadline on each request head.

Uvicorn bounds the size of a request head (h11: 16 KiB) and closes keep-alive connections
idle after a response, but waits forever for a connection that never completes its first
request head: a few hundred half-sent requests (slowloris) hold as many descriptors, shared
with the DICOM side. :func:`bounded_h11` gives uvicorn's h11 protocol a deadline: a connection
whose request head is not complete ``header_timeout_s`` after it opened (or after its previous
response) is closed and audited. The number of connections served at once is uvicorn's
``limit_concurrency`` (``[http] max_connections``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

AUDIT = logging.getLogger("hypoxnode.audit")


class _BoundedH11Protocol(H11Protocol):
    """Uvicorn's h11 protocol with a request-head deadline."""

    header_timeout_s: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Upstream's, then the deadline for the first request head."""
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        """Upstream's, then the deadline for the next request head."""
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline for a closed connection; then upstream's."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        # IDLE: no complete request head since the connection opened or the last response
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        AUDIT.warning("HTTP connection from %s closed: no complete request head within %g s",
                      client, self.header_timeout_s)
        self.transport.close()


def bounded_h11(header_timeout_s: float) -> type[Any]:
    """Uvicorn's h11 protocol class closing connections without a request head in time."""
    return type("BoundedH11Protocol", (_BoundedH11Protocol,),
                {"header_timeout_s": header_timeout_s})
