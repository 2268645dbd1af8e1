"""Scan start and frame times: a table of header cases with hand-computed decay factors.

The principle under test: the time the SUV decay correction refers to is never after the
acquisition began (PS3.3 C.8.9.4.1.5: FrameReferenceTime is the offset from the series
reference time of the moment the pixel values occurred). Each case modifies a copy of DRO_0_0
(20 slices, background 3600 Bq/ml, 368.08 MBq, 70 kg) and states, by hand, the time the
decay correction must use; the expected background SUV follows from it alone:

    SUV = 3600 Bq/ml x 70000 g / (368.08e6 Bq x 2^(-(t_ref - t_injection) / T_half))
"""

from __future__ import annotations

import copy
import math
from datetime import datetime, timedelta
from functools import cache

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.image.volume import load_pet_suv
from tests.data_archives import unpack

BACKGROUND_BQML = 3600.0
DOSE_BQ = 368.08e6
WEIGHT_G = 70000.0

# (nuclide name as written in Radiopharmaceutical, SNOMED CT code, half-life in s)
NUCLIDES = {
    "F-18": ("Fluorodeoxyglucose F^18^", "77004003", 6586.2),
    "Cu-60": ("Cu-60 ATSM", "425364008", 1422.0),
    "Cu-62": ("Cu-62 ATSM", "422934004", 580.0),
    "Cu-64": ("Cu-64 ATSM", "3932008", 45721.0),
}

INJECTION = datetime(2025, 1, 1, 12, 0, 0)
GE_ACQUISITION = datetime(2025, 1, 1, 13, 3, 48, 234000)


@cache
def _dro() -> tuple[Dataset, ...]:
    folder = unpack("suv_dro_oncoray") / "DRO" / "DRO_0_0" / "PT"
    return tuple(pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm")))


def _t_eff(duration_s: float, half_life_s: float) -> float:
    """Decay-weighted frame mid-time, written out independently of quant.suv.factors."""
    lam = math.log(2) / half_life_s
    return math.log(lam * duration_s / (1 - math.exp(-lam * duration_s))) / lam


def _series(
    nuclide: str,
    *,
    series_time: str,
    acquisition_times: list[str],
    frame_reference_ms: list[float] | float,
    duration_ms: float,
    decay_correction: str = "START",
) -> list[Dataset]:
    """Copies of DRO_0_0 with the given timing, nuclide and an injection at 12:00:00."""
    name, code, half_life = NUCLIDES[nuclide]
    # in the order of the volume's slices (ascending along the normal, here z)
    datasets = sorted(
        (copy.deepcopy(ds) for ds in _dro()), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    references = (
        frame_reference_ms
        if isinstance(frame_reference_ms, list)
        else [frame_reference_ms] * len(datasets)
    )
    for i, ds in enumerate(datasets):
        ds.SeriesDate = ds.AcquisitionDate = ds.StudyDate = "20250101"
        ds.SeriesTime = series_time
        ds.StudyTime = "115000"
        ds.AcquisitionTime = acquisition_times[i % len(acquisition_times)]
        ds.FrameReferenceTime = references[i]
        ds.ActualFrameDuration = int(duration_ms)
        ds.DecayCorrection = decay_correction
        item = ds.RadiopharmaceuticalInformationSequence[0]
        item.Radiopharmaceutical = name
        item.RadionuclideHalfLife = str(half_life)
        item.RadiopharmaceuticalStartDateTime = INJECTION.strftime("%Y%m%d%H%M%S")
        if "RadiopharmaceuticalStartTime" in item:
            del item.RadiopharmaceuticalStartTime
        nuclide_code = Dataset()
        nuclide_code.CodeValue, nuclide_code.CodingSchemeDesignator = code, "SCT"
        nuclide_code.CodeMeaning = nuclide
        item.RadionuclideCodeSequence = [nuclide_code]
    return datasets


def _expected_suv(reference: datetime, half_life_s: float) -> float:
    elapsed = (reference - INJECTION).total_seconds()
    return BACKGROUND_BQML * WEIGHT_G / (DOSE_BQ * 2 ** (-elapsed / half_life_s))


def _background_per_slice(datasets: list[Dataset]) -> tuple[np.ndarray, datetime | None, list]:
    """Median SUV of each slice's non-zero voxels (NaN for an empty slice), the scan start and
    the warnings."""
    volume = load_pet_suv(datasets)
    array = sitk.GetArrayFromImage(volume.suv)
    medians = np.array([float(np.median(s[s > 0])) if (s > 0).any() else np.nan for s in array])
    return medians, volume.facts.scan_reference_time, list(volume.facts.warnings)


def _assert_background(medians: np.ndarray, expected: float, rtol: float) -> None:
    finite = medians[np.isfinite(medians)]
    assert finite.size >= 10
    np.testing.assert_allclose(finite, expected, rtol=rtol)


# --- the GE-style case of issue 19 ----------------------------------------------------------


@pytest.mark.parametrize("nuclide", list(NUCLIDES))
def test_frame_reference_time_zero_takes_the_acquisition_start(nuclide: str) -> None:
    """SeriesTime 13:49:18 after AcquisitionTime 13:03:48.234, FrameReferenceTime 0, 180 s
    frames: the factor comes from 13:03:48.234 (the formula would give 13:05:18.09)."""
    half_life = NUCLIDES[nuclide][2]
    datasets = _series(
        nuclide,
        series_time="134918",
        acquisition_times=["130348.234"],
        frame_reference_ms=0.0,
        duration_ms=180000,
    )
    medians, start, warnings = _background_per_slice(datasets)
    assert start == GE_ACQUISITION
    _assert_background(medians, _expected_suv(GE_ACQUISITION, half_life), rtol=1e-3)
    assert any("no mid-frame reference" in w for w in warnings), warnings


def test_the_old_formula_would_have_been_wrong_by_the_issue_figures() -> None:
    """The size of what is fixed: 90 s late is +0.95 % (18F), +4.5 % (60Cu), +11.4 % (62Cu)."""
    late = (GE_ACQUISITION - INJECTION).total_seconds() + _t_eff(180, 6586.2)
    for nuclide, figure in (("F-18", 0.0095), ("Cu-60", 0.045), ("Cu-62", 0.114)):
        half_life = NUCLIDES[nuclide][2]
        early = (GE_ACQUISITION - INJECTION).total_seconds()
        ratio = 2 ** ((late - early) / half_life) - 1
        assert ratio == pytest.approx(figure, abs=0.002)


# --- the rest of the table ------------------------------------------------------------------


CASES = {
    # name: (series_time, acquisition_times, frame_reference_ms, duration_ms, reference time)
    "series time before acquisition: series time": (
        "130000",
        ["130348.234"],
        0.0,
        180000,
        datetime(2025, 1, 1, 13, 0, 0),
    ),
    "series time equal to acquisition": (
        "130348.234",
        ["130348.234"],
        90000.0,
        180000,
        GE_ACQUISITION,
    ),
    "series time after, reference below the mid-time (simple D/2 of a long frame)": (
        "134918",
        ["130348.234"],
        "half",
        1800000,
        GE_ACQUISITION,
    ),
    "series time after, reference at the decay-weighted mid-time": (
        "134918",
        ["130348.234"],
        "t_eff",
        180000,
        GE_ACQUISITION,
    ),
    "series time after, first frame began 60 s after the scan started": (
        "134918",
        ["130348.234"],
        "t_eff+60",
        180000,
        datetime(2025, 1, 1, 13, 2, 48, 234000),
    ),
    "series time after, three bed positions, reference 0": (
        "134918",
        ["130348.234", "130648.234", "130948.234"],
        0.0,
        180000,
        GE_ACQUISITION,
    ),
}


def _frame_reference(spec: object, duration_ms: float, half_life: float) -> float:
    if spec == "half":
        return duration_ms / 2.0
    if spec == "t_eff":
        return _t_eff(duration_ms / 1000.0, half_life) * 1000.0
    if spec == "t_eff+60":
        return _t_eff(duration_ms / 1000.0, half_life) * 1000.0 + 60000.0
    assert isinstance(spec, float)
    return spec


@pytest.mark.parametrize("nuclide", list(NUCLIDES))
@pytest.mark.parametrize("case", list(CASES))
def test_scan_start_table(case: str, nuclide: str) -> None:
    series_time, acquisitions, reference_spec, duration_ms, reference = CASES[case]
    half_life = NUCLIDES[nuclide][2]
    reference_ms = _frame_reference(reference_spec, duration_ms, half_life)
    datasets = _series(
        nuclide,
        series_time=series_time,
        acquisition_times=acquisitions,
        frame_reference_ms=reference_ms,
        duration_ms=duration_ms,
    )
    medians, start, _ = _background_per_slice(datasets)
    first_acquisition = min(
        datetime.strptime("20250101" + a, "%Y%m%d%H%M%S.%f") for a in acquisitions
    )
    assert start is not None and start <= first_acquisition
    if reference_spec == "half":
        # D/2 > t_eff: the back-computed start lies (D/2 - t_eff) before the acquisition
        early_s = duration_ms / 2000.0 - _t_eff(duration_ms / 1000.0, half_life)
        assert early_s > 0
        reference = first_acquisition - _seconds(early_s)
    _assert_background(medians, _expected_suv(reference, half_life), rtol=1e-3)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


# --- DecayCorrection NONE: each frame from its own time -------------------------------------


@pytest.mark.parametrize("nuclide", ["F-18", "Cu-62"])
def test_no_decay_correction_frame_reference_zero_uses_each_frames_mid_time(nuclide: str) -> None:
    """Three 180 s bed positions, FrameReferenceTime 0 on all: each bed is decayed to its own
    AcquisitionDateTime + t_eff, not to the scan start."""
    half_life = NUCLIDES[nuclide][2]
    acquisitions = ["130348.234", "130648.234", "130948.234"]
    datasets = _series(
        nuclide,
        series_time="130348.234",
        acquisition_times=acquisitions,
        frame_reference_ms=0.0,
        duration_ms=180000,
        decay_correction="NONE",
    )
    medians, _, _ = _background_per_slice(datasets)
    t_eff = _t_eff(180.0, half_life)
    for i, median in enumerate(medians):
        acquired = datetime.strptime("20250101" + acquisitions[i % 3], "%Y%m%d%H%M%S.%f")
        expected = _expected_suv(acquired + _seconds(t_eff), half_life)
        if np.isfinite(median):
            np.testing.assert_allclose(median, expected, rtol=1e-3)


def test_no_decay_correction_frame_reference_inside_the_frame_is_used() -> None:
    """FrameReferenceTime that points inside its frame is the frame's time (150 s into a
    300 s frame that began at the scan start)."""
    acquisitions = ["130000"]
    datasets = _series(
        "F-18",
        series_time="130000",
        acquisition_times=acquisitions,
        frame_reference_ms=150000.0,
        duration_ms=300000,
        decay_correction="NONE",
    )
    medians, _, _ = _background_per_slice(datasets)
    expected = _expected_suv(datetime(2025, 1, 1, 13, 2, 30), 6586.2)
    _assert_background(medians, expected, rtol=1e-6)
