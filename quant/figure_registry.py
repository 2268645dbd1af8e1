"""The figures hypoxnode reports, named once: key, label, scope and units.

Every place that lists figures takes them from here: the result JSON's keys
(:class:`quant.results.LesionResult` attributes and ``StudyResult.to_json``), the follow-up
comparison (:mod:`quant.longitudinal.comparison`), the repeatability inputs and statistics
(``service/report/repeatability_inputs.py``, ``service/cli/repeatability_command.py``) and the
pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["lesion", "study", "hypoxic"]


@dataclass(frozen=True)
class Figure:
    """One reported figure."""

    key: str
    """Name in the result JSON (and attribute of the lesion result, for lesion figures)."""
    label: str
    """How people read it on pages, plots and tables."""
    scope: Scope
    """Per lesion, per study (the muscle reference), or per hypoxic threshold."""
    units: Literal["suv", "ml", ""]
    """``suv``: the study's SUV units (g/ml for SUVbw); ``ml``; or none (ratios, fractions)."""
    compared: bool
    """Compared with a prior study in follow-up (:mod:`quant.longitudinal.comparison`)."""


FIGURES: tuple[Figure, ...] = (
    Figure("suv_max", "SUVmax", "lesion", "suv", compared=True),
    Figure("suv_peak", "SUVpeak", "lesion", "suv", compared=True),
    Figure("suv_mean", "SUVmean", "lesion", "suv", compared=True),
    Figure("muscle_suv_mean", "Muscle SUVmean", "study", "suv", compared=True),
    Figure("tm_max", "T/Mmax", "lesion", "", compared=True),
    Figure("tm_mean", "T/Mmean", "lesion", "", compared=False),
    Figure("hypoxic_volume_ml", "Hypoxic volume", "hypoxic", "ml", compared=True),
    Figure("hypoxic_fraction", "Hypoxic fraction", "hypoxic", "", compared=True),
)

BY_KEY = {figure.key: figure for figure in FIGURES}
FIGURE_KEYS = tuple(figure.key for figure in FIGURES)
FIGURE_LABELS = {figure.key: figure.label for figure in FIGURES}


def keys(scope: Scope, *, compared: bool | None = None) -> tuple[str, ...]:
    """Keys of the figures of one scope (only those compared in follow-up, on request)."""
    return tuple(f.key for f in FIGURES
                 if f.scope == scope and (compared is None or f.compared == compared))


def figure_units(key: str, suv_units: str) -> str:
    """Units of a figure for labels: ``suv_units`` for SUVs, ``ml`` for volumes, else none."""
    figure = BY_KEY.get(key)
    if figure is None or not figure.units:
        return ""
    return suv_units if figure.units == "suv" else figure.units
