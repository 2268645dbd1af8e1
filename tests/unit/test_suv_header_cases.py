"""Header cases built by modifying copies of DRO_0_0, with exact expected values.

DRO_0_0: 20 slices of 256x256, background 3600 Bq/ml (SUVbw 1.00 with 368.08 MBq of F-18
injected at 10:00 and a scan at 11:00, 70 kg, 1.75 m, sex O), hot sphere 4x, cold sphere 0.2x.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import date, datetime, time
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.errors import QuantificationError
from quant.image.volume import PetVolume, load_pet_suv
from quant.suv.pet_times import infer_injection_datetime
from service.cli.suv_command import run_suv
from tests.data_archives import unpack
from tests.dicom_fixtures import enhanced_from

BACKGROUND_BQML = 3600.0
DOSE_BQ = 368.08e6
WEIGHT_G = 70000.0
F18 = 6586.2
CU64 = 45721.0


@cache
def _dro(dro_id: str) -> tuple[Dataset, ...]:
    folder = unpack("suv_dro_oncoray") / "DRO" / dro_id / "PT"
    return tuple(pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm")))


def _copy(dro_id: str = "DRO_0_0") -> list[Dataset]:
    return [copy.deepcopy(ds) for ds in _dro(dro_id)]


def _rp(ds: Dataset) -> Dataset:
    return ds.RadiopharmaceuticalInformationSequence[0]


def _background(volume: PetVolume) -> float:
    """SUV of the background (the median of the non-zero voxels)."""
    array = sitk.GetArrayFromImage(volume.suv)
    return float(np.median(array[array > 0]))


def _set_all(datasets: list[Dataset], **values: object) -> None:
    for ds in datasets:
        for keyword, value in values.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)


def _set_rp(datasets: list[Dataset], **values: object) -> None:
    for ds in datasets:
        _set_all([_rp(ds)], **values)


def _copper64(datasets: list[Dataset]) -> None:
    nuclide = Dataset()
    nuclide.CodeValue, nuclide.CodingSchemeDesignator = "3932008", "SCT"
    nuclide.CodeMeaning = "^64^Copper"
    _set_rp(datasets, Radiopharmaceutical="Cu-64 ATSM", RadionuclideHalfLife="45721")
    for ds in datasets:
        _rp(ds).RadionuclideCodeSequence = [nuclide]


def _scan_at(datasets: list[Dataset], day: str, clock: str) -> None:
    _set_all(
        datasets,
        SeriesDate=day,
        AcquisitionDate=day,
        StudyDate=day,
        SeriesTime=clock,
        AcquisitionTime=clock,
        StudyTime=clock,
    )


# --- 64Cu delayed scans: injection in the evening, scan the next day ---------------------------


@pytest.mark.parametrize("which", ["StartDateTime only", "StartTime only"])
def test_cu64_next_day_scan(which: str) -> None:
    datasets = _copy()
    _copper64(datasets)
    _scan_at(datasets, "20250102", "200000")
    if which == "StartDateTime only":
        _set_rp(
            datasets,
            RadiopharmaceuticalStartDateTime="20250101210000",
            RadiopharmaceuticalStartTime=None,
        )
    else:
        _set_rp(
            datasets, RadiopharmaceuticalStartDateTime=None, RadiopharmaceuticalStartTime="210000"
        )
    volume = load_pet_suv(datasets)
    expected = BACKGROUND_BQML * WEIGHT_G / (DOSE_BQ * 2 ** (-23 * 3600 / CU64))
    np.testing.assert_allclose(_background(volume), expected, rtol=1e-6)
    assert volume.facts.uptake_time_s == pytest.approx(23 * 3600)
    assert volume.facts.injection_time == datetime(2025, 1, 1, 21, 0)
    assert volume.facts.radionuclide == "Cu-64"
    assert volume.facts.half_life_s == CU64
    inferred = any("inferred" in w for w in volume.facts.warnings)
    assert inferred is (which == "StartTime only")


def test_cu64_scan_just_after_the_injection_time_of_day_reads_as_next_day() -> None:
    datasets = _copy()
    _copper64(datasets)
    _scan_at(datasets, "20250102", "201000")
    _set_rp(datasets, RadiopharmaceuticalStartDateTime=None, RadiopharmaceuticalStartTime="200000")
    volume = load_pet_suv(datasets)
    assert volume.facts.uptake_time_s == pytest.approx(24 * 3600 + 600)


def test_delayed_scan_in_the_study_of_the_early_scan() -> None:
    datasets = _copy()
    _copper64(datasets)
    _scan_at(datasets, "20250102", "183000")
    _set_all(datasets, StudyDate="20250101", StudyTime="185500")
    _set_rp(datasets, RadiopharmaceuticalStartDateTime=None, RadiopharmaceuticalStartTime="180000")
    volume = load_pet_suv(datasets)
    assert volume.facts.injection_time == datetime(2025, 1, 1, 18, 0)
    expected = BACKGROUND_BQML * WEIGHT_G / (DOSE_BQ * 2 ** (-24.5 * 3600 / CU64))
    np.testing.assert_allclose(_background(volume), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("start", "scan", "window", "study", "expected"),
    [
        (time(10), datetime(2025, 1, 1, 11), (2700.0, 5400.0), None, datetime(2025, 1, 1, 10)),
        (
            time(23, 30),
            datetime(2025, 1, 2, 0, 30),
            (2700.0, 5400.0),
            None,
            datetime(2025, 1, 1, 23, 30),
        ),
        (time(21), datetime(2025, 1, 2, 20), (1800.0, 93600.0), None, datetime(2025, 1, 1, 21)),
        (time(20), datetime(2025, 1, 2, 20, 10), (1800.0, 93600.0), None, datetime(2025, 1, 1, 20)),
        (
            time(18),
            datetime(2025, 1, 2, 18, 30),
            (1800.0, 93600.0),
            datetime(2025, 1, 1, 18, 55),
            datetime(2025, 1, 1, 18),
        ),
        (
            time(18),
            datetime(2025, 1, 2, 18, 30),
            (1800.0, 93600.0),
            None,
            datetime(2025, 1, 2, 18),
        ),  # ambiguous without the study time: same day wins
        (time(9), datetime(2025, 1, 1, 12), (2700.0, 5400.0), None, datetime(2025, 1, 1, 9)),
        (time(9), datetime(2025, 1, 1, 12), None, None, datetime(2025, 1, 1, 9)),
    ],
)
def test_infer_injection_datetime(
    start: time,
    scan: datetime,
    window: tuple[float, float] | None,
    study: datetime | None,
    expected: datetime,
) -> None:
    got = infer_injection_datetime(start, scan, uptake_window_s=window, study_datetime=study)
    assert got == expected


# --- scan start --------------------------------------------------------------------------------


def test_series_time_hours_after_acquisition_is_back_computed() -> None:
    datasets = _copy()
    _set_all(datasets, SeriesTime="150000")  # re-reconstructed 4 h later
    volume = load_pet_suv(datasets)
    # start = 11:00:00 - FrameReferenceTime 150 s + t_eff(300 s) = 10:59:59.97...
    lam = np.log(2) / F18
    t_eff = np.log(lam * 300 / -np.expm1(-lam * 300)) / lam
    elapsed = 3600.0 - 150.0 + t_eff
    expected = BACKGROUND_BQML * WEIGHT_G / (DOSE_BQ * 2 ** (-elapsed / F18))
    np.testing.assert_allclose(_background(volume), expected, rtol=1e-6)
    assert volume.facts.scan_reference_time is not None
    assert volume.facts.scan_reference_time.date() == date(2025, 1, 1)
    assert any("back-computed" in w for w in volume.facts.warnings)


def test_series_time_after_acquisition_uses_ge_private_time() -> None:
    datasets = _copy()
    for ds in datasets:
        ds.SeriesTime = "150000"
        ds.AcquisitionTime = "113000"
        block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
        block.add_new(0x0D, "DT", "20250101110000")
    volume = load_pet_suv(datasets)
    np.testing.assert_allclose(_background(volume), 1.0, rtol=2e-4)
    assert volume.facts.scan_reference_time == datetime(2025, 1, 1, 11, 0)


# --- units -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("element", "factor", "slope", "expected"),
    [
        (0x00, 1 / 3600, 1.0, 1.0),  # (7053,1000) SUVbw per rescaled value
        (0x00, 1 / 7200, 2.0, 1.0),
        (0x09, 0.5, 2.0, 1.0),  # (7053,1009) Bq/ml per rescaled value
        (0x09, 1.0, 1.0, 1.0),
    ],
)
def test_philips_counts(element: int, factor: float, slope: float, expected: float) -> None:
    datasets = _copy()
    for ds in datasets:
        ds.Units = "CNTS"
        ds.Manufacturer = "Philips Medical Systems"
        ds.RescaleSlope = str(slope)
        ds.private_block(0x7053, "Philips PET Private Group", create=True).add_new(
            element, "DS", f"{factor:.10g}"
        )
    volume = load_pet_suv(datasets)
    np.testing.assert_allclose(_background(volume), expected, rtol=2e-4)


def test_counts_without_a_factor_are_refused() -> None:
    datasets = _copy()
    _set_all(datasets, Units="CNTS")
    with pytest.raises(QuantificationError, match=r"\(7053,1000\)"):
        load_pet_suv(datasets)


def test_admin_decay_correction_does_not_decay_the_dose() -> None:
    datasets = _copy()
    _set_all(datasets, DecayCorrection="ADMIN")
    volume = load_pet_suv(datasets)
    np.testing.assert_allclose(_background(volume), BACKGROUND_BQML * WEIGHT_G / DOSE_BQ, rtol=1e-6)


def test_admin_needs_no_injection_time() -> None:
    datasets = _copy()
    _set_all(datasets, DecayCorrection="ADMIN")
    _set_rp(datasets, RadiopharmaceuticalStartDateTime=None, RadiopharmaceuticalStartTime=None)
    volume = load_pet_suv(datasets)
    np.testing.assert_allclose(_background(volume), BACKGROUND_BQML * WEIGHT_G / DOSE_BQ, rtol=1e-6)
    assert volume.facts.injection_time is None


def test_lean_body_mass_request_on_bqml() -> None:
    bw = load_pet_suv(_copy()).facts.scale_factor
    lbm = load_pet_suv(_copy(), suv_type="LBMJAMES128").facts.scale_factor
    # sex O: mean of male 56.52 kg and female 51.22 kg
    np.testing.assert_allclose(lbm / bw, 53.87 / 70.0, rtol=1e-12)


# --- Enhanced PET multi-frame ------------------------------------------------------------------


def test_enhanced_pet_multiframe_matches_the_single_frame_series() -> None:
    datasets = _copy("DRO_1_0")  # slice-wise RescaleSlope
    order = [int(i) for i in np.random.default_rng(7).permutation(len(datasets))]
    enhanced = enhanced_from(datasets, order)
    volume = load_pet_suv([enhanced])
    classic = load_pet_suv(_copy("DRO_1_0"))
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(volume.suv), sitk.GetArrayFromImage(classic.suv), rtol=1e-6
    )
    assert volume.suv.GetOrigin() == pytest.approx(classic.suv.GetOrigin())
    assert volume.suv.GetSpacing() == pytest.approx(classic.suv.GetSpacing())
    assert sorted(volume.frame_numbers) == list(range(1, 21))
    positions = [
        float(datasets[order[f - 1]].ImagePositionPatient[2]) for f in volume.frame_numbers
    ]
    assert positions == sorted(positions)


def test_enhanced_pet_without_decay_correction_uses_frame_reference_times() -> None:
    datasets = _copy()
    enhanced = enhanced_from(datasets, list(range(len(datasets))))
    enhanced.DecayCorrection = "NONE"
    volume = load_pet_suv([enhanced])
    # pixels are taken as the activity at FrameReferenceDateTime 11:02:30 (150 s after start)
    expected = BACKGROUND_BQML * WEIGHT_G / (DOSE_BQ * 2 ** (-3750.0 / F18))
    np.testing.assert_allclose(_background(volume), expected, rtol=1e-6)


# --- refusals ----------------------------------------------------------------------------------


def _drop(keyword: str) -> list[Dataset]:
    datasets = _copy()
    _set_all(datasets, **{keyword: None})
    return datasets


def _drop_rp(*keywords: str) -> list[Dataset]:
    datasets = _copy()
    _set_rp(datasets, **dict.fromkeys(keywords))
    return datasets


def _mixed_units() -> list[Dataset]:
    datasets = _copy()
    datasets[3].Units = "CNTS"
    return datasets


def _late_injection() -> list[Dataset]:
    datasets = _copy()
    _set_rp(datasets, RadiopharmaceuticalStartDateTime="20250101120000")
    return datasets


REFUSALS = {
    "missing weight": (lambda: _drop("PatientWeight"), r"PatientWeight \(0010,1030\)"),
    "missing dose": (lambda: _drop_rp("RadionuclideTotalDose"), r"RadionuclideTotalDose"),
    "missing injection time": (
        lambda: _drop_rp("RadiopharmaceuticalStartDateTime", "RadiopharmaceuticalStartTime"),
        r"RadiopharmaceuticalStartTime \(0018,1072\) missing",
    ),
    "negative uptake": (_late_injection, r"negative uptake time"),
    "mixed units": (_mixed_units, r"Units \(0054,1001\) differs between slices"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusal(case: str) -> None:
    build, message = REFUSALS[case]
    with pytest.raises(QuantificationError, match=message):
        load_pet_suv(build())


def test_lbm_refused_without_height() -> None:
    with pytest.raises(QuantificationError, match=r"PatientSize \(0010,1020\)"):
        load_pet_suv(_drop("PatientSize"), suv_type="LBMJANMA")


def _write(datasets: list[Dataset], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(datasets):
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_suv_command_refusal_exits_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, message = REFUSALS[case]
    _write(build(), tmp_path / "pet")
    assert run_suv([str(tmp_path), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert re.search(message, error)


# --- suspicious but usable: warnings -----------------------------------------------------------


def test_dose_in_mbq_warns_and_converts() -> None:
    datasets = _copy()
    _set_rp(datasets, RadionuclideTotalDose="368.08")
    volume = load_pet_suv(datasets)
    np.testing.assert_allclose(_background(volume), 1.0, rtol=2e-4)
    assert volume.facts.injected_dose_bq == pytest.approx(DOSE_BQ)
    assert any("MBq" in w for w in volume.facts.warnings)


def test_half_life_mismatch_warns_and_uses_the_header() -> None:
    datasets = _copy()
    _copper64(datasets)
    _set_rp(datasets, RadionuclideHalfLife="6586.2", Radiopharmaceutical="ATSM")
    volume = load_pet_suv(datasets)
    np.testing.assert_allclose(_background(volume), 1.0, rtol=2e-4)
    assert volume.facts.half_life_s == F18
    assert any("disagrees with Cu-64" in w for w in volume.facts.warnings)


def test_weight_in_grams_warns_and_converts() -> None:
    datasets = _copy()
    _set_all(datasets, PatientWeight="70000")
    volume = load_pet_suv(datasets)
    np.testing.assert_allclose(_background(volume), 1.0, rtol=2e-4)
    assert volume.facts.patient_weight_kg == 70.0
    assert any("grams" in w for w in volume.facts.warnings)


def test_uptake_outside_the_tracer_window_warns() -> None:
    datasets = _copy()
    _set_rp(datasets, RadiopharmaceuticalStartDateTime="20250101070000")
    volume = load_pet_suv(datasets)
    expected = BACKGROUND_BQML * WEIGHT_G / (DOSE_BQ * 2 ** (-4 * 3600 / F18))  # 4 h uptake
    np.testing.assert_allclose(_background(volume), expected, rtol=1e-6)
    assert any("outside the usual" in w for w in volume.facts.warnings)
