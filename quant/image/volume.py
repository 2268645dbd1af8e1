"""PET (in SUV) and CT (in HU) volumes from already-loaded pydicom datasets.

Slices are ordered by their position along the slice normal (the cross product of the two
ImageOrientationPatient vectors, dotted with ImagePositionPatient), never by InstanceNumber.
Each volume is built once, vectorised: one stack, one per-slice rescale, one per-slice SUV
factor.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.tag import BaseTag

from quant.errors import QuantificationError
from quant.image.slice_geometry import (
    Plane,
    Stack,
    floats,
    image_from_array,
    place,
    plane_of,
    stack_geometry,
)
from quant.results import SuvFacts
from quant.suv.pet_header import (
    check_series_consistency,
    enhanced_frame_headers,
    slice_header,
    suv_factors,
)

ENHANCED_PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.130"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

PIXEL_DATA = BaseTag(0x7FE00010)
SLAB_SLICES = 32
"""Slices rescaled at a time while a CT image is built (bounds the extra memory)."""


@dataclass
class PetVolume:
    """One PET series converted to SUV.

    Attributes
    ----------
    suv
        float32 SUV image with the series' origin, spacing and direction.
    sop_instance_uids
        SOPInstanceUID of each image slice, index = image z index (an enhanced multi-frame
        image repeats its one UID; see ``frame_numbers``).
    datasets
        The datasets in the same order (an enhanced image repeats its one dataset).
    facts
        Header facts the conversion used, with geometry warnings appended.
    series_instance_uid, study_instance_uid, frame_of_reference_uid
        From the header.
    frame_numbers
        For an enhanced multi-frame image, the 1-based frame number of each slice; empty for
        single-frame series.
    """

    suv: sitk.Image
    sop_instance_uids: list[str]
    datasets: list[Dataset]
    facts: SuvFacts
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    frame_numbers: list[int] = field(default_factory=list)


def _single_series(datasets: Sequence[Dataset]) -> None:
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise QuantificationError(
            f"images from {len(series)} series (SeriesInstanceUID differs): pass one series"
        )


def _same_pixels(datasets: Sequence[Dataset]) -> Callable[[int, int], bool]:
    def same(i: int, j: int) -> bool:
        a, b = datasets[i], datasets[j]
        if a.get("SOPInstanceUID") == b.get("SOPInstanceUID"):
            return True
        return bool(
            a.get("RescaleSlope") == b.get("RescaleSlope")
            and a.get("RescaleIntercept") == b.get("RescaleIntercept")
            and a.get("PixelData") == b.get("PixelData")
        )

    return same


def _rescale(datasets: Sequence[Dataset]) -> tuple[np.ndarray, np.ndarray]:
    slopes = np.array([float(ds.get("RescaleSlope", 1.0) or 1.0) for ds in datasets])
    intercepts = np.array([float(ds.get("RescaleIntercept", 0.0) or 0.0) for ds in datasets])
    return slopes, intercepts


@dataclass(frozen=True)
class _Series:
    """Single-frame slices sorted along the normal, with the rescale of each."""

    ordered: list[Dataset]
    stack: Stack
    slopes: np.ndarray
    intercepts: np.ndarray

    def integral(self) -> bool:
        """Every RescaleSlope 1 and every RescaleIntercept an integer (the usual CT)."""
        return bool(
            np.all(self.slopes == 1.0) and np.all(self.intercepts == np.round(self.intercepts))
        )


def _sorted_series(datasets: Sequence[Dataset]) -> _Series:
    """Check, sort and de-duplicate single-frame slices (no pixel data is decoded)."""
    if not datasets:
        raise QuantificationError("no images: the series is empty")
    _single_series(datasets)
    for ds in datasets:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise QuantificationError(
                "NumberOfFrames (0028,0008) > 1 in a single-frame series: not supported"
            )
    planes = [plane_of(ds) for ds in datasets]
    instance = [int(ds.get("InstanceNumber", 0) or 0) for ds in datasets]
    stack = stack_geometry(planes, _same_pixels(datasets), instance)
    ordered = [datasets[i] for i in stack.order]
    slopes, intercepts = _rescale(ordered)
    return _Series(ordered, stack, slopes, intercepts)


def _decoded(ds: Dataset) -> np.ndarray:
    """The decoded pixels of one single-frame dataset, leaving a deferred PixelData deferred.

    A dataset read with ``dcmread(..., defer_size=...)`` holds its PixelData as a deferred
    element: pydicom reads it from the file when it is first used and then keeps it on the
    dataset. Here the deferred element is put back after decoding, so a series read that way
    holds one slice of pixel data at a time, not all of them. (``pydicom.pixels.pixel_array``
    does not cache the decoded array on the dataset, as ``Dataset.pixel_array`` does.)
    """
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    try:
        return pixel_array(ds)
    finally:
        if isinstance(raw, RawDataElement) and raw.value is None:
            ds[PIXEL_DATA] = raw


def _decoded_slices(ordered: Sequence[Dataset]) -> Iterator[np.ndarray]:
    """The decoded pixels of each slice in turn, all of the first slice's shape."""
    shape: tuple[int, ...] | None = None
    for ds in ordered:
        pixels = _decoded(ds)
        if shape is None:
            shape = pixels.shape
        elif pixels.shape != shape:
            raise QuantificationError(
                f"Rows/Columns differ between slices ({shape} and {pixels.shape}):"
                " one series must have one matrix size"
            )
        yield pixels


def _rescale_into(out: np.ndarray, pixels: np.ndarray, slope: float, intercept: float) -> None:
    """``out[...] = pixels x slope + intercept`` without a temporary of another type.

    An int16 ``out`` (integral rescale, slope 1) gets ``pixels + intercept``.
    """
    if out.dtype == np.int16:
        np.add(pixels, np.int32(intercept), out=out, casting="unsafe")
    else:
        np.multiply(pixels, slope, out=out, casting="unsafe")
        out += intercept


def _sorted_classic(
    datasets: Sequence[Dataset], dtype: type[np.number] = np.float64
) -> tuple[list[Dataset], Stack, np.ndarray]:
    """Sort single-frame slices along the normal and rescale them, one slice at a time.

    The output is allocated once in ``dtype`` and filled slice by slice, so the series never
    holds more than one extra slice in memory.
    """
    series = _sorted_series(datasets)
    slices = _decoded_slices(series.ordered)
    first = next(slices)
    values = np.empty((len(series.ordered), *first.shape), dtype=dtype)
    for index, pixels in enumerate(itertools.chain([first], slices)):
        _rescale_into(values[index], pixels, series.slopes[index], series.intercepts[index])
    return series.ordered, series.stack, values


def _with_warnings(facts: SuvFacts, extra: Sequence[str]) -> SuvFacts:
    if not extra:
        return facts
    return dataclasses.replace(facts, warnings=facts.warnings + tuple(extra))


def load_pet_suv(datasets: Sequence[Dataset], suv_type: str = "BW") -> PetVolume:
    """Convert one PET series to an SUV volume.

    Parameters
    ----------
    datasets
        All images of one PET series (single-frame PET Image Storage), in any order, or one
        Enhanced PET multi-frame image.
    suv_type
        ``"BW"`` (default), ``"LBM"``, ``"LBMJAMES128"``, ``"LBMJANMA"``, ``"BSA"``, ``"IBW"``.

    Returns
    -------
    PetVolume

    Raises
    ------
    QuantificationError
        Mixed series, non-PET images, duplicates with different content, gaps, or any header
        refusal of :func:`quant.suv.pet_header.suv_factors`.
    """
    datasets = list(datasets)
    if not datasets:
        raise QuantificationError("no PET images: the series is empty")
    if any(str(ds.get("SOPClassUID", "")) == ENHANCED_PET_IMAGE_STORAGE for ds in datasets):
        if len(datasets) != 1:
            raise QuantificationError(
                "Enhanced PET multi-frame image mixed with other images: pass one series"
            )
        return _load_enhanced_pet(datasets[0], suv_type)
    modalities = {str(ds.get("Modality", "")) for ds in datasets}
    if modalities != {"PT"}:
        raise QuantificationError(
            f"Modality (0008,0060) {', '.join(sorted(modalities))}: a PET series (PT) is needed"
        )
    check_series_consistency(datasets)
    ordered, stack, values = _sorted_classic(datasets)
    factors, facts = suv_factors(ordered[0], [slice_header(ds) for ds in ordered], suv_type)
    suv_array = values * factors[:, None, None]
    first = ordered[0]
    return PetVolume(
        suv=image_from_array(suv_array, stack),
        sop_instance_uids=[str(ds.SOPInstanceUID) for ds in ordered],
        datasets=ordered,
        facts=_with_warnings(facts, stack.warnings),
        series_instance_uid=str(first.get("SeriesInstanceUID", "")),
        study_instance_uid=str(first.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
    )


def _frame_item(frame: Dataset, shared: Dataset, keyword: str) -> Dataset:
    seq = frame.get(keyword) or shared.get(keyword)
    if not seq:
        raise QuantificationError(
            f"{keyword} missing from the functional groups: cannot read the enhanced frame"
        )
    return seq[0]


def _load_enhanced_pet(ds: Dataset, suv_type: str) -> PetVolume:
    frames = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    if not frames:
        raise QuantificationError(
            "PerFrameFunctionalGroupsSequence (5200,9230) missing: not a valid enhanced image"
        )
    planes = []
    slopes = np.ones(len(frames))
    intercepts = np.zeros(len(frames))
    for i, frame in enumerate(frames):
        position = _frame_item(frame, shared, "PlanePositionSequence")
        orientation = _frame_item(frame, shared, "PlaneOrientationSequence")
        measures = _frame_item(frame, shared, "PixelMeasuresSequence")
        thickness = measures.get("SliceThickness")
        planes.append(
            Plane(
                position=floats(
                    position.get("ImagePositionPatient"), 3, "ImagePositionPatient (0020,0032)"
                ),
                orientation=floats(
                    orientation.get("ImageOrientationPatient"),
                    6,
                    "ImageOrientationPatient (0020,0037)",
                ),
                pixel_spacing=tuple(  # type: ignore[arg-type]
                    floats(measures.get("PixelSpacing"), 2, "PixelSpacing (0028,0030)")
                ),
                shape=(int(ds.Rows), int(ds.Columns)),
                thickness=float(thickness) if thickness not in (None, "") else None,
            )
        )
        transform_seq = frame.get("PixelValueTransformationSequence") or shared.get(
            "PixelValueTransformationSequence"
        )
        if transform_seq:
            slopes[i] = float(transform_seq[0].get("RescaleSlope", 1.0) or 1.0)
            intercepts[i] = float(transform_seq[0].get("RescaleIntercept", 0.0) or 0.0)
    pixels = np.asarray(ds.pixel_array, dtype=np.float64).reshape(
        len(frames), int(ds.Rows), int(ds.Columns)
    )

    def same(i: int, j: int) -> bool:
        return bool(
            slopes[i] == slopes[j]
            and intercepts[i] == intercepts[j]
            and np.array_equal(pixels[i], pixels[j])
        )

    stack = stack_geometry(planes, same, list(range(len(frames))))
    order = stack.order
    headers = enhanced_frame_headers(ds)
    factors, facts = suv_factors(ds, [headers[i] for i in order], suv_type)
    values = pixels[order] * slopes[order, None, None] + intercepts[order, None, None]
    return PetVolume(
        suv=image_from_array(values * factors[:, None, None], stack),
        sop_instance_uids=[str(ds.SOPInstanceUID)] * len(order),
        datasets=[ds] * len(order),
        facts=_with_warnings(facts, stack.warnings),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        frame_numbers=[i + 1 for i in order],
    )


def load_ct_hu(datasets: Sequence[Dataset]) -> sitk.Image:
    """A CT series as an image in Hounsfield units, sorted along the slice normal.

    The pixel type is int16 when the rescale is integral (the usual CT), float32 otherwise;
    :func:`resample_to` gives float32 either way.

    Parameters
    ----------
    datasets
        All single-frame images of one CT series, in any order.

    Raises
    ------
    QuantificationError
        Mixed series, enhanced multi-frame CT, duplicates with different content or gaps.
    """
    datasets = list(datasets)
    if any(str(ds.get("SOPClassUID", "")) == ENHANCED_CT_IMAGE_STORAGE for ds in datasets):
        raise QuantificationError(
            "Enhanced CT multi-frame images are not supported: send the CT as single-frame images"
        )
    series = _sorted_series(datasets)
    dtype = np.int16 if series.integral() else np.float32
    return _image_in_slabs(series, dtype)


def _image_in_slabs(series: _Series, dtype: type[np.number]) -> sitk.Image:
    """The rescaled series as an image, built :data:`SLAB_SLICES` slices at a time.

    The image is allocated once and each slab is pasted into it in place, so a large series
    (600 CT slices of 512 x 512) is never held twice (as an array and as an image).
    """
    slices = _decoded_slices(series.ordered)
    first = next(slices)
    if first.ndim != 2:
        raise QuantificationError(
            "SamplesPerPixel (0028,0002) is not 1: a CT must be grey-scale, one sample a pixel"
        )
    count = len(series.ordered)
    pixel_type = sitk.sitkInt16 if dtype is np.int16 else sitk.sitkFloat32
    image = sitk.Image([first.shape[1], first.shape[0], count], pixel_type)
    slab = np.empty((0, *first.shape), dtype=dtype)
    for index, pixels in enumerate(itertools.chain([first], slices)):
        start = index - index % SLAB_SLICES
        if index == start:
            slab = np.empty((min(SLAB_SLICES, count - start), *first.shape), dtype=dtype)
        _rescale_into(
            slab[index - start], pixels, series.slopes[index], series.intercepts[index]
        )
        if index - start == len(slab) - 1:
            image[:, :, start:index + 1] = sitk.GetImageFromArray(slab)
    place(image, series.stack)
    return image


def resample_to(image: sitk.Image, reference: sitk.Image, default_value: float) -> sitk.Image:
    """``image`` resampled (linear) onto the grid of ``reference``, as float32.

    Parameters
    ----------
    image
        Any scalar image in the same patient coordinate system.
    reference
        The target grid (origin, spacing, direction, size).
    default_value
        Value outside ``image`` (e.g. -1000 for CT in HU, 0 for SUV).
    """
    return sitk.Resample(
        image,
        reference,
        sitk.Transform(),
        sitk.sitkLinear,
        float(default_value),
        sitk.sitkFloat32,
    )
