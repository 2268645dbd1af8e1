"""Half-sent HTTP requests cannot hold the node's HTTP interface (issue 20).

300 connections each send the start of a request head and then nothing (slowloris). Before,
uvicorn kept every one of them open for as long as the client liked, each holding a descriptor
shared with the DICOM side. Now a connection without a complete request head within
``[http] request_header_timeout_s`` is closed and audited, and no more than
``[http] max_connections`` are served at once (a request beyond them is answered 503 at once,
never left hanging). DICOM is served throughout.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.peers import echoscu, free_port, start_node, wait_for
from tests.reliability import node_toml

ATTACKERS = 300
HEADER_TIMEOUT_S = 3
MAX_CONNECTIONS = 50


def _healthz(http_port: int) -> int:
    """The status code of GET /healthz (503 included); 0 when no answer came."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz",
                                    timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _closed_by_node(connection: socket.socket) -> bool:
    connection.setblocking(False)
    try:
        return connection.recv(1) == b""
    except BlockingIOError:
        return False  # still open
    except OSError:
        return True  # reset


def test_half_sent_requests_are_cut_off_and_bounded(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    toml = node_toml(tmp_path / "data", port, http_port=None).replace(
        "[http]\nenabled = false\n",
        f'[http]\nenabled = true\nhost = "127.0.0.1"\nport = {http_port}\n'
        f"request_header_timeout_s = {HEADER_TIMEOUT_S}\nmax_connections = {MAX_CONNECTIONS}\n")
    assert f"max_connections = {MAX_CONNECTIONS}" in toml
    node = start_node(tmp_path, toml, port)
    attackers: list[socket.socket] = []
    try:
        wait_for(lambda: _healthz(http_port) == 200, 30, "the HTTP interface")
        opened = time.monotonic()
        for _ in range(ATTACKERS):
            connection = socket.create_connection(("127.0.0.1", http_port), timeout=5)
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            attackers.append(connection)
        # beyond max_connections: an answer at once (503), not a hang
        assert _healthz(http_port) == 503
        assert echoscu(port, "HYPOXNODE")  # DICOM unaffected
        wait_for(lambda: all(_closed_by_node(c) for c in attackers),
                 HEADER_TIMEOUT_S + 20, "every half-sent request closed by the node")
        assert time.monotonic() - opened >= HEADER_TIMEOUT_S * 0.9  # by the deadline, not at once
        assert _healthz(http_port) == 200
        assert echoscu(port, "HYPOXNODE")
    finally:
        for connection in attackers:
            connection.close()
        node.stop()
    assert "no complete request head within" in node.log()
