"""PET radionuclides: half-lives and identification from codes or free text.

Codes are those of DICOM CID 4020 "PET Radionuclide": SNOMED CT (scheme ``SCT``) and the
legacy SNOMED RT codes (schemes ``SRT`` / ``99SDM``) that older scanners still write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HALF_LIFE_REL_TOLERANCE = 0.01
"""Relative difference between a header half-life and the table above which we warn."""


@dataclass(frozen=True)
class Nuclide:
    """One positron emitter.

    Parameters
    ----------
    name
        ``"F-18"`` style name.
    half_life_s
        Physical half-life in seconds.
    sct_code
        SNOMED CT code (CID 4020).
    srt_code
        Legacy SNOMED RT code (CID 4020 before 2017).
    """

    name: str
    half_life_s: float
    sct_code: str
    srt_code: str


NUCLIDES: dict[str, Nuclide] = {
    n.name: n
    for n in (
        Nuclide("F-18", 6586.2, "77004003", "C-111A1"),
        Nuclide("Cu-64", 45721.0, "3932008", "C-127A2"),
        Nuclide("Cu-61", 12035.0, "71425003", "C-127A1"),
        Nuclide("Cu-62", 580.0, "422934004", "C-127A5"),
        Nuclide("Cu-60", 1422.0, "425364008", "C-127A4"),
        Nuclide("Ga-68", 4063.0, "35337001", "C-131A3"),
        Nuclide("C-11", 1221.8, "40565003", "C-105A1"),
        Nuclide("O-15", 122.24, "129504001", "C-B1038"),
        Nuclide("Zr-89", 282276.0, "63360001", "C-168A4"),
        Nuclide("I-124", 360806.0, "40937006", "C-114A5"),
    )
}
"""Half-lives: F-18 from the QIBA DRO, the others from NUDAT / DDEP (rounded to the second)."""

_BY_CODE: dict[str, str] = {}
for _n in NUCLIDES.values():
    _BY_CODE[_n.sct_code] = _n.name
    _BY_CODE[_n.srt_code] = _n.name

_ELEMENTS = {
    "F": "F",
    "FLUORINE": "F",
    "CU": "Cu",
    "COPPER": "Cu",
    "GA": "Ga",
    "GALLIUM": "Ga",
    "C": "C",
    "CARBON": "C",
    "O": "O",
    "OXYGEN": "O",
    "ZR": "Zr",
    "ZIRCONIUM": "Zr",
    "I": "I",
    "IODINE": "I",
}
_ELEMENT_WORD = "|".join(sorted(_ELEMENTS, key=len, reverse=True))
# "^64^Copper", "Cu-64", "64Cu", "Cu64", "copper 64", "18F", "F18", "F^18^".
_MASS_FIRST = re.compile(rf"(?<![A-Z0-9])\^?(\d{{1,3}})\^?\s*-?\s*({_ELEMENT_WORD})(?![A-Z])")
_ELEMENT_FIRST = re.compile(rf"(?<![A-Z])({_ELEMENT_WORD})\s*-?\s*\^?(\d{{1,3}})\^?(?![0-9])")


def nuclide_from_code(code_value: str | None) -> str | None:
    """Nuclide name for a CID 4020 code value (SNOMED CT or legacy SNOMED RT).

    Parameters
    ----------
    code_value
        CodeValue of a RadionuclideCodeSequence item.

    Returns
    -------
    str or None
        ``"Cu-64"`` style name, or None for an unknown code.
    """
    if not code_value:
        return None
    return _BY_CODE.get(code_value.strip())


def nuclide_from_text(text: str | None) -> str | None:
    """Nuclide name found in free text such as ``"^64^Copper"``, ``"Cu-64 ATSM"``, ``"18F-FDG"``.

    Parameters
    ----------
    text
        A CodeMeaning or the Radiopharmaceutical (0018,0031) string.

    Returns
    -------
    str or None
        The first known nuclide mentioned, or None.
    """
    if not text:
        return None
    upper = text.upper()
    for pattern, mass_group, element_group in ((_MASS_FIRST, 1, 2), (_ELEMENT_FIRST, 2, 1)):
        for match in pattern.finditer(upper):
            name = f"{_ELEMENTS[match.group(element_group)]}-{int(match.group(mass_group))}"
            if name in NUCLIDES:
                return name
    return None


def table_half_life_s(nuclide: str | None) -> float | None:
    """Tabulated half-life in seconds, or None for an unknown nuclide."""
    if nuclide is None or nuclide not in NUCLIDES:
        return None
    return NUCLIDES[nuclide].half_life_s


def choose_nuclide(candidates: list[str | None], header_half_life_s: float | None) -> str | None:
    """Pick one nuclide from candidates read from different attributes.

    The first candidate whose tabulated half-life agrees with ``header_half_life_s`` (within
    :data:`HALF_LIFE_REL_TOLERANCE`) wins; without such agreement, the first candidate. This
    resolves headers whose code value and code meaning disagree (the Ga-68 DRO writes the
    legacy ^66^Gallium code C-131A1 with the meaning ``^68^Gallium``).

    Parameters
    ----------
    candidates
        Names in order of trust (None entries are ignored).
    header_half_life_s
        RadionuclideHalfLife (0018,1075), if present.

    Returns
    -------
    str or None
    """
    known = [c for c in candidates if c is not None]
    if not known:
        return None
    if header_half_life_s:
        for name in known:
            if half_life_agrees(header_half_life_s, NUCLIDES[name].half_life_s):
                return name
    return known[0]


def half_life_agrees(header_half_life_s: float, table_half_life: float) -> bool:
    """Whether two half-lives agree within :data:`HALF_LIFE_REL_TOLERANCE`."""
    return abs(header_half_life_s - table_half_life) <= HALF_LIFE_REL_TOLERANCE * table_half_life
