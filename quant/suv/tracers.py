"""Tracer profiles and their identification from the Radiopharmaceutical Information Sequence.

Thresholds here are literature starting points for reports, never truth: the pipeline lets the
configuration override them (see DOMAIN.md section 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pydicom.dataset import Dataset

from quant.suv.nuclides import (
    NUCLIDES,
    choose_nuclide,
    nuclide_from_code,
    nuclide_from_text,
    table_half_life_s,
)

_H = 3600.0
_MIN = 60.0


@dataclass(frozen=True)
class TracerProfile:
    """What the pipeline assumes about one tracer.

    Parameters
    ----------
    name
        ``"64Cu-ATSM"``, ``"18F-FMISO"``, ... or ``"unknown"``.
    nuclide
        ``"Cu-64"`` style name, or None when not identified.
    half_life_s
        Tabulated half-life of the nuclide (the header value may differ; see
        :mod:`quant.suv.pet_header`), or None.
    hypoxic_thresholds
        Tumour-to-muscle ratios defining hypoxic sub-volumes.
    lesion_tm_threshold
        Tumour-to-muscle ratio above which voxels are lesion candidates.
    uptake_window_s
        (min, max) typical injection-to-scan time in seconds, or None if unknown.
    delineation
        Default lesion delineation method (see :data:`quant.settings.DELINEATION_METHODS`).
    excluded_organs
        Physiological uptake the automatic detection excludes (see
        :mod:`quant.segmentation.physiology`).
    lesion_noise_sds
        ``k`` of the noise floor: a candidate's SUVmax must exceed muscle SUVmean + k x muscle
        SD (voxel SD of the reference) as well as the T/M threshold. 5 for every profile: the
        largest of ~10^5-10^6 Gaussian noise voxels lies near 4.5-5 SD, so a homogeneous
        muscle with noise yields no lesion, while a tumour at T/M 1.5 still passes with muscle
        noise up to 10 % (CV).
    """

    name: str
    nuclide: str | None
    half_life_s: float | None
    hypoxic_thresholds: tuple[float, ...]
    lesion_tm_threshold: float
    uptake_window_s: tuple[float, float] | None
    delineation: str = "percent_of_max"
    excluded_organs: tuple[str, ...] = ("liver", "urine", "brain", "bowel", "spleen")
    lesion_noise_sds: float = 5.0


def _profile(
    name: str,
    nuclide: str,
    thresholds: tuple[float, ...],
    lesion: float,
    window: tuple[float, float],
) -> TracerProfile:
    return TracerProfile(name, nuclide, NUCLIDES[nuclide].half_life_s, thresholds, lesion, window)


# Cu-ATSM: T/M 1.5 / 2.0 and 3.5 (Dehdashti 2003, 60Cu-ATSM cervix); static scans from 30 min,
# 64Cu delayed scans 16-25 h. FMISO / FAZA: tumour/blood or tumour/muscle >= 1.2
# (Muzi JNM 2015). HX4: tumour/background 1.4 (Zegers 2013). FDG: generic defaults only.
# Detection (lesion_tm_threshold) stays at 1.5 for FMISO/FAZA: at 1.2 myocardium and bowel
# (T/M ~1.2-1.3) become candidates at 10% noise.
PROFILES: dict[str, TracerProfile] = {
    p.name: p
    for p in (
        _profile("64Cu-ATSM", "Cu-64", (1.5, 2.0, 3.5), 1.5, (0.5 * _H, 26.0 * _H)),
        _profile("60Cu-ATSM", "Cu-60", (1.5, 2.0, 3.5), 1.5, (5 * _MIN, 2.0 * _H)),
        _profile("61Cu-ATSM", "Cu-61", (1.5, 2.0, 3.5), 1.5, (10 * _MIN, 8.0 * _H)),
        _profile("62Cu-ATSM", "Cu-62", (1.5, 2.0, 3.5), 1.5, (5 * _MIN, 1.0 * _H)),
        _profile("18F-FMISO", "F-18", (1.2,), 1.5, (1.5 * _H, 4.5 * _H)),
        _profile("18F-FAZA", "F-18", (1.2,), 1.5, (1.0 * _H, 4.0 * _H)),
        _profile("18F-HX4", "F-18", (1.4,), 1.4, (1.5 * _H, 4.5 * _H)),
        replace(
            _profile("18F-FDG", "F-18", (1.5, 2.0), 1.5, (45 * _MIN, 90 * _MIN)),
            excluded_organs=("liver", "urine", "brain", "bowel", "heart", "spleen"),  # myocardium
        ),
    )
}

_CODES: dict[str, str] = {
    "422855001": "64Cu-ATSM",  # SCT ATSM Cu^64^ (CID 4021)
    "C-B07DB": "64Cu-ATSM",  # legacy SRT
    "126700": "60Cu-ATSM",  # DCM ATSM Cu^60^
    "126701": "61Cu-ATSM",  # DCM ATSM Cu^61^
    "126702": "62Cu-ATSM",  # DCM ATSM Cu^62^
    "422598008": "18F-FMISO",  # SCT Fluoromisonidazole F^18^
    "126708": "18F-FMISO",  # DCM (retired) Fluoromisonidazole (FMISO) F^18^
    "35321007": "18F-FDG",  # SCT Fluorodeoxyglucose F^18^
    "C-B1031": "18F-FDG",  # legacy SRT
}

_LIGANDS = (
    (re.compile(r"ATSM|METHYLTHIOSEMICARBAZONE"), "ATSM"),
    (re.compile(r"FMISO|MISONIDAZOLE"), "FMISO"),
    (re.compile(r"FAZA|AZOMYCIN"), "FAZA"),
    (re.compile(r"HX-?4|FLORTANIDAZOLE"), "HX4"),
    (re.compile(r"FDG|FLUORODEOXYGLUCOSE|FLUDEOXYGLUCOSE"), "FDG"),
)
_DEFAULT_NUCLIDE = {"FMISO": "F-18", "FAZA": "F-18", "HX4": "F-18", "FDG": "F-18"}


def profile_for(ligand: str, nuclide: str | None) -> TracerProfile:
    """Profile of a ligand (``"ATSM"``, ``"FMISO"``, ...) labelled with ``nuclide``.

    An unknown combination gives an ``"unknown"`` profile that keeps the nuclide.
    """
    if ligand == "ATSM" and nuclide is not None and nuclide.startswith("Cu-"):
        name = f"{nuclide[3:]}Cu-ATSM"
    elif ligand in _DEFAULT_NUCLIDE and nuclide in (None, _DEFAULT_NUCLIDE[ligand]):
        name = f"18F-{ligand}"
    else:
        name = ""
    if name in PROFILES:
        return PROFILES[name]
    return unknown_profile(nuclide)


def unknown_profile(nuclide: str | None) -> TracerProfile:
    """Profile for an unidentified tracer: generic thresholds, no uptake window."""
    return TracerProfile("unknown", nuclide, table_half_life_s(nuclide), (1.5, 2.0), 1.5, None)


def _ligand_from_text(text: str) -> str | None:
    upper = text.upper()
    for pattern, ligand in _LIGANDS:
        if pattern.search(upper):
            return ligand
    return None


def _codes(item: Dataset, keyword: str) -> list[Dataset]:
    return list(item.get(keyword) or [])


def radiopharmaceutical_nuclide(item: Dataset) -> str | None:
    """Nuclide of one RadiopharmaceuticalInformationSequence item.

    Candidates in order: RadionuclideCodeSequence code value (SCT), its code meaning, a legacy
    code value, then the Radiopharmaceutical (0018,0031) text and the radiopharmaceutical code
    meaning; :func:`quant.suv.nuclides.choose_nuclide` picks the one that agrees with
    RadionuclideHalfLife (0018,1075).
    """
    candidates: list[str | None] = []
    for code in _codes(item, "RadionuclideCodeSequence"):
        candidates.append(nuclide_from_code(code.get("CodeValue")))
        candidates.append(nuclide_from_text(code.get("CodeMeaning")))
    candidates.append(nuclide_from_text(item.get("Radiopharmaceutical")))
    for code in _codes(item, "RadiopharmaceuticalCodeSequence"):
        candidates.append(nuclide_from_text(code.get("CodeMeaning")))
    half_life = item.get("RadionuclideHalfLife")
    return choose_nuclide(candidates, float(half_life) if half_life not in (None, "") else None)


def identify_tracer(ds: Dataset) -> TracerProfile:
    """Tracer of a PET dataset from its RadiopharmaceuticalInformationSequence (0054,0016).

    RadiopharmaceuticalCodeSequence codes (CID 4021) are trusted first, then the
    Radiopharmaceutical text and code meaning (``"Cu-64 ATSM"``, ``"FMISO"``, ...), with the
    nuclide from :func:`radiopharmaceutical_nuclide`.

    Parameters
    ----------
    ds
        One PET image dataset (any slice of the series).

    Returns
    -------
    TracerProfile
        ``name == "unknown"`` when the ligand is not recognised.
    """
    items = list(ds.get("RadiopharmaceuticalInformationSequence") or [])
    if not items:
        return unknown_profile(None)
    item = items[0]
    nuclide = radiopharmaceutical_nuclide(item)
    for code in _codes(item, "RadiopharmaceuticalCodeSequence"):
        name = _CODES.get(str(code.get("CodeValue", "")).strip())
        if name is not None:
            profile = PROFILES[name]
            if nuclide is None or nuclide == profile.nuclide:
                return profile
    texts = [str(item.get("Radiopharmaceutical") or "")]
    texts += [
        str(c.get("CodeMeaning") or "") for c in _codes(item, "RadiopharmaceuticalCodeSequence")
    ]
    for text in texts:
        ligand = _ligand_from_text(text)
        if ligand is not None:
            return profile_for(ligand, nuclide)
    return unknown_profile(nuclide)
