"""The rendered summary as a Secondary Capture Image in the PET's study.

Most PACS viewers draw neither SEG nor TID 1500; this picture (fused PET/CT MIPs with the
contours and the figures burned in) is what a radiologist sees everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom_templates.seg import sort_like_result
from dicom_templates.summary_render import render_summary
from quant.results import StudyResult


def _head_at_bottom_index(datasets: Sequence[Dataset]) -> bool:
    """True when slice 0 (first of ``datasets``) is the most inferior (feet) slice.

    Uses the patient z (LPS: + is superior) of the first and last ImagePositionPatient.
    """
    if len(datasets) < 2:
        return True
    first = float(datasets[0].ImagePositionPatient[2])
    last = float(datasets[-1].ImagePositionPatient[2])
    return last >= first


def build_summary(
    result: StudyResult,
    suv_array: np.ndarray,
    ct_array_on_pet: np.ndarray | None,
    spacing_mm: tuple[float, float, float],
    pet_datasets: Sequence[Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    manufacturer: str = "hypoxnode",
    series_description: str = "hypoxnode summary",
) -> Dataset:
    """Build the summary Secondary Capture (RGB, burned-in annotation).

    Parameters
    ----------
    result
        The quantification (figures and masks).
    suv_array
        SUV on the PET grid ``[slice, row, column]``, slices in result order.
    ct_array_on_pet
        CT in HU resampled onto the PET grid, or None (PET-only picture).
    spacing_mm
        (slice, row, column) spacing of the PET grid in mm: the same order as the array axes
        (SimpleITK's ``GetSpacing()`` is the reverse: (column, row, slice)).
    pet_datasets
        The PET instances; patient and study are copied from them.
    series_instance_uid, sop_instance_uid, series_number, instance_number
        Identity of the new instance.
    manufacturer
        Manufacturer of the Secondary Capture equipment.
    series_description
        SeriesDescription.

    Returns
    -------
    pydicom.dataset.Dataset
        A highdicom :class:`~highdicom.sc.SCImage` in the PET's study.

    Raises
    ------
    ValueError
        If the arrays do not match the PET grid of ``result``.
    """
    sources = sort_like_result(result, pet_datasets)
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if suv_array.shape != expected:
        raise ValueError(f"suv_array: shape {suv_array.shape}, PET grid is {expected}")
    pixels = render_summary(
        result,
        suv_array,
        ct_array_on_pet,
        spacing_mm,
        flip_rows=_head_at_bottom_index(sources),
    )
    ref = sources[0]
    image = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        study_instance_uid=str(ref.StudyInstanceUID),
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        patient_id=ref.get("PatientID"),
        patient_name=ref.get("PatientName"),
        patient_birth_date=ref.get("PatientBirthDate"),
        patient_sex=ref.get("PatientSex") or None,
        accession_number=ref.get("AccessionNumber"),
        study_id=ref.get("StudyID"),
        study_date=ref.get("StudyDate"),
        study_time=ref.get("StudyTime"),
        referring_physician_name=ref.get("ReferringPhysicianName"),
        # Orientation of the coronal panel (left part of the picture): patient left to the
        # right, feet downwards (radiological convention).
        patient_orientation=("L", "F"),
    )
    image.BurnedInAnnotation = "YES"
    # General Series Laterality is Type 2C and dciodvfy requires it for SC: the picture shows
    # the whole field of view, so laterality is "unknown" (empty), not left or right.
    image.add_new("Laterality", "CS", None)
    image.SeriesDescription = series_description
    image.Modality = "OT"
    image.DerivationDescription = (
        "Fused PET/CT maximum intensity projections with lesion and muscle contours and "
        "the quantification figures (hypoxnode)"
    )
    image.SourceImageSequence = [_source_item(ds) for ds in sources]
    return image


def _source_item(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item
