"""Reading the PROXY v2 header off a socket: exactly the header, never a DICOM byte after it.

Headers are written byte by byte from the specification's layout (haproxy's own are checked in
``tests/e2e/test_proxy_protocol.py``); the parser is the ``proxy-protocol`` library's.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from service.receive.proxy_header import (
    ProxyGate,
    ProxyHeaderError,
    ProxyHealthCheckError,
    ProxyRefusedError,
    read_proxy_header,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
A_ASSOCIATE_RQ_START = b"\x01\x00\x00\x00\x00\x44"


def _v4(source: str, sport: int, dest: str = "10.0.0.9", dport: int = 11112,
        tlv: bytes = b"") -> bytes:
    block = socket.inet_aton(source) + socket.inet_aton(dest) + struct.pack("!HH", sport, dport)
    return SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block + tlv)) + block + tlv


def _v6(source: str, sport: int) -> bytes:
    block = (socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "::1")
             + struct.pack("!HH", sport, 11112))
    return SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(block)) + block


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    node, balancer = socket.socketpair()
    yield node, balancer
    node.close()
    balancer.close()


def test_the_scanner_address_and_nothing_more_is_read(
        pair: tuple[socket.socket, socket.socket]) -> None:
    node, balancer = pair
    balancer.sendall(_v4("192.0.2.7", 40001, tlv=b"\x04\x00\x01\x00") + A_ASSOCIATE_RQ_START)
    assert read_proxy_header(node, 1.0) == ("192.0.2.7", 40001)
    assert node.recv(64) == A_ASSOCIATE_RQ_START  # the DICOM bytes are left for pynetdicom
    assert node.gettimeout() is None  # the socket's own timeout is put back


def test_ipv6_and_a_header_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    node, balancer = pair
    header = _v6("2001:db8::5", 50000)
    balancer.sendall(header[:5])
    balancer.sendall(header[5:20])
    balancer.sendall(header[20:])
    assert read_proxy_header(node, 1.0) == ("2001:db8::5", 50000)


def test_local_command_names_no_scanner(pair: tuple[socket.socket, socket.socket]) -> None:
    node, balancer = pair
    balancer.sendall(SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0))
    assert read_proxy_header(node, 1.0) is None
    gate = ProxyGate(lambda host: True, 1.0)
    balancer.sendall(SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0))
    with pytest.raises(ProxyHealthCheckError, match="names no scanner"):
        gate.open(node, ("127.0.0.1", 1))


@pytest.mark.parametrize(("sent", "message"), [
    (A_ASSOCIATE_RQ_START + bytes(20), "not a PROXY v2 header"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.9 40001 11112\r\n", "not a PROXY v2 header"),
    (SIGNATURE + bytes([0x11, 0x11]) + struct.pack("!H", 12), "not a PROXY v2 header"),
    (SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000), "at most 2048"),
])
def test_what_is_not_a_header_is_refused(pair: tuple[socket.socket, socket.socket], sent: bytes,
                                         message: str) -> None:
    node, balancer = pair
    balancer.sendall(sent)
    with pytest.raises(ProxyHeaderError, match=message):
        read_proxy_header(node, 1.0)


def test_a_silent_or_closing_peer_ends_in_time() -> None:
    node, balancer = socket.socketpair()
    balancer.sendall(_v4("192.0.2.7", 40001)[:20])
    with pytest.raises(ProxyHeaderError, match="in time"):
        read_proxy_header(node, 0.2)
    node.close()
    balancer.close()
    node, balancer = socket.socketpair()
    balancer.sendall(SIGNATURE[:7])
    balancer.close()
    with pytest.raises(ProxyHeaderError, match="closed inside") as inside:
        read_proxy_header(node, 1.0)
    assert not isinstance(inside.value, ProxyHealthCheckError)
    node.close()


def test_a_connection_closed_before_a_byte_is_a_health_check(
        pair: tuple[socket.socket, socket.socket]) -> None:
    node, balancer = pair
    balancer.close()
    with pytest.raises(ProxyHealthCheckError):
        read_proxy_header(node, 1.0)


def test_the_gate_applies_the_allow_list_to_the_scanner(
        pair: tuple[socket.socket, socket.socket]) -> None:
    node, balancer = pair
    gate = ProxyGate(lambda host: host == "192.0.2.7", 1.0)
    balancer.sendall(_v4("192.0.2.7", 40001))
    assert gate.open(node, ("127.0.0.1", 5000)) == ("192.0.2.7", 40001)
    balancer.sendall(_v4("198.51.100.1", 40002))
    with pytest.raises(ProxyRefusedError, match="198.51.100.1 .through the balancer 127.0.0.1"):
        gate.open(node, ("127.0.0.1", 5001))
