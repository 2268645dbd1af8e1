"""quant.segmentation.regions on generator studies (SUV from the truth, CT resampled onto the PET
grid)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from quant.errors import QuantificationError
from quant.figures import lesion_figures
from quant.results import MuscleResult
from quant.segmentation.regions import detect_lesions, muscle_reference
from quant.settings import QuantSettings
from quant.suv.tracers import PROFILES
from service.synthetic import SyntheticStudy, ct_hu_on_pet, make_study, pet_suv_image

SETTINGS = QuantSettings()
FOVS = ["pelvis", "thorax", "abdomen", "head_neck"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient of two bool masks."""
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@cache
def _run(
    field_of_view: str,
    noise_sd: float = 0.0,
    blur_fwhm_mm: float = 0.0,
    seed: int = 0,
    tracer: str = "64Cu-ATSM",
    with_lesion: bool = True,
) -> tuple[SyntheticStudy, MuscleResult, list[np.ndarray]]:
    study = make_study(
        field_of_view=field_of_view,
        noise_sd=noise_sd,
        blur_fwhm_mm=blur_fwhm_mm,
        seed=seed,
        tracer=tracer,
        with_lesion=with_lesion,
    )
    suv, ct = pet_suv_image(study), ct_hu_on_pet(study)
    settings = SETTINGS.for_tracer(PROFILES[tracer])
    muscle = muscle_reference(suv, ct, settings)
    lesions = detect_lesions(suv, muscle.suv_mean, settings, ct_hu_on_pet=ct)
    return study, muscle, lesions


def _assert_no_physiological(study: SyntheticStudy, lesions: list[np.ndarray]) -> None:
    truth = study.truth
    for lesion in lesions:
        assert not (lesion & truth.liver_mask).any(), "liver reported as a lesion"
        assert not (lesion & truth.bladder_mask).any(), "bladder reported as a lesion"
        assert not (lesion & truth.brain_mask).any(), "brain reported as a lesion"
        assert not (lesion & truth.bowel_mask).any(), "bowel reported as a lesion"
        assert not (lesion & truth.kidney_mask).any(), "kidney reported as a lesion"
        assert not (lesion & truth.heart_mask).any(), "heart reported as a lesion"


@pytest.mark.parametrize("field_of_view", [*FOVS, "whole_body"])
def test_noiseless_muscle_reference(field_of_view: str) -> None:
    study, muscle, _ = _run(field_of_view)
    truth = study.truth
    inside = float((muscle.mask & truth.muscle_mask).sum()) / float(muscle.mask.sum())
    assert inside >= 0.95
    assert muscle.volume_ml >= 10.0
    assert muscle.suv_mean == pytest.approx(truth.muscle_suv_mean, rel=0.01)
    assert muscle.suv_sd < 0.01
    assert "slices" in muscle.location


@pytest.mark.parametrize("field_of_view", [*FOVS, "whole_body"])
def test_noiseless_tumour_is_found_and_delineated(field_of_view: str) -> None:
    study, _, lesions = _run(field_of_view)
    assert len(lesions) == 1
    assert dice(lesions[0], study.truth.tumour_mask) >= 0.8
    _assert_no_physiological(study, lesions)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("field_of_view", FOVS)
def test_noisy_blurred_study(field_of_view: str, seed: int) -> None:
    study, muscle, lesions = _run(field_of_view, 0.1, 6.0, seed)
    truth = study.truth
    inside = float((muscle.mask & truth.muscle_mask).sum()) / float(muscle.mask.sum())
    assert inside >= 0.95
    assert muscle.suv_mean == pytest.approx(truth.muscle_suv_mean, rel=0.05)
    assert lesions, "tumour not found"
    assert max(dice(lesion, truth.tumour_mask) for lesion in lesions) >= 0.6
    _assert_no_physiological(study, lesions)


@pytest.mark.parametrize("tracer", ["64Cu-ATSM", "18F-FMISO"])
@pytest.mark.parametrize("field_of_view", [*FOVS, "whole_body"])
def test_no_lesion_reported_without_a_tumour(field_of_view: str, tracer: str) -> None:
    _, _, lesions = _run(field_of_view, 0.1, 6.0, 0, tracer, False)
    assert lesions == []


def test_fdg_brain_and_bladder_are_not_lesions() -> None:
    for field_of_view in ("head_neck", "pelvis"):
        study, _, lesions = _run(field_of_view, tracer="18F-FDG")
        assert len(lesions) == 1
        assert dice(lesions[0], study.truth.tumour_mask) >= 0.8
        _assert_no_physiological(study, lesions)


@pytest.mark.parametrize(("noise_sd", "blur_fwhm_mm"), [(0.0, 0.0), (0.1, 6.0)])
@pytest.mark.parametrize("field_of_view", ["abdomen", "thorax"])
def test_fdg_bowel_kidneys_and_heart_are_not_lesions(
    field_of_view: str, noise_sd: float, blur_fwhm_mm: float
) -> None:
    study, _, lesions = _run(field_of_view, noise_sd, blur_fwhm_mm, tracer="18F-FDG")
    organs = {"abdomen": ("bowel_mask", "kidney_mask"), "thorax": ("heart_mask",)}
    for name in organs[field_of_view]:
        assert getattr(study.truth, name).any(), f"the generator should hold {name}"
    assert len(lesions) == 1
    assert dice(lesions[0], study.truth.tumour_mask) >= (0.8 if noise_sd == 0 else 0.6)
    _assert_no_physiological(study, lesions)


@pytest.mark.parametrize(
    ("field_of_view", "organ", "rule"),
    [
        ("abdomen", "bowel_mask", "bowel"),
        ("abdomen", "bladder_mask", "urine"),
        ("thorax", "heart_mask", "heart"),
    ],
)
def test_each_fdg_organ_is_a_candidate_without_its_rule(
    field_of_view: str, organ: str, rule: str
) -> None:
    # Renal-pelvis urine is labelled as bladder in the truth (hot urine inside a kidney).
    study = make_study(field_of_view=field_of_view, tracer="18F-FDG")
    kept = tuple(o for o in PROFILES["18F-FDG"].excluded_organs if o != rule)
    settings = QuantSettings(excluded_organs=kept)
    suv, ct = pet_suv_image(study), ct_hu_on_pet(study)
    lesions = detect_lesions(suv, study.truth.muscle_suv_mean, settings, ct_hu_on_pet=ct)
    assert any((lesion & getattr(study.truth, organ)).any() for lesion in lesions)


def test_cu_atsm_does_not_exclude_the_heart() -> None:
    assert "heart" not in PROFILES["64Cu-ATSM"].excluded_organs
    assert "heart" in PROFILES["18F-FDG"].excluded_organs


def test_truncated_liver_dome_is_not_a_lesion() -> None:
    study, _, lesions = _run("thorax")
    assert study.truth.liver_mask.any(), "the thorax field of view should cut the liver dome"
    _assert_no_physiological(study, lesions)


def test_noiseless_hypoxic_volumes_match_truth() -> None:
    study, muscle, lesions = _run("pelvis")
    truth = study.truth
    result = lesion_figures(
        truth.suv,
        lesions[0],
        muscle.suv_mean,
        (1.5, 2.0),
        truth.pet_spacing_mm,
        source="detected",
        label="lesion 1",
    )
    for hypoxic in result.hypoxic:
        assert hypoxic.volume_ml == pytest.approx(truth.hypoxic_volume_ml[hypoxic.threshold])
        assert hypoxic.fraction == pytest.approx(truth.hypoxic_fraction[hypoxic.threshold])
    assert result.suv_max == pytest.approx(truth.suv_max, rel=1e-3)
    assert result.tm_max == pytest.approx(truth.suv_max / truth.muscle_suv_mean, rel=1e-3)


def test_lesions_come_highest_suvmax_first() -> None:
    study = make_study(field_of_view="pelvis")
    suv_array = study.truth.suv.copy()
    # A second, hotter sphere on the patient's left, in pelvic fat.
    z, y, x = np.ogrid[: suv_array.shape[0], : suv_array.shape[1], : suv_array.shape[2]]
    second = (z - 24) ** 2 * 9 + (y - 32) ** 2 * 16 + (x - 44) ** 2 * 16 <= 12**2
    suv_array[second] = 6.0
    suv = sitk.GetImageFromArray(suv_array.astype(np.float32))
    suv.CopyInformation(pet_suv_image(study))
    lesions = detect_lesions(suv, 1.0, SETTINGS, ct_hu_on_pet=ct_hu_on_pet(study))
    assert len(lesions) == 2
    assert np.array_equal(lesions[0], second)
    assert dice(lesions[1], study.truth.tumour_mask) >= 0.8


def test_without_ct_the_muscle_reference_is_refused() -> None:
    study = make_study(field_of_view="pelvis")
    with pytest.raises(QuantificationError, match="needs a CT"):
        muscle_reference(pet_suv_image(study), None, SETTINGS)


def test_without_ct_detection_still_runs() -> None:
    study = make_study(field_of_view="pelvis")
    lesions = detect_lesions(pet_suv_image(study), 1.0, SETTINGS)
    assert max(dice(lesion, study.truth.tumour_mask) for lesion in lesions) >= 0.8


def test_ct_on_another_grid_is_refused() -> None:
    study = make_study(field_of_view="pelvis")
    from service.synthetic import ct_hu_image

    with pytest.raises(ValueError, match="ct_hu_on_pet"):
        muscle_reference(pet_suv_image(study), ct_hu_image(study), SETTINGS)


def test_no_muscle_on_ct_is_a_quantification_error() -> None:
    study = make_study(field_of_view="pelvis")
    suv = pet_suv_image(study)
    fat = sitk.Image(suv.GetSize(), sitk.sitkFloat32) - 100.0
    fat.CopyInformation(suv)
    with pytest.raises(QuantificationError, match="no skeletal muscle"):
        muscle_reference(suv, fat, SETTINGS)


def test_through_quant_volume() -> None:
    from quant.image.volume import load_ct_hu, load_pet_suv, resample_to

    study = make_study(field_of_view="abdomen", noise_sd=0.1, blur_fwhm_mm=6.0, seed=4)
    pet = load_pet_suv(study.pet)
    ct = resample_to(load_ct_hu(study.ct), pet.suv, -1000.0)
    muscle = muscle_reference(pet.suv, ct, SETTINGS)
    lesions = detect_lesions(pet.suv, muscle.suv_mean, SETTINGS, ct_hu_on_pet=ct)
    inside = float((muscle.mask & study.truth.muscle_mask).sum()) / float(muscle.mask.sum())
    assert inside >= 0.95
    assert max(dice(lesion, study.truth.tumour_mask) for lesion in lesions) >= 0.6
    _assert_no_physiological(study, lesions)
