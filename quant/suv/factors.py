"""SUV formulas on plain numbers: decay, body-size normalisers, scale factors, unit checks.

Conventions: weights in kg, heights in m, doses in Bq, times in s. A *normaliser* is the body
quantity X in the SUV definition ``SUVx = C[Bq/ml] * X / dose[Bq]``, expressed in grams for
BW, LBM and IBW (so SUV is in g/ml) and in cm^2 for BSA (SUVbsa in cm^2/ml). Formulas follow
the IBSI-style SUV manual of Vacha et al. (after Sugawara 1999, James 1976,
Janmahasatian 2005, Du Bois 1916). For PatientSex ``"O"`` (other) the mean of the male and
female values is used, as the manual and its reference objects do.
"""

from __future__ import annotations

import math

SUV_TYPES = ("BW", "LBM", "LBMJAMES128", "LBMJANMA", "BSA", "IBW")
"""SUV Type (0054,1006) defined terms; ``"LBM"`` is computed with the James formula."""

DOSE_MBQ_LIMIT = 1e5
"""A RadionuclideTotalDose below this many 'Bq' is taken to be in MBq (no PET dose is 0.1 MBq)."""

WEIGHT_GRAMS_LIMIT_KG = 1000.0
"""A PatientWeight above this many 'kg' is taken to be in grams."""

SIZE_CM_LIMIT_M = 3.0
"""A PatientSize above this many 'm' is taken to be in centimetres."""

_SEXES = ("M", "F", "O")


def decay_factor(elapsed_s: float, half_life_s: float) -> float:
    """Fraction of activity left after ``elapsed_s``: ``2 ** (-elapsed_s / half_life_s)``.

    Parameters
    ----------
    elapsed_s
        Time in seconds (negative values give a factor above 1).
    half_life_s
        Physical half-life in seconds, > 0.
    """
    if not half_life_s > 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    return float(2.0 ** (-elapsed_s / half_life_s))


def frame_effective_time_s(frame_duration_s: float, half_life_s: float) -> float:
    """Time after frame start at which the instantaneous activity equals the frame average.

    For a frame of duration D and decay constant l = ln 2 / T, this is
    ``ln(l D / (1 - exp(-l D))) / l`` (QIBA FDG profile, appendix G); about D/2 for short
    frames. A zero duration gives 0.

    Parameters
    ----------
    frame_duration_s
        ActualFrameDuration (0018,1242) in seconds, >= 0.
    half_life_s
        Physical half-life in seconds, > 0.
    """
    if frame_duration_s < 0:
        raise ValueError(f"frame_duration_s must be >= 0, got {frame_duration_s}")
    if not half_life_s > 0:
        raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
    lam = math.log(2.0) / half_life_s
    x = lam * frame_duration_s
    if x < 1e-9:
        return frame_duration_s / 2.0
    return math.log(x / -math.expm1(-x)) / lam


def _check_sex(patient_sex: str) -> str:
    sex = patient_sex.strip().upper()
    if sex not in _SEXES:
        raise ValueError(f"patient_sex must be one of M, F, O, got {patient_sex!r}")
    return sex


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def lbm_james_kg(patient_weight_kg: float, patient_size_m: float, patient_sex: str) -> float:
    """Lean body mass after James (SUV Type LBMJAMES128).

    Male ``1.10 W - 128 (W/H)^2``, female ``1.07 W - 148 (W/H)^2`` with H in cm; sex ``"O"``
    gives the mean of both.
    """
    _check_positive("patient_weight_kg", patient_weight_kg)
    _check_positive("patient_size_m", patient_size_m)
    sex = _check_sex(patient_sex)
    ratio2 = (patient_weight_kg / (patient_size_m * 100.0)) ** 2
    male = 1.10 * patient_weight_kg - 128.0 * ratio2
    female = 1.07 * patient_weight_kg - 148.0 * ratio2
    return {"M": male, "F": female, "O": (male + female) / 2.0}[sex]


def lbm_janmahasatian_kg(
    patient_weight_kg: float, patient_size_m: float, patient_sex: str
) -> float:
    """Lean body mass after Janmahasatian (SUV Type LBMJANMA).

    Male ``9270 W / (6680 + 216 BMI)``, female ``9270 W / (8780 + 244 BMI)``, BMI = W / H^2
    (H in m); sex ``"O"`` gives the mean of both.
    """
    _check_positive("patient_weight_kg", patient_weight_kg)
    _check_positive("patient_size_m", patient_size_m)
    sex = _check_sex(patient_sex)
    bmi = patient_weight_kg / patient_size_m**2
    male = 9270.0 * patient_weight_kg / (6680.0 + 216.0 * bmi)
    female = 9270.0 * patient_weight_kg / (8780.0 + 244.0 * bmi)
    return {"M": male, "F": female, "O": (male + female) / 2.0}[sex]


def ibw_kg(patient_size_m: float, patient_sex: str) -> float:
    """Ideal body weight: male ``48.0 + 1.06 (H - 152)``, female ``45.5 + 0.91 (H - 152)``.

    H in cm; sex ``"O"`` gives the mean of both.
    """
    _check_positive("patient_size_m", patient_size_m)
    sex = _check_sex(patient_sex)
    height_cm = patient_size_m * 100.0
    male = 48.0 + 1.06 * (height_cm - 152.0)
    female = 45.5 + 0.91 * (height_cm - 152.0)
    return {"M": male, "F": female, "O": (male + female) / 2.0}[sex]


def bsa_du_bois_m2(patient_weight_kg: float, patient_size_m: float) -> float:
    """Body surface area after Du Bois: ``0.007184 H^0.725 W^0.425`` m^2 (H in cm, W in kg)."""
    _check_positive("patient_weight_kg", patient_weight_kg)
    _check_positive("patient_size_m", patient_size_m)
    return 0.007184 * (patient_size_m * 100.0) ** 0.725 * patient_weight_kg**0.425


def suv_normaliser(
    suv_type: str,
    patient_weight_kg: float | None,
    patient_size_m: float | None = None,
    patient_sex: str | None = None,
) -> float:
    """The body quantity X of ``SUVx = C * X / dose``: grams (BW, LBM, IBW) or cm^2 (BSA).

    Parameters
    ----------
    suv_type
        One of :data:`SUV_TYPES`.
    patient_weight_kg, patient_size_m, patient_sex
        What the formula of ``suv_type`` needs (IBW needs no weight; BW needs only weight).

    Raises
    ------
    ValueError
        Unknown ``suv_type`` or a needed argument missing or out of range; the message names
        the argument.
    """
    kind = suv_type.strip().upper()
    if kind not in SUV_TYPES:
        raise ValueError(f"suv_type must be one of {', '.join(SUV_TYPES)}, got {suv_type!r}")
    if kind == "IBW":
        if patient_size_m is None or patient_sex is None:
            raise ValueError("patient_size_m and patient_sex are needed for IBW")
        return ibw_kg(patient_size_m, patient_sex) * 1000.0
    if patient_weight_kg is None:
        raise ValueError(f"patient_weight_kg is needed for {kind}")
    _check_positive("patient_weight_kg", patient_weight_kg)
    if kind == "BW":
        return patient_weight_kg * 1000.0
    if patient_size_m is None:
        raise ValueError(f"patient_size_m is needed for {kind}")
    if kind == "BSA":
        return bsa_du_bois_m2(patient_weight_kg, patient_size_m) * 1e4
    if patient_sex is None:
        raise ValueError(f"patient_sex is needed for {kind}")
    if kind == "LBMJANMA":
        return lbm_janmahasatian_kg(patient_weight_kg, patient_size_m, patient_sex) * 1000.0
    return lbm_james_kg(patient_weight_kg, patient_size_m, patient_sex) * 1000.0


def bqml_to_suv_factor(
    injected_dose_bq: float, normaliser: float, dose_decay_factor: float = 1.0
) -> float:
    """SUV per Bq/ml: ``normaliser / (injected_dose_bq * dose_decay_factor)``.

    Parameters
    ----------
    injected_dose_bq
        RadionuclideTotalDose (0018,1074) at injection, Bq.
    normaliser
        From :func:`suv_normaliser` (g or cm^2).
    dose_decay_factor
        Fraction of the dose left at the time the pixels are decay-corrected to
        (1 for DecayCorrection ADMIN).
    """
    _check_positive("injected_dose_bq", injected_dose_bq)
    _check_positive("normaliser", normaliser)
    _check_positive("dose_decay_factor", dose_decay_factor)
    return normaliser / (injected_dose_bq * dose_decay_factor)


def convert_suv_factor(from_normaliser: float, to_normaliser: float) -> float:
    """Factor taking SUVx to SUVy: ``SUVy = SUVx * Y / X`` (e.g. SUVbw = SUVbsa * W / BSA).

    Both normalisers in the units of :func:`suv_normaliser` (g, or cm^2 for BSA).
    """
    _check_positive("from_normaliser", from_normaliser)
    _check_positive("to_normaliser", to_normaliser)
    return to_normaliser / from_normaliser


def dose_to_bq(radionuclide_total_dose: float) -> tuple[float, bool]:
    """Dose in Bq and whether the stored value was taken to be MBq.

    Values below :data:`DOSE_MBQ_LIMIT` are read as MBq (some sites store 368 for 368 MBq).
    """
    _check_positive("radionuclide_total_dose", radionuclide_total_dose)
    if radionuclide_total_dose < DOSE_MBQ_LIMIT:
        return radionuclide_total_dose * 1e6, True
    return radionuclide_total_dose, False


def weight_to_kg(patient_weight: float) -> tuple[float, bool]:
    """Weight in kg and whether the stored value was taken to be grams (> 1000)."""
    _check_positive("patient_weight", patient_weight)
    if patient_weight > WEIGHT_GRAMS_LIMIT_KG:
        return patient_weight / 1000.0, True
    return patient_weight, False


def size_to_m(patient_size: float) -> tuple[float, bool]:
    """Height in m and whether the stored value was taken to be centimetres (> 3)."""
    _check_positive("patient_size", patient_size)
    if patient_size > SIZE_CM_LIMIT_M:
        return patient_size / 100.0, True
    return patient_size, False
