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
