"""A tarpit PACS listed before a healthy one (issue 20): the healthy PACS is served at once.

The tarpit answers the node's A-ASSOCIATE-RQ with a PDU header claiming 4 GB and then
trickles one byte a second, so every wait of pynetdicom sees progress and none times out.
The node runs each destination's delivery in its own thread, bounded by that destination's
deadline: the healthy Orthanc receives every result while the tarpit's first attempt is still
running, and the tarpit's attempt is then cut at its deadline and retried, visibly.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.synthetic import make_study, write_study
from tests.peers import echoscu, free_port, start_node, start_orthanc, storescu, wait_for
from tests.reliability import http_json

pytestmark = pytest.mark.e2e

TARPIT_DEADLINE_S = 8


class Tarpit:
    """A peer that claims a 4 GB A-ASSOCIATE-AC and trickles it a byte a second."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)  # the accept loop looks at the stop flag between waits
        self.port = int(self.server.getsockname()[1])
        self.connections = 0
        self.closed_by_node = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                peer, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            peer.settimeout(None)
            self.connections += 1
            thread = threading.Thread(target=self._trickle, args=(peer,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _trickle(self, peer: socket.socket) -> None:
        with peer:
            try:
                peer.recv(65536)  # the A-ASSOCIATE-RQ
                peer.sendall(b"\x02\x00" + struct.pack(">L", 0xFFFFFFF0))
                while not self._stop.wait(1.0):
                    peer.sendall(b"\x00")
            except OSError:  # the node shut the connection down
                self.closed_by_node += 1

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self.server.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    trap = Tarpit()
    yield trap
    trap.stop()


def _config(data_dir: Path, port: int, http_port: int, tarpit_port: int, pacs_port: int) -> str:
    return f"""
[node]
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
network_timeout_s = 60
[study]
stable_seconds = 1
check_interval_seconds = 0.5
[export]
check_interval_seconds = 0.5
retry_initial_seconds = 30
[http]
port = {http_port}
[[destinations]]
ae_title = "TARPIT"
host = "127.0.0.1"
port = {tarpit_port}
deadline_seconds = {TARPIT_DEADLINE_S}
[[destinations]]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {pacs_port}
"""


def _exports(http_port: int, study_uid: str, destination: str) -> list[dict[str, Any]]:
    exports = http_json(http_port, f"/api/studies/{study_uid}")["exports"]
    return [e for e in exports if e["destination"] == destination]


def test_a_tarpit_pacs_does_not_hold_up_a_healthy_one(tmp_path: Path, tarpit: Tarpit) -> None:
    pacs = start_orthanc(tmp_path / "orthanc")
    study = make_study(field_of_view="pelvis", seed=5)
    study_uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    port, http_port = free_port(), free_port()
    node = start_node(tmp_path / "node", _config(tmp_path / "node" / "data", port, http_port,
                                                 tarpit.port, pacs.dicom_port), port)
    try:
        assert storescu(files, port, "HYPOXNODE").returncode == 0

        def healthy_delivered() -> bool:
            exports = _exports(http_port, study_uid, "ORTHANC")
            return bool(exports) and all(e["state"] == "sent" for e in exports)

        wait_for(healthy_delivered, 120, "every result delivered to the healthy Orthanc")
        # ... while the tarpit still holds the node's first attempt to it
        trapped = _exports(http_port, study_uid, "TARPIT")
        assert tarpit.connections == 1
        assert [e["attempts"] for e in trapped] == [0] * len(trapped), trapped
        assert len(trapped) == len(_exports(http_port, study_uid, "ORTHANC"))
        modalities = pacs.instances_by_modality()
        assert {"SEG", "SR", "OT"} <= set(modalities), modalities
        # the scanner side is unaffected meanwhile
        assert echoscu(port, "HYPOXNODE")

        def cut_at_deadline() -> bool:
            return all(e["attempts"] == 1 for e in _exports(http_port, study_uid, "TARPIT"))

        wait_for(cut_at_deadline, TARPIT_DEADLINE_S + 30, "the tarpit attempt cut at its deadline")
        for export in _exports(http_port, study_uid, "TARPIT"):
            assert export["state"] == "pending", export  # retried later, not lost
            assert f"deadline of {TARPIT_DEADLINE_S} s" in export["last_error"], export
        wait_for(lambda: tarpit.closed_by_node == 1, 10, "the node closing the tarpit connection")
    finally:
        node.stop()
        pacs.stop()
    assert "deadline" in node.log()
