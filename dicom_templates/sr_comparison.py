"""Measurement groups comparing the report's scan with the subject's prior scan.

Each is a TID 1411 group on the region of the current scan it compares (the muscle reference,
a lesion, a hypoxic sub-volume: :class:`Region`), with a point inside it, like every other
group of the report: PixelMed's validator takes one template for all groups of "Imaging
Measurements" (a TID 1501 group without region among them was 15 errors), and OHIF's SR
viewport fails on a group without a SCOORD. Appended to "Imaging Measurements":

1. "Comparison with prior study" (on the muscle reference): pair kind (coded), prior
   StudyInstanceUID (UIDREF), prior scan start (DATETIME), interval (days), how the scans
   were aligned, the muscle reference SUVmean change, notes and the repeatability
   coefficient sources;
2. per matched lesion: centroid distance, and for SUVmax, SUVpeak, SUVmean and T/M max the
   prior value, the change (absolute and relative), the relative RC in use and whether the
   change exceeds it (Yes/No), each also said in a sentence;
3. per matched lesion and hypoxic threshold: the threshold, hypoxic volume and fraction
   compared the same way, and the Dice coefficient of the two sub-volumes.

Names without a standard code use the private scheme of :mod:`dicom_templates.codes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_templates import codes
from dicom_templates.seg import SegmentInfo
from dicom_templates.sr_groups import Group, add_text, referenced_segment, suvmax_point
from dicom_templates.uids import derive_uid
from quant.longitudinal.comparison import FigureChange, LesionComparison, PairComparison
from quant.longitudinal.pairing import PAIR_KIND_TEXT

Measurement = hd.sr.Measurement
Evaluation = hd.sr.QualitativeEvaluation


@dataclass(frozen=True)
class Region:
    """A region of the current scan a comparison group is about, and a point inside it."""

    seg: Dataset
    """The SEG holding its segment."""
    info: SegmentInfo
    pet_series_uid: str
    point: tuple[int, int, int]
    """Voxel (slice, row, column) inside the region."""
    pet: Dataset
    """The PET instance of the point's slice."""


#: ``where(lesion_number, threshold)``: the region compared (muscle: ``(None, None)``).
Where = Callable[[int | None, float | None], Region]


def _unit(figure: str, suv_type: str) -> Code:
    if figure in ("suv_max", "suv_peak", "suv_mean", "muscle_suv_mean"):
        return codes.suv_concept(suv_type).unit
    if figure == "hypoxic_volume_ml":
        return codes.UNIT_ML
    return codes.UNIT_RATIO


def change_sentence(change: FigureChange) -> str:
    """One line a person reads: values, change and the RC decision with its source."""
    _, label = codes.COMPARED_FIGURES[change.figure]
    relative = f", {change.relative:+.1%}" if change.relative is not None else ""
    text = (
        f"{label}: prior {change.prior:.4g}, now {change.current:.4g}"
        f" (change {change.absolute:+.4g}{relative})"
    )
    if change.exceeds is None:
        return f"{text}; not judged against repeatability ({change.rc_source})"
    verdict = "exceeds" if change.exceeds else "is within"
    assert change.relative_rc is not None
    return (
        f"{text}; {verdict} the repeatability coefficient {change.relative_rc:.1%}"
        f" ({change.rc_source})"
    )


def _items(change: FigureChange, suv_type: str) -> tuple[list[Measurement], list[Evaluation]]:
    names = codes.comparison_codes(change.figure)
    unit = _unit(change.figure, suv_type)
    measurements = [
        Measurement(name=names.prior, value=change.prior, unit=unit),
        Measurement(name=names.change, value=change.absolute, unit=unit),
    ]
    if change.relative is not None:
        measurements.append(
            Measurement(
                name=names.relative_change, value=100.0 * change.relative,
                unit=codes.UNIT_PERCENT,
            )
        )
    if change.relative_rc is not None:
        measurements.append(
            Measurement(
                name=names.relative_rc, value=100.0 * change.relative_rc,
                unit=codes.UNIT_PERCENT,
            )
        )
    evaluations = []
    if change.exceeds is not None:
        evaluations.append(
            Evaluation(names.exceeds_rc, codes.YES if change.exceeds else codes.NO)
        )
    return measurements, evaluations


def _group(
    identifier: str,
    uid: str,
    region: Region,
    changes: list[FigureChange],
    suv_type: str,
    version: str,
    *,
    extra: list[Measurement] | None = None,
    evaluations: list[Evaluation] | None = None,
) -> Group:
    measurements = list(extra or [])
    qualitative = list(evaluations or [])
    for change in changes:
        m, e = _items(change, suv_type)
        measurements += m
        qualitative += e
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=identifier),
        referenced_segment=referenced_segment(
            region.seg, region.info.number, region.pet_series_uid
        ),
        algorithm_id=hd.sr.AlgorithmIdentification(name=codes.ALGORITHM_NAME, version=version),
        measurements=measurements or None,
        qualitative_evaluations=qualitative or None,
    )
    group[0].ContentSequence.append(
        suvmax_point(region.point, region.pet, codes.REGION_POINT)
    )
    add_text(group, codes.COMMENT, f"Compared region of this scan: {region.info.label}")
    for change in changes:
        add_text(group, codes.COMMENT, change_sentence(change))
    return group


def _context(
    comparison: PairComparison, suv_type: str, uid: str, version: str, where: Where
) -> Group:
    kind = comparison.kind.value
    group = _group(
        "Comparison with prior study",
        uid,
        where(None, None),
        [comparison.muscle],
        suv_type,
        version,
        extra=[
            Measurement(
                name=codes.SCAN_INTERVAL, value=comparison.interval_days, unit=codes.UNIT_DAY
            )
        ],
        evaluations=[Evaluation(codes.PAIR_KIND, codes.PAIR_KINDS[kind])],
    )
    items = group[0].ContentSequence
    items.append(
        hd.sr.UIDRefContentItem(
            name=codes.STUDY_INSTANCE_UID,
            value=comparison.prior_study_instance_uid,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    if comparison.prior_scan_time is not None:
        items.append(
            hd.sr.DateTimeContentItem(
                name=codes.PRIOR_SCAN_DATETIME,
                value=comparison.prior_scan_time,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    when = (
        comparison.prior_scan_time.strftime("%Y-%m-%d %H:%M")
        if comparison.prior_scan_time
        else "unknown time"
    )
    add_text(
        group,
        codes.COMMENT,
        f"Pair kind: {PAIR_KIND_TEXT[comparison.kind]} ({kind}); prior study"
        f" {comparison.prior_study_instance_uid}, scanned {when},"
        f" {comparison.interval_days:.2f} days earlier",
    )
    add_text(group, codes.COMMENT, f"Alignment: {comparison.alignment}")
    matched = len(comparison.lesions)
    add_text(
        group,
        codes.COMMENT,
        f"{matched} lesion(s) matched; unmatched now: {comparison.unmatched_current or 'none'};"
        f" unmatched in prior: {comparison.unmatched_prior or 'none'}",
    )
    for note in comparison.notes:
        add_text(group, codes.COMMENT, f"Note: {note}")
    return group


def _lesion_groups(
    lesion: LesionComparison, suv_type: str, sop_instance_uid: str, version: str, where: Where
) -> list[Group]:
    name = f"Lesion {lesion.current_number} vs prior Lesion {lesion.prior_number}"
    groups = [
        _group(
            name,
            derive_uid(sop_instance_uid, "comparison", str(lesion.current_number)),
            where(lesion.current_number, None),
            lesion.changes,
            suv_type,
            version,
            extra=[
                Measurement(
                    name=codes.CENTROID_DISTANCE, value=lesion.distance_mm, unit=codes.UNIT_MM
                )
            ],
        )
    ]
    for sub in lesion.hypoxic:
        extra = [Measurement(name=codes.THRESHOLD_VALUE, value=sub.threshold,
                             unit=codes.UNIT_RATIO)]
        if sub.dice is not None:
            extra.append(Measurement(name=codes.HYPOXIC_DICE, value=sub.dice,
                                     unit=codes.UNIT_RATIO))
        group = _group(
            f"{name} hypoxic T/M>={sub.threshold:g}",
            derive_uid(sop_instance_uid, "comparison", str(lesion.current_number),
                       f"{sub.threshold:g}"),
            where(lesion.current_number, float(sub.threshold)),
            [sub.volume, sub.fraction],
            suv_type,
            version,
            extra=extra,
        )
        dice = f"{sub.dice:.3f}" if sub.dice is not None else "not computed"
        add_text(group, codes.COMMENT, f"Dice of the hypoxic sub-volumes after alignment: {dice}")
        groups.append(group)
    return groups


def comparison_groups(
    comparison: PairComparison, suv_type: str, sop_instance_uid: str, version: str,
    where: Where,
) -> list[Group]:
    """The groups reporting ``comparison`` (see the module docstring).

    Parameters
    ----------
    comparison
        The comparison of the report's scan with its prior.
    suv_type
        SUV type of the figures (units of the SUV items).
    sop_instance_uid
        The report's SOPInstanceUID (tracking UIDs are derived from it).
    version
        Algorithm version.
    where
        The region of the current scan each group compares: ``where(None, None)`` the muscle
        reference, ``where(n, None)`` lesion ``n``, ``where(n, threshold)`` its hypoxic
        sub-volume (its lesion when that has no voxel).
    """
    groups = [
        _context(comparison, suv_type, derive_uid(sop_instance_uid, "comparison"), version,
                 where)
    ]
    for lesion in comparison.lesions:
        groups += _lesion_groups(lesion, suv_type, sop_instance_uid, version, where)
    return groups
