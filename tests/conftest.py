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
"""A test module whose source names one of these starts a real peer (a process, a server
on a port, a validator): it is an ``integration`` test, left out of ``make check``."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of modules that start real peers ``integration`` (see PEER_WORDS)."""
    verdicts: dict[str, bool] = {}
    for item in items:
        path = str(item.path)
        if path not in verdicts:
            source = Path(path).read_text()
            verdicts[path] = any(word in source for word in PEER_WORDS)
        if verdicts[path]:
            item.add_marker(pytest.mark.integration)


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
