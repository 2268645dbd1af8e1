"""Sort the files of a study into the series the quantification needs.

Used by the worker processes and by ``hypoxnode quantify DIR`` alike.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from quant.errors import QuantificationError
from service.pipeline.patient_consistency import check_one_patient

log = logging.getLogger("hypoxnode.study")

PET_IMAGE = UID("1.2.840.10008.5.1.4.1.1.128")
ENHANCED_PET_IMAGE = UID("1.2.840.10008.5.1.4.1.1.130")
CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
RT_STRUCTURE_SET = UID("1.2.840.10008.5.1.4.1.1.481.3")
SEGMENTATION = UID("1.2.840.10008.5.1.4.1.1.66.4")
DEFER_SIZE = "64 KB"
"""Values larger than this (pixel data of a slice) stay in the file until they are used:
the volume loaders of :mod:`quant.image.volume` read them one slice at a time and do not keep them,
so a 600-slice CT is never held as datasets and as a volume at once."""


@dataclass
class StudyFiles:
    """The datasets of one study, grouped for quantification."""

    pet: list[Dataset]
    ct: list[Dataset]
    structures: list[Dataset]
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_study(paths: Iterable[Path]) -> StudyFiles:
    """Read every file and pick the PET series, its CT and any RTSTRUCT or SEG.

    Choice: the attenuation-corrected PET series with the most slices; the CT series on the
    same frame of reference with the most slices.

    Raises
    ------
    QuantificationError
        No PET series, PET series of more than one study, or series of more than one patient
        (:func:`service.pipeline.patient_consistency.check_one_patient`).
    """
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    structures: list[Dataset] = []
    unreadable: list[str] = []
    for path in paths:
        try:
            dataset = dcmread(path, defer_size=DEFER_SIZE)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            unreadable.append(f"{Path(path).name}: {exc}")
            continue
        sop_class = dataset.get("SOPClassUID")
        if sop_class in (RT_STRUCTURE_SET, SEGMENTATION):
            structures.append(dataset)  # supplied contours (the pipeline skips our own SEGs)
        elif sop_class in (PET_IMAGE, ENHANCED_PET_IMAGE, CT_IMAGE, ENHANCED_CT_IMAGE):
            by_series[str(dataset.get("SeriesInstanceUID", ""))].append(dataset)
    notes = [f"{len(unreadable)} unreadable file(s) ignored"] if unreadable else []

    pet_series = [s for s in by_series.values() if s[0].get("Modality") == "PT"]
    if not pet_series:
        raise QuantificationError(
            "no PET series (Modality PT) in the study: nothing to quantify"
        )
    pet = max(pet_series, key=_pet_preference)
    check_one_patient(pet, [*(s for s in by_series.values() if s is not pet),
                            *([d] for d in structures)])
    if len(pet_series) > 1:
        notes.append(
            f"{len(pet_series)} PET series; used {pet[0].get('SeriesDescription', '')!s}"
            f" ({len(pet)} instances)"
        )
    frame_of_reference = pet[0].get("FrameOfReferenceUID")
    ct_series = [
        s for s in by_series.values()
        if s[0].get("Modality") == "CT" and s[0].get("FrameOfReferenceUID") == frame_of_reference
    ]
    ct = max(ct_series, key=len) if ct_series else []
    other_ct = [
        s for s in by_series.values()
        if s[0].get("Modality") == "CT" and s[0].get("FrameOfReferenceUID") != frame_of_reference
    ]
    if other_ct and not ct:
        notes.append("the CT is on another frame of reference than the PET: not used")
    return StudyFiles(pet=pet, ct=ct, structures=structures, unreadable=unreadable, notes=notes)


def _pet_preference(series: list[Dataset]) -> tuple[int, int]:
    corrected = series[0].get("CorrectedImage", [])
    if isinstance(corrected, str):
        corrected = [corrected]
    return ("ATTN" in list(corrected), len(series))


def find_files(directory: Path) -> list[Path]:
    """Every regular file below ``directory`` (DICOM or not; unreadable ones are skipped later)."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())
