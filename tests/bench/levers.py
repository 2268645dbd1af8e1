"""How much would each receiving-path lever gain? ``python -m tests.bench.levers``.

The node is started through :mod:`tests.bench.node_variant` with one lever patched in (or
through its configuration), alternating with the unpatched node and with Orthanc, on the
600-instance study, ``TCP_NODELAY=1`` sender, 1 and 4 associations. Writes
``docs/bench/levers.{json,md}`` and prints the table. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench.ingest import _environment
from tests.bench.receivers import (
    node_config_toml,
    remove_tree,
    send_study,
    start_hypoxnode,
    start_receiver,
    stored_count,
)
from tests.bench.run_bench import REPO, _git, _machine, _snapshot
from tests.bench.studies import (
    PET_CT_600,
    QUICK_80,
    QUICK_WB_120,
    WHOLE_BODY_900,
    ensure_copies,
)
from tests.peers import free_port

CASES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "receiver_processes = 1": {"env": {"HYPOXNODE_NODE__RECEIVER_PROCESSES": "1"}},
    "receiver_processes = 1, pynetdicom's polling reactor": {
        "variant": "upstream-reactor", "env": {"HYPOXNODE_NODE__RECEIVER_PROCESSES": "1"}},
    "receiver_processes = 2": {"env": {"HYPOXNODE_NODE__RECEIVER_PROCESSES": "2"}},
    "receiver_processes = 3": {"env": {"HYPOXNODE_NODE__RECEIVER_PROCESSES": "3"}},
    "receiver_processes = 4": {"env": {"HYPOXNODE_NODE__RECEIVER_PROCESSES": "4"}},
    "fast-tmp": {"variant": "fast-tmp"},
    "max_pdu_bytes = 0 (unlimited)": {"env": {"HYPOXNODE_NODE__MAX_PDU_BYTES": "0"}},
    "no-fsync (ceiling, not durable)": {"variant": "no-fsync"},
    "pynetdicom bare SCP (reference)": {"receiver": "pynetdicom-bare"},
    "pynetdicom bare SCP, prompt reactor": {"receiver": "pynetdicom-bare-prompt"},
    "orthanc (reference)": {"receiver": "orthanc"},
}
"""Case -> how the receiver is started: a node ``variant`` (``node_variant.py``), ``env``
settings of the node, or another ``receiver``. ``--against REV`` adds a case whose
``code_dir`` is ``git archive REV``: the node as it was, side by side with the code measured."""


def _one(case: dict[str, Any], files: list[Path], workdir: Path, code_dir: Path,
         associations: int) -> float | None:
    if case.get("receiver"):
        with _environment(TCP_NODELAY="1"):  # read by Orthanc's DCMTK, ignored by pynetdicom
            running = start_receiver(case["receiver"], workdir, code_dir)
    else:
        port = free_port()
        running = start_hypoxnode(
            workdir, case.get("code_dir", code_dir), node_config_toml(workdir / "data", port),
            port,
            variant=case.get("variant", ""), env_overrides=case.get("env"),
        )
    try:
        result = send_study(files, running.port, running.ae_title, associations=associations,
                            tcp_nodelay=True)
        deadline = time.monotonic() + 10
        while stored_count(running) < len(files) and time.monotonic() < deadline:
            time.sleep(0.2)
        ok = not any(result.return_codes) and stored_count(running) == len(files)
    finally:
        running.stop()
        remove_tree(workdir)
    return round(len(files) / result.seconds, 1) if ok else None


PROCESSING_CASES = ("", "ct-float32", "bone-once", "ct-float32,bone-once")
"""``HXBENCH_QUANT_VARIANT`` values compared by ``--processing`` ("" = unpatched)."""


def processing_levers(code_dir: Path, study_dir: Path, runs: int, out: Path, code: str) -> str:
    """``profile_processing.py --plain-only`` per quant variant, alternating; returns Markdown.

    Also checks that each variant gives the same figures as the unpatched code (lesion count,
    SUVmax and muscle SUVmean to 4 significant digits).
    """
    script = Path(__file__).with_name("profile_processing.py")
    results: dict[str, list[dict[str, Any]]] = {}
    for run in range(runs):
        for variant in PROCESSING_CASES[run % 4:] + PROCESSING_CASES[:run % 4]:
            env = {**os.environ, "PYTHONPATH": str(code_dir), "HXBENCH_QUANT_VARIANT": variant}
            proc = subprocess.run(
                [sys.executable, str(script), str(study_dir), str(out / "unused.txt"),
                 "--plain-only"], capture_output=True, text=True, env=env, cwd=code_dir,
                timeout=900,
            )
            parsed = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 \
                else {"ok": False, "error": proc.stderr[-1000:]}
            results.setdefault(variant, []).append(parsed)
            print(f"  processing run {run + 1}/{runs} {variant or 'baseline':22s} "
                  f"{parsed.get('plain_timings_s')} peak {parsed.get('peak_rss_mb')} MB",
                  flush=True)

    def figures(r: dict[str, Any]) -> tuple[Any, ...]:
        res = r.get("result") or {}
        lesions = res.get("lesions", [])
        return (len(lesions), *(f"{les.get('suv_max', 0):.4g}" for les in lesions),
                f"{(res.get('muscle') or {}).get('suv_mean', 0):.4g}")

    reference = figures(results[""][0]) if results.get("") else None
    rows = []
    for variant, records in results.items():
        ok = [r for r in records if r.get("ok")]
        timings = {k: statistics.median(r["plain_timings_s"][k] for r in ok)
                   for k in (ok[0]["plain_timings_s"] if ok else {})}
        rows.append({
            "variant": variant or "baseline",
            "runs_ok": len(ok),
            "median_timings_s": {k: round(v, 2) for k, v in timings.items()},
            "median_total_s": round(sum(timings.values()), 2) if timings else None,
            "median_peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in ok), 0)
            if ok else None,
            "same_figures_as_baseline": all(figures(r) == reference for r in ok) if ok else None,
        })
    (out / "levers-processing.json").write_text(json.dumps({
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "study": str(study_dir),
        "code": code,
        "machine": _machine(), "runs": runs, "rows": rows, "raw": results,
    }, indent=1) + "\n")
    lines = [
        f"# Processing levers ({datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC, "
        f"`{study_dir.parent.name}`, process_study in one process, median of {runs} runs)",
        "",
        "| variant | load | quantify | build | write | total | peak RSS MB | same figures |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        t = row["median_timings_s"]
        lines.append(
            f"| {row['variant']} | {t.get('load_s', 'n/a')} | {t.get('quantify_s', 'n/a')} | "
            f"{t.get('build_s', 'n/a')} | {t.get('write_s', 'n/a')} | {row['median_total_s']} | "
            f"{row['median_peak_rss_mb']} | {row['same_figures_as_baseline']} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "levers-processing.md").write_text(text)
    (out / "unused.txt").unlink(missing_ok=True)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every case, alternating; write and print the table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.levers", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="80-instance study")
    parser.add_argument("--snapshot", metavar="REV", help="measure `git archive REV`")
    parser.add_argument("--code-dir", type=Path, default=REPO)
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--case", action="append", choices=list(CASES), dest="cases",
                        help="measure only these cases (repeatable; default all)")
    parser.add_argument("--against", metavar="REV",
                        help="also measure the node at `git archive REV` (first column, the "
                        "one the others are compared with)")
    parser.add_argument("--processing", action="store_true",
                        help="compare the quant levers of quant_variant.py on the whole-body "
                        "study instead of the receiving levers")
    args = parser.parse_args(argv)
    started = time.time()
    load_start = os.getloadavg()
    workdir = args.workdir.resolve()
    code_dir = (_snapshot(args.snapshot, workdir / "code-levers") if args.snapshot
                else args.code_dir.resolve())
    if args.processing:
        wb = QUICK_WB_120 if args.quick else WHOLE_BODY_900
        study_dir = ensure_copies(wb, workdir / "studies", 1)[0][0].parent.parent
        args.out.mkdir(parents=True, exist_ok=True)
        code = (f"git archive {args.snapshot} ({_git('rev-parse', '--short', args.snapshot)})"
                if args.snapshot else str(code_dir))
        print(processing_levers(code_dir, study_dir, args.runs, args.out.resolve(), code))
        return 0
    spec = QUICK_80 if args.quick else PET_CT_600
    files = ensure_copies(spec, workdir / "studies", 1)[0]
    rates: dict[tuple[str, int], list[float]] = {}
    cases = dict(CASES)
    names = args.cases or list(CASES)
    if args.against:
        against = f"node at {args.against} ({_git('rev-parse', '--short', args.against)})"
        cases[against] = {"code_dir": _snapshot(args.against, workdir / "code-against")}
        names = [against, *names]
    for n_assoc in (1, 4):
        for run in range(args.runs):
            order = names[run % len(names):] + names[:run % len(names)]
            for name in order:
                rate = _one(cases[name], files, workdir / "scratch-levers", code_dir, n_assoc)
                print(f"  {n_assoc} assoc run {run + 1}/{args.runs} {name:32s} {rate}/s",
                      flush=True)
                if rate is not None:
                    rates.setdefault((name, n_assoc), []).append(rate)
    rows = []
    for name in names:
        row: dict[str, Any] = {"case": name}
        for n_assoc in (1, 4):
            values = rates.get((name, n_assoc), [])
            base = rates.get((names[0], n_assoc), [])
            median = statistics.median(values) if values else None
            row[f"median_{n_assoc}"] = median
            row[f"runs_{n_assoc}"] = values
            row[f"vs_baseline_{n_assoc}"] = (
                round(median / statistics.median(base) - 1.0, 3) if median and base else None
            )
        rows.append(row)
    result = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "duration_s": round(time.time() - started),
        "command": "python -m tests.bench.levers " + " ".join(argv or []),
        "code": (f"git archive {args.snapshot} ({_git('rev-parse', '--short', args.snapshot)})"
                 if args.snapshot else str(code_dir)),
        "machine": _machine(),
        "loadavg_1_5_15_start": [round(v, 2) for v in load_start],
        "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
        "study": {"name": spec.name, "instances": len(files)},
        "runs": args.runs,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "levers.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Receiving levers ({result['date_utc']} UTC, {result['machine']['nproc']} cores, "
        f"`{spec.name}`, TCP_NODELAY=1 storescu, median of {args.runs} alternating runs)",
        "",
        f"| case | 1 assoc. /s | vs {names[0]} | 4 assoc. /s | vs {names[0]} |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = []
        for n_assoc in (1, 4):
            median, change = row[f"median_{n_assoc}"], row[f"vs_baseline_{n_assoc}"]
            cells.append("n/a" if median is None else f"{median:.0f}")
            cells.append("" if change is None else f"{100 * change:+.0f} %")
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (args.out / "levers.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
