"""Unpack the test-data archives in ``tests/data`` once, safely from several tests at a time."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
UNPACKED_DIR = DATA_DIR / "_unpacked"
_MARKER = ".unpacked-from"


def _stamp(archive: Path) -> str:
    stat = archive.stat()
    return f"{archive.name} {stat.st_size} {stat.st_mtime_ns}\n"


def unpack(name: str) -> Path:
    """Unpack ``tests/data/<name>.tar.xz`` into ``tests/data/_unpacked/<name>/`` and return it.

    Idempotent: a directory unpacked from the same archive (same size and modification time,
    recorded in a marker file) is reused. The archive is extracted into a temporary sibling
    directory and renamed into place, so concurrent callers never see a half-unpacked tree.

    Parameters
    ----------
    name
        Archive name without ``.tar.xz``, e.g. ``"suv_dro_oncoray"``.

    Raises
    ------
    FileNotFoundError
        No such archive.
    """
    archive = DATA_DIR / f"{name}.tar.xz"
    if not archive.is_file():
        raise FileNotFoundError(f"test data archive missing: {archive}")
    target = UNPACKED_DIR / name
    marker = target / _MARKER
    stamp = _stamp(archive)
    if marker.is_file() and marker.read_text() == stamp:
        return target
    UNPACKED_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=UNPACKED_DIR))
    scratch.chmod(0o755)
    try:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(scratch, filter="data")
        (scratch / _MARKER).write_text(stamp)
        if target.exists():
            if marker.is_file() and marker.read_text() == stamp:
                return target  # another caller finished first
            stale = Path(tempfile.mkdtemp(prefix=f".{name}-stale-", dir=UNPACKED_DIR))
            os.replace(target, stale / name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(scratch, target)
        except OSError:
            if not (marker.is_file() and marker.read_text() == stamp):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
