"""``hypoxnode serve`` with one receiving-path lever switched on *in this process only*.

A measurement device, not a fix: it patches the imported ``service`` modules before
``service.cli.main`` runs, so the benchmark can say how much a change to ``service/`` would
gain before anybody writes it. ``HXBENCH_VARIANT`` is a comma-separated list of:

``no-fsync``
    ``os.fsync`` becomes a no-op: the ceiling without file durability (never for production).
``fast-tmp``
    ``tempfile.mkstemp`` (random name, ``O_EXCL`` retries) becomes one ``os.open`` of a name
    unique per thread: what a deterministic temporary name in ``InstanceStore`` would give.
``sqlite-normal``
    The index runs with ``PRAGMA synchronous=NORMAL`` (WAL): no fsync per committed row, as if
    the index were rebuilt from the fsynced files after a power loss.
``poll-100us``
    pynetdicom's two 1 ms poll loops per association (``Association._run_reactor`` sleeps
    1 ms per turn, ``DULServiceProvider`` waits ``_run_loop_delay`` = 1 ms when idle) poll
    every 0.1 ms instead: what a receive path woken by data, not by a timer, would gain.
``upstream-reactor``
    The listener starts pynetdicom's own polling server (``AE.start_server``) instead of the
    event-driven one of ``service/prompt_reactor.py``: what that module gains.

Run with the code under test first on ``PYTHONPATH``::

    HXBENCH_VARIANT=fast-tmp PYTHONPATH=CODE_DIR python tests/bench/node_variant.py serve ...
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from typing import Any

VARIANTS = ("no-fsync", "fast-tmp", "sqlite-normal", "poll-100us", "upstream-reactor")


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
    if "poll-100us" in variants:
        import types

        from pynetdicom import association, dul

        def sleep(seconds: float) -> None:
            time.sleep(seconds / 10.0 if seconds <= 0.001 else seconds)

        association.time = types.SimpleNamespace(  # type: ignore[assignment]
            sleep=sleep, time=time.time, monotonic=time.monotonic,
            perf_counter=time.perf_counter,
        )
        dul_init = dul.DULServiceProvider.__init__

        def fast_dul(self: Any, *args: Any, **kwargs: Any) -> None:
            dul_init(self, *args, **kwargs)
            self._run_loop_delay = 0.0001

        dul.DULServiceProvider.__init__ = fast_dul  # type: ignore[method-assign]
    if "upstream-reactor" in variants:
        from service import listener

        def upstream(ae: Any, address: Any, handlers: Any, ssl_context: Any = None) -> Any:
            return ae.start_server(address, block=False, evt_handlers=handlers,
                                   ssl_context=ssl_context)

        listener.start_server = upstream
    if "sqlite-normal" in variants:
        from service import index

        original = index.Index.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            with self._lock:
                self._db.execute("PRAGMA synchronous=NORMAL")

        index.Index.__init__ = init  # type: ignore[method-assign]


def main() -> int:
    """Apply ``HXBENCH_VARIANT`` and run the node's command line."""
    apply([v for v in os.environ.get("HXBENCH_VARIANT", "").split(",") if v])
    from service.cli import main as cli_main

    return int(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
