"""Read the measurements of a TID 1500 SR back, independently of the code that wrote it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

MEASUREMENT_GROUP = ("DCM", "125007")
TRACKING_IDENTIFIER = ("DCM", "112039")
REFERENCED_SEGMENT = ("DCM", "121191")
DERIVATION = ("DCM", "121401")
#: Tracking identifiers of OHIF's point tool begin so (its cornerstone3D adapters' convention).
OHIF_PROBE = "Cornerstone3DTools@^0.1.0:Probe"


def _code(item: Dataset, attribute: str = "ConceptNameCodeSequence") -> tuple[str, str]:
    seq = item.get(attribute)
    if not seq:
        return ("", "")
    return (str(seq[0].CodingSchemeDesignator), str(seq[0].CodeValue))


@dataclass
class Measurement:
    """One NUM content item."""

    concept: tuple[str, str]
    value: float
    unit: str
    modifiers: dict[tuple[str, str], tuple[str, str]]


@dataclass
class Group:
    """One measurement group (TID 1411) with what it refers to."""

    tracking_identifier: str = ""
    segment_numbers: list[int] = field(default_factory=list)
    seg_uid: str | None = None
    """SOPInstanceUID of the SEG holding the referenced segment."""
    measurements: list[Measurement] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def find(self, concept: tuple[str, str], derivation: tuple[str, str] | None = None
             ) -> list[Measurement]:
        return [
            m for m in self.measurements
            if m.concept == concept
            and (derivation is None or m.modifiers.get(DERIVATION) == derivation)
        ]


def _walk(items: Any, visit: Any) -> None:
    for item in items or []:
        visit(item)
        _walk(item.get("ContentSequence"), visit)


def measurement_groups(sr: Dataset) -> list[Group]:
    """Every measurement group of the SR with its NUM items, tracking ID and segments."""
    groups: list[Group] = []

    def visit(item: Dataset) -> None:
        if item.get("ValueType") != "CONTAINER" or _code(item) != MEASUREMENT_GROUP:
            return
        group = Group()
        for child in item.get("ContentSequence", []):
            concept = _code(child)
            if child.ValueType == "TEXT" and concept == TRACKING_IDENTIFIER:
                group.tracking_identifier = str(child.TextValue)
            elif child.ValueType == "TEXT":
                group.texts.append(str(child.TextValue))
            elif concept == REFERENCED_SEGMENT:
                for ref in child.get("ReferencedSOPSequence", []):
                    group.seg_uid = str(ref.ReferencedSOPInstanceUID)
                    group.segment_numbers += [int(n) for n in _as_list(
                        ref.get("ReferencedSegmentNumber", []))]
            elif child.ValueType == "NUM":
                measured = child.MeasuredValueSequence[0]
                modifiers = {
                    _code(mod): _code(mod, "ConceptCodeSequence")
                    for mod in child.get("ContentSequence", [])
                    if mod.get("ValueType") == "CODE"
                }
                group.measurements.append(Measurement(
                    concept, float(measured.NumericValue),
                    str(measured.MeasurementUnitsCodeSequence[0].CodeValue), modifiers,
                ))
        groups.append(group)

    _walk(sr.ContentSequence, visit)
    return groups


def all_texts(sr: Dataset) -> list[str]:
    """Every TEXT value anywhere in the SR."""
    texts: list[str] = []
    _walk(sr.ContentSequence,
          lambda item: texts.append(str(item.TextValue)) if item.get("ValueType") == "TEXT"
          else None)
    return texts


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(
            value, (str, bytes)):
        return list(value)
    return [value]


def region_groups(sr: Dataset) -> list[Group]:
    """The measurement groups of regions (each with its volume), without the SUVmax point
    groups written for OHIF's measurements panel (:mod:`dicom_templates.sr_anchors`)."""
    return [g for g in measurement_groups(sr) if not g.tracking_identifier.startswith(OHIF_PROBE)]

