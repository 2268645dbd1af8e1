"""Servers that hand out prompt associations (:mod:`service.receive._pynetdicom.prompt_reactor`).

:func:`start_server` starts the threaded server like ``AE.start_server(block=False)`` and
turns each accepted association into a prompt one just after pynetdicom built and configured
it; :func:`dispatched_server` serves connections another process accepted
(:mod:`service.receive.receivers`), one :meth:`DispatchedAssociationServer.serve_connection` each.
Connections from hosts outside the allow-list are closed at accept.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from ssl import SSLContext
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from service.receive._pynetdicom.prompt_reactor import AUDIT, PromptAssociation, make_prompt
from service.receive._pynetdicom.spool import make_spooling
from service.receive._pynetdicom.spool_files import SpoolReserve
from service.receive.accept_guard import RefusedAtAccept
from service.receive.association_grace import GraceCount
from service.receive.dispatch import DONE
from service.receive.proxy_header import ProxyGate, ProxyHealthCheckError

log = logging.getLogger("hypoxnode.listener")


class PromptRequestHandler(RequestHandler):
    """pynetdicom's request handler, handing out prompt associations."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        make_prompt(assoc)
        spool: SpoolReserve | None = getattr(self.server, "spool", None)
        if spool is not None:
            make_spooling(assoc.dimse, spool)
        if isinstance(self.server, DispatchedAssociationServer):
            prompt = cast(PromptAssociation, assoc)
            count = self.server.count_of(self.request.fileno())
            prompt.on_end = count.end if count is not None else self.server.on_connection_end
            prompt.grace = count
            prompt.over_limit = self.server.take_over_limit(self.request.fileno())
        return assoc


class PromptAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with :class:`PromptRequestHandler`."""

    spool: SpoolReserve | None = None
    """The files C-STORE data sets are written to as they arrive
    (:mod:`service.receive._pynetdicom.spool`);
    None keeps them in memory, as upstream does. Closed with the server."""

    refused: RefusedAtAccept = RefusedAtAccept(None)
    """Closes connections from hosts outside the allow-list before anything is read."""

    proxy: ProxyGate | None = None
    """Behind a load balancer (``node.proxy_from``): each connection's PROXY v2 header is read
    first and the scanner's address in it is the association's peer. ``refused`` then checks
    that the connection comes from a balancer."""

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """False (the connection is closed unread) for a host outside the allow-list."""
        return not self.refused.refuse(request, client_address)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Upstream's, but behind a balancer the TLS handshake waits for the PROXY header
        (:meth:`finish_request`)."""
        if self.proxy is None:
            return super().get_request()
        return cast(socket.socket, self.socket).accept()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Behind a balancer: the PROXY header, then TLS; then upstream's handling."""
        if self.proxy is not None:
            client_address = self.proxy.open(request, client_address)
            if self.ssl_context is not None:
                request = self.ssl_context.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed before its association (a TLS handshake or a PROXY header,
        mostly): audit it, as the listener does for connections closed before a request
        (upstream prints a traceback). A load balancer's health check is not audited."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ProxyHealthCheckError):
            log.debug("health check from %s:%s: %s", *client_address[:2], exc)
            return
        AUDIT.warning("connection from %s:%s closed before any association request: %s",
                      *client_address[:2], exc)

    def server_close(self) -> None:
        """Upstream's, then the spool reserve's files not used are removed."""
        super().server_close()
        if self.spool is not None:
            self.spool.close()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = PromptRequestHandler
        super().__init__(*args, **kwargs)


class DispatchedAssociationServer(PromptAssociationServer):
    """A prompt server without a listening socket: another process accepts the connections
    and hands them over (:mod:`service.receive.receivers`), one :meth:`serve_connection` each.

    Each handed-over connection's :class:`~service.receive.association_grace.GraceCount` reports
    through :attr:`tell` when it is done with (its association thread ended, or its TLS
    handshake failed), and when it stays without an association request past
    :attr:`association_grace_s`, so the process that hands connections out can count what
    each server is busy with.
    """

    tell: Callable[[bytes], None] = staticmethod(lambda message: None)
    """Sends one :mod:`service.receive.dispatch` message to the process that hands connections out.
    """

    association_grace_s: float | None = None
    """``node.association_grace_s``; None: a connection counts until it ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._over_limit: set[int] = set()
        self._over_limit_lock = threading.Lock()
        self._counts: dict[int, GraceCount] = {}
        super().__init__(*args, **kwargs)

    def on_connection_end(self) -> None:
        """A connection without a :class:`GraceCount` of its own is done with."""
        self.tell(DONE)

    def server_bind(self) -> None:
        """No socket of its own to bind."""

    def server_activate(self) -> None:
        """No socket of its own to listen on."""

    def serve_connection(self, connection: socket.socket, address: tuple[str, int],
                         over_limit: bool = False) -> None:
        """Serve an accepted connection in a thread of its own (TLS handshake there too).

        ``over_limit``: the node holds its maximum of associations already; the association
        gets ``over_limit = True`` for the A-ASSOCIATE-RQ handler to reject it.
        """
        fileno = connection.fileno()
        with self._over_limit_lock:
            if over_limit:
                self._over_limit.add(fileno)
            self._counts[fileno] = GraceCount(self.tell, self.association_grace_s)
        self.process_request(connection, address)

    def count_of(self, fileno: int) -> GraceCount | None:
        """The count of the connection on ``fileno`` while it is being set up."""
        with self._over_limit_lock:
            return self._counts.get(fileno)

    def abandon(self, fileno: int) -> None:
        """A handed-over connection that could not be served is done with."""
        with self._over_limit_lock:
            count = self._counts.pop(fileno, None)
        if count is not None:
            count.end()
        else:
            self.on_connection_end()

    def take_over_limit(self, fileno: int) -> bool:
        """Whether the connection on ``fileno`` was handed over beyond the limit (once)."""
        with self._over_limit_lock:
            if fileno in self._over_limit:
                self._over_limit.discard(fileno)
                return True
            return False

    def finish_request(self, request: Any, client_address: Any) -> None:
        """The PROXY header behind a balancer, the TLS handshake (where upstream does it at
        ``accept``), then upstream's handling."""
        fileno = request.fileno()
        count = self.count_of(fileno)
        try:
            if self.proxy is not None:
                client_address = self.proxy.open(request, client_address)
            if self.ssl_context is not None:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            # the header and TLS are done: upstream's handling, not PromptAssociationServer's
            ThreadedAssociationServer.finish_request(self, request, client_address)
        except BaseException:
            if count is not None:
                count.end()  # once: its association, if it got one, ends it no second time
            else:
                self.on_connection_end()
            raise
        finally:  # the association, once created, holds the count itself
            with self._over_limit_lock:
                self._counts.pop(fileno, None)

    def shutdown(self) -> None:
        """Nothing to stop: there is no ``serve_forever`` loop."""
        self.server_close()


def start_server(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    ssl_context: SSLContext | None = None,
    spool: SpoolReserve | None = None,
    refused: RefusedAtAccept | None = None,
    proxy: ProxyGate | None = None,
) -> ThreadedAssociationServer:
    """``ae.start_server(address, block=False, ...)`` with prompt associations.

    Returns the running server; ``ae.shutdown()`` and ``server.shutdown()`` stop it as usual.
    ``spool``: see :attr:`PromptAssociationServer.spool`. ``refused``: closes connections from
    hosts not allowed at accept (None: everyone). ``proxy``: see
    :attr:`PromptAssociationServer.proxy`.
    """
    server = cast(PromptAssociationServer, ae.make_server(
        address, ssl_context=ssl_context, evt_handlers=evt_handlers,
        server_class=PromptAssociationServer,
    ))
    server.spool = spool
    server.refused = refused if refused is not None else RefusedAtAccept(None)
    server.proxy = proxy
    timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(
        target=make_target(server.serve_forever), name=f"AcceptorServer@{timestamp}",
        daemon=True,
    )
    thread.start()
    ae._servers.append(server)  # as AE.start_server does, so AE.shutdown() stops it
    return cast(ThreadedAssociationServer, server)


def dispatched_server(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    ssl_context: SSLContext | None = None,
    spool: SpoolReserve | None = None,
    proxy: ProxyGate | None = None,
) -> DispatchedAssociationServer:
    """A :class:`DispatchedAssociationServer` for ``ae``; ``address`` is the node's, for the
    association's acceptor address (nothing is bound to it here). ``spool`` and ``proxy``: see
    :attr:`PromptAssociationServer`."""
    server = cast(DispatchedAssociationServer, ae.make_server(
        address, ssl_context=ssl_context, evt_handlers=evt_handlers,
        server_class=DispatchedAssociationServer,
    ))
    server.spool = spool
    server.proxy = proxy
    return server
