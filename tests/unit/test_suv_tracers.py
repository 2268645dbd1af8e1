"""quant.suv.nuclides and quant.suv.tracers: identification tables."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from quant.suv.nuclides import (
    choose_nuclide,
    nuclide_from_code,
    nuclide_from_text,
    table_half_life_s,
)
from quant.suv.tracers import identify_tracer


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("77004003", "F-18"),
        ("C-111A1", "F-18"),
        ("3932008", "Cu-64"),
        ("C-127A2", "Cu-64"),
        ("425364008", "Cu-60"),
        ("71425003", "Cu-61"),
        ("422934004", "Cu-62"),
        ("35337001", "Ga-68"),
        ("C-131A3", "Ga-68"),
        ("63360001", "Zr-89"),
        ("40937006", "I-124"),
        ("40565003", "C-11"),
        ("129504001", "O-15"),
        ("999", None),
        (None, None),
    ],
)
def test_nuclide_from_code(code: str | None, expected: str | None) -> None:
    assert nuclide_from_code(code) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("^64^Copper", "Cu-64"),
        ("Cu-64 ATSM", "Cu-64"),
        ("64Cu-ATSM", "Cu-64"),
        ("[18F]FMISO", "F-18"),
        ("Ga68-PSMA", "Ga-68"),
        ("^68^Gallium", "Ga-68"),
        ("fluorine-18", "F-18"),
        ("61Cu-ATSM", "Cu-61"),
        ("FDG", None),
        ("", None),
    ],
)
def test_nuclide_from_text(text: str, expected: str | None) -> None:
    assert nuclide_from_text(text) == expected


@pytest.mark.parametrize(
    ("nuclide", "expected"),
    [
        ("F-18", 6586.2),
        ("Cu-64", 45721.0),
        ("Cu-61", 12035.0),
        ("Cu-62", 580.0),
        ("Cu-60", 1422.0),
        ("Ga-68", 4063.0),
        ("Xx-1", None),
    ],
)
def test_table_half_life(nuclide: str, expected: float | None) -> None:
    assert table_half_life_s(nuclide) == expected


def test_choose_nuclide_follows_the_header_half_life() -> None:
    # The Ga-68 DRO writes legacy code C-131A1 (^66^Gallium) with meaning ^68^Gallium.
    assert choose_nuclide([None, "Ga-68"], 4057.7) == "Ga-68"
    assert choose_nuclide(["Cu-64", "F-18"], 6586.2) == "F-18"
    assert choose_nuclide(["Cu-64", "F-18"], None) == "Cu-64"
    assert choose_nuclide([None, None], 6586.2) is None


def _pet(
    text: str | None = None,
    drug_code: tuple[str, str, str] | None = None,
    nuclide_code: tuple[str, str, str] | None = None,
    half_life: float | None = None,
) -> Dataset:
    item = Dataset()
    if text is not None:
        item.Radiopharmaceutical = text
    if half_life is not None:
        item.RadionuclideHalfLife = str(half_life)
    for keyword, code in (
        ("RadiopharmaceuticalCodeSequence", drug_code),
        ("RadionuclideCodeSequence", nuclide_code),
    ):
        if code is not None:
            entry = Dataset()
            entry.CodeValue, entry.CodingSchemeDesignator, entry.CodeMeaning = code
            setattr(item, keyword, [entry])
    ds = Dataset()
    ds.RadiopharmaceuticalInformationSequence = [item]
    return ds


@pytest.mark.parametrize(
    ("ds", "name", "nuclide"),
    [
        (_pet(drug_code=("422855001", "SCT", "ATSM Cu^64^")), "64Cu-ATSM", "Cu-64"),
        (_pet(drug_code=("126700", "DCM", "ATSM Cu^60^")), "60Cu-ATSM", "Cu-60"),
        (_pet(drug_code=("126701", "DCM", "ATSM Cu^61^")), "61Cu-ATSM", "Cu-61"),
        (_pet(drug_code=("126702", "DCM", "ATSM Cu^62^")), "62Cu-ATSM", "Cu-62"),
        (_pet("Cu-64 ATSM"), "64Cu-ATSM", "Cu-64"),
        (_pet("ATSM", nuclide_code=("3932008", "SCT", "^64^Copper")), "64Cu-ATSM", "Cu-64"),
        (_pet("FMISO"), "18F-FMISO", "F-18"),
        (_pet(drug_code=("422598008", "SCT", "Fluoromisonidazole F^18^")), "18F-FMISO", "F-18"),
        (_pet("18F-FAZA"), "18F-FAZA", "F-18"),
        (_pet("HX4"), "18F-HX4", "F-18"),
        (_pet("FDG -- fluorodeoxyglucose"), "18F-FDG", "F-18"),
        (_pet("FDG", nuclide_code=("C-111A1", "SRT", "^18^Fluorine")), "18F-FDG", "F-18"),
        (
            _pet("Ga68-PSMA", nuclide_code=("C-131A1", "SRT", "^68^Gallium"), half_life=4057.7),
            "unknown",
            "Ga-68",
        ),
        (_pet("water"), "unknown", None),
        (Dataset(), "unknown", None),
    ],
)
def test_identify_tracer(ds: Dataset, name: str, nuclide: str | None) -> None:
    profile = identify_tracer(ds)
    assert (profile.name, profile.nuclide) == (name, nuclide)


def test_cu_atsm_profile_covers_next_day_scans() -> None:
    profile = identify_tracer(_pet("Cu-64 ATSM"))
    assert profile.half_life_s == 45721.0
    assert profile.uptake_window_s == (0.5 * 3600, 26 * 3600)
    assert profile.hypoxic_thresholds and profile.lesion_tm_threshold > 1.0
