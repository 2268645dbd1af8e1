"""The 17 SUV digital reference objects (oncoray/suv_computation) end to end.

Every DRO encodes the same phantom (SUVbw max 4.00, median 1.00 inside the ROI, min 0.20) with
a different header pitfall. DRO_2_3 stores SUVbsa rounded to 0.01, so its right answer is the
back-computation of the stored values, SUVbw = SUVbsa x W / BSA (Du Bois).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from quant.image.contours import rasterise_rtstruct
from quant.image.volume import load_pet_suv
from service.cli.suv_command import run_suv
from tests.data_archives import unpack

DRO_IDS = [
    "DRO_0_0",
    "DRO_1_0",
    "DRO_2_0",
    "DRO_2_1",
    "DRO_2_2",
    "DRO_2_3",
    "DRO_2_4",
    "DRO_2_5",
    "DRO_3_0",
    "DRO_3_1",
    "DRO_3_2",
    "DRO_3_3",
    "DRO_3_4",
    "DRO_4_0",
    "DRO_4_1",
    "DRO_4_2",
    "DRO_5_0",
]
RTOL = 0.005


def _dro(dro_id: str) -> Path:
    return unpack("suv_dro_oncoray") / "DRO" / dro_id


def _read(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def _expected(dro_id: str, pet: list[pydicom.Dataset], mask: np.ndarray) -> dict[str, float]:
    """(max, median, min) the DRO must give inside its ROI."""
    if dro_id != "DRO_2_3":
        return {"max": 4.0, "median": 1.0, "min": 0.2}
    # SUVbsa as stored (cm2/ml), back to SUVbw with W = 70 kg, H = 175 cm read from the header.
    ordered = sorted(pet, key=lambda ds: float(ds.ImagePositionPatient[2]))
    stored = np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in ordered])[mask]
    weight_g = float(ordered[0].PatientWeight) * 1000.0
    height_cm = float(ordered[0].PatientSize) * 100.0
    bsa_cm2 = 0.007184 * height_cm**0.725 * (weight_g / 1000.0) ** 0.425 * 1e4
    scale = weight_g / bsa_cm2
    return {
        "max": float(stored.max()) * scale,
        "median": float(np.median(stored)) * scale,
        "min": float(stored.min()) * scale,
    }


@pytest.mark.parametrize("dro_id", DRO_IDS)
def test_dro_through_load_pet_suv(dro_id: str) -> None:
    folder = _dro(dro_id)
    pet = _read(folder / "PT")
    volume = load_pet_suv(pet)
    rtstruct = pydicom.dcmread(next((folder / "RS").glob("*.dcm")))
    mask = rasterise_rtstruct(rtstruct, volume.suv)["region_1"]
    values = sitk.GetArrayFromImage(volume.suv)[mask]
    expected = _expected(dro_id, pet, mask)
    assert mask.any()
    np.testing.assert_allclose(values.max(), expected["max"], rtol=RTOL)
    np.testing.assert_allclose(np.median(values), expected["median"], rtol=RTOL)
    np.testing.assert_allclose(values.min(), expected["min"], rtol=RTOL)
    assert volume.suv.GetSize() == (256, 256, 20)
    assert volume.suv.GetSpacing() == pytest.approx((4.0, 4.0, 4.0))
    assert len(volume.sop_instance_uids) == 20


def test_dro_2_3_back_computation_is_near_the_rounded_phantom() -> None:
    folder = _dro("DRO_2_3")
    pet = _read(folder / "PT")
    volume = load_pet_suv(pet)
    mask = rasterise_rtstruct(pydicom.dcmread(next((folder / "RS").glob("*.dcm"))), volume.suv)
    values = sitk.GetArrayFromImage(volume.suv)[mask["region_1"]]
    np.testing.assert_allclose(
        [values.max(), np.median(values), values.min()], [3.977, 0.985, 0.189], atol=0.001
    )


def test_dro_warnings_name_the_pitfall() -> None:
    dose = load_pet_suv(_read(_dro("DRO_3_0") / "PT")).facts
    assert any("MBq" in w for w in dose.warnings)
    late_series = load_pet_suv(_read(_dro("DRO_3_2") / "PT")).facts
    assert any("back-computed" in w for w in late_series.warnings)
    midnight = load_pet_suv(_read(_dro("DRO_4_2") / "PT")).facts
    assert midnight.uptake_time_s == pytest.approx(3600.0)
    assert midnight.injection_time is not None and midnight.injection_time.day == 1
    baseline = load_pet_suv(_read(_dro("DRO_0_0") / "PT")).facts
    assert baseline.warnings == ()


@pytest.mark.parametrize("dro_id", DRO_IDS)
def test_dro_through_suv_command(dro_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _dro(dro_id)
    assert run_suv([str(folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    roi = doc["rois"]["region_1"]
    pet = _read(folder / "PT")
    volume = load_pet_suv(pet)
    mask = rasterise_rtstruct(pydicom.dcmread(next((folder / "RS").glob("*.dcm"))), volume.suv)
    expected = _expected(dro_id, pet, mask["region_1"])
    for key in ("max", "median", "min"):
        np.testing.assert_allclose(roi[key], expected[key], rtol=RTOL)
    np.testing.assert_allclose(roi["volume_ml"], mask["region_1"].sum() * 0.064, rtol=1e-9)
    np.testing.assert_allclose(doc["stats"]["max"], expected["max"], rtol=RTOL)
    assert doc["stats"]["min"] == pytest.approx(0.0)
    assert doc["facts"]["suv_type"] == "BW"
