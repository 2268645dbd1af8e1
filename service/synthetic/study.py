"""``make_study``: a synthetic PET/CT study with known truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)
from pydicom.dataset import Dataset

from service.synthetic.anatomy import (
    FIELDS_OF_VIEW,
    HOUNSFIELD,
    TRACERS,
    Tissue,
    body_shapes,
    label_volume,
    tumour_shapes,
)
from service.synthetic.dicom import (
    Grid,
    StudyHeader,
    ct_datasets,
    derived_uid,
    pet_datasets,
    write_datasets,
)

PET_PIXEL_MM = 4.0
PET_SLICE_MM = 3.0
CT_PIXEL_MM = 2.0
CT_SLICE_MM = 2.0
PET_MATRIX = 64
CT_MATRIX = 128
STORED_MAX = 65000.0
"""Largest stored PET value of a slice (the slice's RescaleSlope is chosen for it)."""


@dataclass
class Truth:
    """What the synthetic study contains, on the PET grid (``[slice, row, col]``, z ascending).

    Attributes
    ----------
    suv
        SUV represented by the stored PET pixels (after blur, noise and uint16 quantisation):
        ``stored x RescaleSlope x weight_g / decayed_dose_bq``.
    ideal_suv
        Noiseless, unblurred SUV of the anatomy (what the tracer distribution is).
    labels
        :class:`~service.synthetic.anatomy.Tissue` label of each PET voxel (voxel centre inside).
    tumour_mask, tumour_core_mask, muscle_mask, liver_mask, bladder_mask, bowel_mask,
    brain_mask, body_mask, heart_mask, kidney_mask
        Boolean masks; all False when the organ is not in the field of view. ``bladder_mask``
        holds every urine label (bladder and renal pelves).
    suv_max, tumour_suv_mean
        SUVmax and SUVmean of the tumour in ``ideal_suv`` (0.0 without lesion).
    muscle_suv_mean
        Mean of ``ideal_suv`` over ``muscle_mask``.
    hypoxic_masks, hypoxic_volume_ml, hypoxic_fraction
        Per threshold ``t``: tumour voxels with ``ideal_suv >= t x muscle_suv_mean`` that are
        26-connected to the tumour maximum; their volume and fraction of the tumour volume.
    tumour_volume_ml, voxel_volume_ml
        Tumour volume (voxel count x voxel volume) and one PET voxel's volume.
    pet_spacing_mm, pet_origin_mm, ct_spacing_mm, ct_origin_mm
        Grids as SimpleITK gives them: (x, y, z); origin is the centre of voxel (0, 0, 0).
    suv_per_stored
        Per slice: SUV per stored value (RescaleSlope x weight_g / decayed dose).
    injected_dose_bq, decayed_dose_bq, patient_weight_kg, uptake_time_s
        The figures of the SUV conversion.
    """

    suv: np.ndarray
    ideal_suv: np.ndarray
    labels: np.ndarray
    tumour_mask: np.ndarray
    tumour_core_mask: np.ndarray
    muscle_mask: np.ndarray
    liver_mask: np.ndarray
    bladder_mask: np.ndarray
    bowel_mask: np.ndarray
    brain_mask: np.ndarray
    body_mask: np.ndarray
    heart_mask: np.ndarray
    kidney_mask: np.ndarray
    suv_max: float
    tumour_suv_mean: float
    muscle_suv_mean: float
    hypoxic_masks: dict[float, np.ndarray]
    hypoxic_volume_ml: dict[float, float]
    hypoxic_fraction: dict[float, float]
    tumour_volume_ml: float
    voxel_volume_ml: float
    pet_spacing_mm: tuple[float, float, float]
    pet_origin_mm: tuple[float, float, float]
    ct_spacing_mm: tuple[float, float, float]
    ct_origin_mm: tuple[float, float, float]
    suv_per_stored: np.ndarray
    injected_dose_bq: float
    decayed_dose_bq: float
    patient_weight_kg: float
    uptake_time_s: float
    field_of_view: str = ""
    tracer: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class SyntheticStudy:
    """A synthetic PET/CT study: datasets sorted by ascending z, and the truth."""

    pet: list[Dataset]
    ct: list[Dataset]
    truth: Truth


def _grid(z0: float, z1: float, matrix: int, pixel_mm: float, slice_mm: float) -> Grid:
    half = matrix * pixel_mm / 2.0
    first = -half + pixel_mm / 2.0
    n_slices = int(round((z1 - z0) / slice_mm))
    return Grid(
        origin=(first, first, z0 + slice_mm / 2.0),
        spacing=(pixel_mm, pixel_mm, slice_mm),
        size=(matrix, matrix, n_slices),
    )


def _blur(values: np.ndarray, spacing: tuple[float, float, float], fwhm_mm: float) -> np.ndarray:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(spacing)
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    blurred = sitk.SmoothingRecursiveGaussian(image, sigma)
    return sitk.GetArrayFromImage(blurred).astype(np.float64)


def _connected_to(mask: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """The 26-connected component of ``mask`` containing ``index`` (empty if not in mask)."""
    if not mask[index]:
        return np.zeros_like(mask, dtype=bool)
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    labels = sitk.GetArrayFromImage(cc)
    out: np.ndarray = labels == labels[index]
    return out


def _hypoxic_truth(
    ideal: np.ndarray, tumour: np.ndarray, muscle_mean: float, thresholds: Sequence[float]
) -> dict[float, np.ndarray]:
    if not tumour.any():
        return {t: np.zeros_like(tumour) for t in thresholds}
    masked = np.where(tumour, ideal, -np.inf)
    peak = np.unravel_index(int(np.argmax(masked)), ideal.shape)
    return {
        t: _connected_to(tumour & (ideal >= t * muscle_mean), tuple(int(i) for i in peak))
        for t in thresholds
    }


def make_study(
    *,
    field_of_view: str = "pelvis",
    tracer: str = "64Cu-ATSM",
    noise_sd: float = 0.0,
    blur_fwhm_mm: float = 0.0,
    seed: int = 0,
    with_lesion: bool = True,
    study_instance_uid: str | None = None,
    patient_id: str = "SYNTH001",
    injection_to_scan_s: float = 3600.0,
    injection_time: datetime | None = None,
    injected_dose_bq: float | None = None,
    patient_weight_kg: float = 70.0,
    patient_size_m: float = 1.70,
    patient_sex: str = "F",
    frame_duration_s: float = 600.0,
    hypoxic_thresholds: Sequence[float] = (1.5, 2.0),
    tumour_uptake_factor: float = 1.0,
    frame_of_reference_uid: str | None = None,
    tumour_site: str = "",
    necrotic: bool = False,
    variant: str = "",
) -> SyntheticStudy:
    """Build a synthetic PET/CT study with known truth.

    Parameters
    ----------
    field_of_view
        ``"pelvis"``, ``"head_neck"``, ``"thorax"``, ``"abdomen"`` or ``"whole_body"``.
    tracer
        A key of :data:`~service.synthetic.anatomy.TRACERS` (``"64Cu-ATSM"``, ``"18F-FMISO"``,
        ``"18F-FDG"``, ...).
    noise_sd
        Relative Gaussian noise: each PET voxel is multiplied by ``1 + noise_sd x N(0, 1)``.
    blur_fwhm_mm
        Isotropic Gaussian blur (FWHM, mm) applied to the PET before the noise.
    seed
        Seeds the noise and, with the other arguments, every UID.
    with_lesion
        Whether the tumour is present.
    study_instance_uid
        Shared by PET and CT; derived from the seed when None.
    injection_to_scan_s
        Uptake time: injection to the PET series start.
    injection_time
        RadiopharmaceuticalStartDateTime; default 2024-03-05 09:00.
    injected_dose_bq
        RadionuclideTotalDose; default the tracer's activity per kg x weight.
    hypoxic_thresholds
        Tumour-to-muscle ratios for which the truth holds hypoxic sub-volumes.
    tumour_uptake_factor
        Multiplies the tracer's tumour uptake (rim and core): a follow-up scan with a hotter
        or cooler tumour.
    frame_of_reference_uid
        Shared by PET and CT; derived from the seed when None (pass one value to two studies
        to put them in one frame of reference).
    tumour_site
        ``""`` (the field of view's own tumour), ``"bladder"`` or ``"liver"``: a tumour
        touching that organ (:data:`~service.synthetic.anatomy.ABUTTING`; pelvis or abdomen).
    necrotic
        The tumour has a cold fluid-density (10 HU) core inside a hot rim.
    variant
        ``"touching"``: soft tissue of higher uptake against muscle and kidneys, and a spleen
        (:func:`~service.synthetic.anatomy.variant_shapes`).

    Returns
    -------
    SyntheticStudy
        PET (64 x 64 x 4 mm, 3 mm slices) and CT (128 x 128 x 2 mm, 2 mm slices) over the same
        z extent with different slice positions, one StudyInstanceUID and FrameOfReferenceUID.
    """
    if field_of_view not in FIELDS_OF_VIEW:
        raise ValueError(f"field_of_view must be one of {sorted(FIELDS_OF_VIEW)}")
    if tracer not in TRACERS:
        raise ValueError(f"tracer must be one of {sorted(TRACERS)}")
    if noise_sd < 0 or blur_fwhm_mm < 0:
        raise ValueError("noise_sd and blur_fwhm_mm must be >= 0")
    if tumour_uptake_factor <= 0:
        raise ValueError("tumour_uptake_factor must be > 0")
    spec = TRACERS[tracer]
    z0, z1 = FIELDS_OF_VIEW[field_of_view]
    pet_grid = _grid(z0, z1, PET_MATRIX, PET_PIXEL_MM, PET_SLICE_MM)
    ct_grid = _grid(z0, z1, CT_MATRIX, CT_PIXEL_MM, CT_SLICE_MM)
    shapes = body_shapes(variant) + (
        tumour_shapes(field_of_view, tumour_site, necrotic) if with_lesion else []
    )

    labels = label_volume(shapes, *pet_grid.centres())
    lut = np.array([spec.uptake.get(t, 0.0) for t in Tissue], dtype=np.float64)
    lut[[Tissue.TUMOUR_RIM, Tissue.TUMOUR_CORE]] *= tumour_uptake_factor
    ideal = lut[labels]
    activity = _blur(ideal, pet_grid.spacing, blur_fwhm_mm) if blur_fwhm_mm > 0 else ideal
    rng = np.random.default_rng(seed)
    if noise_sd > 0:
        activity = activity * (1.0 + noise_sd * rng.standard_normal(activity.shape))
    activity = np.clip(activity, 0.0, None)

    injection = injection_time or datetime(2024, 3, 5, 9, 0, 0)
    scan_start = injection + timedelta(seconds=injection_to_scan_s)
    dose = injected_dose_bq or spec.dose_bq_per_kg * patient_weight_kg
    decayed = dose * 2.0 ** (-injection_to_scan_s / spec.half_life_s)
    weight_g = patient_weight_kg * 1000.0
    bqml = activity * decayed / weight_g
    slice_max = bqml.reshape(bqml.shape[0], -1).max(axis=1)
    slopes = np.where(slice_max > 0, slice_max / STORED_MAX, 1.0)
    stored = np.rint(bqml / slopes[:, None, None]).astype(np.uint16)
    suv_per_stored = slopes * weight_g / decayed
    suv = stored * suv_per_stored[:, None, None]

    uid_seed = "|".join([str(seed), field_of_view, tracer, patient_id, str(with_lesion)])
    if tumour_site or necrotic or variant:
        uid_seed += f"|{tumour_site}|{necrotic}|{variant}"
    header = StudyHeader(
        patient_id=patient_id,
        patient_sex=patient_sex,
        patient_weight_kg=patient_weight_kg,
        patient_size_m=patient_size_m,
        study_instance_uid=study_instance_uid or derived_uid(uid_seed, "study"),
        frame_of_reference_uid=(
            frame_of_reference_uid or derived_uid(uid_seed, "frame-of-reference")
        ),
        injection=injection,
        scan_start=scan_start,
        uid_seed=uid_seed + "|" + (study_instance_uid or ""),
    )
    pet = pet_datasets(header, spec, dose, pet_grid, stored, slopes, frame_duration_s)
    hu_lut = np.array([HOUNSFIELD[t] for t in Tissue], dtype=np.float64)
    ct = ct_datasets(header, ct_grid, hu_lut[label_volume(shapes, *ct_grid.centres())])

    truth = _truth(
        labels,
        ideal,
        suv,
        (pet_grid, ct_grid),
        hypoxic_thresholds,
        suv_per_stored=suv_per_stored,
        injected_dose_bq=float(dose),
        decayed_dose_bq=float(decayed),
        patient_weight_kg=patient_weight_kg,
        uptake_time_s=float(injection_to_scan_s),
        field_of_view=field_of_view,
        tracer=tracer,
    )
    return SyntheticStudy(pet=pet, ct=ct, truth=truth)


def _truth(
    labels: np.ndarray,
    ideal: np.ndarray,
    suv: np.ndarray,
    grids: tuple[Grid, Grid],
    thresholds: Sequence[float],
    **conversion: Any,
) -> Truth:
    """Masks and figures of the truth; ``conversion`` holds the SUV-conversion fields."""
    pet_grid, ct_grid = grids
    voxel_ml = float(np.prod(pet_grid.spacing)) / 1000.0
    tumour = np.isin(labels, [Tissue.TUMOUR_RIM, Tissue.TUMOUR_CORE, Tissue.NECROSIS])
    muscle = labels == Tissue.MUSCLE
    muscle_mean = float(ideal[muscle].mean()) if muscle.any() else 0.0
    hypoxic = _hypoxic_truth(ideal, tumour, muscle_mean, thresholds)
    tumour_ml = float(tumour.sum()) * voxel_ml
    return Truth(
        suv=suv,
        ideal_suv=ideal,
        labels=labels,
        tumour_mask=tumour,
        tumour_core_mask=labels == Tissue.TUMOUR_CORE,
        muscle_mask=muscle,
        liver_mask=labels == Tissue.LIVER,
        bladder_mask=labels == Tissue.BLADDER,
        bowel_mask=labels == Tissue.BOWEL,
        brain_mask=labels == Tissue.BRAIN,
        body_mask=labels != Tissue.AIR,
        heart_mask=labels == Tissue.HEART,
        kidney_mask=labels == Tissue.KIDNEY,
        suv_max=float(ideal[tumour].max()) if tumour.any() else 0.0,
        tumour_suv_mean=float(ideal[tumour].mean()) if tumour.any() else 0.0,
        muscle_suv_mean=muscle_mean,
        hypoxic_masks=hypoxic,
        hypoxic_volume_ml={t: float(m.sum()) * voxel_ml for t, m in hypoxic.items()},
        hypoxic_fraction={
            t: (float(m.sum()) * voxel_ml / tumour_ml if tumour_ml else 0.0)
            for t, m in hypoxic.items()
        },
        tumour_volume_ml=tumour_ml,
        voxel_volume_ml=voxel_ml,
        pet_spacing_mm=pet_grid.spacing,
        pet_origin_mm=pet_grid.origin,
        ct_spacing_mm=ct_grid.spacing,
        ct_origin_mm=ct_grid.origin,
        **conversion,
    )


def write_study(study: SyntheticStudy, directory: str | Path) -> list[Path]:
    """Write every dataset of ``study`` as a DICOM Part 10 file (explicit VR little endian).

    PET files go to ``directory/pet``, CT files to ``directory/ct``.

    Returns
    -------
    list[Path]
        The files written, PET first.
    """
    root = Path(directory)
    return write_datasets(study.pet, root / "pet", "PT") + write_datasets(
        study.ct, root / "ct", "CT"
    )
