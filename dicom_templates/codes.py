"""Coded concepts used by the SEG, SR and summary builders (data, not logic).

Where the DICOM standard has a code it is used (checked against pydicom's concept dictionary,
which is generated from PS3.16); figures without a standard code use the private scheme
:data:`PRIVATE_SCHEME`, which the SR declares in its CodingSchemeIdentificationSequence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

# --- private coding scheme ------------------------------------------------------------------

PRIVATE_SCHEME = "99HYPOX"
"""Coding scheme designator of hypoxnode's private codes (``99`` prefix: PS3.3 8.2)."""
PRIVATE_SCHEME_NAME = "hypoxnode private codes"
PRIVATE_SCHEME_ORGANIZATION = "hypoxnode project"


def _private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


HYPOXIC_FRACTION = _private("HYPFRAC", "Hypoxic fraction")
"""Hypoxic sub-volume volume / lesion volume (no standard code exists)."""
HYPOXIC_SUBVOLUME = _private("HYPSUBVOL", "Hypoxic tumour sub-volume")
"""Segmented property type of a hypoxic sub-volume (SNOMED has no structure concept for it)."""
HYPOXIC_METHOD = _private("HYPTM", "Tumour-to-muscle ratio threshold")
"""Method of a hypoxic sub-volume: voxels with SUV >= threshold x muscle SUVmean."""
NO_LESION_FOUND = _private("NOLESION", "No lesion found")
SUVMAX_LOCATION = _private("SUVMAXLOC", "Location of SUVmax")
"""Concept name of the SCOORD POINT at a region's SUVmax voxel (anchors the group in a viewer)."""
REGION_POINT = _private("REGIONPT", "Point within the region")
"""Concept name of the SCOORD POINT of a region without a SUVmax of its own (muscle)."""
EXCLUDED_CANDIDATE = _private("EXCLUDED", "Candidate lesion not reported")
"""A hot region the detection found and excluded (physiological uptake, too small, ...)."""
FAZA_F18 = _private("FAZA", "Fluoroazomycin arabinoside F^18^")
HX4_F18 = _private("HX4", "Flortanidazole F^18^")

# Comparison with a prior scan (issue 9): no standard concept names a figure's prior value,
# change or repeatability decision, so each is a private code named after the figure.
PAIR_KIND = _private("PAIRKIND", "Kind of scan pair")
PAIR_KINDS: dict[str, Code] = {
    "early_delayed": _private("EARLYDELAYED", "Early and delayed scans of one injection"),
    "test_retest": _private("TESTRETEST", "Test-retest pair"),
    "follow_up": _private("FOLLOWUP", "Follow-up pair"),
}
PRIOR_SCAN_DATETIME = _private("PRIORSCAN", "Prior scan start")
SCAN_INTERVAL = _private("SCANINTVL", "Interval since prior scan")
CENTROID_DISTANCE = _private("CENTDIST", "Lesion centroid distance to prior lesion")
HYPOXIC_DICE = _private("HYPDICE", "Dice coefficient of hypoxic sub-volumes, prior and current")
STUDY_INSTANCE_UID = codes.DCM.StudyInstanceUID  # 110180
YES = codes.SCT.Yes  # 373066001
NO = codes.SCT.No  # 373067005

COMPARED_FIGURES: dict[str, tuple[str, str]] = {
    "suv_max": ("SUVMAX", "SUVmax"),
    "suv_peak": ("SUVPEAK", "SUVpeak"),
    "suv_mean": ("SUVMEAN", "SUVmean"),
    "muscle_suv_mean": ("MUSCLE", "Muscle SUVmean"),
    "tm_max": ("TMMAX", "T/M max"),
    "hypoxic_volume_ml": ("HYPVOL", "Hypoxic volume"),
    "hypoxic_fraction": ("HYPFRAC", "Hypoxic fraction"),
}
"""Figure -> (code value stem, label) of the comparison codes."""


@dataclass(frozen=True)
class ComparisonCodes:
    """The concept names of one figure's comparison items."""

    prior: Code
    change: Code
    relative_change: Code
    relative_rc: Code
    exceeds_rc: Code


def comparison_codes(figure: str) -> ComparisonCodes:
    """Private concept names for the prior value, change and RC decision of ``figure``.

    Raises
    ------
    ValueError
        If ``figure`` is not a key of :data:`COMPARED_FIGURES`.
    """
    if figure not in COMPARED_FIGURES:
        raise ValueError(f"figure: unknown {figure!r}; known: {sorted(COMPARED_FIGURES)}")
    stem, label = COMPARED_FIGURES[figure]
    return ComparisonCodes(
        prior=_private(f"{stem}-PRIOR", f"{label} in prior study"),
        change=_private(f"{stem}-CHG", f"{label} change from prior study"),
        relative_change=_private(f"{stem}-RELCHG", f"{label} relative change from prior study"),
        relative_rc=_private(f"{stem}-RC", f"{label} relative repeatability coefficient in use"),
        exceeds_rc=_private(f"{stem}-EXCRC", f"{label} change exceeds repeatability coefficient"),
    )


def coding_scheme_identification() -> Dataset:
    """Item of CodingSchemeIdentificationSequence (0008,0110) declaring the private scheme.

    Returns
    -------
    pydicom.dataset.Dataset
        One sequence item.
    """
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = PRIVATE_SCHEME_ORGANIZATION
    return item


# --- segment properties (CID 7150 / 7151) ---------------------------------------------------

CATEGORY_MORPHOLOGICALLY_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure  # 49755003
CATEGORY_TISSUE = codes.SCT.Tissue  # 85756007
TYPE_NEOPLASM = codes.SCT.Neoplasm  # 108369006
TYPE_SKELETAL_MUSCLE = codes.SCT.SkeletalMuscle  # 127954009

# --- measurement concepts (CID 7466, 7469, 7464) --------------------------------------------

VOLUME = codes.SCT.Volume  # 118565006
MAXIMUM = codes.SCT.Maximum  # 56851009
MEAN = codes.SCT.Mean  # 373098007
PEAK = codes.DCM.PeakValueWithinROI  # 126031
STANDARD_DEVIATION = codes.SCT.StandardDeviation  # 386136009
LESION_TO_BACKGROUND = codes.DCM.LesionToBackgroundSUVRatio  # 126039
BACKGROUND_FOR_RATIO = codes.DCM.BackgroundForLesionToBackgroundSUVRatio  # 126040
THRESHOLD_VALUE = codes.DCM.ThresholdValue  # 122411
UPTAKE_TIME = codes.DCM.TimeAfterTheStartOfInjection  # 130194
RADIOPHARMACEUTICAL_AGENT = Code("349358000", "SCT", "Radiopharmaceutical agent")
RADIONUCLIDE = Code("89457008", "SCT", "Radionuclide")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
FINDING = codes.DCM.Finding  # 121071
OBSERVER_DEVICE = codes.DCM.Device  # 121007
COMMENT = codes.DCM.Comment  # 121106
REFERENCE_REGION = codes.NCIt.ReferenceRegion  # C94970
PROCEDURE_PET = codes.LN.PETUnspecifiedBodyRegion  # 44136-0 (CID 100)

# --- units (UCUM, CID 7181 / CID 85) --------------------------------------------------------

UNIT_ML = Code("ml", "UCUM", "milliliter")
UNIT_RATIO = Code("{ratio}", "UCUM", "ratio")
UNIT_SECOND = Code("s", "UCUM", "second")
UNIT_DAY = Code("d", "UCUM", "day")
UNIT_MM = Code("mm", "UCUM", "millimeter")
UNIT_PERCENT = Code("%", "UCUM", "percent")


@dataclass(frozen=True)
class SuvConcept:
    """The measurement concept, unit and calculation method of one SUV normalisation."""

    concept: Code
    unit: Code
    method: Code


# Units as in CID 85 of the current standard ("g/ml{SUVbw}"; older editions wrote
# "{SUVbw}g/ml"); concepts from CID 7180.
SUV_CONCEPTS: dict[str, SuvConcept] = {
    "BW": SuvConcept(
        codes.DCM.Suvbw,
        Code("g/ml{SUVbw}", "UCUM", "Standardized Uptake Value body weight"),
        codes.DCM.SUVBodyWeightCalculationMethod,
    ),
    "LBM": SuvConcept(
        codes.DCM.Suvlbm,
        Code("g/ml{SUVlbm}", "UCUM", "Standardized Uptake Value lean body mass (James)"),
        codes.DCM.SUVLeanBodyMassCalculationMethod,
    ),
    "LBMJAMES128": SuvConcept(
        codes.DCM.SuvlbmJames128,
        Code(
            "g/ml{SUVlbm(James128)}",
            "UCUM",
            "Standardized Uptake Value lean body mass (James 128 multiplier)",
        ),
        codes.DCM.SUVLeanBodyMassCalculationMethodUsing128Multiplier,
    ),
    "LBMJANMA": SuvConcept(
        codes.DCM.SuvlbmJanma,
        Code("g/ml{SUVlbm(Janma)}", "UCUM", "Standardized Uptake Value lean body mass (Janma)"),
        codes.DCM.SUVLeanBodyMassCalculationJanmahasatianMethod,
    ),
    "BSA": SuvConcept(
        codes.DCM.Suvbsa,
        Code("cm2/ml{SUVbsa}", "UCUM", "Standardized Uptake Value body surface area"),
        codes.DCM.SUVBodySurfaceAreaCalculationMethod,
    ),
    "IBW": SuvConcept(
        codes.DCM.Suvibw,
        Code("g/ml{SUVibw}", "UCUM", "Standardized Uptake Value ideal body weight"),
        codes.DCM.SUVIdealBodyWeightCalculationMethod,
    ),
}


def suv_concept(suv_type: str) -> SuvConcept:
    """Return the concept, unit and method for an SUV Type (0054,1006) value.

    Parameters
    ----------
    suv_type
        ``"BW"``, ``"LBM"``, ``"LBMJAMES128"``, ``"LBMJANMA"``, ``"BSA"`` or ``"IBW"``
        (case-insensitive).

    Raises
    ------
    ValueError
        If ``suv_type`` is not one of these.
    """
    key = suv_type.strip().upper()
    if key not in SUV_CONCEPTS:
        raise ValueError(f"suv_type: unknown SUV type {suv_type!r}; known: {sorted(SUV_CONCEPTS)}")
    return SUV_CONCEPTS[key]


# --- tracers (CID 4021) and nuclides (CID 4020) ---------------------------------------------

NUCLIDES: dict[str, Code] = {
    "F18": codes.SCT._18Fluorine,  # 77004003
    "CU60": codes.SCT._60Copper,  # 425364008
    "CU61": codes.SCT._61Copper,  # 71425003
    "CU62": codes.SCT._62Copper,  # 422934004
    "CU64": codes.SCT._64Copper,  # 3932008
    "GA68": codes.SCT._68Gallium,  # 35337001
}

TRACERS: dict[str, Code] = {
    "CU64ATSM": codes.SCT.ATSMCu64,  # SCT 422855001
    "CU60ATSM": codes.DCM.ATSMCu60,  # DCM 126700
    "CU61ATSM": codes.DCM.ATSMCu61,  # DCM 126701
    "CU62ATSM": codes.DCM.ATSMCu62,  # DCM 126702
    "F18FMISO": codes.SCT.FluoromisonidazoleF18,  # SCT 422598008
    "F18FDG": codes.SCT.FluorodeoxyglucoseF18,  # SCT 35321007
    "F18FAZA": FAZA_F18,
    "F18HX4": HX4_F18,
}

_NUCLIDE_PARTS: dict[str, tuple[str, str]] = {
    key: (key.rstrip("0123456789"), key[len(key.rstrip("0123456789")) :]) for key in NUCLIDES
}


_ELEMENT_NAMES = {"COPPER": "CU", "FLUORINE": "F", "GALLIUM": "GA"}


def _flat(text: str) -> str:
    flat = re.sub(r"[^A-Za-z0-9]", "", text).upper()
    for name, symbol in _ELEMENT_NAMES.items():
        flat = flat.replace(name, symbol)
    return flat


def _split_nuclide(flat: str) -> tuple[str, str] | None:
    """``"64CUATSM"`` or ``"CU64ATSM"`` -> ``("CU64", "ATSM")``; None without a known nuclide."""
    for key, (symbol, mass) in _NUCLIDE_PARTS.items():
        for prefix in (mass + symbol, symbol + mass):
            if flat.startswith(prefix):
                return key, flat[len(prefix) :]
    return None


def nuclide_code(name: str | None) -> Code | None:
    """Return the CID 4020 code of a nuclide name such as ``"Cu-64"`` or ``"18F"``, or None."""
    if not name:
        return None
    split = _split_nuclide(_flat(name))
    if split is None or split[1]:
        return None
    return NUCLIDES[split[0]]


def tracer_code(name: str | None) -> Code | None:
    """Return the CID 4021 (or private) code of a tracer name such as ``"64Cu-ATSM"``, or None.

    Accepts the usual spellings (``"64Cu-ATSM"``, ``"Cu-64 ATSM"``, ``"[18F]FMISO"``,
    ``"18F-FDG"``) and a bare ligand when it names one tracer (``"FMISO"``).
    """
    if not name:
        return None
    flat = _flat(name)
    split = _split_nuclide(flat)
    if split is not None:
        return TRACERS.get(split[0] + split[1])
    matches = [code for key, code in TRACERS.items() if _split_nuclide(key) == ("F18", flat)]
    return matches[0] if len(matches) == 1 else None


# --- algorithm identification ---------------------------------------------------------------

ALGORITHM_NAME = "hypoxnode"
ALGORITHM_FAMILY = codes.DCM.ImageProcessing  # DCM 110001
"""Threshold, isocontour and connected-component segmentation: image processing, not AI."""


def software_version() -> str:
    """The installed hypoxnode version (``"0+unknown"`` when not installed as a package)."""
    try:
        return metadata.version("hypoxnode")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def algorithm_identification(
    parameters: dict[str, str] | None = None, version: str | None = None
) -> hd.AlgorithmIdentificationSequence:
    """Algorithm Identification Sequence naming hypoxnode.

    Parameters
    ----------
    parameters
        Algorithm parameters to record (names and values as strings).
    version
        Version to record; defaults to :func:`software_version`.
    """
    return hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=ALGORITHM_FAMILY,
        version=version or software_version(),
        parameters=parameters or None,
    )
