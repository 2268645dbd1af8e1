"""Structures (RTSTRUCT contours, DICOM SEG segments) as boolean masks on an image grid.

Masks are indexed ``[slice, row, column]`` like ``sitk.GetArrayFromImage(reference)``.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.errors import QuantificationError
from quant.image.grid import mm_to_index, voxel_centres_mm


def physical_to_index(points_mm: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Continuous (x, y, z) voxel indices of patient-space points (N, 3) on ``reference``."""
    return mm_to_index(points_mm, reference)


def fill_polygon(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of one closed polygon given in continuous pixel indices.

    A pixel is inside when its centre (integer column x, integer row y) is inside the polygon
    by the even-odd rule (scan-line crossings; a centre exactly on a left edge counts).

    Parameters
    ----------
    xs, ys
        Vertex column and row indices (the polygon closes itself).
    shape
        (rows, columns) of the output.

    Returns
    -------
    numpy.ndarray
        bool mask of ``shape``.
    """
    rows, cols = shape
    mask = np.zeros(shape, dtype=bool)
    if xs.size < 3:
        return mask
    x0, y0 = xs, ys
    x1, y1 = np.roll(xs, -1), np.roll(ys, -1)
    row_lo = max(int(np.ceil(ys.min())), 0)
    row_hi = min(int(np.floor(ys.max())), rows - 1)
    for row in range(row_lo, row_hi + 1):
        crosses = (y0 <= row) != (y1 <= row)
        if not np.any(crosses):
            continue
        t = (row - y0[crosses]) / (y1[crosses] - y0[crosses])
        x_at = np.sort(x0[crosses] + t * (x1[crosses] - x0[crosses]))
        for left, right in zip(x_at[0::2], x_at[1::2], strict=False):
            first = max(int(np.ceil(left)), 0)
            last = min(int(np.ceil(right)) - 1, cols - 1)
            if last >= first:
                mask[row, first : last + 1] ^= True
    return mask


def rasterise_rtstruct(rtstruct_ds: Dataset, reference: sitk.Image) -> dict[str, np.ndarray]:
    """Masks of every ROI of an RTSTRUCT on the grid of ``reference``.

    Each CLOSED_PLANAR contour is mapped from patient mm to index space, assigned to the slice
    whose centre its (mean) z index rounds to, and filled by the even-odd rule. Contours of
    one ROI on the same slice are combined by XOR, so an inner contour cuts a hole. Contours
    outside the reference volume are ignored; ROIs without any contour give an empty mask.

    Parameters
    ----------
    rtstruct_ds
        The RT Structure Set dataset.
    reference
        Target grid (PET or CT image).

    Returns
    -------
    dict
        ROI name -> bool array ``[slice, row, column]``.

    Raises
    ------
    QuantificationError
        The dataset is not an RTSTRUCT (no StructureSetROISequence).
    """
    if "StructureSetROISequence" not in rtstruct_ds:
        raise QuantificationError(
            "StructureSetROISequence (3006,0020) missing: not an RT Structure Set"
        )
    size = tuple(int(v) for v in reference.GetSize())
    shape = (size[2], size[1], size[0])
    names = {
        int(roi.ROINumber): str(roi.get("ROIName", f"ROI {roi.ROINumber}"))
        for roi in rtstruct_ds.StructureSetROISequence
    }
    masks = {name: np.zeros(shape, dtype=bool) for name in names.values()}
    for roi_contour in rtstruct_ds.get("ROIContourSequence") or []:
        name = names.get(int(roi_contour.ReferencedROINumber))
        if name is None:
            continue
        mask = masks[name]
        for contour in roi_contour.get("ContourSequence") or []:
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            index = physical_to_index(points, reference)
            k = int(np.round(index[:, 2].mean()))
            if not 0 <= k < shape[0]:
                continue
            mask[k] ^= fill_polygon(index[:, 0], index[:, 1], shape[1:])
    return masks


def seg_masks(seg_ds: Dataset, reference: sitk.Image) -> dict[str, np.ndarray]:
    """Segments of a DICOM SEG on the grid of ``reference`` (nearest neighbour).

    highdicom reads the SEG as a volume (its frames placed by their plane positions, frames a
    segment does not cover empty); each reference voxel centre takes the value of the SEG
    voxel it falls into, and is outside the segment beyond the SEG's extent. FRACTIONAL
    segments are thresholded at 50 %.

    Parameters
    ----------
    seg_ds
        A Segmentation Storage dataset (read with pydicom or ``highdicom.seg.segread``).
    reference
        Target grid.

    Returns
    -------
    dict
        SegmentLabel -> bool array ``[slice, row, column]``.

    Raises
    ------
    QuantificationError
        Not a SEG, or frames that do not form a volume (no plane position / orientation, not
        parallel, irregular spacing).
    """
    if "SegmentSequence" not in seg_ds:
        raise QuantificationError("SegmentSequence (0062,0002) missing: not a DICOM SEG")
    try:
        seg = hd.seg.Segmentation.from_dataset(seg_ds, copy=True)
    except (AttributeError, KeyError, ValueError, TypeError) as exc:
        raise QuantificationError(f"the SEG cannot be read: {exc}") from exc
    size = tuple(int(v) for v in reference.GetSize())
    points = voxel_centres_mm(reference)
    out: dict[str, np.ndarray] = {}
    for segment in seg.SegmentSequence:
        number = int(segment.SegmentNumber)
        label = str(segment.get("SegmentLabel", f"Segment {number}"))
        try:
            volume = seg.get_volume(segment_numbers=[number], dtype=np.float32,
                                    rescale_fractional=True, skip_overlap_checks=True)
        except (ValueError, RuntimeError, KeyError, AttributeError) as exc:
            raise QuantificationError(
                f"segment {label!r} of the SEG does not form a volume: {exc}") from exc
        array = np.asarray(volume.array)
        array = array.reshape(array.shape[:3])  # one segment: drop the channel axis
        to_index = np.linalg.inv(np.asarray(volume.affine, dtype=np.float64))
        found = np.rint(points @ to_index[:3, :3].T + to_index[:3, 3]).astype(np.int64)
        inside = np.all((found >= 0) & (found < np.asarray(array.shape)), axis=1)
        mask = np.zeros(points.shape[0], dtype=bool)
        hits = np.flatnonzero(inside)
        mask[hits] = array[found[hits, 0], found[hits, 1], found[hits, 2]] >= 0.5
        out[label] = mask.reshape(size[2], size[1], size[0])
    return out
