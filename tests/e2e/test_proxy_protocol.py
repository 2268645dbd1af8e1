"""``hypoxnode serve`` behind a real haproxy (``mode tcp``, ``send-proxy-v2``).

The node trusts the balancer on 127.0.0.1 (``node.proxy_from``) and allows scanners in
127.0.0.0/30. Scanners connect to haproxy from several loopback addresses (pynetdicom binds
the source address), so what the node decides and logs can only come from the PROXY header:
the connection the node accepts is always haproxy's, from 127.0.0.1.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from pydicom import examples
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.peers import free_port, start_haproxy
from tests.reliability import index_rows, start_test_node

pytestmark = pytest.mark.e2e

NODE_EXTRA = ('allowed_calling_hosts = ["127.0.0.0/30"]\n'
              'proxy_from = ["127.0.0.1"]\n'
              "association_request_timeout_s = 2.0\n")


def _store_from(source: str, port: int) -> tuple[bool, int | None]:
    """Associate from ``source`` and send one CT instance: (established, C-STORE status)."""
    ds = examples.ct
    ds.SOPInstanceUID = generate_uid()
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE", bind_address=(source, 0))
    if not assoc.is_established:
        return False, None
    status = assoc.send_c_store(ds)
    assoc.release()
    return True, int(status.Status) if "Status" in status else None


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_the_allow_list_and_the_logs_see_the_scanner_behind_haproxy(
        tmp_path: Path, receiver_processes: int) -> None:
    node_port = free_port()
    proxy = start_haproxy(tmp_path / "haproxy", [node_port])
    node = None
    try:
        node = start_test_node(
            tmp_path / "node", http=False, port=node_port, echo_port=proxy.port,
            node_extra=NODE_EXTRA + f"receiver_processes = {receiver_processes}",
        )
        assert _store_from("127.0.0.2", proxy.port) == (True, 0)
        # 127.0.0.5 is outside the allow-list: only the PROXY header can tell
        assert _store_from("127.0.0.5", proxy.port) == (False, None)
        # around the balancer: 127.0.0.2 is not a balancer, refused at accept
        assert _store_from("127.0.0.2", node_port) == (False, None)
        # from the balancer's address but without a header (a host posing as the balancer)
        with socket.create_connection(("127.0.0.1", node_port), timeout=10) as sock:
            sock.sendall(b"\x01\x00\x00\x00\x00\x44" + bytes(68))
            assert sock.recv(1024) == b""  # closed, no A-ASSOCIATE-AC
        # a hostile PDU through the balancer: the audit line names the scanner, not haproxy
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10,
                                      source_address=("127.0.0.2", 0)) as sock:
            sock.sendall(b"\x01\x00\x7f\xff\xff\xff")
            assert sock.recv(1024) == b""
        assert _store_from("127.0.0.3", proxy.port) == (True, 0)  # still serving
    finally:
        if node is not None:
            assert node.stop() == 0
        proxy.stop()
    log = node.log()
    assert "association accepted from SCANNER@127.0.0.2:" in log
    assert "association accepted from SCANNER@127.0.0.3:" in log
    assert "127.0.0.5 (through the balancer 127.0.0.1) is not in node.allowed_calling_hosts" \
        in log
    assert "connection refused at accept from 127.0.0.2: host not in node.proxy_from" in log
    assert "not a PROXY v2 header" in log
    assert re.search(r"connection from 127\.0\.0\.2:\d+ closed: PDU of 2147483647 bytes", log)
    # haproxy's health checks (every 0.5 s, LOCAL headers) are served and not audited
    assert "names no scanner" not in log and "closed before any byte" not in log
    assert "closed inside the PROXY" not in log
    rows = index_rows(node.data_dir, "SELECT calling_ae_title FROM instances")
    assert len(rows) == 2
