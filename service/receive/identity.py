"""Instance identity on the C-STORE path: an acknowledged instance is never replaced by
other content, nor moved to another study or series.

The checks compare values the handler has already read (the command's
AffectedSOPInstanceUID, the data set's UIDs, the index row of a known SOPInstanceUID). Only a
re-sent SOPInstanceUID, the rare case, costs more: its new encoding is compared with the file
already stored, byte for byte first, then element by element (the same instance sent again in
another transfer syntax is the same content).
"""

from __future__ import annotations

import filecmp
import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

log = logging.getLogger("hypoxnode.listener")


@dataclass(frozen=True)
class Verdict:
    """What to do with a received instance: store it (new), keep the stored file (an
    identical resend: ``same``), or refuse it (``conflict`` says why)."""

    same: bool = False
    conflict: str | None = None


NEW = Verdict()
SAME = Verdict(same=True)


@dataclass(frozen=True)
class KnownInstance:
    """Where an SOPInstanceUID is already stored (its index row)."""

    study_instance_uid: str
    series_instance_uid: str
    path: str


def identity_verdict(
    known: KnownInstance | None,
    existing_file: Path | None,
    study_instance_uid: str,
    series_instance_uid: str,
    new_file: Path | None,
    new_bytes: bytes,
) -> Verdict:
    """Whether an instance is new, an identical resend, or must not be stored over what the
    node already holds.

    Parameters
    ----------
    known
        The index row of the data set's SOPInstanceUID, if any.
    existing_file
        The file already stored under that SOPInstanceUID (from the row, or at the path the
        new instance would take when the row was lost), if any.
    study_instance_uid, series_instance_uid
        The new data set's.
    new_file, new_bytes
        The new instance as a Part 10 file (spooled), or its encoding when it stayed in
        memory.

    Returns
    -------
    Verdict
        :data:`NEW`, :data:`SAME`, or one with a reason (no patient data) for the audit log.
    """
    if known is not None:
        if known.study_instance_uid != study_instance_uid:
            return Verdict(conflict=f"SOPInstanceUID already stored in study"
                           f" {known.study_instance_uid}, sent again in study"
                           f" {study_instance_uid}")
        if known.series_instance_uid != series_instance_uid:
            return Verdict(conflict=f"SOPInstanceUID already stored in series"
                           f" {known.series_instance_uid}, sent again in series"
                           f" {series_instance_uid}")
    if existing_file is None or not existing_file.is_file():
        return NEW
    if same_content(existing_file, new_file, new_bytes):
        return SAME
    return Verdict(conflict="SOPInstanceUID already stored with other content (pixels or"
                   " attributes differ)")


def same_content(existing: Path, new_file: Path | None, new_bytes: bytes) -> bool:
    """Whether a new encoding of an instance holds what ``existing`` holds.

    Byte-identical files are the same; otherwise both are decoded and their data sets
    (without the file meta, which names the transfer syntax) compared element by element.
    """
    try:
        if new_file is not None:
            if filecmp.cmp(existing, new_file, shallow=False):
                return True
            new = dcmread(new_file, force=True)
        else:
            if existing.stat().st_size == len(new_bytes) and existing.read_bytes() == new_bytes:
                return True
            new = dcmread(DicomBytesIO(new_bytes), force=True)
        old = dcmread(existing, force=True)
        return _elements(old) == _elements(new)
    except Exception:  # an undecodable side cannot be shown to be the same
        log.debug("comparing a re-sent instance failed", exc_info=True)
        return False


def _elements(dataset: object) -> list[tuple[int, object]]:
    """(tag, value) of every top-level data element, values decoded (pixel data as bytes of
    the native encoding when uncompressed)."""
    return [(int(element.tag), element.value) for element in dataset]  # type: ignore[attr-defined]
