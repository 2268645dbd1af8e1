"""Boolean masks on the PET grid: connected components, the largest of them, bounding boxes.

One implementation of each, shared by the landmarks, the organ rules, the candidates and
the figures. Components are 26-connected (SimpleITK ``ConnectedComponent`` with full
connectivity), labelled 1..n.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def labels_of(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected component labels (1..n, 0 outside) of ``mask`` and their count."""
    image = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True)
    labels: np.ndarray = sitk.GetArrayFromImage(image)
    return labels, int(labels.max()) if labels.size else 0


def component_sizes(labels: np.ndarray) -> np.ndarray:
    """Voxels per label (index = label; index 0, the background, set to 0)."""
    counts = np.bincount(labels.ravel())
    if counts.size:
        counts[0] = 0
    return counts


def components_at_least(mask: np.ndarray, min_ml: float, voxel_ml: float) -> np.ndarray:
    """The components of ``mask`` of at least ``min_ml`` millilitres, as one mask."""
    labels, _ = labels_of(mask)
    big = np.flatnonzero(component_sizes(labels) * voxel_ml >= min_ml)
    out: np.ndarray = np.isin(labels, big)
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest component of ``mask`` (all False for an empty mask)."""
    labels, count = labels_of(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    out: np.ndarray = labels == int(np.argmax(component_sizes(labels)))
    return out


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of a non-empty ``mask`` grown by ``margin`` voxels (clipped
    to the array); one projection per axis, no full-size index arrays."""
    box = []
    for axis, size in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(int(present[0]) - margin, 0),
                         min(int(present[-1]) + margin + 1, size)))
    return tuple(box)
