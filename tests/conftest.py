"""Shared fixtures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt


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
