"""Tumour contours supplied with the study (RTSTRUCT ROIs, DICOM SEG segments) on the PET grid.

Rules
-----
- Only structures on the PET's frame of reference are used (RTSTRUCT:
  ReferencedFrameOfReferenceUID of the StructureSetROISequence items; SEG: FrameOfReferenceUID).
- An RTSTRUCT ROI is the tumour when its ROIName matches the pattern (``re.search``), or when
  its RTROIInterpretedType is ``GTV``.
- A SEG segment is the tumour when its SegmentLabel matches the pattern, or when its
  SegmentedPropertyTypeCodeSequence is one of :data:`TUMOUR_PROPERTY_CODES` (Neoplasm, Mass,
  Lesion, Gross tumor volume). A SEG written by hypoxnode itself (algorithm name
  ``hypoxnode``) is never an input: the node would otherwise quantify its own previous answer.
- ROIs that rasterise to no PET voxel are dropped. When supplied ROIs overlap (one tumour drawn
  on PET and on CT, or a GTV inside a CTV) one is kept, preferring a name with ``PET``, then a
  ``GTV``, then the smaller one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)
from pydicom.dataset import Dataset

from quant.image.contours import rasterise_rtstruct, seg_masks

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
OWN_ALGORITHM_NAME = "hypoxnode"

TUMOUR_PROPERTY_CODES = frozenset(
    {
        "108369006",  # SCT Neoplasm (Tumor)
        "4147007",  # SCT Mass
        "52988006",  # SCT Lesion
        "228791009",  # SCT Gross tumor volume
    }
)


def is_seg(ds: Dataset) -> bool:
    """Whether ``ds`` is a Segmentation (SOPClassUID, or a SegmentSequence)."""
    return str(ds.get("SOPClassUID", "")) == SEGMENTATION_STORAGE or "SegmentSequence" in ds


def _rtstruct_frames(ds: Dataset) -> set[str]:
    frames = {
        str(item.get("ReferencedFrameOfReferenceUID", ""))
        for item in ds.get("StructureSetROISequence") or []
    }
    frames |= {
        str(item.get("FrameOfReferenceUID", ""))
        for item in ds.get("ReferencedFrameOfReferenceSequence") or []
    }
    return frames


def _gtv_roi_names(ds: Dataset) -> set[str]:
    numbers = {
        int(obs.ReferencedROINumber)
        for obs in ds.get("RTROIObservationsSequence") or []
        if str(obs.get("RTROIInterpretedType", "")).upper() == "GTV"
    }
    return {
        str(roi.get("ROIName", ""))
        for roi in ds.get("StructureSetROISequence") or []
        if int(roi.ROINumber) in numbers
    }


def _own_seg(ds: Dataset) -> bool:
    for segment in ds.get("SegmentSequence") or []:
        for algorithm in segment.get("SegmentationAlgorithmIdentificationSequence") or []:
            if str(algorithm.get("AlgorithmName", "")) == OWN_ALGORITHM_NAME:
                return True
    return False


def _tumour_segments(ds: Dataset, regex: re.Pattern[str]) -> set[str]:
    out = set()
    for segment in ds.get("SegmentSequence") or []:
        label = str(segment.get("SegmentLabel", f"Segment {segment.SegmentNumber}"))
        codes = {
            str(code.get("CodeValue", ""))
            for code in segment.get("SegmentedPropertyTypeCodeSequence") or []
        }
        if regex.search(label) or codes & TUMOUR_PROPERTY_CODES:
            out.add(label)
    return out


def supplied_tumour_masks(
    structures: Sequence[Dataset],
    reference: sitk.Image,
    frame_of_reference_uid: str,
    pattern: str,
) -> list[tuple[str, np.ndarray]]:
    """Tumour ROIs of the study's RTSTRUCTs and SEGs, as bool masks on the PET grid.

    Parameters
    ----------
    structures
        RTSTRUCT and SEG datasets of the study (others are ignored).
    reference
        The PET image (its grid).
    frame_of_reference_uid
        The PET's FrameOfReferenceUID.
    pattern
        Regular expression an ROI name / segment label must match (``re.search``).

    Returns
    -------
    list[tuple[str, numpy.ndarray]]
        (ROI name or segment label, mask ``[slice, row, col]``), at most one per tumour.
    """
    regex = re.compile(pattern)
    found: list[tuple[str, np.ndarray]] = []
    for ds in structures:
        if is_seg(ds):
            if str(ds.get("FrameOfReferenceUID", "")) != frame_of_reference_uid or _own_seg(ds):
                continue
            wanted = _tumour_segments(ds, regex)
            if wanted:
                masks = seg_masks(ds, reference)
                found += [(label, masks[label]) for label in sorted(wanted)]
        elif "StructureSetROISequence" in ds:
            if frame_of_reference_uid not in _rtstruct_frames(ds):
                continue
            gtv = _gtv_roi_names(ds)
            for name, mask in rasterise_rtstruct(ds, reference).items():
                if regex.search(name) or name in gtv:
                    found.append((name, mask))
    found = [(name, mask) for name, mask in found if mask.any()]
    found.sort(
        key=lambda item: (
            "PET" not in item[0].upper(),
            "GTV" not in item[0].upper(),
            int(item[1].sum()),
        )
    )
    kept: list[tuple[str, np.ndarray]] = []
    for name, mask in found:
        if all(not (mask & other).any() for _, other in kept):
            kept.append((name, mask))
    return kept
