"""Ingest throughput: the same study sent by the same ``storescu`` to each receiver in turn.

For every sender mode and association count, run ``r`` measures every receiver once, in an
order rotated by ``r`` (alternating runs, so drift of the machine hits all receivers alike).
Each measured run starts a fresh receiver, sends the whole study, checks that every instance
landed, and stops the receiver.

Sender modes
------------
``default``
    Nobody sets ``TCP_NODELAY``: DCMTK as installed, Nagle's algorithm on.
``nodelay``
    ``TCP_NODELAY=1`` in the environment of ``storescu`` *and* of the DCMTK-based receivers
    (``storescp``, Orthanc link the same ``libdcmnet``, which reads the variable). On this
    machine the sender's switch alone does not remove the stall of a DCMTK receiver (see the
    sender-only probe): the receiver's small C-STORE responses wait for the delayed ACK.
    hypoxnode (pynetdicom) does not read the variable.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench.memory import RssSampler
from tests.bench.receivers import (
    RECEIVERS,
    remove_tree,
    send_study,
    start_receiver,
    stored_count,
)

MODES = ("default", "nodelay")


@dataclass
class IngestRun:
    """One measured send."""

    receiver: str
    mode: str
    associations: int
    run: int
    instances: int
    seconds: float
    instances_per_s: float
    stored: int
    ok: bool
    error: str = ""
    main_rss_peak_mb: float | None = None


@contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set (str) or unset (None) environment variables for the block; restores them after."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure_once(
    receiver: str,
    files: list[Path],
    workdir: Path,
    code_dir: Path,
    *,
    mode: str,
    associations: int,
    run: int,
    receiver_nodelay: bool | None = None,
) -> IngestRun:
    """Start ``receiver`` fresh, send ``files``, verify the count, stop it, clean up.

    ``receiver_nodelay`` None follows the mode (``nodelay`` sets it for DCMTK receivers).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if receiver_nodelay is None:
        receiver_nodelay = mode == "nodelay"
    with _environment(TCP_NODELAY="1" if receiver_nodelay else None):
        running = start_receiver(receiver, workdir, code_dir)
    error = ""
    peak: float | None = None
    try:
        with RssSampler(running.pid, interval_s=0.1) as sampler:
            result = send_study(files, running.port, running.ae_title,
                                associations=associations, tcp_nodelay=mode == "nodelay")
        if receiver == "hypoxnode":
            peak = sampler.peaks().main_mb
        stored = _await_count(running, len(files))
        if any(result.return_codes) or result.errors:
            error = "; ".join(result.errors)[-500:] or f"exit codes {result.return_codes}"
        if stored != len(files):
            error = (error + f"; stored {stored} of {len(files)}").strip("; ")
    finally:
        running.stop()
        remove_tree(workdir)
    return IngestRun(
        receiver=receiver, mode=mode, associations=associations, run=run,
        instances=len(files), seconds=round(result.seconds, 3),
        instances_per_s=round(len(files) / result.seconds, 1), stored=stored,
        ok=not error, error=error,
        main_rss_peak_mb=round(peak, 1) if peak is not None else None,
    )


def _await_count(running: object, expected: int, timeout_s: float = 10.0) -> int:
    """The receiver's stored count, waiting briefly for asynchronous writers (Orthanc)."""
    deadline = time.monotonic() + timeout_s
    count = stored_count(running)  # type: ignore[arg-type]
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = stored_count(running)  # type: ignore[arg-type]
    return count


def run_matrix(
    files: list[Path],
    workdir: Path,
    code_dir: Path,
    *,
    runs: int,
    modes: tuple[str, ...] = MODES,
    associations: tuple[int, ...] = (1, 4),
    receivers: tuple[str, ...] = RECEIVERS,
    progress: Callable[[str], None] = print,
) -> list[IngestRun]:
    """Every (mode, associations) x ``runs`` x receiver, receivers alternating within a run."""
    out: list[IngestRun] = []
    for mode in modes:
        for n_assoc in associations:
            for run in range(runs):
                order = receivers[run % len(receivers):] + receivers[:run % len(receivers)]
                for receiver in order:
                    record = measure_once(
                        receiver, files, workdir / f"{receiver}-{mode}-{n_assoc}-{run}",
                        code_dir, mode=mode, associations=n_assoc, run=run,
                    )
                    out.append(record)
                    progress(
                        f"  ingest {mode:8s} {n_assoc} assoc run {run + 1}/{runs} {receiver:9s}"
                        f" {record.instances_per_s:7.1f}/s"
                        + ("" if record.ok else f"  FAILED: {record.error}")
                    )
    return out


def sender_only_probe(
    files: list[Path], workdir: Path, code_dir: Path, progress: Callable[[str], None] = print
) -> list[IngestRun]:
    """One run per DCMTK receiver with ``TCP_NODELAY=1`` on the sender only (1 association)."""
    out = []
    for receiver in ("storescp", "orthanc"):
        record = measure_once(
            receiver, files, workdir / f"probe-{receiver}", code_dir,
            mode="nodelay", associations=1, run=0, receiver_nodelay=False,
        )
        out.append(record)
        progress(f"  probe: sender-only TCP_NODELAY=1 -> {receiver}: "
                 f"{record.instances_per_s:.1f}/s")
    return out


def summarise(runs: list[IngestRun]) -> list[dict[str, object]]:
    """Median (and min/max) instances/s per (mode, associations, receiver) over ok runs."""
    groups: dict[tuple[str, int, str], list[IngestRun]] = {}
    for record in runs:
        groups.setdefault((record.mode, record.associations, record.receiver), []).append(record)
    out = []
    for (mode, n_assoc, receiver), records in sorted(groups.items()):
        rates = [r.instances_per_s for r in records if r.ok]
        peaks = [r.main_rss_peak_mb for r in records if r.main_rss_peak_mb is not None]
        out.append({
            "mode": mode,
            "associations": n_assoc,
            "receiver": receiver,
            "runs_ok": len(rates),
            "runs_failed": len(records) - len(rates),
            "median_instances_per_s": round(statistics.median(rates), 1) if rates else None,
            "min_instances_per_s": min(rates) if rates else None,
            "max_instances_per_s": max(rates) if rates else None,
            "main_rss_peak_mb": max(peaks) if peaks else None,
        })
    return out


def ratios(summary: list[dict[str, object]]) -> list[dict[str, object]]:
    """hypoxnode / Orthanc and hypoxnode / storescp per (mode, associations), from medians."""
    medians = {
        (str(s["mode"]), int(s["associations"]), str(s["receiver"])): s["median_instances_per_s"]  # type: ignore[call-overload]
        for s in summary
    }
    out = []
    for mode, n_assoc in sorted({(m, a) for m, a, _ in medians}):
        node = medians.get((mode, n_assoc, "hypoxnode"))
        row: dict[str, object] = {"mode": mode, "associations": n_assoc}
        for other in ("orthanc", "storescp"):
            value = medians.get((mode, n_assoc, other))
            row[f"hypoxnode_over_{other}"] = (
                round(float(node) / float(value), 2)  # type: ignore[arg-type]
                if node and value else None
            )
        out.append(row)
    return out


def as_json(runs: list[IngestRun]) -> list[dict[str, object]]:
    """The raw runs as plain dictionaries."""
    return [asdict(r) for r in runs]
