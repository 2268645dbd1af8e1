"""Times of a PET series: DICOM date/time parsing, scan start, injection, frame times.

Rules (DICOM PS3.3 C.8.9.1 / C.8.9.4, QIBA FDG profile appendix G, IBSI-style SUV manual):

- Scan start: SeriesDate/SeriesTime, unless it is after the earliest AcquisitionDate/Time
  (a re-reconstructed series); then GE private (0009,100D) (creator ``GEMS_PETD_01``) or
  Siemens private (0071,1022) (creator ``SIEMENS MED PT``), else it is back-computed from the
  earliest slice: ``AcquisitionDateTime - FrameReferenceTime + t_eff(ActualFrameDuration)``.
- The scan start is never after the earliest AcquisitionDateTime: the acquisition cannot
  begin before the scan did. FrameReferenceTime (0054,1300) is the time the pixel values
  occurred, as an offset from the series reference time (PS3.3 C.8.9.4.1.5); for the first
  frame it is normally its (decay-weighted) mid-time. A value of 0, or any value smaller than
  the frame's decay-weighted mid-time, means the vendor did not encode a mid-frame reference:
  the back-computation would then put the start inside the first frame, so the earliest
  AcquisitionDateTime is taken instead (and a private time after it is not believed either).
- Injection: RadiopharmaceuticalStartDateTime; otherwise RadiopharmaceuticalStartTime with
  the date inferred by :func:`infer_injection_datetime`.
- DecayCorrection NONE: each frame refers to its own time (:func:`frame_time`): scan start +
  FrameReferenceTime when that lies inside the frame, else the frame's AcquisitionDateTime +
  its decay-weighted mid-time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from pydicom.dataset import Dataset

from quant.errors import QuantificationError
from quant.suv import factors as suv
from quant.suv import header_values as hv
from quant.suv.tracers import TracerProfile

GE_CREATOR = "GEMS_PETD_01"
SIEMENS_CREATOR = "SIEMENS MED PT"

STUDY_START_MARGIN_S = 2 * 3600.0
"""How long after StudyDate/StudyTime an inferred injection may lie (date inference)."""


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


def parse_date(value: object) -> date | None:
    """DICOM DA (``YYYYMMDD``, or legacy ``YYYY.MM.DD``) as a date, or None."""
    text = hv.text(value)
    if text is None:
        return None
    text = text.replace(".", "").replace("-", "")
    try:
        return datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def parse_time(value: object) -> time | None:
    """DICOM TM (``HHMMSS.FFFFFF``, shorter forms, or legacy ``HH:MM:SS``) as a time, or None."""
    text = hv.text(value)
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
    text = hv.text(value)
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
    first_acquisition = earliest.acquisition_datetime if earliest is not None else None
    if series_dt is not None and (first_acquisition is None or series_dt <= first_acquisition):
        return series_dt, None
    for group, creator, offset, label in (
        (0x0009, GE_CREATOR, 0x0D, "GE private (0009,100D)"),
        (0x0071, SIEMENS_CREATOR, 0x22, "Siemens private (0071,1022)"),
    ):
        private = parse_datetime(hv.private_value(series, group, creator, offset))
        if private is None:
            continue
        if first_acquisition is not None and private > first_acquisition:
            return first_acquisition, (
                f"SeriesTime and {label} ({private.isoformat()}) are both after the earliest "
                f"AcquisitionTime; scan start taken as the earliest AcquisitionDateTime: "
                f"{first_acquisition.isoformat()}"
            )
        return private, (
            f"SeriesTime is after the earliest AcquisitionTime; scan start taken from "
            f"{label}: {private.isoformat()}"
        )
    if earliest is None or first_acquisition is None:
        raise QuantificationError(
            "SeriesDate/SeriesTime (0008,0021/0031) and AcquisitionDate/AcquisitionTime "
            "(0008,0022/0032) missing: the scan start time is unknown"
        )
    where = "missing" if series_dt is None else f"{series_dt.isoformat()} is after acquisition"
    start, how = _back_computed_start(earliest, first_acquisition, half_life_s)
    return start, f"SeriesTime {where}; scan start {how}: {start.isoformat()}"


def _back_computed_start(
    earliest: SliceHeader, first_acquisition: datetime, half_life_s: float | None
) -> tuple[datetime, str]:
    """Scan start from the earliest slice, never after its AcquisitionDateTime.

    ``AcquisitionDateTime - FrameReferenceTime + t_eff(ActualFrameDuration)``, the first frame
    being referenced at its decay-weighted mid-time; a FrameReferenceTime smaller than that
    mid-time (0 when the vendor encodes none) would put the start after the acquisition began,
    so the earliest AcquisitionDateTime is used instead.
    """
    reference_ms = earliest.frame_reference_time_ms
    duration_ms = earliest.frame_duration_ms
    if reference_ms is None or duration_ms is None or not half_life_s:
        return first_acquisition, "taken as the earliest AcquisitionDateTime"
    mid_s = suv.frame_effective_time_s(duration_ms / 1000.0, half_life_s)
    offset_s = mid_s - reference_ms / 1000.0
    if offset_s > 0:
        return first_acquisition, (
            f"taken as the earliest AcquisitionDateTime (FrameReferenceTime {reference_ms:g} ms "
            f"is smaller than the frame's decay-weighted mid-time {mid_s * 1000.0:.0f} ms, so "
            "it is no mid-frame reference and back-computing from it would put the start "
            "after the acquisition began)"
        )
    start = first_acquisition + timedelta(seconds=offset_s)
    return start, "back-computed from AcquisitionTime, FrameReferenceTime and ActualFrameDuration"


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


def injection_datetime(
    item: Dataset,
    series: Dataset,
    start: datetime,
    tracer: TracerProfile,
    warnings: list[str],
) -> datetime | None:
    """Injection time: RadiopharmaceuticalStartDateTime, else StartTime with an inferred date.

    Parameters
    ----------
    item
        The RadiopharmaceuticalInformationSequence item.
    series
        A dataset with StudyDate/StudyTime.
    start
        Scan start (see :func:`scan_start`).
    tracer
        Its uptake window guides the date inference.
    warnings
        A warning is appended when the inferred date differs from the scan date.

    Returns
    -------
    datetime or None
        None when neither attribute is present.
    """
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


def frame_time(s: SliceHeader, start: datetime, half_life_s: float) -> datetime:
    """Time a frame refers to (DecayCorrection NONE).

    FrameReferenceDateTime; else scan start + FrameReferenceTime when that time lies inside
    the frame (after its AcquisitionDateTime, at most ActualFrameDuration later) or the frame's
    times are unknown; else AcquisitionDateTime + the decay-weighted frame mid-time (a
    FrameReferenceTime of 0, or one outside the frame, is no reference to the frame's counts).

    Raises
    ------
    QuantificationError
        None of these is known.
    """
    if s.frame_reference_datetime is not None:
        return s.frame_reference_datetime
    own_mid: datetime | None = None
    if s.acquisition_datetime is not None and s.frame_duration_ms is not None:
        mid = suv.frame_effective_time_s(s.frame_duration_ms / 1000.0, half_life_s)
        own_mid = s.acquisition_datetime + timedelta(seconds=mid)
    if s.frame_reference_time_ms is not None:
        referenced = start + timedelta(seconds=s.frame_reference_time_ms / 1000.0)
        if own_mid is None or _inside_frame(referenced, s):
            return referenced
    if own_mid is not None:
        return own_mid
    raise QuantificationError(
        "FrameReferenceTime (0054,1300) missing: DecayCorrection NONE needs each frame's time "
        "(FrameReferenceTime, or AcquisitionTime with ActualFrameDuration)"
    )


FRAME_TIME_TOLERANCE_S = 1.0
"""Rounding allowed when checking that a frame's reference time lies inside the frame."""


def _inside_frame(referenced: datetime, s: SliceHeader) -> bool:
    assert s.acquisition_datetime is not None and s.frame_duration_ms is not None
    after_start = (referenced - s.acquisition_datetime).total_seconds()
    duration_s = s.frame_duration_ms / 1000.0
    if duration_s <= 0:
        return abs(after_start) <= FRAME_TIME_TOLERANCE_S
    return 0.0 < after_start <= duration_s + FRAME_TIME_TOLERANCE_S
