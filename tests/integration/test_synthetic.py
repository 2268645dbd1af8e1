"""The synthetic study generator: geometry, headers, and truth consistent with the pixels."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from service.synthetic import FIELDS_OF_VIEW, Tissue, make_study, write_study

FOVS = sorted(FIELDS_OF_VIEW)


def _position(ds: pydicom.Dataset) -> float:
    return float(ds.ImagePositionPatient[2])


@pytest.mark.parametrize("field_of_view", FOVS)
def test_grids_shapes_and_uids(field_of_view: str) -> None:
    study = make_study(field_of_view=field_of_view)
    truth = study.truth
    assert truth.suv.shape == (len(study.pet), 64, 64)
    assert all(ds.Rows == 128 and ds.Columns == 128 for ds in study.ct)
    pet_z = np.array([_position(ds) for ds in study.pet])
    ct_z = np.array([_position(ds) for ds in study.ct])
    assert np.all(np.diff(pet_z) == pytest.approx(3.0))
    assert np.all(np.diff(ct_z) == pytest.approx(2.0))
    # Same z extent, different slice positions.
    assert pet_z[0] - 1.5 == pytest.approx(ct_z[0] - 1.0)
    assert pet_z[-1] + 1.5 == pytest.approx(ct_z[-1] + 1.0)
    assert not set(np.round(pet_z, 3)) & set(np.round(ct_z, 3))
    for masks in (truth.tumour_mask, truth.muscle_mask, truth.liver_mask, truth.bladder_mask):
        assert masks.shape == truth.suv.shape and masks.dtype == bool
    everything = study.pet + study.ct
    assert len({ds.StudyInstanceUID for ds in everything}) == 1
    assert len({ds.FrameOfReferenceUID for ds in everything}) == 1
    assert len({ds.SeriesInstanceUID for ds in everything}) == 2
    assert len({ds.SOPInstanceUID for ds in everything}) == len(everything)


def test_uids_are_deterministic_and_depend_on_the_seed() -> None:
    a, b, c = make_study(seed=1), make_study(seed=1), make_study(seed=2)
    assert [ds.SOPInstanceUID for ds in a.pet] == [ds.SOPInstanceUID for ds in b.pet]
    assert a.pet[0].StudyInstanceUID != c.pet[0].StudyInstanceUID
    given = make_study(study_instance_uid="1.2.826.0.1.3680043.8.498.1")
    assert {ds.StudyInstanceUID for ds in given.pet + given.ct} == {"1.2.826.0.1.3680043.8.498.1"}


def test_pet_header_carries_what_suv_needs() -> None:
    ds = make_study(tracer="64Cu-ATSM").pet[0]
    assert ds.Units == "BQML" and ds.DecayCorrection == "START"
    assert list(ds.CorrectedImage) == ["ATTN", "DECY"]
    item = ds.RadiopharmaceuticalInformationSequence[0]
    assert item.Radiopharmaceutical == "Cu-64 ATSM"
    assert float(item.RadionuclideHalfLife) == 45721.0
    assert float(item.RadionuclideTotalDose) == pytest.approx(210e6)
    code = item.RadionuclideCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("3932008", "SCT")
    assert item.RadiopharmaceuticalStartDateTime.startswith("20240305090000")
    assert ds.SeriesTime.startswith("100000")
    assert float(ds.PatientWeight) == 70.0


def test_suv_by_hand_from_stored_values_matches_truth() -> None:
    study = make_study(field_of_view="thorax", noise_sd=0.1, blur_fwhm_mm=6.0, seed=3)
    pet = study.pet[0]
    item = pet.RadiopharmaceuticalInformationSequence[0]
    injection = datetime.strptime(item.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S.%f")
    start = datetime.strptime(pet.SeriesDate + pet.SeriesTime, "%Y%m%d%H%M%S.%f")
    decay = 2.0 ** (-(start - injection).total_seconds() / float(item.RadionuclideHalfLife))
    decayed_dose = float(item.RadionuclideTotalDose) * decay
    weight_g = float(pet.PatientWeight) * 1000.0
    slopes = np.array([float(ds.RescaleSlope) for ds in study.pet])
    assert np.unique(slopes).size > 1, "RescaleSlope must vary per slice"
    stored = np.stack([ds.pixel_array for ds in study.pet]).astype(np.float64)
    suv = stored * slopes[:, None, None] * weight_g / decayed_dose
    np.testing.assert_allclose(suv, study.truth.suv, rtol=1e-6, atol=1e-9)


def test_noiseless_pixels_reproduce_the_ideal_uptake() -> None:
    truth = make_study(field_of_view="abdomen").truth
    # uint16 quantisation with the slice maximum at 65000: error below 1e-4 of the slice max.
    tolerance = truth.suv.reshape(truth.suv.shape[0], -1).max(axis=1) * 1e-4
    assert np.all(np.abs(truth.suv - truth.ideal_suv) <= tolerance[:, None, None] + 1e-12)
    assert truth.suv_max == pytest.approx(float(truth.ideal_suv[truth.tumour_mask].max()))
    assert truth.suv_max > 2.0 * truth.muscle_suv_mean
    assert float(truth.ideal_suv[truth.liver_mask].min()) > truth.suv_max
    np.testing.assert_allclose(truth.ideal_suv[truth.muscle_mask], 1.0)


@pytest.mark.parametrize("field_of_view", FOVS)
def test_truth_figures_are_consistent(field_of_view: str) -> None:
    truth = make_study(field_of_view=field_of_view).truth
    voxel_ml = 0.4 * 0.4 * 0.3
    assert truth.voxel_volume_ml == pytest.approx(voxel_ml)
    assert truth.tumour_volume_ml == pytest.approx(truth.tumour_mask.sum() * voxel_ml)
    assert truth.muscle_mask.sum() * voxel_ml > 20.0
    assert truth.tumour_suv_mean == pytest.approx(truth.ideal_suv[truth.tumour_mask].mean())
    for t in (1.5, 2.0):
        mask = truth.hypoxic_masks[t]
        assert not (mask & ~truth.tumour_mask).any()
        assert np.all(truth.ideal_suv[mask] >= t * truth.muscle_suv_mean)
        assert truth.hypoxic_volume_ml[t] == pytest.approx(mask.sum() * voxel_ml)
        assert truth.hypoxic_fraction[t] == pytest.approx(mask.sum() / truth.tumour_mask.sum())
    assert truth.hypoxic_fraction[1.5] == pytest.approx(1.0)
    assert 0.05 < truth.hypoxic_fraction[2.0] < 0.5
    assert np.array_equal(truth.hypoxic_masks[2.0], truth.tumour_core_mask)
    # Tumour sits away from liver and bladder (at least two PET voxels between them).
    organs = truth.liver_mask | truth.bladder_mask
    if organs.any():
        tz, ty, tx = np.nonzero(truth.tumour_mask)
        oz, oy, ox = np.nonzero(organs)
        gap = np.min(
            (tz[:, None] * 3.0 - oz[None] * 3.0) ** 2
            + (ty[:, None] * 4.0 - oy[None] * 4.0) ** 2
            + (tx[:, None] * 4.0 - ox[None] * 4.0) ** 2
        )
        assert np.sqrt(gap) > 8.0


def test_organs_by_field_of_view() -> None:
    pelvis = make_study(field_of_view="pelvis").truth
    abdomen = make_study(field_of_view="abdomen").truth
    head = make_study(field_of_view="head_neck", tracer="18F-FDG").truth
    assert pelvis.bladder_mask.any() and not pelvis.liver_mask.any()
    assert abdomen.liver_mask.sum() * abdomen.voxel_volume_ml > 300.0
    assert head.brain_mask.any()
    assert float(head.ideal_suv[head.brain_mask].mean()) > head.suv_max
    assert (pelvis.labels == Tissue.BONE).any()


def test_no_lesion() -> None:
    truth = make_study(with_lesion=False).truth
    assert not truth.tumour_mask.any()
    assert truth.suv_max == 0.0 and truth.tumour_volume_ml == 0.0


def test_noise_and_blur_change_pixels_reproducibly() -> None:
    a = make_study(noise_sd=0.1, blur_fwhm_mm=6.0, seed=5).truth
    b = make_study(noise_sd=0.1, blur_fwhm_mm=6.0, seed=5).truth
    c = make_study(noise_sd=0.1, blur_fwhm_mm=6.0, seed=6).truth
    np.testing.assert_array_equal(a.suv, b.suv)
    assert not np.array_equal(a.suv, c.suv)
    muscle = a.suv[a.muscle_mask]
    assert 0.8 < float(np.median(muscle)) < 1.1
    assert float(a.suv[a.tumour_mask].max()) < 1.5 * a.suv_max


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    make_study(field_of_view="pelvis", noise_sd=0.1, blur_fwhm_mm=6.0)
    assert time.perf_counter() - start < 2.0


def test_write_study_round_trip(tmp_path: Path) -> None:
    study = make_study(field_of_view="head_neck")
    paths = write_study(study, tmp_path)
    assert len(paths) == len(study.pet) + len(study.ct)
    first = pydicom.dcmread(paths[0])
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPInstanceUID == study.pet[0].SOPInstanceUID
    np.testing.assert_array_equal(first.pixel_array, study.pet[0].pixel_array)


def test_dciodvfy_reports_no_errors(tmp_path: Path) -> None:
    study = make_study(field_of_view="pelvis")
    paths = write_study(study, tmp_path)
    for path in (paths[0], paths[-1]):
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line]
        assert errors == [], f"{path.name}: {errors}"


def test_command_line_writes_a_study(tmp_path: Path) -> None:
    from service.synthetic.__main__ import main

    assert main([str(tmp_path), "--field-of-view", "thorax"]) == 0
    assert len(list((tmp_path / "pet").glob("*.dcm"))) == 48
    assert len(list((tmp_path / "ct").glob("*.dcm"))) == 72


def test_quant_volume_reads_the_truth_suv() -> None:
    import SimpleITK as sitk  # noqa: N813 (the conventional name)

    from quant.image.volume import load_pet_suv

    study = make_study(field_of_view="pelvis", noise_sd=0.1, blur_fwhm_mm=6.0)
    volume = load_pet_suv(study.pet)
    np.testing.assert_allclose(sitk.GetArrayFromImage(volume.suv), study.truth.suv, rtol=1e-5)
    assert volume.suv.GetSpacing() == pytest.approx(study.truth.pet_spacing_mm)
    assert volume.suv.GetOrigin() == pytest.approx(study.truth.pet_origin_mm)
    assert volume.sop_instance_uids == [ds.SOPInstanceUID for ds in study.pet]
