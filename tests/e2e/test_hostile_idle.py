"""Idle connections from an allowed host do not count against ``max_associations``.

Six connections from the allowed host that never send an A-ASSOCIATE-RQ (a port scanner, a
TCP health check, a modality that hung after connecting) meet a node allowing 2 associations.
Before, they counted until the node closed them (``network_timeout_s`` later) and scanners
were rejected meanwhile (local limit exceeded). Now:

- the node process receiving itself (``receiver_processes = 1``) counts only associations
  whose request came: the scanner is served at once;
- with receiver processes, the node hands each connection over before its request is read,
  and counts it within ``association_grace_s`` (the scanner is rejected then) but not after.

Every C-ECHO is then answered although the idle connections stay open.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.peers import echoscu, wait_for
from tests.reliability import start_test_node

IDLE = 6
ECHOES = 10
GRACE_S = 4


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_idle_connections_do_not_lock_scanners_out(tmp_path: Path,
                                                   receiver_processes: int) -> None:
    node = start_test_node(
        tmp_path / "node", http=False,
        node_extra=f'allowed_calling_hosts = ["127.0.0.1"]\nmax_associations = 2\n'
                   f"receiver_processes = {receiver_processes}\n"
                   f"association_grace_s = {GRACE_S}\nnetwork_timeout_s = 120\n",
    )
    idle = [socket.create_connection(("127.0.0.1", node.port), timeout=5) for _ in range(IDLE)]
    try:
        if receiver_processes > 1:  # handed over, they count within the grace
            assert not echoscu(node.port, node.ae_title)
        # past it they do not: the scanner is served at once, every time
        wait_for(lambda: echoscu(node.port, node.ae_title), GRACE_S + 20,
                 "a C-ECHO answered once the idle connections' grace has passed")
        answered = sum(echoscu(node.port, node.ae_title) for _ in range(ECHOES))
        assert answered == ECHOES, f"{answered} of {ECHOES} C-ECHOs answered"
        for connection in idle:  # still open: a slow peer is not cut off by the grace
            connection.setblocking(False)
            with pytest.raises(BlockingIOError):
                connection.recv(1)
    finally:
        for connection in idle:
            connection.close()
        node.stop()
    assert ("Local limit exceeded" in node.log()) == (receiver_processes > 1)
