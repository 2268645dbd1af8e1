"""Upstream code the node leans on beyond public APIs, pinned by source hash.

``service/report/http_limits.py`` subclasses uvicorn's h11 protocol (its hooks and the
attributes ``conn``, ``client``, ``transport`` and ``loop`` they set), and
``service/export/delivery.py`` shuts down the socket under a pynetdicom association
(``assoc.dul.socket.socket``) to end a delivery at its deadline. The pynetdicom methods that
``service/receive/_pynetdicom`` overrides are pinned in
``tests/integration/test_prompt_reactor.py``. A changed hash means: read the new upstream code
against ours, then update the hash here.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket
from uvicorn.protocols.http.h11_impl import H11Protocol

PINNED: dict[Callable[..., Any], tuple[str, str]] = {
    H11Protocol.__init__: ("ad1ed8e837b2db8d", "service/report/http_limits.py"),
    H11Protocol.connection_made: ("6efb565ff3d36b91", "service/report/http_limits.py"),
    H11Protocol.on_response_complete: ("1fbb8f48c6a1afc4", "service/report/http_limits.py"),
    H11Protocol.connection_lost: ("dbb688fa2b386000", "service/report/http_limits.py"),
    DULServiceProvider.__init__: ("c82dafa9438ddf70", "service/export/delivery.py"),
    AssociationSocket.__init__: ("1f0325fdef2cc353", "service/export/delivery.py"),
    AssociationSocket.close: ("c726c8db53813d55", "service/export/delivery.py"),
}
"""Upstream method -> (first 16 hex digits of the SHA-256 of its source, our module)."""


@pytest.mark.parametrize("method", list(PINNED), ids=lambda m: m.__qualname__)
def test_upstream_method_is_the_one_our_code_was_written_against(
        method: Callable[..., Any]) -> None:
    digest, ours = PINNED[method]
    found = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()[:16]
    assert found == digest, (
        f"{method.__module__}.{method.__qualname__} changed upstream: review {ours} against"
        " the new code, then update its hash in tests/unit/test_upstream_pins.py"
    )
