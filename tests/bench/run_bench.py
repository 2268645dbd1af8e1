"""``make bench``: hypoxnode side by side with DCMTK ``storescp`` and Orthanc, in one run.

::

    python -m tests.bench.run_bench            # full: ~20 min on 2 cores
    python -m tests.bench.run_bench --quick    # smoke run: small study, 3 runs, < 3 min
    python -m tests.bench.run_bench --snapshot HEAD   # measure the committed code

Writes ``docs/bench/latest.json`` and ``docs/bench/latest.md`` (``latest-quick.*`` with
``--quick``), the profiles beside them, and prints the Markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from tests.bench import ingest, latency
from tests.bench.cluster import cluster_ingest
from tests.bench.profile_ingest import profile_ingest
from tests.bench.receivers import remove_tree
from tests.bench.report import markdown, targets
from tests.bench.studies import (
    PET_CT_600,
    QUICK_80,
    QUICK_WB_120,
    WHOLE_BODY_900,
    BenchStudySpec,
    ensure_copies,
)
from tests.peers import require_tool

REPO = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 80-instance study, 3 runs, 1 e2e run")
    parser.add_argument("--runs", type=int, help="ingest runs per cell (default 5; quick 3)")
    parser.add_argument("--e2e-runs", type=int, help="end-to-end runs (default 3; quick 1)")
    parser.add_argument("--growth-studies", type=int,
                        help="distinct studies for the RSS growth check (default 20; quick 3)")
    parser.add_argument("--stable-seconds", type=float, default=2.0,
                        help="[study] stable_seconds of the end-to-end node (subtracted)")
    parser.add_argument("--check-interval", type=float, default=2.0,
                        help="[study] check_interval_seconds (production default 2)")
    parser.add_argument("--export-interval", type=float, default=2.0,
                        help="[export] check_interval_seconds (production default 2)")
    parser.add_argument("--code-dir", type=Path, default=REPO,
                        help="directory whose service/ and quant/ are measured (default: repo)")
    parser.add_argument("--snapshot", metavar="REV",
                        help="measure `git archive REV` instead of the working tree")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench",
                        help="studies (cached) and scratch space")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--report-only", type=Path, metavar="JSON",
                        help="re-render the Markdown of an earlier run's JSON and exit")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["ingest", "probe", "e2e", "growth", "cluster", "profile"],
                        help="leave a part out (repeatable; for development)")
    return parser


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip()


def _snapshot(rev: str, target: Path) -> Path:
    """``git archive rev`` unpacked into ``target`` (replaced if present)."""
    remove_tree(target)
    target.mkdir(parents=True)
    data = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(data.stdout)) as archive:
        archive.extractall(target, filter="data")
    return target


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gb": mem_kb / 1024 / 1024,
            "kernel": platform.release(), "python": platform.python_version()}


def _tools() -> str:
    def first_line(cmd: list[str]) -> str:
        out = subprocess.run(cmd, capture_output=True, text=True)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"

    import pydicom
    import pynetdicom

    storescu = first_line([require_tool("storescu"), "--version"]).strip("$ ")
    orthanc = first_line([require_tool("Orthanc"), "--version"])
    return (f"{storescu}; {orthanc}; pynetdicom {pynetdicom.__version__}, "
            f"pydicom {pydicom.__version__}")


def _study_info(spec: BenchStudySpec, files: list[Path]) -> dict[str, Any]:
    return {
        "name": spec.name, "instances": len(files), "ct": spec.ct_slices, "pet": spec.pet_slices,
        "ct_matrix": spec.ct_matrix, "pet_matrix": spec.pet_matrix,
        "mb": sum(p.stat().st_size for p in files) / 1e6,
    }


def _profile_processing(code_dir: Path, study_dir: Path, out_txt: Path) -> dict[str, Any]:
    script = Path(__file__).with_name("profile_processing.py")
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    result = subprocess.run([sys.executable, str(script), str(study_dir), str(out_txt)],
                            capture_output=True, text=True, cwd=code_dir, env=env, timeout=900)
    if result.returncode != 0:
        return {"error": result.stderr[-2000:]}
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run every part, write the JSON and Markdown reports, print the Markdown."""
    args = _parser().parse_args(argv)
    if args.report_only:
        earlier = json.loads(args.report_only.read_text())
        earlier["targets"] = targets(earlier)
        text = markdown(earlier)
        args.report_only.with_suffix(".md").write_text(text)
        print(text)
        return 0
    started = time.time()
    load_start = os.getloadavg()
    quick = bool(args.quick)
    runs = args.runs or (3 if quick else 5)
    e2e_runs = args.e2e_runs or (1 if quick else 3)
    growth_n = args.growth_studies or (3 if quick else 20)
    ingest_spec = QUICK_80 if quick else PET_CT_600
    wb_spec = QUICK_WB_120 if quick else WHOLE_BODY_900
    workdir: Path = args.workdir.resolve()
    scratch = workdir / "scratch"
    remove_tree(scratch)
    scratch.mkdir(parents=True)
    out_dir: Path = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "latest-quick" if quick else "latest"

    code_dir: Path = args.code_dir.resolve()
    if args.snapshot:
        code_dir = _snapshot(args.snapshot, workdir / "code")
        code = f"git archive {args.snapshot} ({_git('rev-parse', '--short', args.snapshot)})"
    else:
        dirty = _git("status", "--porcelain", "--", "service", "quant", "dicom_templates")
        code = f"{code_dir} at {_git('rev-parse', '--short', 'HEAD')}" + (
            " + uncommitted changes in service/quant/dicom_templates" if dirty else "")

    phases: dict[str, float] = {}
    mark = [time.time()]

    def say(text: str) -> None:
        print(f"[{time.time() - started:6.0f} s] {text}", flush=True)

    def phase_done(name: str) -> None:
        now = time.time()
        phases[name] = round(now - mark[0], 1)
        mark[0] = now

    say(f"bench: code {code}; studies in {workdir / 'studies'}")
    ingest_copies = ensure_copies(ingest_spec, workdir / "studies", max(1, growth_n))
    wb_files = ensure_copies(wb_spec, workdir / "studies", 1)[0]
    result: dict[str, Any] = {}
    phase_done("generate")

    if "ingest" not in args.skip:
        say(f"ingest: {ingest_spec.name}, {runs} runs per cell")
        records = ingest.run_matrix(ingest_copies[0], scratch, code_dir, runs=runs, progress=say)
        summary = ingest.summarise(records)
        result["ingest"] = {
            "study": _study_info(ingest_spec, ingest_copies[0]),
            "runs": runs,
            "summary": summary,
            "ratios": ingest.ratios(summary),
            "runs_raw": ingest.as_json(records),
        }
        if "probe" not in args.skip:
            probe_files = ingest_copies[0][: min(100, len(ingest_copies[0]))]
            probe = ingest.sender_only_probe(probe_files, scratch, code_dir, progress=say)
            result["ingest"]["sender_only_probe"] = ingest.as_json(probe)
        phase_done("ingest")

    e2e_settings = {
        "stable_seconds": args.stable_seconds,
        "check_interval_seconds": args.check_interval,
        "export_interval_seconds": args.export_interval,
    }
    if "e2e" not in args.skip:
        say(f"end-to-end: {wb_spec.name}, {e2e_runs} run(s)")
        e2e = latency.e2e_runs(wb_files, wb_spec.name, scratch, code_dir, runs=e2e_runs,
                               progress=say, **e2e_settings)
        result["e2e"] = {
            "study": wb_spec.name, "instances": len(wb_files), **e2e_settings,
            "summary": latency.summarise(e2e), "runs": [asdict(r) for r in e2e],
        }
        phase_done("e2e")
    if "growth" not in args.skip:
        say(f"memory growth: {growth_n} distinct {ingest_spec.name} studies into one node")
        grown = latency.growth(ingest_copies[:growth_n], scratch, code_dir, progress=say,
                               **e2e_settings)
        result["growth"] = {"study": ingest_spec.name, **grown}
        phase_done("growth")
    if "cluster" not in args.skip:
        say(f"cluster: {ingest_spec.name} through haproxy to 3 nodes x12 against 1 node x4")
        result["cluster"] = cluster_ingest(ingest_copies[0], scratch / "cluster", code_dir,
                                           runs=runs, progress=say)
        phase_done("cluster")
    if "profile" not in args.skip:
        say("profile: processing (cProfile) and receiving (py-spy)")
        result["processing_profile"] = _profile_processing(
            code_dir, wb_files[0].parent.parent, out_dir / f"{stem}-profile-processing.txt")
        result["ingest_profile"] = profile_ingest(
            ingest_copies[0], scratch / "profile", code_dir,
            out_dir / f"{stem}-profile-ingest.txt")
        phase_done("profile")

    command = "make bench" + (" BENCH_ARGS=" + shlex.quote(" ".join(argv or sys.argv[1:]))
                              if (argv or sys.argv[1:]) else "")
    result["meta"] = {
        "quick": quick,
        "command": command,
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "duration_s": time.time() - started,
        "phase_s": phases,
        "machine": _machine(),
        "loadavg_1_5_15_start": [round(v, 2) for v in load_start],
        "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
        "code": code,
        "tools": _tools(),
    }
    result["targets"] = targets(result)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out_dir / f"{stem}.md").write_text(text)
    remove_tree(scratch)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
