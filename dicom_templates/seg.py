"""DICOM Segmentations of the lesions, the muscle reference and the hypoxic sub-volumes.

A hypoxic sub-volume lies inside its lesion. Segments that overlap are legal DICOM, but
viewers stack them into one label map (OHIF 3.13 then shows a lesion of 17.7 ml as 4.3 ml), so
no SEG of the node holds overlapping segments:

* the **regions SEG** (:func:`build_seg` with ``level=None``): segment 1 the skeletal-muscle
  reference region (always present), segments 2 .. N+1 lesions 1..N in
  :meth:`StudyResult.to_json` order (SUVmax, highest first);
* one **hypoxic SEG per tumour-to-muscle threshold** (``level=threshold``, thresholds
  ascending, :func:`hypoxic_levels`): one segment per lesion with voxels at that threshold,
  numbered from 1 in lesion order. Lesions do not overlap, so neither do these segments.

A hypoxic sub-volume with no voxel gets no segment (a segment without frames is legal but
breaks several readers; the SR reports its volume 0 and fraction 0 in the lesion's own
group), and a threshold at which no lesion has voxels gets no SEG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom_templates import codes, palette
from dicom_templates.uids import derive_uid
from quant.results import HypoxicSubvolume, LesionResult, StudyResult


@dataclass(frozen=True)
class SegmentInfo:
    """What one segment number stands for.

    Attributes
    ----------
    number
        SegmentNumber in its SEG (the regions SEG, or the hypoxic SEG of ``threshold``).
    kind
        ``"muscle"``, ``"lesion"`` or ``"hypoxic"``.
    lesion_index
        1-based lesion number (to_json order) for lesions and hypoxic sub-volumes, else None.
    threshold
        Tumour-to-muscle threshold of a hypoxic sub-volume (which hypoxic SEG holds it),
        else None (the regions SEG).
    label
        SegmentLabel.
    """

    number: int
    kind: str
    lesion_index: int | None
    threshold: float | None
    label: str


def ordered_lesions(result: StudyResult) -> list[LesionResult]:
    """Lesions in the order of :meth:`StudyResult.to_json` (SUVmax, highest first)."""
    return sorted(result.lesions, key=lambda les: les.suv_max, reverse=True)


def lesion_label(index: int, lesion: LesionResult) -> str:
    """SegmentLabel of lesion ``index`` (1-based), with the ROI name of a supplied contour."""
    if lesion.source == "contour" and lesion.label:
        return f"Lesion {index} ({lesion.label})"
    return f"Lesion {index}"


def hypoxic_label(index: int, threshold: float) -> str:
    """SegmentLabel of the hypoxic sub-volume of lesion ``index`` at ``threshold``."""
    return f"Lesion {index} hypoxic T/M>={threshold:g}"


def segment_numbers(result: StudyResult) -> dict[tuple[str, int | None, float | None], SegmentInfo]:
    """Which segment number of which SEG is which region.

    Parameters
    ----------
    result
        The quantification result the SEGs are built from.

    Returns
    -------
    dict
        Keys ``("muscle", None, None)``, ``("lesion", i, None)`` (the regions SEG) and
        ``("hypoxic", i, threshold)`` (the hypoxic SEG of ``threshold``) with ``i`` the
        1-based lesion number in to_json order; hypoxic sub-volumes without voxels are absent.
    """
    out: dict[tuple[str, int | None, float | None], SegmentInfo] = {}
    out[("muscle", None, None)] = SegmentInfo(1, "muscle", None, None, "Muscle reference")
    lesions = ordered_lesions(result)
    for i, lesion in enumerate(lesions, start=1):
        out[("lesion", i, None)] = SegmentInfo(1 + i, "lesion", i, None, lesion_label(i, lesion))
    numbers: dict[float, int] = {}
    for i, lesion in enumerate(lesions, start=1):
        for sub in lesion.hypoxic:
            if not np.any(sub.mask):
                continue
            threshold = float(sub.threshold)
            numbers[threshold] = numbers.get(threshold, 0) + 1
            out[("hypoxic", i, threshold)] = SegmentInfo(
                numbers[threshold], "hypoxic", i, threshold, hypoxic_label(i, threshold)
            )
    return out


def hypoxic_levels(result: StudyResult) -> list[float]:
    """The thresholds that get a hypoxic SEG (some lesion has voxels there), in order."""
    levels: list[float] = []
    for info in segment_numbers(result).values():
        if info.threshold is not None and info.threshold not in levels:
            levels.append(info.threshold)
    return sorted(levels)


def in_seg(info: SegmentInfo, level: float | None) -> bool:
    """Whether segment ``info`` belongs to the SEG of ``level`` (None: the regions SEG)."""
    return info.threshold == level


def _algorithm_type(lesion: LesionResult | None) -> hd.seg.SegmentAlgorithmTypeValues:
    """AUTOMATIC for regions hypoxnode found; SEMIAUTOMATIC for a supplied contour.

    A supplied RTSTRUCT/SEG ROI was drawn (or approved) by a person and hypoxnode rasterised
    it and derived sub-volumes from it: "calculated with user assistance" (PS3.3 C.8.20.2.3).
    """
    if lesion is not None and lesion.source == "contour":
        return hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
    return hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC


def _parameters(result: StudyResult, key: str) -> dict[str, str]:
    value = result.method.get(key)
    return {key: str(value)} if value is not None else {}


def _descriptions(
    result: StudyResult, series_instance_uid: str, version: str, level: float | None
) -> tuple[list[hd.seg.SegmentDescription], list[np.ndarray]]:
    lesions = ordered_lesions(result)
    subs: dict[tuple[int, float], HypoxicSubvolume] = {
        (i, float(sub.threshold)): sub
        for i, lesion in enumerate(lesions, start=1)
        for sub in lesion.hypoxic
    }
    descriptions = []
    masks = []
    for (kind, index, threshold), info in sorted(
        segment_numbers(result).items(), key=lambda item: item[1].number
    ):
        if not in_seg(info, level):
            continue
        tracking_uid = derive_uid(series_instance_uid, "segment", str(info.number))
        lesion = lesions[index - 1] if index is not None else None
        if kind == "muscle":
            category, prop = codes.CATEGORY_TISSUE, codes.TYPE_SKELETAL_MUSCLE
            colour = palette.MUSCLE
            mask = result.muscle.mask
            params = _parameters(result, "muscle")
        elif kind == "lesion":
            assert lesion is not None
            category, prop, colour = (
                codes.CATEGORY_MORPHOLOGICALLY_ABNORMAL,
                codes.TYPE_NEOPLASM,
                palette.LESION,
            )
            mask = lesion.mask
            params = _parameters(result, "lesions")
        else:
            assert index is not None and threshold is not None
            category, prop, colour = (
                codes.CATEGORY_MORPHOLOGICALLY_ABNORMAL,
                codes.HYPOXIC_SUBVOLUME,
                palette.HYPOXIC,
            )
            mask = subs[(index, threshold)].mask
            params = {"tumour_to_muscle_threshold": f"{threshold:g}"}
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=info.number,
                segment_label=info.label,
                segmented_property_category=category,
                segmented_property_type=prop,
                algorithm_type=_algorithm_type(lesion),
                algorithm_identification=codes.algorithm_identification(params, version),
                tracking_uid=tracking_uid,
                tracking_id=info.label,
                display_color=colour.cielab(),
            )
        )
        masks.append(np.asarray(mask, dtype=bool))
    return descriptions, masks


def sort_like_result(result: StudyResult, pet_datasets: Sequence[Dataset]) -> list[Dataset]:
    """Return ``pet_datasets`` in the order of ``result.pet_sop_instance_uids``.

    Raises
    ------
    ValueError
        If a SOPInstanceUID of the result is missing from ``pet_datasets``.
    """
    by_uid = {str(ds.SOPInstanceUID): ds for ds in pet_datasets}
    missing = [uid for uid in result.pet_sop_instance_uids if uid not in by_uid]
    if missing:
        raise ValueError(
            f"pet_datasets: {len(missing)} of the result's PET instances are missing "
            f"(first: {missing[0]})"
        )
    return [by_uid[uid] for uid in result.pet_sop_instance_uids]


def build_seg(
    result: StudyResult,
    pet_datasets: Sequence[Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    level: float | None = None,
    series_description: str | None = None,
    manufacturer: str = "hypoxnode",
    software_version: str | None = None,
    content_label: str = "HYPOXIA",
    content_creator_name: str | None = None,
) -> hd.seg.Segmentation:
    """Build one BINARY DICOM SEG of a quantification (see the module docstring).

    Parameters
    ----------
    result
        The quantification; masks are on the PET grid.
    pet_datasets
        The source single-frame PET instances (any order; matched by SOPInstanceUID).
    series_instance_uid, sop_instance_uid, series_number, instance_number
        Identity of the new instance.
    level
        None: the regions SEG (muscle reference and lesions); a threshold of
        :func:`hypoxic_levels`: the hypoxic sub-volumes at that tumour-to-muscle ratio.
    series_description
        SeriesDescription; by default "hypoxnode segmentation" for the regions and
        "hypoxic T/M>=<threshold> (hypoxnode)" for a hypoxic level (the threshold first: viewers
        cut long descriptions in their series lists).
    manufacturer
        Manufacturer of the SEG (the node).
    software_version
        SoftwareVersions; the installed hypoxnode version by default.
    content_label
        ContentLabel (a DICOM CS: upper case, digits, space, underscore).
    content_creator_name
        ContentCreatorName, if a person is to be named.

    Returns
    -------
    highdicom.seg.Segmentation
        Segments numbered as :func:`segment_numbers` says.

    Raises
    ------
    ValueError
        If the PET instances do not match the result, a mask has the wrong shape, or no
        lesion has voxels at ``level``.
    """
    if not pet_datasets:
        raise ValueError("pet_datasets: at least one PET instance is needed")
    if level is not None and level not in hypoxic_levels(result):
        raise ValueError(f"level: no hypoxic sub-volume has voxels at T/M {level:g}")
    sources = sort_like_result(result, pet_datasets)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    version = software_version or codes.software_version()
    descriptions, masks = _descriptions(result, series_instance_uid, version, level)
    for description, mask in zip(descriptions, masks, strict=True):
        if mask.shape != shape:
            raise ValueError(
                f"result: mask of segment {description.SegmentLabel!r} has shape {mask.shape}, "
                f"PET grid is {shape}"
            )
    pixel_array = np.stack(masks, axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name="hypoxnode",
        software_versions=version,
        device_serial_number="0",
        content_description=(
            "Lesions and muscle reference" if level is None
            else f"Hypoxic sub-volumes, tumour-to-muscle ratio >= {level:g}"
        ),
        content_creator_name=content_creator_name,
        content_label=content_label,
        series_description=series_description or (
            "hypoxnode segmentation" if level is None else f"hypoxic T/M>={level:g} (hypoxnode)"
        ),
    )
    # Declare the private scheme of the hypoxic sub-volume type (PS3.3 C.12.1.1.2).
    seg.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    # General Series Laterality (Type 2C) only when the PET names a paired body part with it;
    # absent otherwise, as PS3.3 C.7.3.1 wants for whole-body PET (dciodvfy errors on an empty
    # one; PixelMed's validator, which cannot tell paired parts, asks for it regardless).
    if sources[0].get("Laterality"):
        seg.Laterality = str(sources[0].Laterality)
    return seg
