"""A bare pynetdicom Storage SCP: the ceiling of the library hypoxnode receives with.

Writes each instance's encoded bytes to ``OUTDIR/<n>.dcm`` without decoding the dataset, no
fsync, no index, no checks; same maximum PDU as the node's default. A reference receiver for
the benchmark, never a product::

    python tests/bench/bare_scp.py PORT OUTDIR [AE_TITLE] [--prompt]

``--prompt``: with hypoxnode's event-driven reactor
(``service/receive/_pynetdicom/prompt_reactor.py``), to
measure what that alone gains.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

MAX_PDU_BYTES = 262144
"""hypoxnode's default ``[node] max_pdu_bytes``."""


def main(argv: list[str]) -> int:
    """Serve until SIGTERM/SIGINT."""
    prompt = "--prompt" in argv
    argv = [arg for arg in argv if arg != "--prompt"]
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    port, out = int(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    counter = itertools.count()

    def handle_store(event: Any) -> int:
        data = event.encoded_dataset(include_meta=True)
        (out / f"{next(counter)}.dcm").write_bytes(data)
        return 0x0000

    ae = AE(ae_title=argv[2] if len(argv) == 3 else "BARESCP")
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.maximum_associations = 10
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    handlers: list[Any] = [(evt.EVT_C_STORE, handle_store), (evt.EVT_C_ECHO, lambda e: 0x0000)]
    if prompt:
        from service.receive._pynetdicom.prompt_server import start_server

        server = start_server(ae, ("127.0.0.1", port), handlers)
    else:
        server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
