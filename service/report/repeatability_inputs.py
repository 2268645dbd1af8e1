"""Read paired test-retest figures for ``hypoxnode repeatability``: a CSV or ``quantify --json``.

CSV
    One row per scan with columns ``subject``, ``scan`` (1, 2, ... : the order of the scans of
    that subject) and one column per figure (``suv_max``, ``tm_max``, ...). Empty cells, ``NA``
    and ``nan`` are missing values.
Folders of ``quantify --json`` outputs
    One JSON file per scan, searched recursively. The subject is the value of a key
    (``patient_id`` or ``PatientID`` at the top level, or a dotted path given with
    ``subject_key``), or the name of the file's folder when ``subject_from_folder``. Scans of a
    subject are ordered by ``suv.scan_reference_time``, then by path. Lesion figures are those
    of the lesion with the highest SUVmax of each scan (lesion matching across scans belongs to
    the pairing of issue 9); the hypoxic figures are those of ``hypoxic_threshold`` (default:
    the first threshold listed). A file holding ``{"error": ...}`` (a refused study) is skipped
    with a note.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quant.figure_registry import FIGURE_KEYS, keys

MISSING = {"", "na", "nan", "n/a", "none", "null"}
LESION_FIGURES = keys("lesion")
JSON_FIGURES = FIGURE_KEYS
DEFAULT_SUBJECT_KEYS = ("patient_id", "PatientID")


class InputError(ValueError):
    """Input that cannot be read as paired figures; the message names the file and the fault."""


@dataclass(frozen=True)
class Scan:
    """The figures of one scan of one subject."""

    subject: str
    order: tuple[Any, ...]
    """Sort key of the scan among the subject's scans."""
    figures: dict[str, float]
    source: str
    """Where it came from (file and row), for messages."""


@dataclass
class Cohort:
    """The scans read, the figure names found and the notes for the person running the command."""

    scans: list[Scan]
    figures: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PairedTable:
    """One figure as an ``(n_subjects, n_replicates)`` array, subjects in ``subjects`` order."""

    figure: str
    subjects: list[str]
    values: np.ndarray
    notes: list[str]


def _number(text: str, where: str) -> float:
    if text.strip().lower() in MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: not a number: {text!r}") from None


def read_csv(path: Path, figures: Sequence[str] | None = None) -> Cohort:
    """Scans from a CSV with columns ``subject``, ``scan`` and one column per figure.

    Parameters
    ----------
    path : pathlib.Path
        The CSV file (comma separated, header row).
    figures : sequence of str, optional
        Figure columns to read (default: every column but ``subject`` and ``scan``).

    Returns
    -------
    Cohort
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        for required in ("subject", "scan"):
            if required not in columns:
                raise InputError(f"{path}: no {required!r} column (columns: {', '.join(columns)})")
        wanted = list(figures) if figures else [c for c in columns if c not in ("subject", "scan")]
        unknown = [f for f in wanted if f not in columns]
        if unknown:
            raise InputError(f"{path}: no column {', '.join(unknown)}")
        if not wanted:
            raise InputError(f"{path}: no figure columns besides 'subject' and 'scan'")
        scans = []
        seen: set[tuple[str, float]] = set()
        for line, row in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            subject = (row["subject"] or "").strip()
            if not subject:
                raise InputError(f"{where}: empty subject")
            scan = _number(row["scan"] or "", f"{where}, column 'scan'")
            if not math.isfinite(scan):
                raise InputError(f"{where}: empty scan number")
            if (subject, scan) in seen:
                raise InputError(f"{where}: subject {subject!r} scan {scan:g} appears twice")
            seen.add((subject, scan))
            values = {f: _number(row[f] or "", f"{where}, column {f!r}") for f in wanted}
            scans.append(Scan(subject, (scan,), values, where))
    return Cohort(scans, wanted)


def _lookup(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def figures_from_quantify_json(
    doc: dict[str, Any], hypoxic_threshold: float | None = None
) -> dict[str, float]:
    """The cohort figures of one ``quantify --json`` output (``nan`` where absent).

    Parameters
    ----------
    doc : dict
        The parsed JSON of :meth:`quant.results.StudyResult.to_json`.
    hypoxic_threshold : float, optional
        T/M threshold of the hypoxic figures (default: the first one listed).

    Returns
    -------
    dict of str to float
        Keys :data:`JSON_FIGURES`.
    """
    out = dict.fromkeys(JSON_FIGURES, math.nan)
    muscle = doc.get("muscle") or {}
    out["muscle_suv_mean"] = float(muscle.get("suv_mean", math.nan))
    lesions = sorted(doc.get("lesions") or [], key=lambda les: les["suv_max"], reverse=True)
    if not lesions:
        return out
    hottest = lesions[0]
    for name in LESION_FIGURES:
        out[name] = float(hottest.get(name, math.nan))
    hypoxic = hottest.get("hypoxic") or []
    if hypoxic_threshold is not None:
        hypoxic = [h for h in hypoxic if math.isclose(h["threshold"], hypoxic_threshold)]
    if hypoxic:
        out["hypoxic_volume_ml"] = float(hypoxic[0]["volume_ml"])
        out["hypoxic_fraction"] = float(hypoxic[0]["fraction"])
    return out


def read_json_folders(
    folders: Iterable[Path],
    *,
    subject_key: str | None = None,
    subject_from_folder: bool = False,
    hypoxic_threshold: float | None = None,
    figures: Sequence[str] | None = None,
) -> Cohort:
    """Scans from the ``quantify --json`` outputs (``*.json``) under ``folders``.

    Parameters
    ----------
    folders : iterable of pathlib.Path
        Folders searched recursively.
    subject_key : str, optional
        Dotted key of the subject (default: ``patient_id`` or ``PatientID``).
    subject_from_folder : bool
        Use the name of the file's folder when the key is absent.
    hypoxic_threshold : float, optional
        T/M threshold of the hypoxic figures (default: the first one listed in each file).
    figures : sequence of str, optional
        Figures to keep (default: all of :data:`JSON_FIGURES`).

    Returns
    -------
    Cohort
    """
    wanted = list(figures) if figures else list(JSON_FIGURES)
    unknown = [f for f in wanted if f not in JSON_FIGURES]
    if unknown:
        raise InputError(f"unknown figure {', '.join(unknown)} (known: {', '.join(JSON_FIGURES)})")
    keys = (subject_key,) if subject_key else DEFAULT_SUBJECT_KEYS
    cohort = Cohort([], wanted)
    paths = sorted({p for folder in folders for p in folder.rglob("*.json") if p.is_file()})
    if not paths:
        raise InputError(f"no *.json files under {', '.join(str(f) for f in folders)}")
    for path in paths:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not readable as JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise InputError(f"{path}: not a quantify --json object")
        if "error" in doc:
            cohort.notes.append(f"{path}: skipped, the study was not quantified: {doc['error']}")
            continue
        subject = next((str(v) for k in keys if (v := _lookup(doc, k)) not in (None, "")), None)
        if subject is None and subject_from_folder:
            subject = path.parent.name
        if subject is None:
            raise InputError(
                f"{path}: no subject key {' or '.join(keys)}: add the PatientID under one of them,"
                " pass --subject-key, or use --subject-from-folder"
            )
        time = _lookup(doc, "suv.scan_reference_time") or ""
        values = figures_from_quantify_json(doc, hypoxic_threshold)
        cohort.scans.append(Scan(subject, (str(time), str(path)), values, str(path)))
    return cohort


def paired_table(cohort: Cohort, figure: str, replicates: int = 2) -> PairedTable:
    """The first ``replicates`` scans of each subject, in order, for one figure.

    Subjects with fewer scans, or with a missing value among those scans, are left out with a
    note; extra scans are ignored with a note.

    Parameters
    ----------
    cohort : Cohort
    figure : str
    replicates : int
        Scans per subject, >= 2.

    Returns
    -------
    PairedTable
    """
    if replicates < 2:
        raise ValueError(f"replicates must be >= 2, got {replicates}")
    by_subject: dict[str, list[Scan]] = defaultdict(list)
    for scan in cohort.scans:
        by_subject[scan.subject].append(scan)
    subjects, rows, notes = [], [], []
    for subject, scans in by_subject.items():
        scans.sort(key=lambda s: s.order)
        if len(scans) < replicates:
            notes.append(f"{figure}: subject {subject} left out: {len(scans)} scan(s)")
            continue
        if len(scans) > replicates:
            notes.append(f"{figure}: subject {subject}: scans after the first {replicates} ignored")
        row = [scan.figures[figure] for scan in scans[:replicates]]
        if not all(math.isfinite(v) for v in row):
            notes.append(f"{figure}: subject {subject} left out: a value is missing")
            continue
        subjects.append(subject)
        rows.append(row)
    values = np.array(rows, dtype=float).reshape(len(rows), replicates)
    return PairedTable(figure, subjects, values, notes)
