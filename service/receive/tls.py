"""DICOM TLS for the listener (PS3.15 Annex B): the server's :class:`ssl.SSLContext`.

pynetdicom wraps each accepted socket in the thread that accepts connections. With the
default ``do_handshake_on_connect=True`` the TLS handshake would run there too, so one peer
that connects and says nothing would stall every other scanner. :class:`ServerContext`
defers the handshake to the association's own thread (OpenSSL performs it on the first read)
and bounds it with a socket timeout.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from service.config import TlsConfig

__all__ = ["ServerContext", "server_context"]


class ServerContext(ssl.SSLContext):
    """An :class:`ssl.SSLContext` whose server sockets hand-shake lazily, with a timeout."""

    handshake_timeout_s: float = 30.0

    def wrap_socket(  # type: ignore[override]
        self, sock: socket.socket, server_side: bool = False, *args: Any, **kwargs: Any
    ) -> ssl.SSLSocket:
        """Wrap ``sock``; server-side sockets hand-shake on their first read."""
        if server_side:
            sock.settimeout(self.handshake_timeout_s)
            kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, server_side, *args, **kwargs)


def server_context(tls: TlsConfig, timeout_s: float = 30.0) -> ServerContext:
    """The listener's TLS context: TLS 1.2 or later, the node's certificate, optional mTLS.

    Parameters
    ----------
    tls
        ``[tls]`` section; ``certificate_file`` and ``private_key_file`` must be set.
    timeout_s
        Socket timeout of accepted connections (handshake and reads).

    Raises
    ------
    ValueError
        TLS is not enabled or a file is missing.
    ssl.SSLError
        A file is not a usable PEM certificate or key.
    """
    if not tls.enabled:
        raise ValueError("tls.enabled is false: no TLS context to build")
    if tls.certificate_file is None or tls.private_key_file is None:
        raise ValueError("tls.certificate_file and tls.private_key_file are required")
    context = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    context.handshake_timeout_s = timeout_s
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(
        str(tls.certificate_file.expanduser()), str(tls.private_key_file.expanduser())
    )
    if tls.ca_file is not None:
        context.load_verify_locations(cafile=str(tls.ca_file.expanduser()))
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else (
        ssl.CERT_OPTIONAL if tls.ca_file is not None else ssl.CERT_NONE
    )
    return context
