"""``hypoxnode serve`` with one receiving-path lever switched on *in this process only*.

A measurement device, not a fix: it patches the imported ``service`` modules before
``service.cli.main`` runs, so the benchmark can say how much a change to ``service/`` would
gain before anybody writes it. ``HXBENCH_VARIANT`` is a comma-separated list of:

``no-fsync``
    ``os.fsync`` becomes a no-op: the ceiling without file durability (never for production).
``fast-tmp``
    ``tempfile.mkstemp`` (random name, ``O_EXCL`` retries) becomes one ``os.open`` of a name
    unique per thread: what a deterministic temporary name in ``InstanceStore`` would give.
``upstream-reactor``
    The listener starts pynetdicom's own polling server (``AE.start_server``) instead of the
    event-driven one of ``service/receive/_pynetdicom/prompt_reactor.py``: what that module gains
    (applies when
    the node process receives, ``receiver_processes = 1``).

Run with the code under test first on ``PYTHONPATH``::

    HXBENCH_VARIANT=fast-tmp PYTHONPATH=CODE_DIR python tests/bench/node_variant.py serve ...
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from typing import Any

VARIANTS = ("no-fsync", "fast-tmp", "upstream-reactor")


def _fast_mkstemp(suffix: str | None = None, prefix: str | None = None,
                  dir: str | os.PathLike[str] | None = None,  # mkstemp's parameter name
                  text: bool = False) -> tuple[int, str]:
    directory = os.fspath(dir) if dir is not None else tempfile.gettempdir()
    name = os.path.join(
        directory, f"{prefix or 'tmp'}{os.getpid()}-{threading.get_ident()}{suffix or ''}"
    )
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    return fd, name


def apply(variants: list[str]) -> None:
    """Patch the imported service modules for each named variant."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"HXBENCH_VARIANT: unknown {unknown}; known: {VARIANTS}")
    if "no-fsync" in variants:
        os.fsync = lambda fd: None
    if "fast-tmp" in variants:
        tempfile.mkstemp = _fast_mkstemp  # type: ignore[assignment]
    if "upstream-reactor" in variants:
        from service.receive import listener

        def upstream(ae: Any, address: Any, handlers: Any, ssl_context: Any = None,
                     spool: Any = None) -> Any:  # upstream does not spool
            return ae.start_server(address, block=False, evt_handlers=handlers,
                                   ssl_context=ssl_context)

        listener.start_server = upstream


def main() -> int:
    """Apply ``HXBENCH_VARIANT`` and run the node's command line."""
    apply([v for v in os.environ.get("HXBENCH_VARIANT", "").split(",") if v])
    from service.cli.main import main as cli_main

    return int(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
