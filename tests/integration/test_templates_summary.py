"""dicom_templates.summary: the rendered Secondary Capture (validity, content, geometry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional name)
from PIL import Image

from dicom_templates.summary import build_summary
from dicom_templates.summary_render import LESION_LINE, MUSCLE_LINE, render_summary
from dicom_templates.uids import derive_uid
from service.synthetic import ct_hu_on_pet, make_study
from tests.dicom_fixtures import (
    SPACING_MM,
    make_pet_series,
    make_result,
    phantom_suv,
    result_from_synthetic,
)
from tests.dicomcheck import dciodvfy_errors


def _colour_pixels(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == np.array(colour, dtype=np.uint8), axis=-1)


def test_summary_of_a_synthetic_study(tmp_path: Path) -> None:
    study = make_study(field_of_view="pelvis", noise_sd=0.05, blur_fwhm_mm=6.0)
    result = result_from_synthetic(study)
    ct = sitk.GetArrayFromImage(ct_hu_on_pet(study))
    sx, sy, sz = study.truth.pet_spacing_mm  # SimpleITK order is (x, y, z)
    spacing = (sz, sy, sx)
    summary = build_summary(
        result,
        study.truth.suv,
        ct,
        spacing,
        study.pet,
        series_instance_uid=derive_uid("t", "sc"),
        sop_instance_uid=derive_uid("t", "sc", "1"),
        series_number=903,
    )
    path = tmp_path / "summary.dcm"
    summary.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    read = pydicom.dcmread(path)
    pet = study.pet[0]
    assert read.StudyInstanceUID == pet.StudyInstanceUID
    assert read.PatientID == pet.PatientID
    assert read.BurnedInAnnotation == "YES"
    assert read.PhotometricInterpretation == "RGB"
    rgb = read.pixel_array
    assert rgb.shape[1] == 1024 and rgb.shape[2] == 3
    png = tmp_path / "summary.png"
    Image.fromarray(rgb).save(png)
    assert png.stat().st_size > 10_000
    assert _colour_pixels(rgb, LESION_LINE).sum() > 20
    assert _colour_pixels(rgb, MUSCLE_LINE).sum() > 20


def test_lesion_contour_surrounds_the_lesion_on_the_coronal_mip() -> None:
    """The cyan outline's centre lies where the lesion projects (head up, patient right left)."""
    result = make_result(n_lesions=1, warnings=())
    suv = phantom_suv()
    rgb = render_summary(result, suv, None, SPACING_MM)
    nz, ny, nx = suv.shape
    dz, _, dx = SPACING_MM
    header, margin = 40, 12
    panel_width = 1024 - 400 - 3 * margin
    scale = min(620 / (nz * dz), panel_width / (nx * dx + ny * SPACING_MM[1]))
    coronal = rgb[
        header : header + int(round(nz * dz * scale)), margin : margin + int(round(nx * dx * scale))
    ]
    rows, cols = np.nonzero(_colour_pixels(coronal, LESION_LINE))
    assert rows.size > 0
    # Lesion centre: slice 6 (of 12, z ascending, drawn head up), column 14 (of 40).
    expected_row = (nz - 1 - 6 + 0.5) * dz * scale
    expected_col = (14 + 0.5) * dx * scale
    assert abs(rows.mean() - expected_row) < 2 * dz * scale
    assert abs(cols.mean() - expected_col) < 2 * dx * scale


@pytest.mark.parametrize("n_lesions", [0, 2])
def test_summary_without_ct(tmp_path: Path, n_lesions: int) -> None:
    result = make_result(n_lesions=n_lesions)
    summary = build_summary(
        result,
        phantom_suv(),
        None,
        SPACING_MM,
        make_pet_series(),
        series_instance_uid=derive_uid("t", "sc"),
        sop_instance_uid=derive_uid("t", "sc", "2"),
        series_number=903,
    )
    path = tmp_path / "summary.dcm"
    summary.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    assert summary.pixel_array.shape[1] == 1024


def test_summary_rejects_a_wrong_grid() -> None:
    with pytest.raises(ValueError, match="suv_array"):
        build_summary(
            make_result(),
            np.zeros((3, 4, 5), dtype=np.float32),
            None,
            SPACING_MM,
            make_pet_series(),
            series_instance_uid=derive_uid("a"),
            sop_instance_uid=derive_uid("b"),
            series_number=1,
        )
