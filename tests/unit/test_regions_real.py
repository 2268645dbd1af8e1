"""Automatic regions on real patients: the three ``sts_petct_mirp`` FDG PET/CT WITHOUT their
RTSTRUCT; the GTV is used only as the answer (filled onto the PET grid by
:mod:`quant.image.supplied_contours`, which ``tests/unit/test_contour_input.py`` checks
independently).

Done-when of issue 14: a reported lesion holds the GTV's hottest voxel and has Dice >= 0.3
with the GTV, at most one reported lesion lies wholly outside the GTV, and the muscle
reference lies in muscle (outside the GTV, mean CT number of skeletal muscle).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813 (the conventional name)
from pydicom.dataset import Dataset

from quant.image.supplied_contours import supplied_tumour_masks
from quant.pipeline import TUMOUR_ROI_PATTERN, QuantifiedStudy, quantify
from quant.settings import QuantSettings
from tests.data_archives import unpack

PATIENTS = ["STS_001", "STS_002", "STS_003"]


def _read(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]


@cache
def _run(patient: str) -> tuple[QuantifiedStudy, np.ndarray]:
    root = unpack("sts_petct_mirp") / patient
    pet = _read(root / "PET" / "dicom" / "image")
    ct = _read(root / "CT" / "dicom" / "image")
    study = quantify(pet, ct, [], QuantSettings())  # no RTSTRUCT: detection
    rtstruct = _read(root / "PET" / "dicom" / "mask")
    gtv = supplied_tumour_masks(
        rtstruct, study.pet.suv, study.pet.frame_of_reference_uid, TUMOUR_ROI_PATTERN
    )[0][1]
    return study, gtv


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("patient", PATIENTS)
def test_tumour_found_without_its_contour(patient: str) -> None:
    study, gtv = _run(patient)
    result = study.result
    assert result.method["tumour_source"] == "detected"
    suv = sitk.GetArrayFromImage(study.pet.suv)
    hottest = np.unravel_index(int(np.argmax(np.where(gtv, suv, -np.inf))), suv.shape)
    holding = [les for les in result.lesions if les.mask[hottest]]
    assert holding, f"{patient}: no reported lesion holds the GTV's hottest voxel"
    assert _dice(holding[0].mask, gtv) >= 0.3
    outside = [les.label for les in result.lesions if not (les.mask & gtv).any()]
    assert len(outside) <= 1, f"{patient}: lesions wholly outside the GTV: {outside}"


@pytest.mark.parametrize("patient", PATIENTS)
def test_muscle_reference_lies_in_muscle(patient: str) -> None:
    study, gtv = _run(patient)
    muscle = study.result.muscle
    assert not (muscle.mask & gtv).any()
    assert muscle.hu_mean is not None and 20.0 <= muscle.hu_mean <= 80.0
    assert "HU" in muscle.location and "field of view limb" in muscle.location
    assert muscle.volume_ml >= 10.0
    assert muscle.suv_sd / muscle.suv_mean < 0.35


@pytest.mark.parametrize("patient", PATIENTS)
def test_nothing_hot_is_dropped_silently(patient: str) -> None:
    study, _ = _run(patient)
    result = study.result
    assert result.method["organ_rules_applied"].startswith("none")  # a cropped limb field
    reported = np.zeros_like(result.muscle.mask)
    for les in result.lesions:
        reported |= les.mask
    for cand in result.excluded:
        assert cand.reason and cand.label.startswith("Excluded")
        assert not (cand.mask & reported).any()
    as_json = result.to_json()["excluded_candidates"]
    assert [c["label"] for c in as_json] == [c.label for c in result.excluded]
