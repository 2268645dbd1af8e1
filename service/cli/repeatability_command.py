"""``hypoxnode repeatability``: test-retest statistics of a cohort, per figure, with plots.

Reads paired figures from a CSV, from folders of ``quantify --json`` outputs (see
:mod:`service.report.repeatability_inputs`) or from a node's index (``--index DATA_DIR``: the
test-retest pairs the node found, one per subject, :mod:`service.report.cohort`), computes
:func:`quant.stats.repeatability.repeatability` per figure, and writes to the output folder:

- ``repeatability.csv``: one row per figure (``figure``, ``label``, ``units`` then the columns of
  :meth:`quant.stats.repeatability.Repeatability.to_row`);
- ``bland-altman-<figure>.png`` per figure with two replicates (and
  ``bland-altman-log-<figure>.png`` with ``--log-ratio-plots`` when the values are positive).

It prints a table of the main figures and the notes (subjects left out, files skipped).
Exit status: 0 written, 1 bad arguments or unreadable input, 2 no figure had two complete
subjects.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from quant.figure_registry import FIGURE_LABELS, figure_units
from quant.longitudinal.pairing import DEFAULT_TEST_RETEST_DAYS
from quant.stats.repeatability import LogRepeatability, Repeatability, repeatability
from service.report.cohort import index_scan_cohort, index_tracers
from service.report.plots import bland_altman_plot
from service.report.repeatability_inputs import (
    Cohort,
    InputError,
    PairedTable,
    paired_table,
    read_csv,
    read_json_folders,
)
from service.storage.index import Index

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_NO_PAIRS = 2
STATISTICS_FILE = "repeatability.csv"



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypoxnode repeatability",
        description=(
            "Test-retest statistics per figure (wSD, wCV, RC, ICC with confidence intervals; "
            "Bland-Altman) from a CSV (columns subject, scan, figures...) or from folders of "
            "`quantify --json` outputs (one JSON file per scan)."
        ),
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="one CSV file, or folders of JSON")
    parser.add_argument(
        "--index", type=Path, metavar="DATA_DIR",
        help="use the test-retest pairs in a node's index (its data_dir) instead of files",
    )
    parser.add_argument("--tracer", help="--index: the tracer (needed when pairs of several)")
    parser.add_argument(
        "--test-retest-days", type=float, default=DEFAULT_TEST_RETEST_DAYS,
        help=f"--index: longest test-retest interval (default {DEFAULT_TEST_RETEST_DAYS:g})",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--figures", help="comma-separated figures (default: all found)")
    parser.add_argument("--replicates", type=int, default=2, help="scans per subject (default 2)")
    parser.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    parser.add_argument("--suv-units", default="g/ml", help="units of SUV (default g/ml, SUVbw)")
    parser.add_argument("--subject-key", help="JSON key (dotted) holding the subject's PatientID")
    parser.add_argument(
        "--subject-from-folder", action="store_true", help="JSON: subject = the file's folder name"
    )
    parser.add_argument("--hypoxic-threshold", type=float, help="JSON: T/M threshold to use")
    parser.add_argument(
        "--log-ratio-plots", action="store_true", help="also plot ln(scan 2 / scan 1)"
    )
    return parser


def _read_index(args: argparse.Namespace) -> Cohort:
    data_dir: Path = args.index
    if args.inputs:
        raise InputError("give either --index or input files, not both")
    database = data_dir / "index.sqlite"
    if not database.is_file():
        raise InputError(f"no node index at {database}")
    index = Index(database)
    try:
        rows = index.all_facts()
    finally:
        index.close()
    tracers = index_tracers(rows, args.test_retest_days)
    tracer = args.tracer
    if tracer is None and len(tracers) > 1:
        raise InputError(f"the index holds test-retest pairs of {', '.join(tracers)}:"
                         " choose one with --tracer")
    if tracer is None:
        tracer = tracers[0] if tracers else ""
    cohort = index_scan_cohort(rows, args.test_retest_days, tracer)
    if args.figures:
        cohort.figures = [f.strip() for f in args.figures.split(",")]
    cohort.notes.append(f"index {database}: {len(cohort.scans) // 2} test-retest pair(s)"
                        f" of {tracer or 'any tracer'}")
    return cohort


def _read(args: argparse.Namespace) -> Cohort:
    if args.index is not None:
        return _read_index(args)
    figures = [f.strip() for f in args.figures.split(",")] if args.figures else None
    inputs: list[Path] = args.inputs
    if not inputs:
        raise InputError("give one CSV file, folders of JSON files, or --index DATA_DIR")
    if len(inputs) == 1 and inputs[0].is_file():
        return read_csv(inputs[0], figures)
    not_folders = [str(p) for p in inputs if not p.is_dir()]
    if not_folders:
        raise InputError(
            f"not a folder: {', '.join(not_folders)} (give one CSV file or folders of JSON files)"
        )
    return read_json_folders(
        inputs,
        subject_key=args.subject_key,
        subject_from_folder=args.subject_from_folder,
        hypoxic_threshold=args.hypoxic_threshold,
        figures=figures,
    )


def _interval(value: float | None, low: float | None, high: float | None, percent: bool) -> str:
    if value is None or low is None or high is None:
        return "-"
    if percent:
        return f"{value:.1%} [{low:.1%}, {high:.1%}]"
    return f"{value:.3g} [{low:.3g}, {high:.3g}]"


def _log_cells(log: LogRepeatability | None) -> tuple[str, str]:
    if log is None:
        return "-", "-"
    return (
        _interval(log.wcv, log.wcv_ci.low, log.wcv_ci.high, True),
        _interval(log.relative_rc, log.relative_rc_ci.low, log.relative_rc_ci.high, True),
    )


def format_statistics(results: list[Repeatability], suv_units: str) -> str:
    """A terminal table of the main figures, 95%-style intervals in brackets."""
    header = ("figure", "n", "mean", "wSD", "RC [CI]", "wCV [CI]", "RC% [CI]", "ICC [CI]", "LoA")
    rows = [header]
    for r in results:
        log = r.log
        units = figure_units(r.figure, suv_units)
        ba = r.bland_altman
        rows.append(
            (
                r.figure,
                str(r.n_subjects),
                f"{r.mean:.3g}",
                f"{r.wsd:.3g}",
                _interval(r.rc, r.rc_ci.low, r.rc_ci.high, False) + (f" {units}" if units else ""),
                *_log_cells(log),
                _interval(r.icc, r.icc_ci.low, r.icc_ci.high, False),
                f"{ba.loa_low:.3g} to {ba.loa_high:.3g}" if ba else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _write_csv(path: Path, results: list[Repeatability], suv_units: str) -> None:
    rows = []
    for r in results:
        row = r.to_row()
        rows.append(
            {
                "figure": r.figure,
                "label": FIGURE_LABELS.get(r.figure, r.figure),
                "units": figure_units(r.figure, suv_units),
                **{k: ("" if v is None else v) for k, v in row.items() if k != "figure"},
            }
        )
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_plots(
    out: Path, table: PairedTable, result: Repeatability, suv_units: str, log_ratio: bool
) -> list[Path]:
    if result.bland_altman is None:
        return []
    label = FIGURE_LABELS.get(table.figure, table.figure)
    units = figure_units(table.figure, suv_units)
    first, second = table.values[:, 0], table.values[:, 1]
    written = [out / f"bland-altman-{table.figure}.png"]
    bland_altman_plot(first, second, result, label=label, units=units).save(written[0], "PNG")
    if log_ratio and result.log is not None:
        written.append(out / f"bland-altman-log-{table.figure}.png")
        image = bland_altman_plot(first, second, result, label=label, units=units, log_ratio=True)
        image.save(written[-1], "PNG")
    return written


def run_repeatability(argv: list[str]) -> int:
    """Run ``hypoxnode repeatability`` with the arguments after the subcommand.

    Parameters
    ----------
    argv : list of str
        Command-line arguments (see ``hypoxnode repeatability -h``).

    Returns
    -------
    int
        Exit status: 0 written, 1 bad arguments or unreadable input, 2 nothing to compute.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    if args.replicates < 2:
        print("hypoxnode repeatability: --replicates must be >= 2", file=sys.stderr)
        return EXIT_USAGE
    if not 0.0 < args.confidence < 1.0:
        print("hypoxnode repeatability: --confidence must be between 0 and 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        cohort = _read(args)
    except (InputError, OSError) as exc:
        print(f"hypoxnode repeatability: {exc}", file=sys.stderr)
        return EXIT_USAGE

    notes = list(cohort.notes)
    computed: list[tuple[PairedTable, Repeatability]] = []
    for figure in cohort.figures:
        table = paired_table(cohort, figure, args.replicates)
        notes.extend(table.notes)
        if len(table.subjects) < 2:
            notes.append(f"{figure}: not computed, {len(table.subjects)} complete subject(s)")
            continue
        computed.append((table, repeatability(table.values, figure, args.confidence)))
    if not computed:
        print("\n".join(notes), file=sys.stderr)
        print("hypoxnode repeatability: no figure has two complete subjects", file=sys.stderr)
        return EXIT_NO_PAIRS

    args.out.mkdir(parents=True, exist_ok=True)
    results = [result for _, result in computed]
    _write_csv(args.out / STATISTICS_FILE, results, args.suv_units)
    plots = [
        path
        for table, result in computed
        for path in _write_plots(args.out, table, result, args.suv_units, args.log_ratio_plots)
    ]
    print(format_statistics(results, args.suv_units))
    print(f"\nconfidence intervals {args.confidence:.0%}; wCV and RC% from log values")
    print(f"wrote {args.out / STATISTICS_FILE} and {len(plots)} plot(s) to {args.out}")
    for note in notes:
        print(f"note: {note}")
    return EXIT_OK
