"""A refused host trickling association requests cannot starve allowed scanners.

14 connections from 127.0.0.3 (outside ``allowed_calling_hosts``) each send the first bytes of
an A-ASSOCIATE-RQ and then one byte a second; meanwhile an allowed host (127.0.0.1) sends
C-ECHOs. Before the allow-list was checked at accept, 0 of 20 echoes were answered (the
attacker held every association slot); now the refused connections are closed unread.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.peers import echoscu, wait_for
from tests.reliability import start_test_node

ATTACKERS = 14
ECHOES = 20


def _trickle(port: int, stop: threading.Event, closed: list[bool], started: list[bool]
             ) -> None:
    """Connect from 127.0.0.3 and trickle an A-ASSOCIATE-RQ a byte a second until ``stop``;
    then record whether the node had closed the connection (a reset, or end of stream)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                        source_address=("127.0.0.3", 0))
    except OSError:
        closed.append(True)
        return
    finally:
        started.append(True)
    header = b"\x01\x00\x00\x00\x10\x00"  # A-ASSOCIATE-RQ claiming 4 KiB
    try:
        for byte in header + b"\x00" * 64:
            sock.sendall(bytes([byte]))
            if stop.wait(1.0):
                break
        sock.settimeout(5)
        if sock.recv(1) == b"":  # the node closed it; a connection kept open times out
            closed.append(True)
    except TimeoutError:
        pass  # still open: the node kept it
    except OSError:
        closed.append(True)  # reset by the node
    finally:
        sock.close()


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_allowed_scanner_keeps_its_echoes_during_a_slowloris(
    tmp_path: Path, receiver_processes: int
) -> None:
    node = start_test_node(
        tmp_path / "node", http=False,
        node_extra='allowed_calling_hosts = ["127.0.0.1"]\nmax_associations = 4\n'
                   f"receiver_processes = {receiver_processes}",
    )
    stop = threading.Event()
    closed: list[bool] = []
    started: list[bool] = []
    attackers = [threading.Thread(target=_trickle, args=(node.port, stop, closed, started))
                 for _ in range(ATTACKERS)]
    try:
        for thread in attackers:
            thread.start()
        wait_for(lambda: len(started) == ATTACKERS, 10, "every attacker to connect")
        answered = sum(echoscu(node.port, node.ae_title) for _ in range(ECHOES))
    finally:
        stop.set()
        for thread in attackers:
            thread.join(20)
        node.stop()
    assert answered >= 0.9 * ECHOES, f"{answered} of {ECHOES} C-ECHOs answered"
    assert len(closed) == ATTACKERS, "the node kept a refused host's connection open"


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_a_trickled_association_request_is_cut_off_at_its_deadline(
    tmp_path: Path, receiver_processes: int
) -> None:
    """An allowed host trickling its A-ASSOCIATE-RQ a byte a second is closed after
    ``association_request_timeout_s`` in all (before: ``network_timeout_s`` per byte, never)."""
    node = start_test_node(
        tmp_path / "node", http=False,
        node_extra="association_request_timeout_s = 2.0\n"
                   f"receiver_processes = {receiver_processes}",
    )
    try:
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        started = time.monotonic()
        closed_after = None
        try:
            for byte in b"\x01\x00\x00\x00\x00\x44" + bytes(68):
                sock.sendall(bytes([byte]))
                # The next byte half a second later, unless the node hangs up first.
                readable, _, _ = select.select([sock], [], [], 0.5)
                if readable and not sock.recv(4096):
                    closed_after = time.monotonic() - started
                    break
        except OSError:
            closed_after = time.monotonic() - started
        finally:
            sock.close()
        assert closed_after is not None, "the node read the trickle to its end"
        assert closed_after < 6.0
        assert echoscu(node.port, node.ae_title)
    finally:
        node.stop()
    assert "no complete association request within 2 s" in node.log()
