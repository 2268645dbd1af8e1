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


PIXELMED_JARS = ("/usr/share/java/pixelmed.jar",)
# PixelMed's compiled XSLT exceeds the JDK's default XPath operator limits.
_JAVA_XML_LIMITS = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


def pixelmed_lines(path: Path, validator: str) -> list[str]:
    """PixelMed validator report on ``path`` (Debian ``libpixelmed-java``).

    Parameters
    ----------
    path
        A DICOM Part 10 file.
    validator
        ``"DicomSRValidator"`` (SR templates and IOD) or ``"DicomInstanceValidator"`` (IOD).

    Returns
    -------
    list of str
        The non-empty lines it prints.

    Raises
    ------
    RuntimeError
        If the validator did not run to completion (no "validation complete" line).
    """
    proc = _run([
        "java", *_JAVA_XML_LIMITS, "-cp", ":".join(PIXELMED_JARS),
        f"com.pixelmed.validate.{validator}", str(path),
    ])
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if not any("validation complete" in line.lower() for line in lines):
        raise RuntimeError(f"PixelMed {validator} did not complete on {path}: {lines[-5:]}")
    return lines


def pixelmed_errors(path: Path, validator: str) -> list[str]:
    """Lines of PixelMed's ``validator`` report on ``path`` that start with ``Error``."""
    return [line for line in pixelmed_lines(path, validator) if line.startswith("Error")]
