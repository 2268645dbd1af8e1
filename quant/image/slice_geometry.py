"""Where the slices of a series lie: sorted along the slice normal, duplicates dropped, the
spacing checked, and the SimpleITK geometry (origin, spacing, direction) of the stack.

Slices are ordered by their position along the slice normal (the cross product of the two
ImageOrientationPatient vectors, dotted with ImagePositionPatient), never by InstanceNumber.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.errors import QuantificationError

SAME_POSITION_MM = 0.01
"""Slices closer than this along the normal are at the same position."""
SPACING_WARN_FRACTION = 0.001
"""Slice-spacing deviation (fraction of the median) above which we warn."""
SPACING_REFUSE_FRACTION = 0.1
"""Slice-spacing deviation (fraction of the median) above which we refuse (a gap)."""

@dataclass(frozen=True)
class Plane:
    """Geometry of one slice: position, orientation, pixel spacing and pixel grid size."""

    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    thickness: float | None


@dataclass(frozen=True)
class Stack:
    """A sorted, de-duplicated stack of slices: which to keep in which order, and where."""

    order: list[int]
    origin: np.ndarray
    direction: np.ndarray
    spacing: tuple[float, float, float]
    warnings: tuple[str, ...]


def floats(value: object, count: int, name: str) -> np.ndarray:
    """``count`` floats of a multi-valued attribute; QuantificationError naming ``name`` when
    it is missing or malformed."""
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (count,):
        raise QuantificationError(f"{name} missing or malformed: cannot place the slice in space")
    return array


def plane_of(ds: Dataset) -> Plane:
    """The geometry of one classic slice."""
    thickness = ds.get("SliceThickness")
    return Plane(
        position=floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient (0020,0032)"),
        orientation=floats(
            ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient (0020,0037)"
        ),
        pixel_spacing=tuple(floats(ds.get("PixelSpacing"), 2, "PixelSpacing (0028,0030)")),  # type: ignore[arg-type]
        shape=(int(ds.Rows), int(ds.Columns)),
        thickness=float(thickness) if thickness not in (None, "") else None,
    )


def stack_geometry(
    planes: Sequence[Plane],
    same_content: Callable[[int, int], bool],
    tie_break: Sequence[int],
) -> Stack:
    """Sort, de-duplicate and check the spacing of a set of parallel planes.

    Parameters
    ----------
    planes
        Geometry of each slice, in input order.
    same_content
        ``same_content(i, j)`` tells whether slices i and j are exact duplicates.
    tie_break
        Secondary sort key (InstanceNumber or frame number).
    """
    first = planes[0]
    for plane, label in (
        (
            lambda p: not np.allclose(p.orientation, first.orientation, atol=1e-4),
            "ImageOrientationPatient (0020,0037)",
        ),
        (
            lambda p: not np.allclose(p.pixel_spacing, first.pixel_spacing, rtol=1e-4),
            "PixelSpacing (0028,0030)",
        ),
        (lambda p: p.shape != first.shape, "Rows/Columns (0028,0010/0011)"),
    ):
        if any(plane(p) for p in planes):
            raise QuantificationError(
                f"{label} differs between slices: not one volume (mixed series or a "
                "multi-orientation acquisition)"
            )
    row = first.orientation[:3] / np.linalg.norm(first.orientation[:3])
    col = first.orientation[3:] / np.linalg.norm(first.orientation[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    along = np.array([p.position @ normal for p in planes])
    order = [int(i) for i in np.lexsort((np.asarray(tie_break), along))]

    warnings: list[str] = []
    kept = [order[0]]
    dropped = 0
    for index in order[1:]:
        if abs(along[index] - along[kept[-1]]) < SAME_POSITION_MM:
            if same_content(kept[-1], index):
                dropped += 1
                continue
            raise QuantificationError(
                f"two different slices at the same position ({along[index]:.2f} mm along the "
                "slice normal): several time frames or acquisitions are mixed in one series"
            )
        kept.append(index)
    if dropped:
        warnings.append(f"{dropped} exact duplicate slice(s) dropped")

    if len(kept) > 1:
        steps = np.diff(along[kept])
        median = float(np.median(steps))
        deviation = float(np.max(np.abs(steps - median))) / median
        if deviation > SPACING_REFUSE_FRACTION:
            worst = int(np.argmax(np.abs(steps - median)))
            raise QuantificationError(
                f"uneven slice spacing: {steps[worst]:.2f} mm between slices {worst} and "
                f"{worst + 1} where the median is {median:.2f} mm (missing slices?)"
            )
        if deviation > SPACING_WARN_FRACTION:
            warnings.append(
                f"slice spacing varies by up to {deviation:.1%} around {median:.3f} mm; "
                "the median spacing is used"
            )
        slice_spacing = median
    else:
        slice_spacing = first.thickness or 1.0

    direction = np.column_stack([row, col, normal])
    origin = planes[kept[0]].position
    spacing = (float(first.pixel_spacing[1]), float(first.pixel_spacing[0]), slice_spacing)
    return Stack(kept, origin, direction, spacing, tuple(warnings))


def image_from_array(array: np.ndarray, stack: Stack) -> sitk.Image:
    """A SimpleITK image of ``array`` (float32 or int16 kept, else float32) placed as ``stack``."""
    keep = array.dtype in (np.dtype(np.float32), np.dtype(np.int16))
    image = sitk.GetImageFromArray(
        np.ascontiguousarray(array, dtype=array.dtype if keep else np.float32)
    )
    place(image, stack)
    return image


def place(image: sitk.Image, stack: Stack) -> None:
    """Give ``image`` the origin, spacing and direction of ``stack``."""
    image.SetOrigin(tuple(float(v) for v in stack.origin))
    image.SetSpacing(stack.spacing)
    image.SetDirection(tuple(float(v) for v in stack.direction.ravel()))
