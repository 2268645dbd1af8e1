"""Deterministic DICOM UIDs derived from strings (no random values anywhere in the builders)."""

from __future__ import annotations

from pydicom.uid import generate_uid

DEFAULT_PREFIX = "1.2.826.0.1.3680043.8.498."
"""pydicom's registered root; a site with its own root passes ``prefix``."""


def derive_uid(*parts: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Return a UID that depends only on ``parts`` (and ``prefix``).

    The same parts always give the same UID, so a re-run of the same analysis produces the
    same SEG, SR and summary instances (a PACS then replaces rather than duplicates them).

    Parameters
    ----------
    *parts
        Strings that identify the object, e.g. the PET SeriesInstanceUID and ``"seg"``.
    prefix
        UID root ending in ``"."``; at most 54 characters long (pydicom's rule).

    Returns
    -------
    str
        A valid UID of at most 64 characters.

    Raises
    ------
    ValueError
        If no part is given, a part is not a string, or ``prefix`` is unusable.
    """
    if not parts:
        raise ValueError("parts: at least one string is needed to derive a UID")
    for index, part in enumerate(parts):
        if not isinstance(part, str):
            raise ValueError(f"parts[{index}]: expected str, got {type(part).__name__}")
    if not prefix.endswith(".") or len(prefix) > 54:
        raise ValueError(f"prefix: must end with '.' and be at most 54 characters: {prefix!r}")
    # pydicom concatenates the sources, so ("a", "b") and ("ab",) would collide: prefix each
    # part with its length to keep the encoding unambiguous.
    encoded = [f"{len(part)}:{part}" for part in parts]
    return str(generate_uid(prefix=prefix, entropy_srcs=encoded))
