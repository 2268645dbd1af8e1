"""Result records shared by the quantification pipeline, the DICOM builders and the service.

Masks are boolean numpy arrays indexed ``[slice, row, column]`` on the PET grid, slices in the
order of :attr:`StudyResult.pet_sop_instance_uids` (ascending position along the slice normal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SuvFacts:
    """The header facts an SUV conversion used, for the report and the ``suv`` command.

    Times are naive datetimes in the scanner's local time (DICOM DA/TM carry no zone).
    """

    units: str
    decay_correction: str
    suv_type: str
    scan_reference_time: datetime | None
    injection_time: datetime | None
    uptake_time_s: float | None
    injected_dose_bq: float | None
    half_life_s: float | None
    radionuclide: str | None
    patient_weight_kg: float | None
    patient_size_m: float | None
    patient_sex: str | None
    scale_factor: float
    """SUV per (stored value x RescaleSlope + RescaleIntercept) of the first slice."""
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready dict (datetimes in ISO 8601)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, tuple):
                out[key] = list(value)
            else:
                out[key] = value
        return out


@dataclass
class HypoxicSubvolume:
    """Voxels of one lesion with SUV >= threshold x muscle SUVmean, connected to its maximum."""

    threshold: float
    volume_ml: float
    fraction: float
    mask: np.ndarray


@dataclass
class LesionResult:
    """Figures of one lesion; ``mask`` is its VOI on the PET grid."""

    suv_max: float
    suv_mean: float
    suv_peak: float
    volume_ml: float
    tm_max: float
    tm_mean: float
    hypoxic: list[HypoxicSubvolume]
    mask: np.ndarray
    source: str
    """``"contour"`` (supplied RTSTRUCT/SEG ROI, name in ``label``) or ``"detected"``."""
    label: str = ""
    max_index: tuple[int, int, int] = (0, 0, 0)
    """Voxel index (slice, row, column) of SUVmax."""
    centroid_mm: tuple[float, float, float] | None = None
    """Centre of mass of ``mask`` in patient coordinates (DICOM LPS, mm); what lesion matching
    across scans compares."""

    def to_json(self) -> dict[str, Any]:
        """The lesion entry of the ``quantify --json`` output."""
        return {
            "label": self.label,
            "source": self.source,
            "suv_max": self.suv_max,
            "suv_mean": self.suv_mean,
            "suv_peak": self.suv_peak,
            "volume_ml": self.volume_ml,
            "tm_max": self.tm_max,
            "tm_mean": self.tm_mean,
            "hypoxic": [
                {"threshold": h.threshold, "volume_ml": h.volume_ml, "fraction": h.fraction}
                for h in self.hypoxic
            ],
            "centroid_mm": list(self.centroid_mm) if self.centroid_mm is not None else None,
        }


@dataclass
class MuscleResult:
    """The skeletal-muscle reference region."""

    suv_mean: float
    suv_sd: float
    volume_ml: float
    mask: np.ndarray
    location: str
    """Where it was placed, for a person, e.g. ``"thigh muscle, slices 12-20"``."""
    hu_mean: float | None = None
    """Mean CT number (HU) of the region, None when no CT was used."""
    warnings: list[str] = field(default_factory=list)
    """Why the reference may not be credible (small, inhomogeneous, atypical CT number)."""

    def to_json(self) -> dict[str, Any]:
        """The muscle entry of the ``quantify --json`` output."""
        return {
            "suv_mean": self.suv_mean,
            "suv_sd": self.suv_sd,
            "volume_ml": self.volume_ml,
            "location": self.location,
            "hu_mean": self.hu_mean,
        }


@dataclass
class ExcludedCandidate:
    """A region above the detection threshold that was not reported as a lesion, and why.

    Nothing hot is dropped silently: every candidate the detector saw is either a
    :class:`LesionResult` or one of these, and the JSON, the SR, the summary picture and the
    status page all show them.
    """

    reason: str
    """For a person, e.g. ``"bladder (urine in the pelvic midline)"``, ``"below noise floor"``."""
    suv_max: float
    volume_ml: float
    mask: np.ndarray
    """The candidate region on the PET grid (bool ``[slice, row, col]``)."""
    max_index: tuple[int, int, int] = (0, 0, 0)
    """Voxel index (slice, row, column) of its SUVmax."""
    centroid_mm: tuple[float, float, float] | None = None
    """Centre of mass in patient coordinates (DICOM LPS, mm)."""
    label: str = ""
    """Short name for drawings and lists, e.g. ``"Excluded 1"``."""

    def to_json(self) -> dict[str, Any]:
        """The entry of ``excluded_candidates`` in the ``quantify --json`` output."""
        return {
            "label": self.label,
            "reason": self.reason,
            "suv_max": self.suv_max,
            "volume_ml": self.volume_ml,
            "max_index": list(self.max_index),
            "centroid_mm": list(self.centroid_mm) if self.centroid_mm is not None else None,
        }


@dataclass
class StudyResult:
    """Everything one quantification produced."""

    study_instance_uid: str
    pet_series_instance_uid: str
    pet_sop_instance_uids: list[str]
    tracer: str
    suv_type: str
    suv: SuvFacts
    muscle: MuscleResult
    lesions: list[LesionResult]
    voxel_volume_ml: float
    method: dict[str, Any] = field(default_factory=dict)
    """How the regions were found (names and parameters), for provenance."""
    warnings: list[str] = field(default_factory=list)
    patient_id: str = ""
    """PatientID (0010,0020) of the PET series."""
    issuer_of_patient_id: str = ""
    """IssuerOfPatientID (0010,0021); empty when the header has none."""
    frame_of_reference_uid: str = ""
    """FrameOfReferenceUID of the PET series (lesion centroids are in this frame)."""
    excluded: list[ExcludedCandidate] = field(default_factory=list)
    """Candidates above the detection threshold not reported as lesions, highest SUVmax first."""

    @property
    def scan_datetime(self) -> datetime | None:
        """Scan start (the SUV decay reference), from :attr:`suv`."""
        return self.suv.scan_reference_time

    @property
    def injection_datetime(self) -> datetime | None:
        """Injection (radiopharmaceutical start), from :attr:`suv`."""
        return self.suv.injection_time

    def to_json(self) -> dict[str, Any]:
        """The documented ``hypoxnode quantify --json`` shape (lesions by SUVmax, highest first).

        Identity keys added for pairing (``patient_id``, ``issuer_of_patient_id``,
        ``frame_of_reference_uid``, ``scan_datetime``, ``injection_datetime``; ISO 8601 or
        None) come after the documented ones.
        """
        lesions = sorted(self.lesions, key=lambda les: les.suv_max, reverse=True)
        return {
            "study_instance_uid": self.study_instance_uid,
            "pet_series_instance_uid": self.pet_series_instance_uid,
            "tracer": self.tracer,
            "suv_type": self.suv_type,
            "muscle": self.muscle.to_json(),
            "lesions": [les.to_json() for les in lesions],
            "warnings": list(self.warnings),
            "suv": self.suv.to_json(),
            "method": self.method,
            "patient_id": self.patient_id,
            "issuer_of_patient_id": self.issuer_of_patient_id,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "scan_datetime": _iso(self.scan_datetime),
            "injection_datetime": _iso(self.injection_datetime),
            "excluded_candidates": [cand.to_json() for cand in self.excluded],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
