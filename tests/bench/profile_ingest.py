"""Where the node's receiving time goes: ``py-spy`` on ``hypoxnode serve`` during one ingest.

py-spy samples every thread of the node (``--idle`` included, so time blocked in ``fsync``
and in socket reads counts) while ``storescu`` sends the study in one association. The
collapsed stacks are reduced to the share of the association thread's samples spent under
a few functions that are levers (decoding, fsync, the index, PDU handling).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.bench.receivers import (
    Running,
    node_config_toml,
    remove_tree,
    send_study,
    start_hypoxnode,
)
from tests.peers import free_port


def _single_process_node(workdir: Path, code_dir: Path) -> Running:
    """The node receiving in its own process (``receiver_processes = 1``), so that one pid
    holds the association threads py-spy samples; the code path per association is the same
    as in a receiver process."""
    port = free_port()
    return start_hypoxnode(workdir, code_dir, node_config_toml(workdir / "data", port), port,
                           env_overrides={"HYPOXNODE_NODE__RECEIVER_PROCESSES": "1"})

ASSOCIATION_RULES: tuple[tuple[str, str], ...] = (
    ("index.record_instance (SQLite, synchronous=NORMAL)", "record_instance ("),
    ("fsync of the folder", "_fsync_dir ("),
    ("create directories durably", "_make_dirs_durably ("),
    ("waiting for the data set's fsync (DUL thread)", "make_durable ("),
    ("rename into place", "adopt_instance ("),
    ("write of a data set not spooled", "write_instance ("),
    ("routing attributes (read_dataset)", "routing_attributes ("),
    ("other C-STORE handler work", "handle_store ("),
    ("C-STORE response", "send_msg ("),
)
"""Category -> substring of the association thread's stack (first match wins)."""

DUL_RULES: tuple[tuple[str, str], ...] = (
    ("fsync of the data set", "make_durable ("),
    ("write of data-set fragments", "SpoolFile.write ("),
    ("spool file and file meta", "_spool ("),
    ("command set decoding and other DIMSE", "receive_primitive ("),
)
"""The same for the DUL thread, below its socket reads and PDU decoding."""


def _association_category(stack: str) -> str:
    for label, needle in ASSOCIATION_RULES:
        if needle in stack:
            return label
    if stack.split(";")[-1].startswith("Association._run_reactor ("):
        return "waiting for the next message (1 ms poll loop)"
    if "PromptAssociation._run_reactor (" in stack and "_serve_request (" not in stack:
        return "waiting for the next message (blocked on the DIMSE queue)"
    return "DIMSE decoding, responses, other"


def _dul_category(stack: str) -> str:
    leaf = stack.split(";")[-1]
    if leaf.startswith("DULServiceProvider.run_reactor (") and "sleep" not in leaf:
        return "reactor loop itself (its sleep between events: 1 ms upstream, 0 here)"
    if leaf.startswith("PromptDUL._is_transport_event ("):
        return "waiting for data or a response to send (select)"
    for label, needle in DUL_RULES:
        if needle in stack:
            return label
    return "socket reads, PDU decoding, sending"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def py_spy() -> str | None:
    """The py-spy next to this interpreter, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() else shutil.which("py-spy")


def profile_ingest(
    files: list[Path], workdir: Path, code_dir: Path, out_txt: Path, rate_hz: int = 250
) -> dict[str, object]:
    """One plain ingest (CPU use of the node) and one under py-spy (where the time goes).

    Both: 1 association, ``TCP_NODELAY=1`` sender, fresh node receiving in its own process.
    """
    plain = _single_process_node(workdir / "plain", code_dir)
    try:
        cpu0 = cpu_seconds(plain.pid)
        result = send_study(files, plain.port, plain.ae_title, tcp_nodelay=True)
        cpu = cpu_seconds(plain.pid) - cpu0
    finally:
        plain.stop()
        remove_tree(workdir / "plain")
    summary: dict[str, object] = {
        "instances_per_s": round(len(files) / result.seconds, 1),
        "node_cpu_cores_busy": round(cpu / result.seconds, 2),
        "node_cpu_ms_per_instance": round(1000 * cpu / len(files), 2),
    }
    binary = py_spy()
    if binary is None:
        summary["error"] = "py-spy not installed (.venv/bin/pip install py-spy)"
        return summary
    raw = workdir.parent / "py-spy-ingest.raw"
    running = _single_process_node(workdir / "node", code_dir)
    try:
        spy = subprocess.Popen(
            [binary, "record", "--pid", str(running.pid), "--rate", str(rate_hz), "--idle",
             "--threads", "--format", "raw", "--output", str(raw)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            profiled = send_study(files, running.port, running.ae_title, tcp_nodelay=True)
        finally:
            spy.send_signal(signal.SIGINT)
            spy_out, _ = spy.communicate(timeout=60)
    finally:
        running.stop()
        remove_tree(workdir)
    if not raw.is_file():
        summary["error"] = "py-spy wrote nothing: " + spy_out.decode(errors="replace")[-500:]
        return summary
    summary["instances_per_s_under_profiler"] = round(len(files) / profiled.seconds, 1)
    summary.update(summarise(raw.read_text().splitlines()))
    out_txt.parent.mkdir(parents=True, exist_ok=True)
    out_txt.write_text(_as_text(summary))
    summary["profile_text"] = str(out_txt)
    return summary


def summarise(lines: list[str]) -> dict[str, object]:
    """Wall-time shares of the association (DIMSE) thread and of the DUL (socket) thread."""
    assoc: Counter[str] = Counter()
    dul: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if "Association.run_reactor (" in stack:
            assoc[_association_category(stack)] += count
            leaves[stack.split(";")[-1]] += count
        elif "DULServiceProvider.run_reactor (" in stack:
            dul[_dul_category(stack)] += count
    n_assoc, n_dul = sum(assoc.values()), sum(dul.values())
    if n_assoc == 0:
        return {"error": "no association-thread samples"}
    return {
        "association_thread_share": {k: round(v / n_assoc, 3) for k, v in assoc.most_common()},
        "dul_thread_share": {k: round(v / n_dul, 3) for k, v in dul.most_common()} if n_dul
        else {},
        "association_thread_top_leaves": [
            {"frame": frame, "share": round(n / n_assoc, 3)} for frame, n in leaves.most_common(12)
        ],
    }


def _as_text(summary: dict[str, object]) -> str:
    lines = [
        "hypoxnode serve (receiver_processes = 1), one association, TCP_NODELAY=1 storescu",
        f"plain run: {summary.get('instances_per_s')} instances/s, node CPU "
        f"{summary.get('node_cpu_cores_busy')} cores busy, "
        f"{summary.get('node_cpu_ms_per_instance')} ms CPU per instance",
        f"under py-spy --idle: {summary.get('instances_per_s_under_profiler')} instances/s",
        "",
    ]
    for key in ("association_thread_share", "dul_thread_share"):
        lines.append(f"{key} (wall time):")
        shares = summary.get(key, {})
        assert isinstance(shares, dict)
        lines += [f"  {100 * share:5.1f} %  {label}" for label, share in shares.items()]
        lines.append("")
    lines.append("association thread, top leaf frames:")
    for row in summary.get("association_thread_top_leaves", []):  # type: ignore[attr-defined]
        lines.append(f"  {100 * row['share']:5.1f} %  {row['frame']}")
    return "\n".join(lines) + "\n"
