"""A peer claiming a PDU larger than the node receives is cut off before it costs memory.

After a valid association (``max_pdu_bytes`` 262144), a P-DATA-TF PDU header claiming 4 GB
is followed by zeros. Before, the node read it all (2.5 GB of resident memory for 4 GB
claimed); now the connection is closed at the header: the sender cannot get more than the
socket buffers' worth through, the node's processes grow by less than 200 MB, and it goes on
answering C-ECHO.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.peers import echoscu
from tests.reliability import process_tree, start_test_node

CHUNK = 1 << 20
SEND_AT_MOST = 512 * CHUNK


def _rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024.0


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_a_4_gb_pdu_claim_is_refused_at_its_header(
    tmp_path: Path, receiver_processes: int
) -> None:
    node = start_test_node(tmp_path / "node", http=False,
                           node_extra=f"receiver_processes = {receiver_processes}\n"
                                      "max_pdu_bytes = 262144")
    try:
        before = _rss_mb(process_tree(node.process.pid))
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
        assert assoc.is_established
        sock = assoc.dul.socket.socket
        sent = 0
        try:
            sock.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF))
            zeros = bytes(CHUNK)
            while sent < SEND_AT_MOST:
                sock.sendall(zeros)
                sent += CHUNK
        except OSError:
            pass  # the node closed the connection
        assoc.abort()
        peak = _rss_mb(process_tree(node.process.pid))
        assert sent < 64 * CHUNK, f"the node kept reading: {sent >> 20} MB went through"
        assert peak - before < 200, f"{before:.0f} -> {peak:.0f} MB"
        assert echoscu(node.port, node.ae_title)
    finally:
        node.stop()
    assert "PDU of 4294967295 bytes claimed" in node.log()
