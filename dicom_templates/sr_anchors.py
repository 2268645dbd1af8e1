"""A point measurement at each lesion's SUVmax voxel, for viewers that list only their own tools.

OHIF 3.x lists in its measurements panel only measurement groups it can turn back into one of
its annotation tools, recognised by the tool named in the group's tracking identifier (the
convention OHIF writes itself: ``Cornerstone3DTools@^0.1.0:<tool>``). For a point that tool is
its Probe, read from the SCOORD under the group's first measurement (TID 300 row 8, Source of
Measurement). So each lesion gets a second TID 1411 group on its segment, named
``Cornerstone3DTools@^0.1.0:Probe:Lesion <n> SUVmax point``, with only what is true at its
SUVmax voxel: SUVmax and the maximum tumour-to-muscle ratio, each inferred from that point.
Its comment, which OHIF shows as the measurement's label, summarises the lesion's figures.

Why not a group whose Image Region (DCM 111030) is the point, which OHIF also recognises:
PixelMed's validator then takes every group of the report for a planar ROI (TID 1410) and
reports each volumetric group as an error (measured with ``DicomSRValidator`` 20220618).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from dicom_templates import codes
from dicom_templates.seg import SegmentInfo
from dicom_templates.sr_groups import Group, add_text, referenced_segment, suvmax_point
from quant.results import LesionResult, StudyResult

#: The tracking identifier prefix of OHIF's point tool (cornerstone3D adapters).
OHIF_PROBE = "Cornerstone3DTools@^0.1.0:Probe"


def anchor_identifier(index: int) -> str:
    """Tracking identifier of the SUVmax point group of lesion ``index``."""
    return f"{OHIF_PROBE}:Lesion {index} SUVmax point"


def lesion_summary(index: int, lesion: LesionResult, result: StudyResult) -> str:
    """One line of the lesion's key figures (the label OHIF shows for the point)."""
    text = (
        f"Lesion {index}: SUVmax {lesion.suv_max:.2f}, SUVpeak {lesion.suv_peak:.2f},"
        f" SUVmean {lesion.suv_mean:.2f}, {lesion.volume_ml:.3g} ml,"
        f" T/M max {lesion.tm_max:.2f} (muscle SUVmean {result.muscle.suv_mean:.2f})"
    )
    for sub in lesion.hypoxic:
        text += f"; T/M>={sub.threshold:g}: {sub.volume_ml:.3g} ml ({100 * sub.fraction:.0f} %)"
    return text


def _point(
    index: tuple[int, int, int], pet: Dataset
) -> tuple[np.ndarray, hd.sr.SourceImageForRegion]:
    """Graphic data of voxel ``index`` on ``pet`` (pixel centres at .5) and its image."""
    _, row, column = index
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(pet.SOPClassUID),
        referenced_sop_instance_uid=str(pet.SOPInstanceUID),
    )
    return np.array([[column + 0.5, row + 0.5]], dtype=float), source


def anchor_group(
    index: int,
    lesion: LesionResult,
    result: StudyResult,
    pet_at_max: Dataset,
    segment: tuple[Dataset, SegmentInfo],
    tracking_uid: str,
    version: str,
) -> Group:
    """TID 1411 group of lesion ``index``'s SUVmax voxel (module docstring).

    Parameters
    ----------
    index
        1-based lesion number (to_json order).
    lesion, result
        The lesion and the study it belongs to (SUV type, muscle reference).
    pet_at_max
        The PET instance of the slice of the lesion's SUVmax.
    segment
        The regions SEG and the lesion's segment in it.
    tracking_uid
        Tracking Unique Identifier of the group.
    version
        Algorithm version.
    """
    data, source = _point(lesion.max_index, pet_at_max)
    concept = codes.suv_concept(result.suv_type)
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=anchor_identifier(index)
        ),
        referenced_segment=referenced_segment(
            segment[0], segment[1].number, result.pet_series_instance_uid
        ),
        finding_type=codes.TYPE_NEOPLASM,
        finding_category=codes.CATEGORY_MORPHOLOGICALLY_ABNORMAL,
        algorithm_id=hd.sr.AlgorithmIdentification(name=codes.ALGORITHM_NAME, version=version),
        measurements=[
            hd.sr.Measurement(
                name=concept.concept, value=float(lesion.suv_max), unit=concept.unit,
                derivation=codes.MAXIMUM, method=concept.method,
            ),
            hd.sr.Measurement(
                name=codes.LESION_TO_BACKGROUND, value=float(lesion.tm_max),
                unit=codes.UNIT_RATIO, derivation=codes.MAXIMUM,
            ),
        ],
    )
    # TID 300 row 8 (INFERRED FROM, TID 320): highdicom writes it for planar groups only
    for item in group[0].ContentSequence:
        if item.ValueType == "NUM":
            if "ContentSequence" not in item:
                item.ContentSequence = hd.sr.ContentSequence([])
            item.ContentSequence.append(hd.sr.CoordinatesForMeasurement(
                graphic_type=hd.sr.GraphicTypeValues.POINT, graphic_data=data,
                source_image=source,
            ))
    # the point drawn in OHIF's SR viewport, as in every other group
    group[0].ContentSequence.append(suvmax_point(lesion.max_index, pet_at_max))
    add_text(group, codes.COMMENT, lesion_summary(index, lesion, result))
    return group
