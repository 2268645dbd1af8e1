"""The PROXY protocol v2 header a load balancer sends before a scanner's bytes.

Behind haproxy (``mode tcp``, ``send-proxy-v2``; ``deploy/haproxy.cfg``) every connection the
node accepts comes from the balancer. The balancer first writes a binary header naming the
scanner's address and port; this module reads exactly that header off the socket (nothing of
the DICOM or TLS bytes after it) and parses it with the ``proxy-protocol`` library. The
address in it is then the peer the allow-list, the audit trail and the logs see.

Only connections from ``node.proxy_from`` are accepted when the header is expected
(:class:`ProxyGate`); a connection that does not start with a valid header within its
deadline is closed and audited, so a host that reaches the node around the balancer cannot
pose as a scanner.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from proxyprotocol import ProxyProtocolSyntaxError
from proxyprotocol.result import ProxyResultIPv4, ProxyResultIPv6
from proxyprotocol.v2 import ProxyProtocolV2

SIGNATURE_AND_LENGTH = 16
"""Signature (12 bytes), version and command, family and protocol, address block length."""
MAX_ADDRESS_BLOCK = 2048
"""Largest address block (addresses and TLVs) read; haproxy sends 12 to a few hundred bytes."""


class ProxyHeaderError(ConnectionError):
    """The connection did not start with a usable PROXY v2 header."""


class ProxyHealthCheckError(ProxyHeaderError):
    """The balancer's own health check: a LOCAL header, or closed before a byte. Not audited."""


class ProxyRefusedError(ConnectionError):
    """The scanner behind the balancer is not in ``node.allowed_calling_hosts``."""


class ProxyGate:
    """Reads the PROXY header of each connection and checks the scanner's address.

    The connection itself was checked to come from a balancer at accept
    (:func:`~service.receive.accept_guard.accept_checks`).

    Parameters
    ----------
    host_allowed
        ``node.host_allowed``, applied to the scanner's address from the header.
    timeout_s
        Time the header has to arrive in all (``node.association_request_timeout_s``).
    """

    def __init__(self, host_allowed: Callable[[str], bool], timeout_s: float) -> None:
        self.host_allowed = host_allowed
        self.timeout_s = timeout_s

    def open(self, connection: socket.socket, address: tuple[str, int]) -> tuple[str, int]:
        """The scanner's ``(host, port)`` read off ``connection`` from balancer ``address``.

        Raises
        ------
        ProxyHeaderError
            No valid header in time.
        ProxyHealthCheckError
            A LOCAL header or no byte at all: the balancer's health check, no scanner.
        ProxyRefusedError
            The scanner's address is not allowed.
        """
        source = read_proxy_header(connection, self.timeout_s)
        if source is None:
            raise ProxyHealthCheckError(f"PROXY header from {address[0]} names no scanner"
                                        " (LOCAL or a non-IP family): closed")
        if not self.host_allowed(source[0]):
            raise ProxyRefusedError(f"{source[0]} (through the balancer {address[0]}) is not in"
                                    " node.allowed_calling_hosts")
        return source


def read_proxy_header(connection: socket.socket, timeout_s: float) -> tuple[str, int] | None:
    """Consume one PROXY v2 header from ``connection``.

    Returns
    -------
    tuple of (str, int) or None
        The original source address and port; None for a LOCAL header or a non-IP family.

    Raises
    ------
    ProxyHeaderError
        No header, a malformed or oversized one, the peer closing, or the deadline passing.
    """
    parser = ProxyProtocolV2()
    deadline = time.monotonic() + timeout_s
    head = _recv_exactly(connection, SIGNATURE_AND_LENGTH, deadline, first=True)
    try:
        header = parser.unpack_header(head)
    except ProxyProtocolSyntaxError as exc:
        raise ProxyHeaderError(f"not a PROXY v2 header ({exc}): is the balancer sending"
                               " send-proxy-v2?") from None
    if header.data_len > MAX_ADDRESS_BLOCK:
        raise ProxyHeaderError(f"PROXY v2 address block of {header.data_len} bytes (at most"
                               f" {MAX_ADDRESS_BLOCK})")
    block = _recv_exactly(connection, header.data_len, deadline)
    try:
        result = parser.unpack_data(header, head, block)
    except (ProxyProtocolSyntaxError, ValueError) as exc:
        raise ProxyHeaderError(f"malformed PROXY v2 address block ({exc})") from None
    if isinstance(result, ProxyResultIPv4 | ProxyResultIPv6):
        host, port = result.source
        return str(host), int(port)
    return None


def _recv_exactly(connection: socket.socket, count: int, deadline: float,
                  first: bool = False) -> bytes:
    """``count`` bytes, waiting at most until ``deadline`` (monotonic) for all of them;
    ``first``: the connection's first bytes (closed before them is a health check)."""
    previous = connection.gettimeout()
    data = bytearray()
    try:
        while len(data) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProxyHeaderError("no complete PROXY v2 header in time")
            connection.settimeout(left)
            try:
                chunk = connection.recv(count - len(data))
            except TimeoutError:
                raise ProxyHeaderError("no complete PROXY v2 header in time") from None
            if not chunk and not data and first:
                raise ProxyHealthCheckError("connection closed before any byte")
            if not chunk:
                raise ProxyHeaderError("connection closed inside the PROXY v2 header")
            data += chunk
    finally:
        connection.settimeout(previous)
    return bytes(data)
