"""Analytic anatomy of the synthetic patient: tissue labels, their CT numbers and tracer uptake.

The body is a stack of elliptic cylinders and ellipsoids in patient coordinates (LPS, mm):
``x`` grows towards the patient's left, ``y`` towards the back, ``z`` towards the head.
A canonical trunk runs from ``z = 0`` (pelvic floor) to ``z = 576`` (vertex); every field of
view is a ``z`` window on it, so the whole-body study is the other four stacked.

Shapes are painted in order, later shapes overriding earlier ones, and evaluated at voxel
centres: a grid voxel belongs to a tissue when its centre lies inside the shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Labels of the synthetic tissues."""

    AIR = 0
    SUBCUTANEOUS_FAT = 1
    VISCERAL_FAT = 2
    MUSCLE = 3
    BONE = 4
    LIVER = 5
    BLADDER = 6
    BOWEL = 7
    BRAIN = 8
    LUNG = 9
    HEART = 10
    TUMOUR_RIM = 11
    TUMOUR_CORE = 12
    KIDNEY = 13
    SPLEEN = 14
    SOFT_TISSUE = 15
    """Non-muscle soft tissue of higher uptake inside the muscle CT window (``variant``)."""
    NECROSIS = 16
    """Fluid-density necrotic core of a tumour (``necrotic``)."""


#: CT numbers (HU) of each tissue; the CT is noiseless.
HOUNSFIELD: dict[Tissue, float] = {
    Tissue.AIR: -1000.0,
    Tissue.SUBCUTANEOUS_FAT: -100.0,
    Tissue.VISCERAL_FAT: -90.0,
    Tissue.MUSCLE: 50.0,
    Tissue.BONE: 700.0,
    Tissue.LIVER: 60.0,
    Tissue.BLADDER: 10.0,
    Tissue.BOWEL: 30.0,
    Tissue.BRAIN: 35.0,
    Tissue.LUNG: -800.0,
    Tissue.HEART: 40.0,
    Tissue.TUMOUR_RIM: 40.0,
    Tissue.TUMOUR_CORE: 40.0,
    Tissue.KIDNEY: 30.0,
    Tissue.SPLEEN: 45.0,
    Tissue.SOFT_TISSUE: 40.0,
    Tissue.NECROSIS: 10.0,
}


@dataclass(frozen=True)
class TracerSpec:
    """What the generator needs to know about one tracer.

    Attributes
    ----------
    radiopharmaceutical
        Free text of Radiopharmaceutical (0018,0031).
    nuclide_code, nuclide_meaning
        SNOMED CT code of the radionuclide (DICOM CID 4020).
    half_life_s
        RadionuclideHalfLife (0018,1075).
    dose_bq_per_kg
        Activity injected per kg of body weight.
    uptake
        Noiseless SUV of each tissue.
    pharmaceutical_code, pharmaceutical_meaning
        SNOMED CT code of the radiopharmaceutical (DICOM CID 4021), empty when none is used.
    """

    radiopharmaceutical: str
    nuclide_code: str
    nuclide_meaning: str
    half_life_s: float
    dose_bq_per_kg: float
    uptake: dict[Tissue, float]
    pharmaceutical_code: str = ""
    pharmaceutical_meaning: str = ""


def _uptake(**values: float) -> dict[Tissue, float]:
    """Uptake table: every tissue named, the rest from a low background."""
    base = {
        Tissue.AIR: 0.0,
        Tissue.SUBCUTANEOUS_FAT: 0.5,
        Tissue.VISCERAL_FAT: 0.6,
        Tissue.BONE: 0.4,
        Tissue.LUNG: 0.3,
        Tissue.NECROSIS: 0.3,
    }
    for name, value in values.items():
        base[Tissue[name.upper()]] = value
    return base


_CU_ATSM_UPTAKE = _uptake(
    muscle=1.0,
    liver=8.0,
    bladder=3.0,
    bowel=1.3,
    brain=0.9,
    heart=1.3,
    kidney=1.2,
    spleen=1.4,
    soft_tissue=1.25,
    tumour_rim=1.8,
    tumour_core=3.6,
)
_FMISO_UPTAKE = _uptake(
    muscle=1.0,
    liver=2.2,
    bladder=10.0,
    bowel=1.3,
    brain=0.9,
    heart=1.2,
    kidney=1.1,
    spleen=1.2,
    soft_tissue=1.25,
    tumour_rim=1.7,
    tumour_core=2.8,
)
# FDG: myocardium, bowel wall and kidneys (urine in the renal pelvis, labelled BLADDER) above
# the lesion threshold, so the exclusions of quant.segmentation.regions are exercised.
_FDG_UPTAKE = _uptake(
    muscle=0.8,
    liver=2.5,
    bladder=15.0,
    bowel=2.2,
    brain=9.0,
    heart=3.0,
    kidney=2.0,
    spleen=1.8,
    soft_tissue=1.0,
    tumour_rim=4.0,
    tumour_core=8.0,
)


def _copper(mass: int, code: str, half_life_s: float) -> TracerSpec:
    return TracerSpec(
        radiopharmaceutical=f"Cu-{mass} ATSM",
        nuclide_code=code,
        nuclide_meaning=f"^{mass}^Copper",
        half_life_s=half_life_s,
        dose_bq_per_kg=3.0e6,
        uptake=_CU_ATSM_UPTAKE,
        pharmaceutical_code="422855001" if mass == 64 else "",
        pharmaceutical_meaning=(
            "Copper^64^ labeled diacetyl-bis N-(4)-methylthiosemicarbazone" if mass == 64 else ""
        ),
    )


def _fluorine(text: str, uptake: dict[Tissue, float], code: str, meaning: str) -> TracerSpec:
    return TracerSpec(
        radiopharmaceutical=text,
        nuclide_code="77004003",
        nuclide_meaning="^18^Fluorine",
        half_life_s=6586.2,
        dose_bq_per_kg=5.0e6,
        uptake=uptake,
        pharmaceutical_code=code,
        pharmaceutical_meaning=meaning,
    )


#: Tracers the generator knows, by the names the project uses.
TRACERS: dict[str, TracerSpec] = {
    "64Cu-ATSM": _copper(64, "3932008", 45721.0),
    "60Cu-ATSM": _copper(60, "425364008", 1422.0),
    "61Cu-ATSM": _copper(61, "71425003", 12035.0),
    "62Cu-ATSM": _copper(62, "422934004", 580.0),
    "18F-FMISO": _fluorine(
        "Fluoromisonidazole F18", _FMISO_UPTAKE, "422598008", "Fluoromisonidazole F^18^"
    ),
    "18F-FAZA": _fluorine("FAZA F18", _FMISO_UPTAKE, "", ""),
    "18F-FDG": _fluorine(
        "Fludeoxyglucose F18", _FDG_UPTAKE, "35321007", "Fluorodeoxyglucose F^18^"
    ),
}


@dataclass(frozen=True)
class Shape:
    """An elliptic cylinder (``az == 0``) or an ellipsoid, axis aligned, in mm."""

    tissue: Tissue
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    z_range: tuple[float, float] = (-np.inf, np.inf)

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean array: which points (broadcast from ``x``, ``y``, ``z``) lie inside."""
        cx, cy, cz = self.centre
        ax, ay, az = self.semi_axes
        r2 = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
        if az > 0:
            r2 = r2 + ((z - cz) / az) ** 2
        inside: np.ndarray = (r2 <= 1.0) & (z >= self.z_range[0]) & (z < self.z_range[1])
        return inside


def cylinder(
    tissue: Tissue, cx: float, cy: float, ax: float, ay: float, z0: float, z1: float
) -> Shape:
    """Elliptic cylinder between ``z0`` (included) and ``z1`` (excluded)."""
    return Shape(tissue, (cx, cy, 0.0), (ax, ay, 0.0), (z0, z1))


def ellipsoid(
    tissue: Tissue, centre: tuple[float, float, float], semi_axes: tuple[float, float, float]
) -> Shape:
    """Axis-aligned ellipsoid."""
    return Shape(tissue, centre, semi_axes)


#: z extent (mm) of each field of view on the canonical trunk.
FIELDS_OF_VIEW: dict[str, tuple[float, float]] = {
    "pelvis": (0.0, 144.0),
    "abdomen": (144.0, 288.0),
    "thorax": (288.0, 432.0),
    "head_neck": (432.0, 576.0),
    "whole_body": (0.0, 576.0),
    "limb": (-200.0, -56.0),
}
"""``limb`` is a thigh below the trunk (one leg, femur, muscle and fat; no trunk organ)."""

#: Tumour of each field of view: centre (mm), outer radius, hypoxic core radius.
TUMOURS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "pelvis": ((-40.0, 0.0, 72.0), 16.0, 9.0),
    "abdomen": ((25.0, -15.0, 185.0), 14.0, 7.5),
    "thorax": ((55.0, -10.0, 370.0), 15.0, 8.0),
    "head_neck": ((-28.0, -25.0, 462.0), 13.0, 7.0),
    "whole_body": ((-40.0, 0.0, 72.0), 16.0, 9.0),
    "limb": ((30.0, -25.0, -128.0), 16.0, 9.0),
}

#: Tumours placed against an organ (``tumour_site``): touching the bladder or the liver.
ABUTTING: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "bladder": ((44.0, -45.0, 50.0), 14.0, 7.0),
    "liver": ((17.0, -5.0, 250.0), 12.0, 6.5),
}


def _trunk(z0: float, z1: float, ax: float, ay: float, fat_mm: float) -> list[Shape]:
    return [
        cylinder(Tissue.SUBCUTANEOUS_FAT, 0, 0, ax, ay, z0, z1),
        cylinder(Tissue.VISCERAL_FAT, 0, 0, ax - fat_mm, ay - fat_mm, z0, z1),
    ]


def _spine(z0: float, z1: float) -> list[Shape]:
    return [
        cylinder(Tissue.BONE, 0, 50, 14, 14, z0, z1),
        cylinder(Tissue.MUSCLE, -38, 55, 18, 14, z0, z1),
        cylinder(Tissue.MUSCLE, 38, 55, 18, 14, z0, z1),
    ]


def body_shapes(variant: str = "") -> list[Shape]:
    """Every shape of the canonical trunk except the tumour, in painting order.

    ``variant`` (see :func:`variant_shapes`) adds tissue painted after the abdomen's fat.
    """
    pelvis = [
        *_trunk(0, 144, 115, 88, 12),
        cylinder(Tissue.BONE, 0, 55, 22, 12, 60, 144),
        cylinder(Tissue.BONE, -80, 5, 14, 14, 0, 70),
        cylinder(Tissue.BONE, 80, 5, 14, 14, 0, 70),
        cylinder(Tissue.MUSCLE, -55, 50, 28, 20, 0, 144),
        cylinder(Tissue.MUSCLE, 55, 50, 28, 20, 0, 144),
        ellipsoid(Tissue.BLADDER, (0, -45, 50), (30, 25, 25)),
    ]
    abdomen = [
        *_trunk(144, 288, 110, 85, 12),
        *(variant_shapes(variant) if variant else []),
        *_spine(144, 288),
        cylinder(Tissue.MUSCLE, -30, 25, 12, 12, 144, 230),
        cylinder(Tissue.MUSCLE, 30, 25, 12, 12, 144, 230),
        ellipsoid(Tissue.BOWEL, (60, -40, 165), (20, 16, 18)),
        ellipsoid(Tissue.AIR, (60, -40, 165), (8, 7, 8)),  # gas in the bowel lumen
        ellipsoid(Tissue.BOWEL, (-40, -45, 165), (20, 15, 18)),
        ellipsoid(Tissue.AIR, (-40, -45, 165), (8, 6, 7)),
        ellipsoid(Tissue.KIDNEY, (-70, 40, 180), (15, 13, 30)),
        ellipsoid(Tissue.KIDNEY, (70, 40, 180), (15, 13, 30)),
        ellipsoid(Tissue.BLADDER, (-64, 40, 180), (8, 8, 12)),  # renal pelvis (urine)
        ellipsoid(Tissue.BLADDER, (64, 40, 180), (8, 8, 12)),
    ]
    thorax = [
        *_trunk(288, 432, 115, 85, 12),
        *_spine(288, 432),
        cylinder(Tissue.LUNG, -55, -10, 38, 50, 300, 425),
        cylinder(Tissue.LUNG, 55, -10, 38, 50, 300, 425),
        ellipsoid(Tissue.HEART, (0, -30, 330), (28, 25, 35)),
        cylinder(Tissue.MUSCLE, -45, -62, 30, 6, 330, 432),
        cylinder(Tissue.MUSCLE, 45, -62, 30, 6, 330, 432),
    ]
    liver = [ellipsoid(Tissue.LIVER, (-45, -5, 250), (50, 45, 50))]
    neck = [
        *_trunk(432, 492, 60, 55, 6),
        cylinder(Tissue.BONE, 0, 20, 12, 12, 432, 492),
        cylinder(Tissue.MUSCLE, -24, 38, 14, 11, 432, 492),
        cylinder(Tissue.MUSCLE, 24, 38, 14, 11, 432, 492),
        cylinder(Tissue.MUSCLE, -42, 5, 9, 10, 432, 492),
        cylinder(Tissue.MUSCLE, 42, 5, 9, 10, 432, 492),
        cylinder(Tissue.AIR, 0, -20, 8, 8, 432, 492),
    ]
    head = [
        *_trunk(492, 576, 75, 90, 5),
        ellipsoid(Tissue.BONE, (0, 0, 534), (70, 85, 48)),
        ellipsoid(Tissue.BRAIN, (0, 0, 534), (62, 77, 40)),
    ]
    thigh = [
        cylinder(Tissue.SUBCUTANEOUS_FAT, 0, 0, 80, 75, -400, 0),
        cylinder(Tissue.MUSCLE, 0, 0, 68, 63, -400, 0),
        cylinder(Tissue.BONE, -5, 8, 14, 14, -400, 0),
    ]
    return [*pelvis, *abdomen, *thorax, *liver, *neck, *head, *thigh]


def variant_shapes(variant: str) -> list[Shape]:
    """Anatomy that breaks connectivity-based rules, painted before the organs it touches.

    ``"touching"``: soft tissue of higher uptake (40 HU) against the paraspinal muscles and
    the kidneys, and a spleen (45 HU) on the patient's left, in the abdomen (z 144..288).
    """
    if variant != "touching":
        raise ValueError(f"unknown variant {variant!r}")
    return [
        cylinder(Tissue.SOFT_TISSUE, -75, 58, 22, 12, 144, 288),
        cylinder(Tissue.SOFT_TISSUE, 75, 58, 22, 12, 144, 288),
        ellipsoid(Tissue.SPLEEN, (80, -5, 250), (22, 30, 35)),
    ]


def tumour_shapes(field_of_view: str, site: str = "", necrotic: bool = False) -> list[Shape]:
    """The tumour of a field of view (or at ``site``, a key of :data:`ABUTTING`): a sphere
    with a concentric hypoxic core, or (``necrotic``) a cold fluid-density core of that
    radius inside a hot rim."""
    centre, radius, core = ABUTTING[site] if site else TUMOURS[field_of_view]
    if necrotic:
        return [
            ellipsoid(Tissue.TUMOUR_CORE, centre, (radius, radius, radius)),
            ellipsoid(Tissue.NECROSIS, centre, (core, core, core)),
        ]
    return [
        ellipsoid(Tissue.TUMOUR_RIM, centre, (radius, radius, radius)),
        ellipsoid(Tissue.TUMOUR_CORE, centre, (core, core, core)),
    ]


def label_volume(shapes: list[Shape], x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tissue labels ``[slice, row, col]`` at the grid of centres ``x`` (cols), ``y`` (rows), ``z``.

    Parameters
    ----------
    shapes
        Shapes in painting order.
    x, y, z
        1-D centre coordinates (mm) of the columns, rows and slices.
    """
    labels = np.zeros((z.size, y.size, x.size), dtype=np.uint8)
    xx = x[np.newaxis, np.newaxis, :]
    yy = y[np.newaxis, :, np.newaxis]
    for shape in shapes:
        lo, hi = shape.z_range
        if shape.semi_axes[2] > 0:
            lo = max(lo, shape.centre[2] - shape.semi_axes[2])
            hi = min(hi, shape.centre[2] + shape.semi_axes[2] + 1e-9)
        sel = np.flatnonzero((z >= lo) & (z <= hi))
        if sel.size == 0:
            continue
        zz = z[sel][:, np.newaxis, np.newaxis]
        inside = shape.contains(xx, yy, zz)
        block = labels[sel]
        block[inside] = int(shape.tissue)
        labels[sel] = block
    return labels
