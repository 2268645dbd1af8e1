"""Malformed attributes that do not matter for quantification: tolerated, never fatal, never
logged above DEBUG.

A PatientBirthDate written ``1961-03-05`` failed the whole study: highdicom converts the
patient and study attributes it copies from the PET into the SEG (``DA(...)``) and raised
"Unable to convert '1961-03-05' to 'DA'"; the birth date went into an ERROR line and onto the
status page. pydicom also reports each invalid value, with the value, as a WARNING (and a
Python warning) when it is first read.

Here, at the service boundary and after the figures are computed (the quantification reads
its own dates and refuses what it cannot use), the top-level dates, times and names of the
datasets the result builders copy from are put into their standard form where that keeps the
meaning (``1961-03-05`` is ``19610305``, ``10:30:00`` is ``103000``) and emptied otherwise
(they are type 2 in the result objects). ``dicom_templates`` stays unchanged.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.valuerep import validate_value

log = logging.getLogger("hypoxnode.processing")

_KEEP = {"DA": re.compile(r"[^0-9]"), "TM": re.compile(r"[^0-9.]"),
         "DT": re.compile(r"[^0-9.+]")}
"""What survives of a malformed value of each VR before it is validated again."""
_VALUE_MESSAGES = ("Invalid value for VR", "Unable to convert", "non-conformant value")
"""pydicom messages that quote a received value (possibly patient data)."""


class DemoteValueMessages(logging.Filter):
    """Turns pydicom's log records that quote a received value into DEBUG records."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Demote, never drop: the record still reaches a DEBUG handler."""
        if record.levelno > logging.DEBUG and any(
                text in str(record.msg) for text in _VALUE_MESSAGES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"  # handlers above drop it
        return True


_FILTER = DemoteValueMessages()


@contextmanager
def values_not_logged() -> Iterator[None]:
    """pydicom's messages quoting values at DEBUG only, and not as Python warnings."""
    pydicom_log = logging.getLogger("pydicom")
    if _FILTER not in pydicom_log.filters:
        pydicom_log.addFilter(_FILTER)
    with warnings.catch_warnings():
        for text in _VALUE_MESSAGES:
            warnings.filterwarnings("ignore", message=f".*{text}", category=UserWarning)
        yield


def _valid(vr: str, value: object) -> bool:
    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def tolerate_malformed(datasets: Iterable[Dataset]) -> int:
    """Put malformed top-level DA, TM, DT and PN values of ``datasets`` into their standard
    form, or empty them; returns how many values changed (each one logged at DEBUG only).

    A dataset repeated in ``datasets`` (slices of one multi-frame image) is fixed once.
    """
    changed = 0
    seen: set[int] = set()
    for dataset in datasets:
        if id(dataset) in seen:
            continue
        seen.add(id(dataset))
        for element in dataset:
            vr = element.VR
            if vr not in ("DA", "TM", "DT", "PN") or element.VM != 1:
                continue
            value = element.value
            if value in (None, "") or _valid(vr, value):
                continue
            fixed = _KEEP[vr].sub("", str(value)) if vr in _KEEP else ""
            element.value = fixed if fixed and _valid(vr, fixed) else ""
            changed += 1
            log.debug("%s %s malformed (%r): written as %r", element.keyword or element.tag,
                      vr, value, element.value)
    return changed
