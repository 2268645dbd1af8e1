"""Run the external DICOM checkers (dicom3tools dciodvfy, DCMTK dsrdump) on written files."""

from __future__ import annotations

import subprocess
from pathlib import Path

DCIODVFY = "/usr/bin/dciodvfy"
DSRDUMP = "/usr/bin/dsrdump"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def dciodvfy_lines(path: Path) -> list[str]:
    """All lines dciodvfy prints for ``path`` (it reports on stderr)."""
    proc = _run([DCIODVFY, str(path)])
    return [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of dciodvfy's report on ``path`` that start with ``Error``.

    Parameters
    ----------
    path
        A DICOM Part 10 file.

    Returns
    -------
    list of str
        Empty when the object is valid for its IOD.
    """
    return [line for line in dciodvfy_lines(path) if line.startswith("Error")]


def dciodvfy_warnings(path: Path) -> list[str]:
    """Lines of dciodvfy's report on ``path`` that start with ``Warning``."""
    return [line for line in dciodvfy_lines(path) if line.startswith("Warning")]


def dsrdump_text(path: Path) -> str:
    """DCMTK ``dsrdump`` rendering of the SR document at ``path`` (raises if dsrdump fails).

    Parameters
    ----------
    path
        A DICOM SR Part 10 file.

    Returns
    -------
    str
        The document tree as text, with all codes (``+Pc``) and long values (``+Pl``).
    """
    proc = _run([DSRDUMP, "+Pc", "+Pl", str(path)])
    if proc.returncode != 0:
        raise RuntimeError(f"dsrdump failed on {path}: {proc.stderr.strip()}")
    return proc.stdout
