"""SUV header conventions on the project's own synthetic studies, against their known truth.

Each case rewrites the header of a generated 64Cu/18F PET the way a vendor or a re-recon would,
with pixel values adjusted so the true SUV is unchanged; the conversion must recover
``truth.suv`` (to float32 precision) through the same ``load_pet_suv`` the service uses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.image.volume import load_pet_suv
from service.synthetic import SyntheticStudy, make_study
from tests.dicom_fixtures import enhanced_from

CU64_HALF_LIFE_S = 45721.0
EVENING = datetime(2026, 3, 4, 19, 30, 0)  # scans the next evening: dates differ


def _pet_sorted(study: SyntheticStudy) -> list[Dataset]:
    return sorted(study.pet, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _suv(datasets: list[Dataset]) -> np.ndarray:
    return sitk.GetArrayFromImage(load_pet_suv(datasets).suv)


def _assert_truth(study: SyntheticStudy, datasets: list[Dataset] | None = None) -> None:
    suv = _suv(datasets if datasets is not None else study.pet)
    np.testing.assert_allclose(suv, study.truth.suv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(suv.max(), study.truth.suv_max, rtol=1e-5)


def _cu64_next_day() -> SyntheticStudy:
    return make_study(field_of_view="pelvis", tracer="64Cu-ATSM", injection_time=EVENING,
                      injection_to_scan_s=24 * 3600 + 600, seed=5)


def _only_start_time(pet: Dataset) -> None:
    del pet.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime


def _only_start_datetime(pet: Dataset) -> None:
    del pet.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime


@pytest.mark.parametrize("keep", [_only_start_time, _only_start_datetime],
                         ids=["StartTime only", "StartDateTime only"])
def test_cu64_scan_24h_after_an_evening_injection(keep: Callable[[Dataset], None]) -> None:
    study = _cu64_next_day()
    assert study.pet[0].SeriesDate != EVENING.strftime("%Y%m%d")
    for pet in study.pet:
        keep(pet)
    volume = load_pet_suv(study.pet)
    assert volume.facts.injection_time == EVENING
    assert volume.facts.uptake_time_s == pytest.approx(24 * 3600 + 600)
    _assert_truth(study)


def test_re_reconstructed_series_time_hours_after_acquisition() -> None:
    study = make_study(field_of_view="pelvis", seed=6)
    for pet in study.pet:
        later = datetime.strptime(pet.SeriesDate + pet.SeriesTime.split(".")[0], "%Y%m%d%H%M%S")
        pet.SeriesTime = (later + timedelta(hours=3)).strftime("%H%M%S")
    _assert_truth(study)


def test_philips_counts_with_suv_scale_factor() -> None:
    study = make_study(field_of_view="pelvis", seed=7)
    truth = study.truth
    factor = truth.patient_weight_kg * 1000.0 / truth.decayed_dose_bq  # SUV per Bq/ml
    for pet in study.pet:
        pet.Units = "CNTS"
        pet.private_block(0x7053, "Philips PET Private Group", create=True).add_new(
            0x00, "DS", f"{factor:.10g}")
    _assert_truth(study)


def test_admin_decay_correction() -> None:
    study = make_study(field_of_view="pelvis", tracer="64Cu-ATSM", seed=8)
    to_admin = 2.0 ** (study.truth.uptake_time_s / CU64_HALF_LIFE_S)
    for pet in study.pet:
        pet.DecayCorrection = "ADMIN"
        pet.RescaleSlope = f"{float(pet.RescaleSlope) * to_admin:.12g}"
    _assert_truth(study)


def test_enhanced_pet_multiframe() -> None:
    study = make_study(field_of_view="pelvis", seed=9)
    ordered = _pet_sorted(study)
    order = list(range(len(ordered)))[::-1]  # frames stored head to feet
    enhanced = enhanced_from(ordered, order)
    _assert_truth(study, [enhanced])


def test_enhanced_pet_result_objects_are_refused_with_a_reason() -> None:
    from quant.errors import QuantificationError
    from quant.pipeline import quantify
    from service.config import load_config
    from service.pipeline.processing import build_result_objects

    study = make_study(field_of_view="pelvis", seed=9)
    ordered = _pet_sorted(study)
    enhanced = enhanced_from(ordered, list(range(len(ordered))))
    config = load_config(None)
    quantified = quantify([enhanced], study.ct, [], config.quant.to_settings())
    assert quantified.result.lesions  # the figures themselves are computed
    with pytest.raises(QuantificationError, match="single-frame"):
        build_result_objects(quantified, config, generation=1)
