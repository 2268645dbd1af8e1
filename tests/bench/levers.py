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
from tests.bench.run_bench import REPO, _machine, _snapshot
from tests.bench.studies import PET_CT_600, QUICK_80, ensure_copies
from tests.peers import free_port

CASES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "fast-tmp": {"variant": "fast-tmp"},
    "sqlite-normal": {"variant": "sqlite-normal"},
    "fast-tmp + sqlite-normal": {"variant": "fast-tmp,sqlite-normal"},
    "max_pdu_bytes = 0 (unlimited)": {"env": {"HYPOXNODE_NODE__MAX_PDU_BYTES": "0"}},
    "poll-100us": {"variant": "poll-100us"},
    "poll-100us + fast-tmp + sqlite-normal": {"variant": "poll-100us,fast-tmp,sqlite-normal"},
    "no-fsync (ceiling, not durable)": {"variant": "no-fsync"},
    "pynetdicom bare SCP (reference)": {"receiver": "pynetdicom-bare"},
    "orthanc (reference)": {"receiver": "orthanc"},
}
"""Case -> how the receiver is started: a node ``variant`` (``node_variant.py``), ``env``
settings of the node, or another ``receiver``."""


def _one(case: dict[str, Any], files: list[Path], workdir: Path, code_dir: Path,
         associations: int) -> float | None:
    if case.get("receiver"):
        with _environment(TCP_NODELAY="1"):  # read by Orthanc's DCMTK, ignored by pynetdicom
            running = start_receiver(case["receiver"], workdir, code_dir)
    else:
        port = free_port()
        running = start_hypoxnode(
            workdir, code_dir, node_config_toml(workdir / "data", port), port,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every case, alternating; write and print the table."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.levers", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="80-instance study")
    parser.add_argument("--snapshot", metavar="REV", help="measure `git archive REV`")
    parser.add_argument("--code-dir", type=Path, default=REPO)
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    args = parser.parse_args(argv)
    started = time.time()
    load_start = os.getloadavg()
    workdir = args.workdir.resolve()
    code_dir = (_snapshot(args.snapshot, workdir / "code-levers") if args.snapshot
                else args.code_dir.resolve())
    spec = QUICK_80 if args.quick else PET_CT_600
    files = ensure_copies(spec, workdir / "studies", 1)[0]
    rates: dict[tuple[str, int], list[float]] = {}
    names = list(CASES)
    for n_assoc in (1, 4):
        for run in range(args.runs):
            order = names[run % len(names):] + names[:run % len(names)]
            for name in order:
                rate = _one(CASES[name], files, workdir / "scratch-levers", code_dir, n_assoc)
                print(f"  {n_assoc} assoc run {run + 1}/{args.runs} {name:32s} {rate}/s",
                      flush=True)
                if rate is not None:
                    rates.setdefault((name, n_assoc), []).append(rate)
    rows = []
    for name in names:
        row: dict[str, Any] = {"case": name}
        for n_assoc in (1, 4):
            values = rates.get((name, n_assoc), [])
            base = rates.get(("baseline", n_assoc), [])
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
        "code": f"git archive {args.snapshot}" if args.snapshot else str(code_dir),
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
        "| case | 1 assoc. /s | vs baseline | 4 assoc. /s | vs baseline |",
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
