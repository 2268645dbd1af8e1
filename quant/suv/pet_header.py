"""The thin adapter from PET headers to SUV scale factors.

It reads attribute values from already-loaded pydicom datasets and hands plain numbers to
:mod:`quant.suv.factors`. The result is one factor per slice that turns the rescaled pixel value
(stored value x RescaleSlope + RescaleIntercept) into SUV of the requested type, plus the
:class:`~quant.results.SuvFacts` that were used.

Rules (DICOM PS3.3 C.8.9.1 / C.8.9.4, QIBA FDG profile appendix G, IBSI-style SUV manual):

- DecayCorrection START: dose decayed from injection to scan start. ADMIN: no dose decay.
  NONE: each slice is corrected from its own time (scan start + FrameReferenceTime, or
  FrameReferenceDateTime for enhanced frames): the dose is decayed to that time.
- Scan start, injection and frame times: :mod:`quant.suv.pet_times`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from quant.errors import QuantificationError
from quant.results import SuvFacts
from quant.suv import factors as suv
from quant.suv import header_values as hv
from quant.suv.nuclides import NUCLIDES, half_life_agrees
from quant.suv.patient_body import normaliser, patient_body
from quant.suv.pet_times import (
    SliceHeader,
    combine,
    frame_time,
    injection_datetime,
    parse_datetime,
    scan_start,
)
from quant.suv.tracers import identify_tracer, radiopharmaceutical_nuclide

PHILIPS_CREATOR = "Philips PET Private Group"

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


# ---------------------------------------------------------------------------------------------
# Reading values
# ---------------------------------------------------------------------------------------------


def slice_header(ds: Dataset) -> SliceHeader:
    """Per-slice values of one single-frame PET image."""
    acquisition = parse_datetime(ds.get("AcquisitionDateTime")) or combine(
        ds.get("AcquisitionDate") or ds.get("SeriesDate"), ds.get("AcquisitionTime")
    )
    return SliceHeader(
        acquisition_datetime=acquisition,
        frame_reference_time_ms=hv.number(ds.get("FrameReferenceTime")),
        frame_duration_ms=hv.number(ds.get("ActualFrameDuration")),
        philips_suv_factor=hv.number(hv.private_value(ds, 0x7053, PHILIPS_CREATOR, 0x00)),
        philips_bqml_factor=hv.number(hv.private_value(ds, 0x7053, PHILIPS_CREATOR, 0x09)),
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
                frame_duration_ms=hv.number(content.get("FrameAcquisitionDuration")),
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
            values = {hv.text(item.get(keyword)) for item in items}
            if len(values) > 1:
                shown = ", ".join(sorted(str(v) for v in values))
                tag = Tag(keyword)
                raise QuantificationError(
                    f"{prefix}{keyword} ({tag.group:04X},{tag.element:04X}) differs between "
                    f"slices ({shown}): inconsistent header, one series must have one value"
                )


# ---------------------------------------------------------------------------------------------
# Units and decay correction
# ---------------------------------------------------------------------------------------------


def _units(series: Dataset) -> str:
    units = hv.text(series.get("Units"))
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
    value = hv.text(series.get("DecayCorrection"))
    if value is not None:
        return value.upper(), None
    corrected = hv.text(series.get("DecayCorrected"))  # Enhanced PET (0018,9758)
    if corrected == "YES":
        return "START", parse_datetime(series.get("DecayCorrectionDateTime"))
    if corrected == "NO":
        return "NONE", None
    raise QuantificationError(
        "DecayCorrection (0054,1102) missing: cannot tell to which time the pixels are "
        "decay-corrected"
    )


# ---------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------


def _stored_suv_type(series: Dataset, units: str) -> str:
    stored = hv.text(series.get("SUVType"))
    if stored is None:
        return "BSA" if units == "CM2ML" else "BW"
    stored = stored.upper()
    if stored not in suv.SUV_TYPES:
        raise QuantificationError(
            f"SUVType (0054,1006) '{stored}' unknown: expected one of {', '.join(suv.SUV_TYPES)}"
        )
    return stored


def _half_life(item: Dataset, warnings: list[str]) -> tuple[float | None, str | None]:
    header = hv.number(item.get("RadionuclideHalfLife"))
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
        Requested SUV type, one of :data:`quant.suv.factors.SUV_TYPES`.

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
    patient = patient_body(series, warnings)
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
        injected = injection_datetime(item, series, start, tracer, warnings)

    if mode == "suv":
        if stored_type == requested:
            factors = multipliers
        else:
            convert = suv.convert_suv_factor(
                normaliser(stored_type, patient), normaliser(requested, patient)
            )
            factors = multipliers * convert
    else:
        raw_dose = hv.number(item.get("RadionuclideTotalDose"))
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
        body = normaliser(requested, patient)
        factors = multipliers * _activity_factors(
            decay, slices, start, injected, half_life, dose_bq, body
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
        elapsed = (frame_time(s, start, half_life_s) - injected).total_seconds()
        out[i] = suv.bqml_to_suv_factor(dose_bq, normaliser, suv.decay_factor(elapsed, half_life_s))
    return out
