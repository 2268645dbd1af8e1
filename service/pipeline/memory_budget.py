"""How much memory quantifying a study needs, estimated from its headers before any pixel is
decoded, against the node's ceiling (``node.max_memory_mb``).

Quantifying a large study unchecked can take the worker far beyond the ceiling the node
promises for all its processes. The worker therefore reads the headers (pixel data
deferred, :mod:`service.storage.study_files`), estimates the peak of the two phases of the
quantification and refuses a study above its allowance, saying what it would need and what
a person can change.

The coefficients below are fitted to the worker's measured peak resident memory: the PET
phase (SUV volume, segmentation, figures, summary) grows with the PET voxels and barely with
the CT; the CT phase (the CT volume in HU and its resampling onto the PET grid) with the CT
voxels. The measurements and how to repeat them: ``docs/bench/README.md``, "Measurements
behind design choices".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

MB = 1024 * 1024
PET_PHASE_BASE_MB = 350.0
"""Worker process after its imports, with the datasets' headers and the result builders."""
PET_BYTES_PER_VOXEL = 60.0
CT_BYTES_PER_VOXEL_IN_PET_PHASE = 0.2
CT_PHASE_BASE_MB = 250.0
CT_BYTES_PER_VOXEL = 2.3
PET_BYTES_PER_VOXEL_IN_CT_PHASE = 8.0
NODE_SHARE_MB = 400.0
"""What the node process and its receiving processes keep of ``node.max_memory_mb`` (measured
at about 370 MB together, README "Performance"); the rest is one study's allowance."""


@dataclass(frozen=True)
class SeriesSize:
    """Rows x Columns x slices of one series, from its headers."""

    rows: int
    columns: int
    slices: int

    @property
    def voxels(self) -> int:
        """rows x columns x slices."""
        return self.rows * self.columns * self.slices

    def __str__(self) -> str:
        return f"{self.columns}x{self.rows}x{self.slices}"


def series_size(datasets: Sequence[Dataset]) -> SeriesSize:
    """The matrix of a series: the first image's Rows and Columns, and its slice count (the
    number of images, or NumberOfFrames of a multi-frame image)."""
    if not datasets:
        return SeriesSize(0, 0, 0)
    first = datasets[0]
    frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in datasets)
    return SeriesSize(int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0), frames)


def estimated_peak_mb(pet: SeriesSize, ct: SeriesSize) -> float:
    """The worker's estimated peak resident memory quantifying this PET with this CT, MB."""
    pet_phase = (PET_PHASE_BASE_MB * MB + PET_BYTES_PER_VOXEL * pet.voxels
                 + CT_BYTES_PER_VOXEL_IN_PET_PHASE * ct.voxels)
    ct_phase = (CT_PHASE_BASE_MB * MB + CT_BYTES_PER_VOXEL * ct.voxels
                + PET_BYTES_PER_VOXEL_IN_CT_PHASE * pet.voxels)
    return max(pet_phase, ct_phase) / MB


def study_allowance_mb(max_memory_mb: float) -> float:
    """What one study may use of the node's ceiling."""
    return max_memory_mb - NODE_SHARE_MB


def over_budget(pet: Sequence[Dataset], ct: Sequence[Dataset],
                max_memory_mb: float) -> str | None:
    """Why this study must not be loaded under ``max_memory_mb``, or None when it fits.

    The reason gives the matrices, the estimate and what to change (no patient data).
    """
    pet_size, ct_size = series_size(pet), series_size(ct)
    needed = estimated_peak_mb(pet_size, ct_size)
    allowance = study_allowance_mb(max_memory_mb)
    if needed <= allowance:
        return None
    ct_text = f" with a CT of {ct_size}" if ct_size.voxels else ""
    return (
        f"too large for this node's memory: the PET series is {pet_size} voxels{ct_text};"
        f" quantifying it needs about {needed / 1024:.1f} GB, and a study may use"
        f" {allowance / 1024:.1f} GB of node.max_memory_mb = {max_memory_mb:.0f}. Nothing"
        " was loaded. Either set node.max_memory_mb to at least"
        f" {needed + NODE_SHARE_MB:.0f} on a machine with that much memory free, or send the"
        " PET reconstructed on a coarser matrix (200x200 to 256x256 is usual for PET)."
    )
