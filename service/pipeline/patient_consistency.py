"""The series of one study must be of one patient.

A CT of another patient inside a PET study (a modality's worklist mix-up, a PACS merge) was
quantified: the muscle reference and the fused summary came from the other patient's CT while
the SEG, SR and summary were labelled with the PET's patient. Here every series is compared
with the PET series on the patient identity both carry; a difference fails the study before
anything is loaded. The reason names the attributes and series, never their values (no
patient data in logs or on the status page beyond what the PACS shows anyway).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset

from quant.errors import QuantificationError

PATIENT_IDENTITY = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate",
                    "PatientSex")
"""Compared where present (not empty) in both series."""

_NOT_DIGITS = re.compile(r"\D")


def _normalised(keyword: str, value: object) -> str:
    """The comparable form of one value: a date as its digits (``1961-03-05`` is
    ``19610305``), a name without case, padding or trailing empty components."""
    text = str(value).strip()
    if keyword == "PatientBirthDate":
        return _NOT_DIGITS.sub("", text)
    if keyword == "PatientName":
        return "^".join(part.strip() for part in text.upper().split("^")).rstrip("^")
    if keyword == "PatientSex":
        return text.upper()
    return text


def _identity(dataset: Dataset) -> dict[str, str]:
    out = {}
    for keyword in PATIENT_IDENTITY:
        value = dataset.get(keyword)
        normalised = _normalised(keyword, value) if value not in (None, "") else ""
        if normalised:
            out[keyword] = normalised
    return out


def differing_attributes(reference: Dataset, other: Dataset) -> list[str]:
    """Keywords of :data:`PATIENT_IDENTITY` present in both and different."""
    ours, theirs = _identity(reference), _identity(other)
    return [k for k in PATIENT_IDENTITY if k in ours and k in theirs and ours[k] != theirs[k]]


def check_one_patient(pet: Sequence[Dataset], others: Iterable[Sequence[Dataset]]) -> None:
    """Raise when any other series of the study is of another patient than the PET.

    Parameters
    ----------
    pet
        The PET series chosen for quantification (its first dataset is the reference).
    others
        Every other series of the study (CT, other PET, supplied RTSTRUCT or SEG).

    Raises
    ------
    QuantificationError
        Naming the series and the attributes that differ (not their values).
    """
    reference = pet[0]
    found = []
    for series in others:
        if not series:
            continue
        differing = differing_attributes(reference, series[0])
        if differing:
            found.append(f"{series[0].get('Modality', '?')} series"
                         f" {series[0].get('SeriesInstanceUID', '?')} ({', '.join(differing)})")
    if found:
        raise QuantificationError(
            "the series of this study are not of one patient: patient identity differs from"
            f" the PET series {reference.get('SeriesInstanceUID', '?')} in "
            + "; ".join(found)
            + ". Nothing was quantified. Check the study at the modality or PACS (mixed-up"
            " worklist entry or merged studies), correct it, and send it again."
        )
