"""End-to-end latency and memory: study in by ``storescu``, SEG + SR + summary out to Orthanc.

The clock starts when the last instance is acknowledged (``storescu`` has exited) and stops
when the node's audit log records the PACS's acknowledgement of the last of the three result
objects; ``stable_seconds`` is subtracted. The node's JSON log lines (millisecond UTC
timestamps) split the rest:

- ``wait``: end of ``stable_seconds`` -> "processing study" (scheduler polling);
- ``load_s``, ``quantify_s`` (SUV + CT resampling + muscle + segmentation: one figure in
  ``ProcessingOutcome.timings_s``), ``build_s``, ``write_s``: the worker's own timings;
- ``handoff``: worker timings vs. "processing study" -> "study ... done" (process pool,
  pickling of the outcome, recording in the index);
- ``send``: "study ... done" -> last export acknowledged (sender polling + C-STORE).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from tests.bench.memory import RssSampler
from tests.bench.receivers import (
    Running,
    node_config_toml,
    remove_tree,
    send_study,
    start_hypoxnode,
    start_orthanc_receiver,
)
from tests.bench.report import slope
from tests.peers import free_port, wait_for

RESULT_KINDS = 3
"""SEG, SR and the summary secondary capture."""
_TIMINGS_RE = re.compile(r"\(((?:[a-z_]+_s [0-9.]+(?:, )?)+)\)\s*$")
_EXPORT_RE = re.compile(r"^export (\S+) to (\S+): 0x([0-9A-Fa-f]{4})")


@dataclass
class LogEvent:
    """One JSON log line of the node."""

    t: float
    logger: str
    message: str


def read_log(path: Path) -> list[LogEvent]:
    """The node's JSON log lines (other lines, e.g. tracebacks, are skipped)."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
            when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError):
            continue
        events.append(LogEvent(when, str(entry.get("logger", "")), str(entry.get("message", ""))))
    return events


def export_acks(events: list[LogEvent]) -> list[LogEvent]:
    """Audit lines of result objects the destination acknowledged with a success status."""
    out = []
    for event in events:
        match = _EXPORT_RE.match(event.message) if event.logger.endswith("audit") else None
        if match and _delivered(int(match.group(3), 16)):
            out.append(event)
    return out


def _delivered(status: int) -> bool:
    """Success or warning (PS3.4 B.2.3): the destination kept the object."""
    return status == 0 or 0xB000 <= status <= 0xBFFF


def worker_timings(message: str) -> dict[str, float]:
    """``{"load_s": 1.2, ...}`` from the "study ... done ... (load_s 1.20, ...)" line."""
    match = _TIMINGS_RE.search(message)
    if not match:
        return {}
    out = {}
    for part in match.group(1).split(", "):
        key, value = part.split()
        out[key] = float(value)
    return out


@dataclass
class E2ERun:
    """One study through the whole node."""

    study: str
    instances: int
    run: int
    ok: bool
    error: str = ""
    send_s: float | None = None
    latency_s: float | None = None
    """Last instance acknowledged -> last result acknowledged, minus ``stable_seconds``."""
    split_s: dict[str, float] = field(default_factory=dict)
    rss_receiving: dict[str, float] = field(default_factory=dict)
    rss_processing: dict[str, float] = field(default_factory=dict)


@dataclass
class Pipeline:
    """A node wired to an Orthanc PACS, with an RSS sampler on the node."""

    node: Running
    pacs: Running
    sampler: RssSampler
    stable_seconds: float

    def stop(self) -> None:
        """Stop sampler, node and PACS (in that order)."""
        self.sampler.stop()
        try:
            self.node.stop()
        finally:
            self.pacs.stop()


def start_pipeline(
    workdir: Path,
    code_dir: Path,
    *,
    stable_seconds: float,
    check_interval_seconds: float,
    export_interval_seconds: float,
) -> Pipeline:
    """Orthanc as the PACS, then ``hypoxnode serve`` sending to it; sampling starts at once."""
    pacs = start_orthanc_receiver(workdir / "pacs", free_port())
    try:
        port = free_port()
        config = node_config_toml(
            workdir / "node" / "data", port,
            stable_seconds=stable_seconds,
            check_interval_seconds=check_interval_seconds,
            export_interval_seconds=export_interval_seconds,
            destination=(pacs.ae_title, pacs.port),
        )
        node = start_hypoxnode(workdir / "node", code_dir, config, port)
    except BaseException:
        pacs.stop()
        raise
    sampler = RssSampler(node.pid, interval_s=0.05)
    sampler.__enter__()
    return Pipeline(node, pacs, sampler, stable_seconds)


def _await_acks(pipeline: Pipeline, expected: int, timeout_s: float) -> list[LogEvent]:
    acks: list[LogEvent] = []

    def done() -> bool:
        nonlocal acks
        if pipeline.node.process.poll() is not None:
            raise RuntimeError(f"hypoxnode exited:\n{pipeline.node.log()[-3000:]}")
        events = read_log(pipeline.node.log_path)
        acks = export_acks(events)
        failed = [e for e in events if "not quantified" in e.message]
        if failed:
            raise RuntimeError(failed[-1].message)
        return len(acks) >= expected

    wait_for(done, timeout_s, f"{expected} result objects acknowledged by the PACS", 0.1)
    return acks


def measure_study(
    pipeline: Pipeline,
    files: list[Path],
    *,
    label: str,
    run: int,
    acks_before: int = 0,
    timeout_s: float = 600.0,
) -> E2ERun:
    """Send one study to a running pipeline and time it through to the PACS."""
    result = send_study(files, pipeline.node.port, pipeline.node.ae_title, tcp_nodelay=True)
    record = E2ERun(label, len(files), run, ok=False, send_s=round(result.seconds, 3))
    if any(result.return_codes):
        record.error = "; ".join(result.errors)[-500:]
        return record
    last_ack_in = result.finished_at
    try:
        acks = _await_acks(pipeline, acks_before + RESULT_KINDS, timeout_s)
    except (TimeoutError, RuntimeError) as exc:
        record.error = str(exc)[-500:]
        return record
    out_done = max(e.t for e in acks[acks_before:])
    record.latency_s = round(out_done - last_ack_in - pipeline.stable_seconds, 3)
    record.split_s = _split(read_log(pipeline.node.log_path), last_ack_in,
                            pipeline.stable_seconds, out_done, study_index=run_index(acks_before))
    record.rss_receiving = pipeline.sampler.peaks(result.started_at, last_ack_in).to_json()
    record.rss_processing = pipeline.sampler.peaks(last_ack_in, out_done).to_json()
    record.ok = True
    return record


def run_index(acks_before: int) -> int:
    """Which study (0-based) of a pipeline a measurement is, from the acknowledgements so far."""
    return acks_before // RESULT_KINDS


def _split(
    events: list[LogEvent], last_in: float, stable_s: float, out_done: float, study_index: int
) -> dict[str, float]:
    starts = [e for e in events if e.message.startswith("processing study ")]
    dones = [e for e in events if e.message.startswith("study ") and " done" in e.message]
    if len(starts) <= study_index or len(dones) <= study_index:
        return {}
    start, done = starts[study_index], dones[study_index]
    timings = worker_timings(done.message)
    split = {"wait_s": start.t - (last_in + stable_s)}
    split.update(timings)
    split["handoff_s"] = (done.t - start.t) - sum(timings.values())
    split["send_s"] = out_done - done.t
    return {k: round(v, 3) for k, v in split.items()}


def e2e_runs(
    files: list[Path],
    label: str,
    workdir: Path,
    code_dir: Path,
    *,
    runs: int,
    stable_seconds: float,
    check_interval_seconds: float,
    export_interval_seconds: float,
    progress: Callable[[str], None] = print,
) -> list[E2ERun]:
    """``runs`` fresh pipelines, one study each."""
    out = []
    for run in range(runs):
        directory = workdir / f"e2e-{label}-{run}"
        pipeline = start_pipeline(
            directory, code_dir, stable_seconds=stable_seconds,
            check_interval_seconds=check_interval_seconds,
            export_interval_seconds=export_interval_seconds,
        )
        try:
            record = measure_study(pipeline, files, label=label, run=run)
        finally:
            pipeline.stop()
            remove_tree(directory)
        out.append(record)
        progress(f"  e2e {label} run {run + 1}/{runs}: "
                 + (f"latency {record.latency_s:.2f} s {record.split_s}" if record.ok
                    else f"FAILED: {record.error}"))
    return out


@dataclass
class GrowthPoint:
    """Node memory after the k-th distinct study."""

    study: int
    receive_peak_main_mb: float
    main_after_receive_mb: float
    main_after_processing_mb: float
    tree_processing_peak_mb: float
    latency_s: float | None
    receiving_after_receive_mb: float = 0.0
    """Node process and its receiver processes (no worker) after receiving."""


def growth(
    copies: list[list[Path]],
    workdir: Path,
    code_dir: Path,
    *,
    stable_seconds: float,
    check_interval_seconds: float,
    export_interval_seconds: float,
    progress: Callable[[str], None] = print,
) -> dict[str, object]:
    """Distinct studies into one node, one after the other, each processed and sent.

    Returns the per-study points and the least-squares slope (MB per study) of the main
    process's RSS after each receive and after each processing.
    """
    directory = workdir / "growth"
    pipeline = start_pipeline(
        directory, code_dir, stable_seconds=stable_seconds,
        check_interval_seconds=check_interval_seconds,
        export_interval_seconds=export_interval_seconds,
    )
    points: list[GrowthPoint] = []
    errors: list[str] = []
    try:
        for k, files in enumerate(copies):
            t0 = time.time()
            record = measure_study(pipeline, files, label=f"copy{k}", run=k,
                                   acks_before=k * RESULT_KINDS)
            if not record.ok:
                errors.append(record.error)
                break
            after_receive = [s for s in pipeline.sampler.samples
                             if s.t >= t0 + (record.send_s or 0.0)]
            main_after_receive = after_receive[0].main_kb * 1024 / 1e6 if after_receive else 0.0
            receiving_after = after_receive[0].receiving_kb * 1024 / 1e6 if after_receive \
                else 0.0
            now = pipeline.sampler.sample()
            points.append(GrowthPoint(
                study=k,
                receive_peak_main_mb=record.rss_receiving.get("main_mb", 0.0),
                main_after_receive_mb=round(main_after_receive, 1),
                main_after_processing_mb=round(now.main_kb * 1024 / 1e6, 1),
                tree_processing_peak_mb=record.rss_processing.get("tree_mb", 0.0),
                latency_s=record.latency_s,
                receiving_after_receive_mb=round(receiving_after, 1),
            ))
            progress(f"  growth study {k + 1}/{len(copies)}: main RSS after receive "
                     f"{points[-1].main_after_receive_mb:.0f} MB, after processing "
                     f"{points[-1].main_after_processing_mb:.0f} MB")
    finally:
        pipeline.stop()
        remove_tree(directory)
    return {
        "points": [asdict(p) for p in points],
        "slope_after_receive_mb_per_study": slope([p.main_after_receive_mb for p in points]),
        "slope_receiving_after_receive_mb_per_study":
            slope([p.receiving_after_receive_mb for p in points]),
        "slope_after_processing_mb_per_study":
            slope([p.main_after_processing_mb for p in points]),
        "slope_receive_peak_mb_per_study": slope([p.receive_peak_main_mb for p in points]),
        "slope_tree_processing_peak_mb_per_study":
            slope([p.tree_processing_peak_mb for p in points]),
        "errors": errors,
    }


def summarise(runs: list[E2ERun]) -> dict[str, object]:
    """Medians of latency and of each split component over the ok runs."""
    ok = [r for r in runs if r.ok and r.latency_s is not None]
    keys = sorted({k for r in ok for k in r.split_s})
    return {
        "runs_ok": len(ok),
        "runs_failed": len(runs) - len(ok),
        "median_latency_s": round(statistics.median(r.latency_s for r in ok), 2) if ok else None,
        "median_split_s": {
            k: round(statistics.median(r.split_s[k] for r in ok if k in r.split_s), 2)
            for k in keys
        },
        "peak_rss_receiving": _max_peaks([r.rss_receiving for r in ok]),
        "peak_rss_processing": _max_peaks([r.rss_processing for r in ok]),
    }


def _max_peaks(peaks: list[dict[str, float]]) -> dict[str, float]:
    keys = ("main_mb", "tree_mb", "largest_child_mb")
    return {k: max((p.get(k, 0.0) for p in peaks), default=0.0) for k in keys}
