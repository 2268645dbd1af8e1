"""The benchmark's JSON result as a Markdown report (tables + targets)."""

from __future__ import annotations

from typing import Any

from tests.bench.cluster import markdown_lines as cluster_markdown

FLAT_MB_PER_STUDY = 5.0
"""RSS growth per received study below which the main process counts as flat."""


def slope(values: list[float]) -> float | None:
    """Least-squares slope of ``values`` against 0, 1, 2, ... (None for fewer than two)."""
    if len(values) < 2:
        return None
    n = len(values)
    mean_x, mean_y = (n - 1) / 2.0, sum(values) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return round(num / den, 2)


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _median(summary: list[dict[str, Any]], mode: str, assoc: int, receiver: str) -> Any:
    for row in summary:
        if (row["mode"], row["associations"], row["receiver"]) == (mode, assoc, receiver):
            return row["median_instances_per_s"]
    return None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured value and whether each is met."""
    out: list[dict[str, Any]] = []
    ingest = result.get("ingest", {})
    ratios = {(r["mode"], r["associations"]): r for r in ingest.get("ratios", [])}
    summary = ingest.get("summary", [])

    def ratio_target(name: str, mode: str, assoc: int, other: str, goal: float) -> None:
        value = ratios.get((mode, assoc), {}).get(f"hypoxnode_over_{other}")
        out.append({"target": name, "goal": f">= {goal:g}x", "measured":
                    None if value is None else f"{value:.2f}x",
                    "met": None if value is None else value >= goal})

    ratio_target("ingest, 1 association (TCP_NODELAY=1): hypoxnode / Orthanc",
                 "nodelay", 1, "orthanc", 1.2)
    ratio_target("ingest, 4 associations (TCP_NODELAY=1): hypoxnode / Orthanc",
                 "nodelay", 4, "orthanc", 1.0)
    ratio_target("default sender, 1 association: hypoxnode / storescp as installed",
                 "default", 1, "storescp", 5.0)
    node_default = _median(summary, "default", 1, "hypoxnode")
    node_nodelay = _median(summary, "nodelay", 1, "hypoxnode")
    if node_default and node_nodelay:
        share = node_default / node_nodelay
        out.append({"target": "default sender: no per-instance stall (hypoxnode default / "
                    "TCP_NODELAY rate)", "goal": ">= 0.8", "measured": f"{share:.2f}",
                    "met": share >= 0.8})
    e2e = result.get("e2e", {}).get("summary", {})
    latency = e2e.get("median_latency_s")
    out.append({"target": f"processing latency after stable_seconds "
                f"({result.get('e2e', {}).get('study', '?')})", "goal": "<= 10 s",
                "measured": None if latency is None else f"{latency:.1f} s",
                "met": None if latency is None else latency <= 10.0})
    peak = e2e.get("peak_rss_processing", {}).get("tree_mb")
    out.append({"target": "peak RSS while processing (node + workers)", "goal": "<= 1,500 MB",
                "measured": None if peak is None else f"{peak:,.0f} MB",
                "met": None if peak is None else peak <= 1500.0})
    growth = result.get("growth", {})
    slope = growth.get("slope_receiving_after_receive_mb_per_study",
                       growth.get("slope_after_receive_mb_per_study"))
    out.append({"target": "RSS flat while receiving (node process + receiver processes, per "
                "study received)",
                "goal": f"< {FLAT_MB_PER_STUDY:g} MB/study",
                "measured": None if slope is None else f"{slope:+.1f} MB/study",
                "met": None if slope is None else abs(slope) < FLAT_MB_PER_STUDY})
    return out


def markdown(result: dict[str, Any]) -> str:
    """The whole report."""
    meta = result["meta"]
    lines = [
        f"# hypoxnode benchmark ({'quick' if meta['quick'] else 'full'})",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date_utc']} (UTC), {meta['duration_s']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in meta.get('phase_s', {}).items())})",
        f"- machine: {meta['machine']['nproc']} cores ({meta['machine']['cpu']}), "
        f"{meta['machine']['mem_gb']:.0f} GB RAM, Linux {meta['machine']['kernel']}, loopback",
        f"- load average (1/5/15 min) at start {meta.get('loadavg_1_5_15_start')}, at end "
        f"{meta.get('loadavg_1_5_15_end')}: other work on the machine shows up here",
        f"- code: {meta['code']}",
        f"- peers: {meta['tools']}",
        "",
    ]
    ingest = result.get("ingest")
    if ingest:
        study = ingest["study"]
        lines += [
            f"## Ingest: instances/s, median of {ingest['runs']} alternating runs",
            "",
            f"Study `{study['name']}`: {study['instances']} instances "
            f"({study['ct']} CT {study['ct_matrix']}x{study['ct_matrix']} + {study['pet']} PET "
            f"{study['pet_matrix']}x{study['pet_matrix']}, {study['mb']:.0f} MB), sent by DCMTK "
            "`storescu` (n associations = n processes, files dealt round-robin).",
            "",
            "| sender | assoc. | hypoxnode | storescp | Orthanc | hypoxnode/Orthanc "
            "| hypoxnode/storescp |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        ratios = {(r["mode"], r["associations"]): r for r in ingest["ratios"]}
        for (mode, assoc), row in sorted(ratios.items()):
            label = "default" if mode == "default" else "TCP_NODELAY=1"
            cells = [_fmt(_median(ingest["summary"], mode, assoc, rcv))
                     for rcv in ("hypoxnode", "storescp", "orthanc")]
            lines.append(
                f"| {label} | {assoc} | {' | '.join(cells)} | "
                f"{_fmt(row['hypoxnode_over_orthanc'], 2, 'x')} | "
                f"{_fmt(row['hypoxnode_over_storescp'], 2, 'x')} |"
            )
        failed = sum(int(s["runs_failed"]) for s in ingest["summary"])
        lines += ["", f"Failed runs (not in the medians): {failed}."]
        probe = ingest.get("sender_only_probe", [])
        if probe:
            lines.append("Sender-only `TCP_NODELAY=1` (receiver as installed, 1 association, "
                         "1 run): " + ", ".join(
                             f"{p['receiver']} {p['instances_per_s']:.0f}/s" for p in probe)
                         + ". `TCP_NODELAY=1` rows set it for the DCMTK receivers too.")
        lines.append("")
    e2e = result.get("e2e")
    if e2e:
        s = e2e["summary"]
        split = s["median_split_s"]
        lines += [
            f"## End-to-end: `{e2e['study']}` ({e2e['instances']} instances), median of "
            f"{s['runs_ok']} run(s)",
            "",
            "Last instance acknowledged -> SEG, SR and summary acknowledged by Orthanc, minus "
            f"stable_seconds ({e2e['stable_seconds']:g} s); scheduler and sender poll every "
            f"{e2e['check_interval_seconds']:g} / {e2e['export_interval_seconds']:g} s.",
            "",
            "| latency | wait (scheduler) | load | quantify (SUV + segmentation) | build | write "
            "| hand-off | send |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            "| " + " | ".join(_fmt(v, 2, " s") for v in (
                s["median_latency_s"], split.get("wait_s"), split.get("load_s"),
                split.get("quantify_s"), split.get("build_s"), split.get("write_s"),
                split.get("handoff_s"), split.get("send_s"))) + " |",
            "",
        ]
        prof = result.get("processing_profile", {}).get("profiled_cumulative_s", {})
        if prof:
            lines += [
                "Inside `quantify` (cProfile of `process_study` on the same study, cumulative "
                "seconds under the profiler; the worker does not time these separately):",
                "",
                "| " + " | ".join(k for k in prof) + " |",
                "|" + "---:|" * len(prof),
                "| " + " | ".join(f"{v:.2f}" for v in prof.values()) + " |",
                "",
            ]
        rec, proc = s["peak_rss_receiving"], s["peak_rss_processing"]
        lines += [
            "## Memory (RSS, MB)",
            "",
            "| phase | main process | largest worker | node + workers |",
            "|---|---:|---:|---:|",
            f"| receiving `{e2e['study']}` | {_fmt(rec['main_mb'], 0)} | "
            f"{_fmt(rec['largest_child_mb'], 0)} | {_fmt(rec['tree_mb'], 0)} |",
            f"| processing `{e2e['study']}` | {_fmt(proc['main_mb'], 0)} | "
            f"{_fmt(proc['largest_child_mb'], 0)} | {_fmt(proc['tree_mb'], 0)} |",
            "",
        ]
    growth = result.get("growth")
    if growth and growth.get("points"):
        lines += [
            f"Growth: {len(growth['points'])} distinct `{growth['study']}` studies into one "
            "node, each processed and sent before the next:",
            "",
            "| study | node + receivers after receive | main after receive "
            "| main peak while receiving | main after processing "
            "| node + workers peak while processing |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for p in growth["points"]:
            lines.append(f"| {p['study'] + 1} | {p.get('receiving_after_receive_mb', 0):.0f} | "
                         f"{p['main_after_receive_mb']:.0f} | "
                         f"{p['receive_peak_main_mb']:.0f} | {p['main_after_processing_mb']:.0f} "
                         f"| {p['tree_processing_peak_mb']:.0f} |")
        tree_slope = slope([p["tree_processing_peak_mb"] for p in growth["points"]])
        lines += ["", "Slope (least squares, MB per study): node + receivers after receive "
                  f"{_fmt(growth.get('slope_receiving_after_receive_mb_per_study'), 1)}, "
                  "main after receive "
                  f"{_fmt(growth['slope_after_receive_mb_per_study'], 1)}, main after "
                  f"processing {_fmt(growth['slope_after_processing_mb_per_study'], 1)}, "
                  f"node + workers peak while processing {_fmt(tree_slope, 1)} (the worker "
                  "process outlives each study).", ""]
    if result.get("cluster"):
        lines += cluster_markdown(result["cluster"])
    lines += ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    for t in targets(result):
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured'] or 'n/a'} | {met} |")
    ingest_profile = result.get("ingest_profile", {})
    if ingest_profile:
        lines += [
            "",
            "## Where the receiving time goes (hypoxnode, 1 association)",
            "",
            f"Plain run: {_fmt(ingest_profile.get('instances_per_s'))} instances/s, node CPU "
            f"{_fmt(ingest_profile.get('node_cpu_cores_busy'), 2)} cores busy, "
            f"{_fmt(ingest_profile.get('node_cpu_ms_per_instance'), 2)} ms CPU per instance. "
            "Association thread wall time under py-spy --idle:",
            "",
        ]
        for label, share in ingest_profile.get("association_thread_share", {}).items():
            lines.append(f"- {100 * share:.1f} % {label}")
        dul = ingest_profile.get("dul_thread_share", {})
        if dul:
            lines += ["", "DUL (socket) thread wall time:", ""]
            lines += [f"- {100 * share:.1f} % {label}" for label, share in dul.items()]
    return "\n".join(lines) + "\n"
