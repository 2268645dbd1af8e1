"""DICOM datasets of the synthetic studies: PET and CT Image Storage, one per slice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

from service.synthetic.anatomy import TracerSpec


@dataclass(frozen=True)
class Grid:
    """A regular axial grid: ``origin`` is the centre of voxel (0, 0, 0), mm; spacing (x, y, z)."""

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    size: tuple[int, int, int]
    """(columns, rows, slices)."""

    def centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1-D centre coordinates (mm) of the columns, rows and slices."""
        return tuple(  # type: ignore[return-value]
            self.origin[i] + self.spacing[i] * np.arange(self.size[i]) for i in range(3)
        )


@dataclass(frozen=True)
class StudyHeader:
    """Patient, study and timing attributes shared by the PET and CT series."""

    patient_id: str
    patient_sex: str
    patient_weight_kg: float
    patient_size_m: float
    study_instance_uid: str
    frame_of_reference_uid: str
    injection: datetime
    scan_start: datetime
    uid_seed: str


def derived_uid(*parts: str) -> str:
    """Deterministic UID from strings (pydicom's ``generate_uid`` with entropy sources)."""
    return str(generate_uid(entropy_srcs=list(parts)))


def _da(value: datetime) -> str:
    return value.strftime("%Y%m%d")


def _tm(value: datetime) -> str:
    return value.strftime("%H%M%S.%f")


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _common(header: StudyHeader, modality: str, series_number: int, series_uid: str) -> Dataset:
    """Patient, General Study, Patient Study, General Series, Frame of Reference, Equipment."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = header.patient_sex
    ds.PatientAge = "064Y"
    ds.PatientWeight = f"{header.patient_weight_kg:g}"
    ds.PatientSize = f"{header.patient_size_m:g}"
    ds.StudyInstanceUID = header.study_instance_uid
    ds.StudyDate = _da(header.injection)
    ds.StudyTime = _tm(header.injection)
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "Synthetic hypoxia PET/CT"
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = _da(header.scan_start)
    ds.SeriesTime = _tm(header.scan_start)
    ds.Laterality = ""
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "hypoxnode synthetic"
    ds.ManufacturerModelName = "service.synthetic"
    ds.AcquisitionDate = _da(header.scan_start)
    ds.AcquisitionTime = _tm(header.scan_start)
    ds.ContentDate = _da(header.scan_start)
    ds.ContentTime = _tm(header.scan_start)
    return ds


def _image_plane(ds: Dataset, grid: Grid, k: int, thickness_mm: float) -> None:
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    z = grid.origin[2] + grid.spacing[2] * k
    ds.ImagePositionPatient = [f"{grid.origin[0]:g}", f"{grid.origin[1]:g}", f"{z:g}"]
    ds.SliceLocation = f"{z:g}"
    ds.PixelSpacing = [f"{grid.spacing[1]:g}", f"{grid.spacing[0]:g}"]
    ds.SliceThickness = f"{thickness_mm:g}"
    ds.PatientOrientation = ["L", "P"]


def _pixels(ds: Dataset, stored: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def _isotope(header: StudyHeader, tracer: TracerSpec, dose_bq: float) -> Dataset:
    item = Dataset()
    item.Radiopharmaceutical = tracer.radiopharmaceutical
    item.RadiopharmaceuticalStartTime = _tm(header.injection)
    item.RadiopharmaceuticalStartDateTime = header.injection.strftime("%Y%m%d%H%M%S.%f")
    item.RadionuclideTotalDose = f"{dose_bq:.6g}"
    item.RadionuclideHalfLife = f"{tracer.half_life_s:g}"
    item.RadionuclidePositronFraction = "0.1752" if "Cu-64" in tracer.radiopharmaceutical else ""
    item.RadionuclideCodeSequence = [_code(tracer.nuclide_code, tracer.nuclide_meaning)]
    if tracer.pharmaceutical_code:
        item.RadiopharmaceuticalCodeSequence = [
            _code(tracer.pharmaceutical_code, tracer.pharmaceutical_meaning)
        ]
    return item


def pet_datasets(
    header: StudyHeader,
    tracer: TracerSpec,
    dose_bq: float,
    grid: Grid,
    stored: np.ndarray,
    slopes: np.ndarray,
    frame_duration_s: float,
) -> list[Dataset]:
    """One PET Image Storage dataset per slice (BQML, decay corrected to the scan start).

    Parameters
    ----------
    stored
        uint16 stored values ``[slice, row, col]``.
    slopes
        RescaleSlope of each slice (Bq/ml per stored value).
    """
    series_uid = derived_uid(header.uid_seed, "pet-series")
    n_slices = stored.shape[0]
    out = []
    for k in range(n_slices):
        ds = _common(header, "PT", 2, series_uid)
        ds.SOPClassUID = PositronEmissionTomographyImageStorage
        ds.SOPInstanceUID = derived_uid(header.uid_seed, "pet", str(k))
        ds.SeriesDescription = f"PET {tracer.radiopharmaceutical} synthetic"
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.DecayCorrection = "START"
        ds.RandomsCorrectionMethod = "NONE"
        ds.ReconstructionMethod = "OSEM"
        ds.AttenuationCorrectionMethod = "CT"
        ds.NumberOfSlices = n_slices
        ds.CollimatorType = "NONE"
        ds.RadiopharmaceuticalInformationSequence = [_isotope(header, tracer, dose_bq)]
        ds.PatientOrientationCodeSequence = []
        ds.PatientGantryRelationshipCodeSequence = []
        ds.InstanceNumber = k + 1
        ds.ImageIndex = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.FrameReferenceTime = f"{1000.0 * frame_duration_s / 2.0:g}"
        ds.ActualFrameDuration = int(round(1000.0 * frame_duration_s))
        ds.DecayFactor = "1"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = f"{slopes[k]:.10g}"
        ds.LossyImageCompression = "00"
        _image_plane(ds, grid, k, grid.spacing[2])
        _pixels(ds, stored[k])
        _file_meta(ds)
        out.append(ds)
    return out


def ct_datasets(header: StudyHeader, grid: Grid, hu: np.ndarray) -> list[Dataset]:
    """One CT Image Storage dataset per slice; stored = HU + 1024, RescaleIntercept -1024."""
    series_uid = derived_uid(header.uid_seed, "ct-series")
    stored = np.clip(np.rint(hu + 1024.0), 0, 65535).astype(np.uint16)
    out = []
    for k in range(stored.shape[0]):
        ds = _common(header, "CT", 1, series_uid)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = derived_uid(header.uid_seed, "ct", str(k))
        ds.SeriesDescription = "CT synthetic"
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PatientPosition = "HFS"
        _image_plane(ds, grid, k, grid.spacing[2])
        _pixels(ds, stored[k])
        _file_meta(ds)
        out.append(ds)
    return out


def write_datasets(datasets: list[Dataset], directory: Path, prefix: str) -> list[Path]:
    """Write DICOM Part 10 files (explicit VR little endian) named ``{prefix}{index:04d}.dcm``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = directory / f"{prefix}{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
