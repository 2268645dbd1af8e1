"""Shared fixtures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from tests.peers import NodeProcess, Orthanc, start_orthanc
from tests.reliability import destination_toml, start_test_node

pytest_plugins = ["tests.leftover_processes"]

PEER_WORDS = ("start_node", "start_test_node", "start_orthanc", "storescu", "echoscu",
              "webdriver", "subprocess", "start_listener", "start_server", "ReceiverPool",
              "Node(", "HttpServer", "dciodvfy", "pixelmed", "dcmqi", "node_and_pacs",
              "node_toml", "dicomcheck")
"""Words that betray a real peer (a process, a server on a port, a validator): a test module
naming one belongs in ``tests/integration`` or ``tests/e2e``, never in ``tests/unit``
(checked by ``tests/unit/test_layout.py``)."""

ROOMS = {"unit": (), "integration": ("integration",), "e2e": ("integration", "e2e")}
"""The test folders and the markers their tests carry: ``unit`` (no peer; ``make check``),
``integration`` (real peers: DCMTK, Orthanc, validators, browsers, PostgreSQL, in-process
servers), ``e2e`` (``hypoxnode serve`` as a process, from a scanner's push to the PACS)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the markers of the folder it lives in (see ROOMS)."""
    for item in items:
        room = Path(str(item.path)).parent.name
        for marker in ROOMS.get(room, ()):
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture
def pacs() -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom storage SCP that accepts everything (a second real AE)."""
    received: list[str] = []
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        with lock:
            received.append(str(event.dataset.SOPInstanceUID))
        return 0

    ae = AE(ae_title="PACS")
    ae.supported_contexts = StoragePresentationContexts
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    yield int(server.server_address[1]), received
    server.shutdown()


@pytest.fixture
def node_and_pacs(tmp_path: Path) -> Iterator[tuple[NodeProcess, Orthanc, int]]:
    """``hypoxnode serve`` sending to a real Orthanc; yields (node, Orthanc, HTTP port)."""
    pacs = start_orthanc(tmp_path / "orthanc")
    node = start_test_node(tmp_path / "node",
                           sections=destination_toml(pacs.ae_title, pacs.dicom_port))
    assert node.http_port is not None
    yield node, pacs, node.http_port
    node.stop()
    pacs.stop()
