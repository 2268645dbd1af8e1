"""quant.image.volume and quant.image.contours: sorting, duplicates, gaps, CT resampling, RTSTRUCT,
SEG."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from quant.errors import QuantificationError
from quant.image.contours import fill_polygon, rasterise_rtstruct, seg_masks
from quant.image.volume import load_ct_hu, load_pet_suv, resample_to
from service.cli.suv_command import run_suv
from tests.data_archives import unpack


@cache
def _read(folder: Path) -> tuple[Dataset, ...]:
    return tuple(pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm")))


def _dro_copy() -> list[Dataset]:
    folder = unpack("suv_dro_oncoray") / "DRO" / "DRO_0_0" / "PT"
    return [copy.deepcopy(ds) for ds in _read(folder)]


def _sts(patient: str) -> Path:
    return unpack("sts_petct_mirp") / patient


# --- sorting, duplicates, gaps, mixed series ---------------------------------------------------


def test_slices_are_sorted_by_position_not_instance_number() -> None:
    reference = load_pet_suv(_dro_copy())
    datasets = _dro_copy()
    rng = np.random.default_rng(3)
    for ds, number in zip(datasets, rng.permutation(len(datasets)) + 1, strict=True):
        ds.InstanceNumber = int(number)
    shuffled = [datasets[i] for i in rng.permutation(len(datasets))]
    volume = load_pet_suv(shuffled)
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.datasets]
    assert z == sorted(z)
    assert volume.sop_instance_uids == reference.sop_instance_uids
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(volume.suv), sitk.GetArrayFromImage(reference.suv)
    )
    assert volume.suv.GetOrigin() == pytest.approx((0.0, 0.0, 0.0))


def test_feet_first_normal_orders_along_the_normal() -> None:
    datasets = _dro_copy()
    for ds in datasets:  # rows along -x, columns along +y: normal is -z
        ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    volume = load_pet_suv(datasets)
    z = [float(ds.ImagePositionPatient[2]) for ds in volume.datasets]
    assert z == sorted(z, reverse=True)
    direction = np.asarray(volume.suv.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 2], [0.0, 0.0, -1.0])


def test_exact_duplicates_are_dropped_with_a_warning() -> None:
    datasets = _dro_copy()
    volume = load_pet_suv([*datasets, copy.deepcopy(datasets[5])])
    assert volume.suv.GetSize()[2] == 20
    assert any("duplicate" in w for w in volume.facts.warnings)


def test_different_slices_at_one_position_are_refused() -> None:
    datasets = _dro_copy()
    twin = copy.deepcopy(datasets[5])
    twin.SOPInstanceUID = generate_uid()
    twin.RescaleSlope = "2.0"
    with pytest.raises(QuantificationError, match="same position"):
        load_pet_suv([*datasets, twin])


def test_gap_is_refused() -> None:
    datasets = _dro_copy()
    del datasets[10]
    with pytest.raises(QuantificationError, match="uneven slice spacing"):
        load_pet_suv(datasets)


def test_small_spacing_jitter_warns() -> None:
    datasets = _dro_copy()
    position = list(datasets[10].ImagePositionPatient)
    datasets[10].ImagePositionPatient = [position[0], position[1], float(position[2]) + 0.05]
    volume = load_pet_suv(datasets)
    assert any("spacing varies" in w for w in volume.facts.warnings)


def test_mixed_series_are_refused() -> None:
    datasets = _dro_copy()
    datasets[4].SeriesInstanceUID = generate_uid()
    with pytest.raises(QuantificationError, match="2 series"):
        load_pet_suv(datasets)


def test_ct_in_a_pet_series_is_refused() -> None:
    ct = list(_read(_sts("STS_001") / "CT" / "dicom" / "image"))
    with pytest.raises(QuantificationError, match="Modality"):
        load_pet_suv(ct)


# --- real PET/CT: CT resampling and RTSTRUCT on both grids ------------------------------------


@pytest.fixture(scope="module", params=["STS_001", "STS_002", "STS_003"])
def sts(request: pytest.FixtureRequest) -> dict[str, object]:
    folder = _sts(request.param)
    pet = load_pet_suv(list(_read(folder / "PET" / "dicom" / "image")))
    ct = load_ct_hu(list(_read(folder / "CT" / "dicom" / "image")))
    return {
        "pet": pet,
        "ct": ct,
        "rs_pet": pydicom.dcmread(folder / "PET" / "dicom" / "mask" / "RS.dcm"),
        "rs_ct": pydicom.dcmread(folder / "CT" / "dicom" / "mask" / "RS.dcm"),
    }


def test_ct_resampled_onto_the_pet_grid(sts: dict[str, object]) -> None:
    pet, ct = sts["pet"], sts["ct"]
    assert isinstance(ct, sitk.Image)
    suv_image = pet.suv  # type: ignore[attr-defined]
    on_pet = resample_to(ct, suv_image, -1000.0)
    assert on_pet.GetSize() == suv_image.GetSize()
    assert on_pet.GetOrigin() == pytest.approx(suv_image.GetOrigin())
    assert on_pet.GetSpacing() == pytest.approx(suv_image.GetSpacing())
    assert on_pet.GetPixelID() == sitk.sitkFloat32
    # A PET voxel centre inside the CT field: resampled value = CT interpolated at that point.
    index = tuple(s // 2 for s in suv_image.GetSize())
    point = suv_image.TransformIndexToPhysicalPoint(index)
    continuous = ct.TransformPhysicalPointToContinuousIndex(point)
    expected = ct.EvaluateAtContinuousIndex(continuous, sitk.sitkLinear)
    assert on_pet[index] == pytest.approx(expected, abs=1e-3)
    hu = sitk.GetArrayFromImage(on_pet)
    assert hu.min() >= -1000.0 and hu.max() < 4000.0


def test_gtv_masks_on_pet_and_ct_grids(sts: dict[str, object]) -> None:
    pet, ct = sts["pet"], sts["ct"]
    assert isinstance(ct, sitk.Image)
    suv_image = pet.suv  # type: ignore[attr-defined]
    on_pet = rasterise_rtstruct(sts["rs_pet"], suv_image)  # type: ignore[arg-type]
    on_ct = rasterise_rtstruct(sts["rs_ct"], ct)  # type: ignore[arg-type]
    ((pet_name, pet_mask),) = on_pet.items()
    ((ct_name, ct_mask),) = on_ct.items()
    assert pet_name == "GTV_Mass_PET" and ct_name == "GTV_Mass_CT"
    assert pet_mask.shape == sitk.GetArrayViewFromImage(suv_image).shape
    assert ct_mask.shape == sitk.GetArrayViewFromImage(ct).shape
    pet_ml = pet_mask.sum() * np.prod(suv_image.GetSpacing()) / 1000.0
    ct_ml = ct_mask.sum() * np.prod(ct.GetSpacing()) / 1000.0
    assert 5.0 < pet_ml < 2000.0 and 5.0 < ct_ml < 2000.0
    np.testing.assert_allclose(pet_ml, ct_ml, rtol=0.1)
    # Same contour set rasterised on the PET grid from the CT structure set: nearly the same.
    ct_on_pet = rasterise_rtstruct(sts["rs_ct"], suv_image)["GTV_Mass_CT"]  # type: ignore[arg-type]
    dice = 2 * np.sum(pet_mask & ct_on_pet) / (pet_mask.sum() + ct_on_pet.sum())
    assert dice > 0.9
    # The tumour is FDG-avid: well above the surrounding tissue of the crop.
    suv = sitk.GetArrayFromImage(suv_image)
    assert suv[pet_mask].mean() > 3.0 * suv[~pet_mask].mean()


def test_seg_read_onto_pet_and_ct_grids(sts: dict[str, object]) -> None:
    pet, ct = sts["pet"], sts["ct"]
    assert isinstance(ct, sitk.Image)
    suv_image = pet.suv  # type: ignore[attr-defined]
    mask = rasterise_rtstruct(sts["rs_pet"], suv_image)["GTV_Mass_PET"]  # type: ignore[arg-type]
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="GTV",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=pet.datasets,  # type: ignore[attr-defined]
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="hypoxnode tests",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    on_pet = seg_masks(seg, suv_image)
    np.testing.assert_array_equal(on_pet["GTV"], mask)
    on_ct = seg_masks(seg, ct)["GTV"]
    ct_reference = rasterise_rtstruct(sts["rs_ct"], ct)["GTV_Mass_CT"]  # type: ignore[arg-type]
    dice = 2 * np.sum(on_ct & ct_reference) / (on_ct.sum() + ct_reference.sum())
    assert dice > 0.7


# --- polygon filling -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([2.5, 12.5, 12.5, 2.5], [2.5, 2.5, 12.5, 12.5], 100),  # centres 3..12 squared
        ([3.0, 12.0, 12.0, 3.0], [3.0, 3.0, 12.0, 12.0], 81),  # edges on centres: half-open
        ([0.5, 10.5, 0.5], [0.5, 0.5, 10.5], 45),  # centres x, y >= 1, x + y <= 10: 9+8+...+1
        ([1.0, 2.0], [1.0, 2.0], 0),
    ],
)
def test_fill_polygon(xs: list[float], ys: list[float], expected: int) -> None:
    mask = fill_polygon(np.asarray(xs), np.asarray(ys), (20, 20))
    assert int(mask.sum()) == expected


def _square(x0: float, x1: float, z: float) -> list[float]:
    return [v for x, y in ((x0, x0), (x1, x0), (x1, x1), (x0, x1)) for v in (x, y, z)]


def test_inner_contour_cuts_a_hole() -> None:
    reference = sitk.Image(20, 20, 3, sitk.sitkFloat32)
    reference.SetSpacing((2.0, 2.0, 3.0))
    reference.SetOrigin((-10.0, -10.0, 100.0))
    rs = Dataset()
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 7, "ring"
    rs.StructureSetROISequence = [roi]
    contours = []
    # index = (mm + 10) / 2: outer 2.5..12.5 and inner 5.5..9.5 in index space, slice 1 (103 mm)
    for lo, hi in ((-5.0, 15.0), (1.0, 9.0)):
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.ContourData = _square(lo, hi, 103.4)
        contours.append(contour)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 7
    roi_contour.ContourSequence = contours
    rs.ROIContourSequence = [roi_contour]
    mask = rasterise_rtstruct(rs, reference)["ring"]
    assert mask.shape == (3, 20, 20)
    assert mask[1].sum() == 100 - 16 and mask[0].sum() == 0 and mask[2].sum() == 0
    assert not mask[1, 7, 7] and mask[1, 3, 3]


# --- the suv command on real data ------------------------------------------------------------


def test_suv_command_text_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "suv.nrrd"
    folder = _sts("STS_001")
    assert run_suv([str(folder / "PET"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GTV_Mass_PET" in text and "units: GML" in text
    written = sitk.ReadImage(str(out))
    pet = load_pet_suv(list(_read(folder / "PET" / "dicom" / "image")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(pet.suv))
    assert written.GetOrigin() == pytest.approx(pet.suv.GetOrigin())
    assert run_suv([str(folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["rois"]) == {"GTV_Mass_PET", "GTV_Mass_CT"}
    assert doc["rois"]["GTV_Mass_PET"]["volume_ml"] > 5.0


def test_suv_command_without_pet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_suv([str(tmp_path), "--json"]) == 2
    assert "no PET images" in json.loads(capsys.readouterr().out)["error"]
