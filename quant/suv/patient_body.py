"""The patient's body in the SUV: weight, height and sex from the header, and the normaliser
of each SUV type (body weight, lean body mass, body surface area, ideal body weight).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from quant.errors import QuantificationError
from quant.suv import factors as suv
from quant.suv import header_values as hv


@dataclass
class PatientBody:
    """What the SUV normalisers need of the patient (None: absent or unusable)."""

    weight_kg: float | None
    size_m: float | None
    sex: str | None


def patient_body(series: Dataset, warnings: list[str]) -> PatientBody:
    """Weight (kg), height (m) and sex from the series header; grams and centimetres are
    recognised and converted, with a warning."""
    weight = hv.number(series.get("PatientWeight"))
    weight_kg = None
    if weight is not None and weight > 0:
        weight_kg, grams = suv.weight_to_kg(weight)
        if grams:
            warnings.append(f"PatientWeight (0010,1030) {weight:g} read as grams: {weight_kg:g} kg")
    size = hv.number(series.get("PatientSize"))
    size_m = None
    if size is not None and size > 0:
        size_m, cm = suv.size_to_m(size)
        if cm:
            warnings.append(f"PatientSize (0010,1020) {size:g} read as cm: {size_m:g} m")
    sex = hv.text(series.get("PatientSex"))
    sex = sex.upper() if sex and sex.upper() in ("M", "F", "O") else None
    return PatientBody(weight_kg, size_m, sex)


def normaliser(kind: str, patient: PatientBody) -> float:
    """The body-size normaliser of SUV ``kind`` (BW, LBM, BSA, IBW), or QuantificationError
    naming the missing attribute it needs."""
    kind = kind.upper()
    label = f"SUV{kind.lower()}"
    needs = {"BW": ("weight",), "IBW": ("size", "sex"), "BSA": ("weight", "size")}.get(
        kind, ("weight", "size", "sex")
    )
    messages = {
        "weight": f"PatientWeight (0010,1030) missing: {label} needs the patient's weight",
        "size": f"PatientSize (0010,1020) missing: {label} needs the patient's height",
        "sex": f"PatientSex (0010,0040) missing or not M/F/O: {label} needs the patient's sex",
    }
    values = {"weight": patient.weight_kg, "size": patient.size_m, "sex": patient.sex}
    for need in needs:
        if values[need] is None:
            raise QuantificationError(messages[need])
    return suv.suv_normaliser(kind, patient.weight_kg, patient.size_m, patient.sex)
