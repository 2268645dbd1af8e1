"""Benchmark-sized synthetic PET/CT studies, built from the pieces of :mod:`service.synthetic`.

``service.synthetic.make_study`` draws small grids (PET 64 x 64, CT 128 x 128) for fast tests.
The benchmark needs scanner-sized series (CT 512 x 512, PET 200 x 200, hundreds of slices),
so this module paints the same analytic anatomy (:func:`~service.synthetic.anatomy.body_shapes`,
the whole-body tumour) on larger grids and hands the stored values to the same dataset
builders (:func:`~service.synthetic.dicom.pet_datasets`,
:func:`~service.synthetic.dicom.ct_datasets`).

Pixels are rendered once per study size; each *copy* gets its own UIDs (derived from the copy
number), so several distinct studies of the same size can be sent to one node.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)

from service.synthetic.anatomy import (
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

STORED_MAX = 65000.0
"""Largest stored PET value of a slice (as in :mod:`service.synthetic.study`)."""
LABEL_CHUNK_SLICES = 32
"""Slices painted at a time (bounds the float temporaries of ``label_volume``)."""
GENERATOR_VERSION = 1
"""Bump when the pixels or headers change, so cached studies are rewritten."""


@dataclass(frozen=True)
class BenchStudySpec:
    """Size and geometry of one benchmark study.

    Attributes
    ----------
    name
        Directory name and label in the report.
    ct_slices, pet_slices
        Number of CT and PET instances (one slice each).
    z_range_mm
        Extent along the body axis (mm) of both series, on the canonical trunk of
        :mod:`service.synthetic.anatomy` (0 = pelvic floor, 576 = vertex).
    ct_matrix, ct_fov_mm
        CT rows = columns and field of view (pixel = fov / matrix).
    pet_matrix, pet_fov_mm
        PET rows = columns and field of view.
    tracer
        Key of :data:`~service.synthetic.anatomy.TRACERS`.
    noise_sd, blur_fwhm_mm
        PET noise (relative, Gaussian) and blur, as in ``make_study``.
    """

    name: str
    ct_slices: int
    pet_slices: int
    z_range_mm: tuple[float, float] = (0.0, 576.0)
    ct_matrix: int = 512
    ct_fov_mm: float = 500.0
    pet_matrix: int = 200
    pet_fov_mm: float = 600.0
    tracer: str = "64Cu-ATSM"
    noise_sd: float = 0.05
    blur_fwhm_mm: float = 6.0

    @property
    def instances(self) -> int:
        """CT + PET instances."""
        return self.ct_slices + self.pet_slices

    def fingerprint(self) -> str:
        """Identifies the pixels and headers this spec produces (for the on-disk cache)."""
        payload = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


PET_CT_600 = BenchStudySpec("pet-ct-600", ct_slices=300, pet_slices=300)
"""The issue's study: 300 CT 512 x 512 + 300 PET 200 x 200 (about 182 MB)."""
WHOLE_BODY_900 = BenchStudySpec("whole-body-900", ct_slices=600, pet_slices=300)
"""The whole-body study: 600 CT + 300 PET."""
QUICK_80 = BenchStudySpec("quick-80", ct_slices=40, pet_slices=40, z_range_mm=(0.0, 144.0))
"""Smoke-run study (``--quick``): 40 CT + 40 PET over the pelvis."""
QUICK_WB_120 = BenchStudySpec(
    "quick-wb-120", ct_slices=80, pet_slices=40, z_range_mm=(0.0, 144.0)
)
"""Smoke-run stand-in for the whole-body study: 80 CT + 40 PET."""


@dataclass
class RenderedPixels:
    """Stored pixel values of one study size, shared by all its copies."""

    pet_grid: Grid
    ct_grid: Grid
    pet_stored: np.ndarray
    """uint16 ``[slice, row, col]``."""
    pet_slopes: np.ndarray
    """RescaleSlope (Bq/ml per stored value) of each PET slice."""
    ct_hu: np.ndarray
    """float32 HU ``[slice, row, col]``."""
    injected_dose_bq: float


def _grid(z_range_mm: tuple[float, float], matrix: int, fov_mm: float, slices: int) -> Grid:
    z0, z1 = z_range_mm
    pixel = fov_mm / matrix
    slice_mm = (z1 - z0) / slices
    first = -fov_mm / 2.0 + pixel / 2.0
    return Grid(
        origin=(first, first, z0 + slice_mm / 2.0),
        spacing=(pixel, pixel, slice_mm),
        size=(matrix, matrix, slices),
    )


def _labels(grid: Grid) -> np.ndarray:
    """Tissue labels of ``grid`` painted in slabs of :data:`LABEL_CHUNK_SLICES`."""
    shapes = body_shapes() + tumour_shapes("whole_body")
    x, y, z = grid.centres()
    out = np.empty((z.size, y.size, x.size), dtype=np.uint8)
    for start in range(0, z.size, LABEL_CHUNK_SLICES):
        stop = min(z.size, start + LABEL_CHUNK_SLICES)
        out[start:stop] = label_volume(shapes, x, y, z[start:stop])
    return out


def render(spec: BenchStudySpec, seed: int = 0) -> RenderedPixels:
    """Paint the anatomy on the spec's grids and quantise it as a scanner would store it."""
    if spec.tracer not in TRACERS:
        raise ValueError(f"spec.tracer must be one of {sorted(TRACERS)}")
    if spec.ct_slices < 2 or spec.pet_slices < 2:
        raise ValueError("spec.ct_slices and spec.pet_slices must be >= 2")
    tracer = TRACERS[spec.tracer]
    pet_grid = _grid(spec.z_range_mm, spec.pet_matrix, spec.pet_fov_mm, spec.pet_slices)
    ct_grid = _grid(spec.z_range_mm, spec.ct_matrix, spec.ct_fov_mm, spec.ct_slices)

    uptake = np.array([tracer.uptake.get(t, 0.0) for t in Tissue], dtype=np.float32)
    activity = uptake[_labels(pet_grid)]
    if spec.blur_fwhm_mm > 0:
        image = sitk.GetImageFromArray(activity)
        image.SetSpacing(pet_grid.spacing)
        sigma = spec.blur_fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        activity = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma))
    if spec.noise_sd > 0:
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(activity.shape, dtype=np.float32)
        activity = activity * (1.0 + np.float32(spec.noise_sd) * noise)
    activity = np.clip(activity, 0.0, None)

    weight_g = 70_000.0
    dose = tracer.dose_bq_per_kg * weight_g / 1000.0
    decayed = dose * 2.0 ** (-3600.0 / tracer.half_life_s)
    bqml = activity.astype(np.float64) * decayed / weight_g
    slice_max = bqml.reshape(bqml.shape[0], -1).max(axis=1)
    slopes = np.where(slice_max > 0, slice_max / STORED_MAX, 1.0)
    stored = np.rint(bqml / slopes[:, None, None]).astype(np.uint16)

    hu_lut = np.array([HOUNSFIELD[t] for t in Tissue], dtype=np.float32)
    ct_hu = hu_lut[_labels(ct_grid)]
    return RenderedPixels(pet_grid, ct_grid, stored, slopes, ct_hu, float(dose))


def write_copy(
    spec: BenchStudySpec, pixels: RenderedPixels, directory: Path, copy: int
) -> list[Path]:
    """Write copy number ``copy`` of the study (own Study/Series/SOP UIDs) below ``directory``.

    Returns
    -------
    list[Path]
        PET files first (``pet/PT*.dcm``), then CT (``ct/CT*.dcm``).
    """
    if copy < 0:
        raise ValueError("copy must be >= 0")
    seed = f"hypoxnode-bench|{spec.fingerprint()}|copy{copy}"
    injection = datetime(2024, 3, 5, 9, 0, 0) + timedelta(minutes=copy)
    header = StudyHeader(
        patient_id=f"BENCH{copy:03d}",
        patient_sex="F",
        patient_weight_kg=70.0,
        patient_size_m=1.70,
        study_instance_uid=derived_uid(seed, "study"),
        frame_of_reference_uid=derived_uid(seed, "frame-of-reference"),
        injection=injection,
        scan_start=injection + timedelta(seconds=3600.0),
        uid_seed=seed,
    )
    tracer = TRACERS[spec.tracer]
    pet = pet_datasets(
        header, tracer, pixels.injected_dose_bq, pixels.pet_grid, pixels.pet_stored,
        pixels.pet_slopes, 600.0,
    )
    paths = write_datasets(pet, directory / "pet", "PT")
    del pet
    ct = ct_datasets(header, pixels.ct_grid, pixels.ct_hu)
    paths += write_datasets(ct, directory / "ct", "CT")
    return paths


def study_files(directory: Path) -> list[Path]:
    """The files of a written copy, PET first then CT, in name order."""
    return sorted((directory / "pet").glob("*.dcm")) + sorted((directory / "ct").glob("*.dcm"))


def ensure_copies(spec: BenchStudySpec, root: Path, copies: int) -> list[list[Path]]:
    """Copies ``0 .. copies-1`` of ``spec`` under ``root``, reusing ones already written.

    A copy is reused when its marker file (``copyN.json`` beside it) exists and the file count
    matches (the directory name carries the spec's fingerprint); otherwise it is (re)written.
    """
    pixels: RenderedPixels | None = None
    out = []
    for copy in range(copies):
        directory = root / f"{spec.name}-{spec.fingerprint()}" / f"copy{copy}"
        marker = directory.with_suffix(".json")
        if marker.is_file() and len(study_files(directory)) == spec.instances:
            out.append(study_files(directory))
            continue
        if pixels is None:
            pixels = render(spec)
        for old in study_files(directory):
            old.unlink()
        paths = write_copy(spec, pixels, directory, copy)
        marker.write_text(json.dumps({"spec": asdict(spec), "files": len(paths)}))
        out.append(study_files(directory))
    return out
