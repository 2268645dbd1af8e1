"""The thin adapter from PET headers to SUV scale factors.

It reads attribute values from already-loaded pydicom datasets and hands plain numbers to
:mod:`quant.suv`. The result is one factor per slice that turns the rescaled pixel value
(stored value x RescaleSlope + RescaleIntercept) into SUV of the requested type, plus the
:class:`~quant.results.SuvFacts` that were used.

Rules (DICOM PS3.3 C.8.9.1 / C.8.9.4, QIBA FDG profile appendix G, IBSI-style SUV manual):

- Scan start: SeriesDate/SeriesTime, unless it is after the earliest AcquisitionDate/Time
  (a re-reconstructed series); then GE private (0009,100D) (creator ``GEMS_PETD_01``) or
  Siemens private (0071,1022) (creator ``SIEMENS MED PT``), else it is back-computed from the
  earliest slice: ``AcquisitionDateTime - FrameReferenceTime + t_eff(ActualFrameDuration)``.
- DecayCorrection START: dose decayed from injection to scan start. ADMIN: no dose decay.
  NONE: each slice is corrected from its own time (scan start + FrameReferenceTime, or
  FrameReferenceDateTime for enhanced frames): the dose is decayed to that time.
- Injection: RadiopharmaceuticalStartDateTime; otherwise RadiopharmaceuticalStartTime with
  the date inferred by :func:`infer_injection_datetime`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from quant import suv
from quant.errors import QuantificationError
from quant.nuclides import NUCLIDES, half_life_agrees
from quant.results import SuvFacts
from quant.tracers import TracerProfile, identify_tracer, radiopharmaceutical_nuclide

GE_CREATOR = "GEMS_PETD_01"
SIEMENS_CREATOR = "SIEMENS MED PT"
PHILIPS_CREATOR = "Philips PET Private Group"

STUDY_START_MARGIN_S = 2 * 3600.0
"""How long after StudyDate/StudyTime an inferred injection may lie (date inference)."""

_UNITS_FROM_UCUM = {"Bq/ml": "BQML", "g/ml": "GML", "{SUVbw}g/ml": "GML", "cm2/ml": "CM2ML"}

_SERIES_LEVEL = (
    "Modality",
    "Units",
    "DecayCorrection",
    "SUVType",
    "PatientWeight",
    "PatientSize",
    "PatientSex",
    "SeriesDate",
    "SeriesTime",
)
_RADIOPHARM_LEVEL = (
    "RadionuclideTotalDose",
    "RadionuclideHalfLife",
    "RadiopharmaceuticalStartTime",
    "RadiopharmaceuticalStartDateTime",
)


@dataclass(frozen=True)
class SliceHeader:
    """The per-slice (per-frame) values the SUV conversion needs.

    Parameters
    ----------
    acquisition_datetime
        AcquisitionDate/Time (or FrameAcquisitionDateTime of an enhanced frame).
    frame_reference_time_ms
        FrameReferenceTime (0054,1300), ms from the series reference time.
    frame_duration_ms
        ActualFrameDuration (0018,1242) or FrameAcquisitionDuration (0018,9220), ms.
    frame_reference_datetime
        FrameReferenceDateTime (0018,9151) of an enhanced frame.
    philips_suv_factor
        Philips private (7053,1000): SUVbw per rescaled value.
    philips_bqml_factor
        Philips private (7053,1009): Bq/ml per rescaled value.
    """

    acquisition_datetime: datetime | None = None
    frame_reference_time_ms: float | None = None
    frame_duration_ms: float | None = None
    frame_reference_datetime: datetime | None = None
    philips_suv_factor: float | None = None
    philips_bqml_factor: float | None = None


# ---------------------------------------------------------------------------------------------
# Reading values
# ---------------------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="ignore")
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _float(value: object) -> float | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_date(value: object) -> date | None:
    """DICOM DA (``YYYYMMDD``, or legacy ``YYYY.MM.DD``) as a date, or None."""
    text = _text(value)
    if text is None:
        return None
    text = text.replace(".", "").replace("-", "")
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def parse_time(value: object) -> time | None:
    """DICOM TM (``HHMMSS.FFFFFF``, shorter forms, or legacy ``HH:MM:SS``) as a time, or None."""
    text = _text(value)
    if text is None:
        return None
    text = text.replace(":", "")
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        return None
    hour, minute, second = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((frac + "000000")[:6]) if frac.isdigit() else 0
    try:
        return time(hour, minute, min(second, 59), micro)
    except ValueError:
        return None


def parse_datetime(value: object) -> datetime | None:
    """DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``) as a naive datetime (offset dropped)."""
    text = _text(value)
    if text is None:
        return None
    for sign in ("+", "-"):
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    day = parse_date(text[:8])
    if day is None:
        return None
    clock = parse_time(text[8:]) if len(text) > 8 else time(0)
    return datetime.combine(day, clock or time(0))


def combine(day: object, clock: object) -> datetime | None:
    """A DA and a TM value as one datetime, or None if either is missing."""
    d, t = parse_date(day), parse_time(clock)
    if d is None or t is None:
        return None
    return datetime.combine(d, t)


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
        if _text(element.value) == creator:
            found = ds.get(Tag(group, (block << 8) | offset))
            return None if found is None else found.value
    if creators_present:
        return None
    found = ds.get(Tag(group, 0x1000 | offset))
    return None if found is None else found.value


def slice_header(ds: Dataset) -> SliceHeader:
    """Per-slice values of one single-frame PET image."""
    acquisition = parse_datetime(ds.get("AcquisitionDateTime")) or combine(
        ds.get("AcquisitionDate") or ds.get("SeriesDate"), ds.get("AcquisitionTime")
    )
    return SliceHeader(
        acquisition_datetime=acquisition,
        frame_reference_time_ms=_float(ds.get("FrameReferenceTime")),
        frame_duration_ms=_float(ds.get("ActualFrameDuration")),
        philips_suv_factor=_float(private_value(ds, 0x7053, PHILIPS_CREATOR, 0x00)),
        philips_bqml_factor=_float(private_value(ds, 0x7053, PHILIPS_CREATOR, 0x09)),
    )


def enhanced_frame_headers(ds: Dataset) -> list[SliceHeader]:
    """Per-frame values of an Enhanced PET image from its FrameContentSequence items."""
    frames = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    out = []
    for frame in frames:
        content_seq = frame.get("FrameContentSequence") or shared.get("FrameContentSequence")
        content = content_seq[0] if content_seq else Dataset()
        out.append(
            SliceHeader(
                acquisition_datetime=parse_datetime(content.get("FrameAcquisitionDateTime")),
                frame_duration_ms=_float(content.get("FrameAcquisitionDuration")),
                frame_reference_datetime=parse_datetime(content.get("FrameReferenceDateTime")),
            )
        )
    return out


def _radiopharm_item(ds: Dataset) -> Dataset:
    items = ds.get("RadiopharmaceuticalInformationSequence")
    return items[0] if items else Dataset()


def check_series_consistency(datasets: Sequence[Dataset]) -> None:
    """Refuse a series whose series-level SUV attributes differ between slices.

    Raises
    ------
    QuantificationError
        Naming the attribute and the values found, e.g. mixed Units.
    """
    views: list[tuple[str, list[Dataset]]] = [
        ("", list(datasets)),
        ("RadiopharmaceuticalInformationSequence ", [_radiopharm_item(d) for d in datasets]),
    ]
    for prefix, items in views:
        keywords = _SERIES_LEVEL if not prefix else _RADIOPHARM_LEVEL
        for keyword in keywords:
            values = {_text(item.get(keyword)) for item in items}
            if len(values) > 1:
                shown = ", ".join(sorted(str(v) for v in values))
                tag = Tag(keyword)
                raise QuantificationError(
                    f"{prefix}{keyword} ({tag.group:04X},{tag.element:04X}) differs between "
                    f"slices ({shown}): inconsistent header, one series must have one value"
                )


# ---------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------


def _units(series: Dataset) -> str:
    units = _text(series.get("Units"))
    if units is None:
        # Enhanced PET: units of the real-world value mapping.
        frames = series.get("SharedFunctionalGroupsSequence") or []
        for group in frames:
            for mapping in group.get("RealWorldValueMappingSequence") or []:
                for code in mapping.get("MeasurementUnitsCodeSequence") or []:
                    units = _UNITS_FROM_UCUM.get(str(code.get("CodeValue", "")))
    if units is None:
        raise QuantificationError(
            "Units (0054,1001) missing: cannot tell whether pixels are Bq/ml, counts or SUV"
        )
    return units.upper()


def _decay_correction(series: Dataset) -> tuple[str, datetime | None]:
    value = _text(series.get("DecayCorrection"))
    if value is not None:
        return value.upper(), None
    corrected = _text(series.get("DecayCorrected"))  # Enhanced PET (0018,9758)
    if corrected == "YES":
        return "START", parse_datetime(series.get("DecayCorrectionDateTime"))
    if corrected == "NO":
        return "NONE", None
    raise QuantificationError(
        "DecayCorrection (0054,1102) missing: cannot tell to which time the pixels are "
        "decay-corrected"
    )


def scan_start(
    series: Dataset, slices: Sequence[SliceHeader], half_life_s: float | None
) -> tuple[datetime, str | None]:
    """The acquisition start the pixels refer to, and a warning when it had to be derived.

    Parameters
    ----------
    series
        Any slice of the series (series-level attributes and private tags).
    slices
        Per-slice values (AcquisitionDateTime, FrameReferenceTime, ActualFrameDuration).
    half_life_s
        For the decay-weighted frame mid-time of the back-computation.

    Raises
    ------
    QuantificationError
        No SeriesDate/SeriesTime and no AcquisitionDate/Time.
    """
    series_dt = combine(
        series.get("SeriesDate") or series.get("AcquisitionDate"), series.get("SeriesTime")
    )
    timed = [s for s in slices if s.acquisition_datetime is not None]
    earliest = min(timed, key=lambda s: s.acquisition_datetime or datetime.max, default=None)
    if series_dt is not None and (
        earliest is None or series_dt <= (earliest.acquisition_datetime or series_dt)
    ):
        return series_dt, None
    for group, creator, offset, label in (
        (0x0009, GE_CREATOR, 0x0D, "GE private (0009,100D)"),
        (0x0071, SIEMENS_CREATOR, 0x22, "Siemens private (0071,1022)"),
    ):
        private = parse_datetime(private_value(series, group, creator, offset))
        if private is not None:
            return private, (
                f"SeriesTime is after the earliest AcquisitionTime; scan start taken from "
                f"{label}: {private.isoformat()}"
            )
    if earliest is None or earliest.acquisition_datetime is None:
        raise QuantificationError(
            "SeriesDate/SeriesTime (0008,0021/0031) and AcquisitionDate/AcquisitionTime "
            "(0008,0022/0032) missing: the scan start time is unknown"
        )
    start = earliest.acquisition_datetime
    how = "the earliest AcquisitionTime"
    if (
        earliest.frame_reference_time_ms is not None
        and earliest.frame_duration_ms is not None
        and half_life_s
    ):
        offset_s = -earliest.frame_reference_time_ms / 1000.0 + suv.frame_effective_time_s(
            earliest.frame_duration_ms / 1000.0, half_life_s
        )
        start = start + timedelta(seconds=offset_s)
        how = "AcquisitionTime, FrameReferenceTime and ActualFrameDuration"
    where = "missing" if series_dt is None else f"{series_dt.isoformat()} is after acquisition"
    return start, f"SeriesTime {where}; scan start back-computed from {how}: {start.isoformat()}"


def infer_injection_datetime(
    start_time: time,
    scan_start_dt: datetime,
    *,
    uptake_window_s: tuple[float, float] | None = None,
    study_datetime: datetime | None = None,
) -> datetime:
    """Date of an injection known only by its time of day (RadiopharmaceuticalStartTime).

    Rule: the candidates are that time of day on the scan date and on the two days before;
    those after the scan start are dropped. Two filters then apply in turn, each only if it
    leaves at least one candidate: (1) the uptake time lies in the tracer's typical window;
    (2) the injection is not more than :data:`STUDY_START_MARGIN_S` after StudyDate/StudyTime
    (a study holding an early scan started before a next-day re-injection is implausible).
    The latest remaining candidate wins. So an injection at 23:30 with a scan at 00:30 is
    the previous day, a 64Cu-ATSM injection at 21:00 with a scan at 20:00 is 23 h earlier,
    and a 64Cu scan at 20:10 after a 20:00 injection reads as 24 h10 (20 min lies outside the
    Cu-ATSM window). A delayed scan whose time of day is later than the injection's stays
    ambiguous when neither filter decides; the caller warns whenever the date is inferred to
    differ from the scan date.

    Parameters
    ----------
    start_time
        RadiopharmaceuticalStartTime (0018,1072).
    scan_start_dt
        Scan start (see :func:`scan_start`).
    uptake_window_s
        (min, max) plausible uptake of the tracer, if known.
    study_datetime
        StudyDate/StudyTime, if known.

    Returns
    -------
    datetime
        The inferred injection; after the scan start only if every candidate is.
    """
    candidates = [
        datetime.combine(scan_start_dt.date() - timedelta(days=k), start_time) for k in range(3)
    ]
    kept = [c for c in candidates if c <= scan_start_dt]
    if not kept:
        return candidates[0]
    if uptake_window_s is not None:
        low, high = uptake_window_s
        in_window = [c for c in kept if low <= (scan_start_dt - c).total_seconds() <= high]
        kept = in_window or kept
    if study_datetime is not None and study_datetime <= scan_start_dt:
        margin = timedelta(seconds=STUDY_START_MARGIN_S)
        after_study = [c for c in kept if c <= study_datetime + margin]
        kept = after_study or kept
    return max(kept)


# ---------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------


@dataclass
class _Patient:
    weight_kg: float | None
    size_m: float | None
    sex: str | None


def _patient(series: Dataset, warnings: list[str]) -> _Patient:
    weight = _float(series.get("PatientWeight"))
    weight_kg = None
    if weight is not None and weight > 0:
        weight_kg, grams = suv.weight_to_kg(weight)
        if grams:
            warnings.append(f"PatientWeight (0010,1030) {weight:g} read as grams: {weight_kg:g} kg")
    size = _float(series.get("PatientSize"))
    size_m = None
    if size is not None and size > 0:
        size_m, cm = suv.size_to_m(size)
        if cm:
            warnings.append(f"PatientSize (0010,1020) {size:g} read as cm: {size_m:g} m")
    sex = _text(series.get("PatientSex"))
    sex = sex.upper() if sex and sex.upper() in ("M", "F", "O") else None
    return _Patient(weight_kg, size_m, sex)


def _normaliser(kind: str, patient: _Patient) -> float:
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


def _stored_suv_type(series: Dataset, units: str) -> str:
    stored = _text(series.get("SUVType"))
    if stored is None:
        return "BSA" if units == "CM2ML" else "BW"
    stored = stored.upper()
    if stored not in suv.SUV_TYPES:
        raise QuantificationError(
            f"SUVType (0054,1006) '{stored}' unknown: expected one of {', '.join(suv.SUV_TYPES)}"
        )
    return stored


def _half_life(item: Dataset, warnings: list[str]) -> tuple[float | None, str | None]:
    header = _float(item.get("RadionuclideHalfLife"))
    nuclide = radiopharmaceutical_nuclide(item)
    table = NUCLIDES[nuclide].half_life_s if nuclide else None
    if header is not None and header > 0:
        if table is not None and not half_life_agrees(header, table):
            warnings.append(
                f"RadionuclideHalfLife (0018,1075) {header:g} s disagrees with {nuclide} "
                f"({table:g} s); the header value is used"
            )
        return header, nuclide
    if table is not None:
        warnings.append(
            f"RadionuclideHalfLife (0018,1075) missing; {nuclide} table value {table:g} s used"
        )
    return table, nuclide


def _injection(
    item: Dataset,
    series: Dataset,
    start: datetime,
    tracer: TracerProfile,
    warnings: list[str],
) -> datetime | None:
    full = parse_datetime(item.get("RadiopharmaceuticalStartDateTime"))
    if full is not None:
        return full
    clock = parse_time(item.get("RadiopharmaceuticalStartTime"))
    if clock is None:
        return None
    study = combine(series.get("StudyDate"), series.get("StudyTime"))
    injected = infer_injection_datetime(
        clock, start, uptake_window_s=tracer.uptake_window_s, study_datetime=study
    )
    if injected.date() != start.date():
        warnings.append(
            "RadiopharmaceuticalStartDateTime (0018,1078) missing: injection date inferred as "
            f"{injected.date().isoformat()} (scan on {start.date().isoformat()})"
        )
    return injected


def _philips_multipliers(slices: Sequence[SliceHeader], units: str) -> tuple[str, np.ndarray]:
    suv_factors = [s.philips_suv_factor for s in slices]
    bqml_factors = [s.philips_bqml_factor for s in slices]
    if all(f is not None and f > 0 for f in suv_factors):
        return "suv", np.array(suv_factors, dtype=np.float64)
    if all(f is not None and f > 0 for f in bqml_factors):
        return "bqml", np.array(bqml_factors, dtype=np.float64)
    raise QuantificationError(
        f"Units (0054,1001) {units} are counts and no slice-wise calibration factor was found "
        "(Philips private (7053,1000) SUV factor or (7053,1009) Bq/ml factor): cannot convert "
        "to SUV"
    )


def _frame_time(s: SliceHeader, start: datetime, half_life_s: float) -> datetime:
    if s.frame_reference_datetime is not None:
        return s.frame_reference_datetime
    if s.frame_reference_time_ms is not None:
        return start + timedelta(seconds=s.frame_reference_time_ms / 1000.0)
    if s.acquisition_datetime is not None and s.frame_duration_ms is not None:
        mid = suv.frame_effective_time_s(s.frame_duration_ms / 1000.0, half_life_s)
        return s.acquisition_datetime + timedelta(seconds=mid)
    raise QuantificationError(
        "FrameReferenceTime (0054,1300) missing: DecayCorrection NONE needs each frame's time "
        "(FrameReferenceTime, or AcquisitionTime with ActualFrameDuration)"
    )


def suv_factors(
    series: Dataset, slices: Sequence[SliceHeader], suv_type: str = "BW"
) -> tuple[np.ndarray, SuvFacts]:
    """Per-slice SUV factors and the facts used.

    Parameters
    ----------
    series
        A dataset carrying the series-level attributes (any slice of a classic series, or the
        enhanced multi-frame dataset).
    slices
        Per-slice values, in the order of the returned factors.
    suv_type
        Requested SUV type, one of :data:`quant.suv.SUV_TYPES`.

    Returns
    -------
    factors : numpy.ndarray
        float64, shape (len(slices),): SUV per rescaled pixel value of each slice.
    facts : SuvFacts

    Raises
    ------
    QuantificationError
        One actionable reason naming the DICOM attribute (missing weight, dose, injection
        time, negative uptake time, unsupported units, ...).
    ValueError
        ``suv_type`` unknown or ``slices`` empty.
    """
    requested = suv_type.strip().upper()
    if requested not in suv.SUV_TYPES:
        raise ValueError(f"suv_type must be one of {', '.join(suv.SUV_TYPES)}, got {suv_type!r}")
    if not slices:
        raise ValueError("slices must not be empty")
    warnings: list[str] = []
    units = _units(series)
    decay, decay_reference = _decay_correction(series)
    item = _radiopharm_item(series)
    patient = _patient(series, warnings)
    tracer = identify_tracer(series)
    half_life, nuclide = _half_life(item, warnings)
    n = len(slices)

    start: datetime | None = None
    injected: datetime | None = None
    dose_bq: float | None = None

    mode = "activity"
    stored_type = "BW"
    multipliers = np.ones(n, dtype=np.float64)
    if units in ("GML", "CM2ML"):
        mode = "suv"
        stored_type = _stored_suv_type(series, units)
    elif units in ("CNTS", "CPS"):
        kind, multipliers = _philips_multipliers(slices, units)
        mode = "suv" if kind == "suv" else "activity"
    elif units != "BQML":
        raise QuantificationError(
            f"Units (0054,1001) '{units}' is neither an activity concentration (BQML) nor an "
            "SUV unit (GML, CM2ML): cannot convert to SUV"
        )

    needs_times = mode == "activity" and decay in ("START", "NONE")
    if decay not in ("START", "ADMIN", "NONE"):
        raise QuantificationError(
            f"DecayCorrection (0054,1102) '{decay}' unknown: expected START, ADMIN or NONE"
        )
    if half_life is None and needs_times:
        raise QuantificationError(
            "RadionuclideHalfLife (0018,1075) missing and the radionuclide is not identified: "
            "decay correction needs the half-life"
        )
    try:
        start, note = scan_start(series, slices, half_life)
        if note:
            warnings.append(note)
    except QuantificationError:
        if needs_times:
            raise
    if decay_reference is not None:
        start = decay_reference
    if start is not None:
        injected = _injection(item, series, start, tracer, warnings)

    if mode == "suv":
        if stored_type == requested:
            factors = multipliers
        else:
            convert = suv.convert_suv_factor(
                _normaliser(stored_type, patient), _normaliser(requested, patient)
            )
            factors = multipliers * convert
    else:
        raw_dose = _float(item.get("RadionuclideTotalDose"))
        if raw_dose is None or raw_dose <= 0:
            raise QuantificationError(
                "RadionuclideTotalDose (0018,1074) missing: SUV needs the injected dose"
            )
        dose_bq, in_mbq = suv.dose_to_bq(raw_dose)
        if in_mbq:
            warnings.append(
                f"RadionuclideTotalDose (0018,1074) {raw_dose:g} looks like MBq, not Bq: "
                f"read as {dose_bq:.6g} Bq"
            )
        normaliser = _normaliser(requested, patient)
        factors = multipliers * _activity_factors(
            decay, slices, start, injected, half_life, dose_bq, normaliser
        )

    uptake_s = None
    if start is not None and injected is not None:
        uptake_s = (start - injected).total_seconds()
        if uptake_s < 0:
            message = (
                f"RadiopharmaceuticalStartDateTime (0018,1078) {injected.isoformat()} is after "
                f"the scan start {start.isoformat()}: negative uptake time"
            )
            if needs_times:
                raise QuantificationError(message)
            warnings.append(message)
        elif tracer.uptake_window_s is not None:
            low, high = tracer.uptake_window_s
            if not low <= uptake_s <= high:
                warnings.append(
                    f"uptake time {uptake_s / 3600:.2f} h is outside the usual "
                    f"{low / 3600:.2f}-{high / 3600:.2f} h window of {tracer.name}"
                )
    if decay == "START" and mode == "activity":
        corrected = [str(v).upper() for v in (series.get("CorrectedImage") or [])]
        if corrected and "DECY" not in corrected:
            warnings.append("DecayCorrection is START but CorrectedImage (0028,0051) lacks DECY")

    facts = SuvFacts(
        units=units,
        decay_correction=decay,
        suv_type=requested,
        scan_reference_time=start,
        injection_time=injected,
        uptake_time_s=uptake_s,
        injected_dose_bq=dose_bq,
        half_life_s=half_life,
        radionuclide=nuclide,
        patient_weight_kg=patient.weight_kg,
        patient_size_m=patient.size_m,
        patient_sex=patient.sex,
        scale_factor=float(factors[0]),
        warnings=tuple(warnings),
    )
    return np.asarray(factors, dtype=np.float64), facts


def _activity_factors(
    decay: str,
    slices: Sequence[SliceHeader],
    start: datetime | None,
    injected: datetime | None,
    half_life_s: float | None,
    dose_bq: float,
    normaliser: float,
) -> np.ndarray:
    """SUV per Bq/ml for each slice."""
    n = len(slices)
    if decay == "ADMIN":
        return np.full(n, suv.bqml_to_suv_factor(dose_bq, normaliser))
    if injected is None:
        raise QuantificationError(
            "RadiopharmaceuticalStartDateTime (0018,1078) and RadiopharmaceuticalStartTime "
            "(0018,1072) missing: the dose cannot be decayed to the scan time"
        )
    assert start is not None and half_life_s is not None  # guaranteed by the caller
    if start < injected:
        raise QuantificationError(
            f"RadiopharmaceuticalStartDateTime (0018,1078) {injected.isoformat()} is after the "
            f"scan start {start.isoformat()}: negative uptake time"
        )
    if decay == "START":
        elapsed = (start - injected).total_seconds()
        return np.full(
            n,
            suv.bqml_to_suv_factor(dose_bq, normaliser, suv.decay_factor(elapsed, half_life_s)),
        )
    out = np.empty(n, dtype=np.float64)
    for i, s in enumerate(slices):
        elapsed = (_frame_time(s, start, half_life_s) - injected).total_seconds()
        out[i] = suv.bqml_to_suv_factor(dose_bq, normaliser, suv.decay_factor(elapsed, half_life_s))
    return out
