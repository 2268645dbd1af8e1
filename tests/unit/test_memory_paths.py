"""The memory-saving paths give the same numbers as the plain ones they replace.

Deferred pixel data (``read_study``) stays deferred after the volumes are built; a CT built in
slabs equals one built from one array; connected components labelled on a bounding box and
the peak found without a masked copy equal their whole-image versions.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

import quant.image.volume
from quant.figures import component_at, peak_index
from quant.image.volume import PIXEL_DATA, load_ct_hu, load_pet_suv
from service.storage import study_files
from service.storage.study_files import find_files, read_study
from service.synthetic import make_study, write_study


def _deferred(ds: Dataset) -> bool:
    element = ds.get_item(PIXEL_DATA, keep_deferred=True)
    return isinstance(element, RawDataElement) and element.value is None


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = make_study(field_of_view="pelvis", noise_sd=0.1, seed=2)
    directory = tmp_path_factory.mktemp("memory-paths")
    write_study(study, directory)
    return directory


def test_read_study_defers_pixels_and_the_volumes_leave_them_deferred(
    written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(study_files, "DEFER_SIZE", "1 KB")  # the synthetic slices are small
    files = read_study(find_files(written))
    assert files.pet and files.ct
    assert all(_deferred(ds) for ds in [*files.pet, *files.ct])

    pet = load_pet_suv(files.pet)
    ct = load_ct_hu(files.ct)

    assert all(_deferred(ds) for ds in [*files.pet, *files.ct])
    full = [pydicom.dcmread(p) for p in find_files(written)]
    np.testing.assert_array_equal(
        _array(pet.suv), _array(load_pet_suv([d for d in full if d.Modality == "PT"]).suv)
    )
    np.testing.assert_array_equal(
        _array(ct), _array(load_ct_hu([d for d in full if d.Modality == "CT"]))
    )


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.5, -1000.25)])
def test_ct_built_in_slabs_equals_one_slab(
    written: Path, monkeypatch: pytest.MonkeyPatch, slope: float, intercept: float
) -> None:
    datasets = [pydicom.dcmread(p) for p in sorted((written / "ct").glob("*.dcm"))]
    for ds in datasets:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    slab = next(n for n in (3, 4, 5, 7) if len(datasets) % n)  # a last, shorter slab

    monkeypatch.setattr(quant.image.volume, "SLAB_SLICES", slab)
    slabs = load_ct_hu(copy.deepcopy(datasets))
    monkeypatch.setattr(quant.image.volume, "SLAB_SLICES", len(datasets) + 1)
    whole = load_ct_hu(datasets)

    np.testing.assert_array_equal(_array(slabs), _array(whole))
    assert slabs.GetPixelID() == whole.GetPixelID()
    assert slabs.GetPixelID() == (sitk.sitkInt16 if slope == 1.0 else sitk.sitkFloat32)
    for attribute in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        assert getattr(slabs, attribute)() == getattr(whole, attribute)()
    # the integral rescale needs no float: stored value + intercept, exactly
    if slope == 1.0:
        ordered = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
        expected = np.stack([ds.pixel_array.astype(np.int32) for ds in ordered]) + int(intercept)
        np.testing.assert_array_equal(_array(slabs), expected)


def _whole_image_component(mask: np.ndarray, index: tuple[int, int, int]) -> np.ndarray:
    if not mask[index]:
        return np.zeros_like(mask)
    labels = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    )
    out: np.ndarray = labels == labels[index]
    return out


@pytest.mark.parametrize("seed", range(6))
def test_component_at_equals_whole_image_labelling(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((20, 24, 28), dtype=bool)
    mask[3:15, 5:20, 4:22] = rng.random((12, 15, 18)) < 0.45  # several components
    for index in [tuple(int(i) for i in v) for v in np.argwhere(mask)[::37]] + [(0, 0, 0)]:
        k, j, i = index
        np.testing.assert_array_equal(
            component_at(mask, (k, j, i)), _whole_image_component(mask, (k, j, i))
        )


@pytest.mark.parametrize("seed", range(6))
def test_peak_index_equals_masked_argmax(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 5, size=(9, 10, 11)).astype(np.float64)  # many ties
    for mask in (rng.random(values.shape) < 0.3, np.zeros(values.shape, dtype=bool)):
        masked = np.where(mask, values, -np.inf)
        expected = tuple(int(i) for i in np.unravel_index(int(np.argmax(masked)), values.shape))
        assert peak_index(values, mask) == expected
