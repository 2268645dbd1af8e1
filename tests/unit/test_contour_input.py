"""A tumour contour supplied with the study, on real PET/CT (``sts_petct_mirp``, 3 patients).

The expected figures are computed here from first principles: SUV straight from the PET pixel
data (Units GML, so stored value x RescaleSlope + RescaleIntercept is SUVbw), and the GTV
polygons filled onto the PET slices with a crossing-number test written in this file (pixel
centres in patient mm; never ``quant.image.contours``).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_templates.seg import build_seg
from quant.pipeline import TUMOUR_ROI_PATTERN, QuantifiedStudy, quantify
from quant.settings import QuantSettings
from tests.data_archives import unpack

PATIENTS = ["STS_001", "STS_002", "STS_003"]


@cache
def _files(patient: str) -> dict[str, list[Dataset]]:
    root = unpack("sts_petct_mirp") / patient

    def read(folder: Path) -> list[Dataset]:
        return [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]

    return {
        "pet": read(root / "PET" / "dicom" / "image"),
        "ct": read(root / "CT" / "dicom" / "image"),
        "rs_pet": read(root / "PET" / "dicom" / "mask"),
        "rs_ct": read(root / "CT" / "dicom" / "mask"),
    }


def _direct_suv(pet: list[Dataset]) -> tuple[np.ndarray, list[Dataset]]:
    """SUVbw ``[slice, row, col]`` from the pixel data, slices by ascending z."""
    assert all(ds.Units == "GML" and ds.get("SUVType", "BW") == "BW" for ds in pet)
    for ds in pet:  # axial, rows along +x, columns along +y: z orders the slices
        np.testing.assert_allclose(
            [float(v) for v in ds.ImageOrientationPatient], [1, 0, 0, 0, 1, 0], atol=1e-6
        )
    ordered = sorted(pet, key=lambda ds: float(ds.ImagePositionPatient[2]))
    suv = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered]
    ).astype(np.float64)
    return suv, ordered


def _inside(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Crossing-number point-in-polygon test (W. R. Franklin's PNPOLY), vectorised over points."""
    inside = np.zeros(px.shape, dtype=bool)
    for i in range(vx.size):
        j = i - 1
        crosses = (vy[i] > py) != (vy[j] > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = vx[j] + (py - vy[j]) * (vx[i] - vx[j]) / (vy[i] - vy[j])
        inside ^= crosses & (px < x_at)
    return inside


def _direct_mask(rtstruct: Dataset, ordered: list[Dataset], roi_name: str) -> np.ndarray:
    """The ROI's polygons filled onto the PET slices (contours XOR-combined per slice)."""
    first = ordered[0]
    rows, cols = int(first.Rows), int(first.Columns)
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in ordered])
    x0, y0 = float(first.ImagePositionPatient[0]), float(first.ImagePositionPatient[1])
    py, px = np.meshgrid(
        y0 + np.arange(rows) * row_mm, x0 + np.arange(cols) * col_mm, indexing="ij"
    )
    number = next(
        int(r.ROINumber) for r in rtstruct.StructureSetROISequence if r.ROIName == roi_name
    )
    roi = next(c for c in rtstruct.ROIContourSequence if int(c.ReferencedROINumber) == number)
    mask = np.zeros((len(ordered), rows, cols), dtype=bool)
    for contour in roi.ContourSequence:
        points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
        k = int(np.argmin(np.abs(z - points[:, 2].mean())))
        if abs(z[k] - points[:, 2].mean()) > 0.5 * float(np.median(np.diff(z))):
            continue
        mask[k] ^= _inside(px, py, points[:, 0], points[:, 1])
    return mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient of two bool masks."""
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@cache
def _quantified(patient: str) -> QuantifiedStudy:
    files = _files(patient)
    return quantify(files["pet"], files["ct"], files["rs_pet"] + files["rs_ct"], QuantSettings())


@pytest.mark.parametrize("patient", PATIENTS)
def test_supplied_gtv_figures_equal_a_direct_computation(patient: str) -> None:
    files = _files(patient)
    suv, ordered = _direct_suv(files["pet"])
    gtv = _direct_mask(files["rs_pet"][0], ordered, "GTV_Mass_PET")
    assert gtv.sum() > 10
    result = _quantified(patient).result
    assert result.method["tumour_source"] == "contour"
    (lesion,) = result.lesions  # GTV_Mass_CT overlaps GTV_Mass_PET: one tumour, the PET one
    assert (lesion.source, lesion.label) == ("contour", "GTV_Mass_PET")
    np.testing.assert_array_equal(lesion.mask, gtv)
    assert lesion.suv_max == pytest.approx(float(suv[gtv].max()), rel=1e-6)
    assert lesion.suv_mean == pytest.approx(float(suv[gtv].mean()), rel=1e-6)
    px = [float(v) for v in ordered[0].PixelSpacing]
    voxel_ml = (
        px[0]
        * px[1]
        * float(np.median(np.diff([float(ds.ImagePositionPatient[2]) for ds in ordered])))
        / 1000.0
    )
    assert lesion.volume_ml == pytest.approx(gtv.sum() * voxel_ml, rel=1e-6)
    assert lesion.tm_max == pytest.approx(float(suv[gtv].max()) / result.muscle.suv_mean)


@pytest.mark.parametrize("patient", PATIENTS)
def test_seg_tumour_segment_overlaps_the_rtstruct(patient: str, tmp_path: Path) -> None:
    files = _files(patient)
    _, ordered = _direct_suv(files["pet"])
    gtv = _direct_mask(files["rs_pet"][0], ordered, "GTV_Mass_PET")
    quantified = _quantified(patient)
    seg = build_seg(
        quantified.result,
        quantified.pet.datasets,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=9901,
    )
    seg.save_as(tmp_path / "seg.dcm")
    read = hd.seg.segread(tmp_path / "seg.dcm")
    (number,) = [
        int(s.SegmentNumber)
        for s in read.SegmentSequence
        if s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # Neoplasm
        and "hypoxic" not in s.SegmentLabel
    ]
    uids = [str(ds.SOPInstanceUID) for ds in ordered]
    pixels = read.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=[number],
        assert_missing_frames_are_empty=True,
    )
    on_pet = pixels[..., 0].astype(bool)
    assert dice(on_pet, gtv) >= 0.9
    assert "GTV_Mass_PET" in read.SegmentSequence[number - 1].SegmentLabel


# --- which supplied structures count as the tumour -----------------------------------------


def _gtv_seg(patient: str, label: str, manufacturer: str = "planning system") -> Dataset:
    files = _files(patient)
    _, ordered = _direct_suv(files["pet"])
    mask = _direct_mask(files["rs_pet"][0], ordered, "GTV_Mass_PET")
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    return hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )


def test_a_supplied_seg_tumour_gives_the_rtstruct_figures() -> None:
    files = _files("STS_002")
    by_rtstruct = _quantified("STS_002").result.lesions[0]
    result = quantify(
        files["pet"], files["ct"], [_gtv_seg("STS_002", "GTV primary")], QuantSettings()
    ).result
    (lesion,) = result.lesions
    assert (lesion.source, lesion.label) == ("contour", "GTV primary")
    np.testing.assert_array_equal(lesion.mask, by_rtstruct.mask)
    assert lesion.suv_mean == pytest.approx(by_rtstruct.suv_mean)


def test_hypoxnode_own_seg_is_not_an_input() -> None:
    files = _files("STS_002")
    own = build_seg(
        _quantified("STS_002").result,
        _quantified("STS_002").pet.datasets,
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=9901,
    )
    result = quantify(files["pet"], files["ct"], [own], QuantSettings()).result
    assert result.method["tumour_source"] == "detected"


def _renamed(rtstruct: Dataset, name: str) -> Dataset:
    out = copy.deepcopy(rtstruct)
    out.StructureSetROISequence[0].ROIName = name
    out.RTROIObservationsSequence[0].RTROIInterpretedType = "ORGAN"
    return out


@pytest.mark.parametrize(
    ("name", "pattern", "source"),
    [
        ("Sarcoma", None, "detected"),
        ("Sarcoma", r"(?i)sarcoma", "contour"),
        ("gtv_mass", None, "contour"),
        ("Tumor boost", None, "contour"),
        ("Femur", None, "detected"),
    ],
)
def test_tumour_roi_name_rule(name: str, pattern: str | None, source: str) -> None:
    files = _files("STS_002")
    rtstruct = _renamed(files["rs_pet"][0], name)
    settings = QuantSettings(tumour_roi_pattern=pattern)
    result = quantify(files["pet"], files["ct"], [rtstruct], settings).result
    assert result.method["tumour_source"] == source
    if source == "contour":
        assert result.lesions[0].label == name
        assert result.method["tumour_roi_pattern"] == (pattern or TUMOUR_ROI_PATTERN)


def test_a_roi_typed_gtv_counts_whatever_its_name() -> None:
    files = _files("STS_002")
    rtstruct = copy.deepcopy(files["rs_pet"][0])
    rtstruct.StructureSetROISequence[0].ROIName = "Sarcoma"
    result = quantify(files["pet"], files["ct"], [rtstruct], QuantSettings()).result
    assert [les.label for les in result.lesions] == ["Sarcoma"]


def test_a_contour_on_another_frame_of_reference_is_ignored() -> None:
    files = _files("STS_002")
    rtstruct = copy.deepcopy(files["rs_pet"][0])
    for item in rtstruct.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = generate_uid()
    for item in rtstruct.get("ReferencedFrameOfReferenceSequence") or []:
        item.FrameOfReferenceUID = generate_uid()
    result = quantify(files["pet"], files["ct"], [rtstruct], QuantSettings()).result
    assert result.method["tumour_source"] == "detected"
