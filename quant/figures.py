"""Figures of a lesion VOI and of the muscle reference: SUVmax/mean/peak, T/M, hypoxic volumes.

Arrays are indexed ``[slice, row, col]`` (z, y, x) as ``SimpleITK.GetArrayFromImage`` gives them;
``spacing_mm`` is ``(x, y, z)`` as ``SimpleITK.Image.GetSpacing`` gives it.

Definitions
-----------
SUVpeak
    Highest mean SUV within a sphere of 12 mm diameter (PERCIST's ~1 cm3 sphere) whose centre is
    a voxel centre inside the lesion VOI. Each voxel of the sphere's bounding box is weighted by
    the fraction of it inside the sphere, estimated on a 5 x 5 x 5 sub-voxel lattice; the weights
    are normalised to sum to one. The sphere is not restricted to the VOI; parts outside the
    image count as SUV 0. The mean at every centre is a convolution, computed with numpy FFTs
    on the lesion's bounding box plus the sphere radius.
Hypoxic sub-volume
    For threshold ``t``: voxels of the VOI with ``SUV >= t x muscle SUVmean`` that are
    26-connected (faces, edges and corners) to the VOI's SUVmax voxel. Empty when the maximum
    itself is below the threshold. Fraction = its volume / VOI volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quant.image.masks import bounding_box, labels_of
from quant.results import HypoxicSubvolume, LesionResult

PEAK_SPHERE_DIAMETER_MM = 12.0
"""PERCIST SUVpeak sphere: 1.2 cm diameter (about 1 cm3)."""
PEAK_SUBSAMPLING = 5
"""Sub-voxel lattice (per axis) used to weight partial voxels of the SUVpeak sphere."""


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    if len(spacing_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must be three positive numbers (x, y, z), got {spacing_mm}")
    return (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))


def _check_mask(suv_array: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if suv_array.ndim != 3:
        raise ValueError(f"suv_array must be 3-D [slice, row, col], got shape {suv_array.shape}")
    if mask.shape != suv_array.shape:
        raise ValueError(f"mask shape {mask.shape} differs from suv_array shape {suv_array.shape}")
    out = np.asarray(mask, dtype=bool)
    if not out.any():
        raise ValueError("mask is empty")
    return out


def voxel_volume_ml(spacing_mm: Sequence[float]) -> float:
    """Volume of one voxel in ml (cm3) from its spacing in mm."""
    x, y, z = _check_spacing(spacing_mm)
    return x * y * z / 1000.0


def component_at(mask: np.ndarray, index: tuple[int, int, int]) -> np.ndarray:
    """The 26-connected component of ``mask`` that contains voxel ``index``.

    Returns an all-False array when ``mask[index]`` is False.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros_like(mask)
    if not mask[index]:
        return out
    # Every path between voxels of the mask lies inside its bounding box: labelling the box
    # gives the same component as labelling the whole image, with box-sized temporaries.
    box = bounding_box(mask)
    labels, _ = labels_of(mask[box])
    local = tuple(i - b.start for i, b in zip(index, box, strict=True))
    out[box] = labels == labels[local]
    return out


def peak_index(values: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """Index ``(slice, row, col)`` of the highest of ``values`` inside ``mask``.

    The same voxel as ``argmax`` of ``values`` with every voxel outside ``mask`` set to -inf
    (the first in C order on ties; ``(0, 0, 0)`` for an empty mask), without that full-size
    temporary.
    """
    inside = np.flatnonzero(mask)
    flat = int(inside[np.argmax(np.take(values, inside))]) if inside.size else 0
    k, j, i = (int(v) for v in np.unravel_index(flat, np.shape(mask)))
    return k, j, i


def sphere_kernel(
    spacing_mm: Sequence[float],
    diameter_mm: float = PEAK_SPHERE_DIAMETER_MM,
    subsampling: int = PEAK_SUBSAMPLING,
) -> np.ndarray:
    """Partial-voxel weights of a sphere centred on a voxel centre, ``[z, y, x]``, summing to 1.

    Parameters
    ----------
    spacing_mm
        Voxel spacing (x, y, z) in mm.
    diameter_mm
        Sphere diameter.
    subsampling
        Sub-voxel points per axis used to estimate each voxel's fraction inside the sphere.
    """
    spacing = _check_spacing(spacing_mm)
    if diameter_mm <= 0 or subsampling < 1:
        raise ValueError("diameter_mm must be > 0 and subsampling >= 1")
    radius = diameter_mm / 2.0
    # Sub-voxel offsets within one voxel, in units of the voxel (centred on 0).
    sub = (np.arange(subsampling) + 0.5) / subsampling - 0.5
    axes = []
    for s in spacing[::-1]:  # z, y, x
        half = int(np.ceil(radius / s + 0.5))
        centres = np.arange(-half, half + 1)
        axes.append(((centres[:, None] + sub[None, :]) * s).reshape(-1))
    z, y, x = np.meshgrid(*axes, indexing="ij")
    inside = (x**2 + y**2 + z**2 <= radius**2).astype(np.float64)
    n = subsampling
    shape = (axes[0].size // n, n, axes[1].size // n, n, axes[2].size // n, n)
    weights = inside.reshape(shape).mean(axis=(1, 3, 5))
    total = weights.sum()
    if total <= 0:
        raise ValueError("sphere kernel is empty")
    out: np.ndarray = weights / total
    return out


def _fft_filter(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``values`` filtered by the symmetric ``kernel`` (same shape as ``values``; zero outside)."""
    full = [a + b - 1 for a, b in zip(values.shape, kernel.shape, strict=True)]
    axes = (0, 1, 2)
    spectrum = np.fft.rfftn(values, full, axes) * np.fft.rfftn(kernel, full, axes)
    out = np.fft.irfftn(spectrum, full, axes)
    start = [(k - 1) // 2 for k in kernel.shape]
    crop = tuple(slice(s, s + n) for s, n in zip(start, values.shape, strict=True))
    result: np.ndarray = out[crop]
    return result


def suv_peak(suv_array: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """SUVpeak: highest 12 mm sphere mean whose centre lies in ``mask`` (see module docstring)."""
    mask = _check_mask(suv_array, mask)
    kernel = sphere_kernel(spacing_mm)
    margin = [k // 2 for k in kernel.shape]
    idx = np.nonzero(mask)
    lo = [max(int(i.min()) - m, 0) for i, m in zip(idx, margin, strict=True)]
    hi = [
        min(int(i.max()) + m + 1, n) for i, m, n in zip(idx, margin, suv_array.shape, strict=True)
    ]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    means = _fft_filter(np.asarray(suv_array[box], dtype=np.float64), kernel)
    return float(means[mask[box]].max())


def hypoxic_subvolumes(
    suv_array: np.ndarray,
    mask: np.ndarray,
    muscle_suv_mean: float,
    thresholds: Sequence[float],
    spacing_mm: Sequence[float],
) -> list[HypoxicSubvolume]:
    """Hypoxic sub-volume of the VOI for each tumour-to-muscle threshold (module docstring)."""
    mask = _check_mask(suv_array, mask)
    if not np.isfinite(muscle_suv_mean) or muscle_suv_mean <= 0:
        raise ValueError(f"muscle_suv_mean must be > 0, got {muscle_suv_mean}")
    voxel_ml = voxel_volume_ml(spacing_mm)
    peak = peak_index(suv_array, mask)
    lesion_voxels = int(mask.sum())
    out = []
    for t in thresholds:
        sub = component_at(mask & (suv_array >= t * muscle_suv_mean), peak)
        count = int(sub.sum())
        out.append(
            HypoxicSubvolume(
                threshold=float(t),
                volume_ml=count * voxel_ml,
                fraction=count / lesion_voxels,
                mask=sub,
            )
        )
    return out


def lesion_figures(
    suv_array: np.ndarray,
    mask: np.ndarray,
    muscle_suv_mean: float,
    thresholds: Sequence[float],
    spacing_mm: Sequence[float],
    *,
    source: str,
    label: str,
) -> LesionResult:
    """All figures of one lesion VOI.

    Parameters
    ----------
    suv_array
        SUV ``[slice, row, col]``.
    mask
        Lesion VOI, bool, same shape; must not be empty.
    muscle_suv_mean
        Reference muscle SUVmean (> 0): T/M denominators and hypoxic thresholds.
    thresholds
        Tumour-to-muscle ratios, one hypoxic sub-volume each.
    spacing_mm
        Voxel spacing (x, y, z) in mm.
    source, label
        Copied to the result (``"contour"`` / ``"detected"``, ROI name).

    Returns
    -------
    LesionResult
        SUVmax, SUVmean, SUVpeak, volume (ml), ``tm_max = SUVmax / muscle``,
        ``tm_mean = SUVmean / muscle``, hypoxic sub-volumes, ``max_index`` (slice, row, col).
    """
    mask = _check_mask(suv_array, mask)
    if not np.isfinite(muscle_suv_mean) or muscle_suv_mean <= 0:
        raise ValueError(f"muscle_suv_mean must be > 0, got {muscle_suv_mean}")
    values = suv_array[mask]
    max_index = peak_index(suv_array, mask)
    suv_max = float(values.max())
    suv_mean = float(values.mean())
    return LesionResult(
        suv_max=suv_max,
        suv_mean=suv_mean,
        suv_peak=suv_peak(suv_array, mask, spacing_mm),
        volume_ml=int(mask.sum()) * voxel_volume_ml(spacing_mm),
        tm_max=suv_max / muscle_suv_mean,
        tm_mean=suv_mean / muscle_suv_mean,
        hypoxic=hypoxic_subvolumes(suv_array, mask, muscle_suv_mean, thresholds, spacing_mm),
        mask=mask,
        source=source,
        label=label,
        max_index=(max_index[0], max_index[1], max_index[2]),
    )


def muscle_figures(
    suv_array: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float]
) -> tuple[float, float, float]:
    """Mean SUV, sample standard deviation (ddof=1; 0 for one voxel) and volume (ml) of a VOI."""
    mask = _check_mask(suv_array, mask)
    values = np.asarray(suv_array[mask], dtype=np.float64)
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), sd, int(mask.sum()) * voxel_volume_ml(spacing_mm)
