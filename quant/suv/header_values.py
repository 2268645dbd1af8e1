"""Reading plain values out of pydicom datasets: text, numbers and private elements.

Shared by the PET header adapters (:mod:`quant.suv.pet_header`, :mod:`quant.suv.pet_times`). Every
function returns None for a missing, empty or unreadable value instead of raising, so the
callers decide which absence is a refusal.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.tag import Tag


def text(value: object) -> str | None:
    """A DICOM value as stripped text (bytes decoded as ASCII), or None when empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="ignore")
    out = str(value).strip().strip("\x00").strip()
    return out or None


def number(value: object) -> float | None:
    """A DICOM value as a float, or None when empty or not a number."""
    out = text(value)
    if out is None:
        return None
    try:
        return float(out)
    except ValueError:
        return None


def private_value(ds: Dataset, group: int, creator: str, offset: int) -> object | None:
    """Value of private element (group, xx<offset>) reserved by ``creator``.

    When the group has no private creator element at all (files written by tools that drop
    creators), the element in the first block (group, 10<offset>) is returned.
    """
    creators_present = False
    for block in range(0x10, 0x100):
        element = ds.get(Tag(group, block))
        if element is None:
            continue
        creators_present = True
        if text(element.value) == creator:
            found = ds.get(Tag(group, (block << 8) | offset))
            return None if found is None else found.value
    if creators_present:
        return None
    found = ds.get(Tag(group, 0x1000 | offset))
    return None if found is None else found.value
