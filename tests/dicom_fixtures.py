"""Small in-memory PET series and StudyResults for the dicom_templates tests.

Everything is deterministic: UIDs come from :func:`dicom_templates.uids.derive_uid`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

from dicom_templates.uids import derive_uid
from quant.image.volume import ENHANCED_PET_IMAGE_STORAGE
from quant.results import HypoxicSubvolume, LesionResult, MuscleResult, StudyResult, SuvFacts
from service.synthetic import SyntheticStudy

SHAPE = (12, 32, 40)
"""Slices, rows, columns of the test PET grid."""
SPACING_MM = (3.0, 4.0, 4.0)
"""Slice spacing, row spacing, column spacing (anisotropic on purpose)."""
STUDY_UID = derive_uid("test", "study")
PET_SERIES_UID = derive_uid("test", "pet-series")
FRAME_OF_REFERENCE_UID = derive_uid("test", "frame-of-reference")


def phantom_suv(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A body with background SUV 1, a thigh-like muscle block and a hot sphere."""
    z, y, x = np.indices(shape)
    suv = np.zeros(shape, dtype=np.float32)
    body = ((y - shape[1] / 2) / (shape[1] * 0.42)) ** 2 + (
        (x - shape[2] / 2) / (shape[2] * 0.45)
    ) ** 2 <= 1.0
    suv[body] = 1.0
    suv[muscle_mask(shape)] = 0.8
    lesion = lesion_mask(shape)
    suv[lesion] = 3.0
    suv[hot_core_mask(shape)] = 4.5
    return suv


def lesion_mask(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A sphere of radius 3 voxels around (6, 12, 14)."""
    z, y, x = np.indices(shape)
    return (z - 6) ** 2 + (y - 12) ** 2 + (x - 14) ** 2 <= 9


def hot_core_mask(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """The 7-voxel hot centre of the lesion."""
    z, y, x = np.indices(shape)
    return np.abs(z - 6) + np.abs(y - 12) + np.abs(x - 14) <= 1


def muscle_mask(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A block in the lower right of the body."""
    mask = np.zeros(shape, dtype=bool)
    mask[2:10, 20:25, 24:31] = True
    return mask


def make_pet_series(suv: np.ndarray | None = None, *, units: str = "GML") -> list[Dataset]:
    """Single-frame PET Image Storage datasets of ``suv`` (slices ascending in z).

    Parameters
    ----------
    suv
        SUV array ``[slice, row, col]``; :func:`phantom_suv` by default.
    units
        Value of Units (0054,1001).
    """
    if suv is None:
        suv = phantom_suv()
    n_slices, rows, cols = suv.shape
    slope = float(max(suv.max(), 1e-3)) / 32767.0
    datasets = []
    for index in range(n_slices):
        ds = Dataset()
        sop_uid = UID(derive_uid("test", "pet", str(index)))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID = PositronEmissionTomographyImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = PET_SERIES_UID
        ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
        ds.PositionReferenceIndicator = ""
        ds.PatientName = "Hypoxia^Test"
        ds.PatientID = "HYPOX-0001"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.PatientWeight = 70.0
        ds.StudyDate = "20240301"
        ds.StudyTime = "090000"
        ds.SeriesDate = "20240301"
        ds.SeriesTime = "100000"
        ds.AcquisitionDate = "20240301"
        ds.AcquisitionTime = "100000"
        ds.ContentDate = "20240301"
        ds.ContentTime = "100000"
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC0001"
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.Modality = "PT"
        ds.Manufacturer = "TestVendor"
        ds.SeriesNumber = 3
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index) * SPACING_MM[0]]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [SPACING_MM[1], SPACING_MM[2]]
        ds.SliceThickness = SPACING_MM[0]
        ds.Rows = rows
        ds.Columns = cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = 0
        ds.Units = units
        ds.DecayCorrection = "ADMIN"
        ds.SUVType = "BW"
        stored = np.round(suv[index] / float(ds.RescaleSlope)).astype(np.int16)
        ds.PixelData = stored.tobytes()
        datasets.append(ds)
    return datasets


def write_series(datasets: Sequence[Dataset], directory: Path) -> list[Path]:
    """Write datasets as Part 10 files named by instance number."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{int(ds.InstanceNumber):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_result(
    *,
    n_lesions: int = 1,
    empty_hypoxic: bool = False,
    warnings: Sequence[str] = ("uptake time outside the tracer's window",),
    source: str = "detected",
) -> StudyResult:
    """A StudyResult over :func:`make_pet_series` with known figures.

    Parameters
    ----------
    n_lesions
        0, 1 or 2 (the second lesion is a small cube near the top of the grid).
    empty_hypoxic
        Make the threshold-2.0 sub-volume of the first lesion empty.
    warnings
        Study warnings.
    source
        ``"detected"`` or ``"contour"`` for the first lesion.
    """
    pet = make_pet_series()
    facts = SuvFacts(
        units="GML",
        decay_correction="ADMIN",
        suv_type="BW",
        scan_reference_time=datetime(2024, 3, 1, 10, 0, 0),
        injection_time=datetime(2024, 3, 1, 9, 0, 0),
        uptake_time_s=3600.0,
        injected_dose_bq=2.1e8,
        half_life_s=45721.0,
        radionuclide="Cu-64",
        patient_weight_kg=70.0,
        patient_size_m=1.68,
        patient_sex="F",
        scale_factor=1.0,
    )
    muscle = MuscleResult(
        suv_mean=0.8,
        suv_sd=0.05,
        volume_ml=13.44,
        mask=muscle_mask(),
        location="thigh muscle, slices 3-10",
    )
    lesions = []
    first = lesion_mask()
    core = hot_core_mask()
    if n_lesions >= 1:
        hyp2 = np.zeros(SHAPE, dtype=bool) if empty_hypoxic else core
        lesions.append(
            LesionResult(
                suv_max=4.5,
                suv_mean=3.2,
                suv_peak=3.9,
                volume_ml=5.472,
                tm_max=5.625,
                tm_mean=4.0,
                hypoxic=[
                    HypoxicSubvolume(threshold=1.5, volume_ml=5.472, fraction=1.0, mask=first),
                    HypoxicSubvolume(
                        threshold=2.0,
                        volume_ml=0.0 if empty_hypoxic else 0.336,
                        fraction=0.0 if empty_hypoxic else 0.0614,
                        mask=hyp2,
                    ),
                ],
                mask=first,
                source=source,
                label="GTV" if source == "contour" else "",
                max_index=(6, 12, 14),
            )
        )
    if n_lesions >= 2:
        second = np.zeros(SHAPE, dtype=bool)
        second[2:5, 8:11, 26:29] = True
        lesions.append(
            LesionResult(
                suv_max=2.1,
                suv_mean=1.9,
                suv_peak=2.0,
                volume_ml=1.296,
                tm_max=2.625,
                tm_mean=2.375,
                hypoxic=[
                    HypoxicSubvolume(threshold=1.5, volume_ml=1.296, fraction=1.0, mask=second),
                    HypoxicSubvolume(threshold=2.0, volume_ml=1.296, fraction=1.0, mask=second),
                ],
                mask=second,
                source="detected",
                max_index=(3, 9, 27),
            )
        )
    return StudyResult(
        study_instance_uid=STUDY_UID,
        pet_series_instance_uid=PET_SERIES_UID,
        pet_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in pet],
        tracer="64Cu-ATSM",
        suv_type="BW",
        suv=facts,
        muscle=muscle,
        lesions=lesions,
        voxel_volume_ml=float(np.prod(SPACING_MM)) / 1000.0,
        method={"lesions": "automatic T/M >= 1.5, 40% isocontour", "muscle": "CT -29..150 HU"},
        warnings=list(warnings),
    )


def result_from_synthetic(study: SyntheticStudy) -> StudyResult:
    """A StudyResult with the figures of a synthetic study's truth (no quantification run)."""
    truth = study.truth
    voxel_ml = truth.voxel_volume_ml
    lesions = []
    if truth.tumour_mask.any():
        values = truth.ideal_suv[truth.tumour_mask]
        max_index = np.unravel_index(
            int(np.argmax(np.where(truth.tumour_mask, truth.ideal_suv, -np.inf))),
            truth.tumour_mask.shape,
        )
        lesions.append(
            LesionResult(
                suv_max=truth.suv_max,
                suv_mean=truth.tumour_suv_mean,
                suv_peak=float(np.percentile(values, 90)),
                volume_ml=truth.tumour_volume_ml,
                tm_max=truth.suv_max / truth.muscle_suv_mean,
                tm_mean=truth.tumour_suv_mean / truth.muscle_suv_mean,
                hypoxic=[
                    HypoxicSubvolume(
                        threshold=t,
                        volume_ml=truth.hypoxic_volume_ml[t],
                        fraction=truth.hypoxic_fraction[t],
                        mask=truth.hypoxic_masks[t],
                    )
                    for t in sorted(truth.hypoxic_masks)
                ],
                mask=truth.tumour_mask,
                source="detected",
                max_index=(int(max_index[0]), int(max_index[1]), int(max_index[2])),
            )
        )
    muscle_values = truth.ideal_suv[truth.muscle_mask]
    facts = SuvFacts(
        units="BQML",
        decay_correction="START",
        suv_type="BW",
        scan_reference_time=None,
        injection_time=None,
        uptake_time_s=truth.uptake_time_s,
        injected_dose_bq=truth.injected_dose_bq,
        half_life_s=None,
        radionuclide="Cu-64",
        patient_weight_kg=truth.patient_weight_kg,
        patient_size_m=None,
        patient_sex=None,
        scale_factor=1.0,
    )
    return StudyResult(
        study_instance_uid=str(study.pet[0].StudyInstanceUID),
        pet_series_instance_uid=str(study.pet[0].SeriesInstanceUID),
        pet_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in study.pet],
        tracer=truth.tracer or "64Cu-ATSM",
        suv_type="BW",
        suv=facts,
        muscle=MuscleResult(
            suv_mean=truth.muscle_suv_mean,
            suv_sd=float(muscle_values.std()),
            volume_ml=float(truth.muscle_mask.sum()) * voxel_ml,
            mask=truth.muscle_mask,
            location="gluteal/thigh muscle (synthetic truth)",
        ),
        lesions=lesions,
        voxel_volume_ml=voxel_ml,
        method={"lesions": "synthetic truth", "muscle": "synthetic truth"},
        warnings=["figures taken from the synthetic truth, not measured"],
    )


def _item(**values: object) -> Dataset:
    out = Dataset()
    for keyword, value in values.items():
        setattr(out, keyword, value)
    return out


def enhanced_from(datasets: list[Dataset], order: list[int]) -> Dataset:
    """One Enhanced PET instance holding the frames of ``datasets`` in ``order`` (legacy
    single-frame PET converted, as a scanner that writes the enhanced IOD would)."""
    first = datasets[0]
    ds = Dataset()
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "StudyDate",
        "SeriesDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "PatientName",
        "PatientID",
        "PatientSex",
        "PatientSize",
        "PatientWeight",
        "Units",
        "DecayCorrection",
        "CorrectedImage",
        "RadiopharmaceuticalInformationSequence",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    ):
        setattr(ds, keyword, copy.deepcopy(first.data_element(keyword).value))
    ds.SOPClassUID = ENHANCED_PET_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.NumberOfFrames = len(order)
    ds.SharedFunctionalGroupsSequence = [
        _item(
            PlaneOrientationSequence=[
                _item(ImageOrientationPatient=list(first.ImageOrientationPatient))
            ],
            PixelMeasuresSequence=[
                _item(PixelSpacing=list(first.PixelSpacing), SliceThickness=first.SliceThickness)
            ],
        )
    ]
    frames = []
    for i in order:
        source = datasets[i]
        frames.append(
            _item(
                PlanePositionSequence=[
                    _item(ImagePositionPatient=list(source.ImagePositionPatient))
                ],
                PixelValueTransformationSequence=[
                    _item(
                        RescaleSlope=source.RescaleSlope,
                        RescaleIntercept=source.RescaleIntercept,
                        RescaleType="BQML",
                    )
                ],
                FrameContentSequence=[
                    _item(
                        FrameAcquisitionDateTime="20250101110000",
                        FrameReferenceDateTime="20250101110230",
                        FrameAcquisitionDuration=300000.0,
                    )
                ],
            )
        )
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = b"".join(datasets[i].PixelData for i in order)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
