"""The method record of a result: how the regions were found and with which parameters.

:func:`method_record` fills :attr:`quant.results.StudyResult.method`. The SR writes every entry
as a "Method <key>: <value>" comment, and the SEG copies ``lesions`` and ``muscle`` into the
Algorithm Identification parameters of the lesion and muscle segments, so a reader can judge
whether the tumour came from a supplied contour or from detection, and with which settings.
"""

from __future__ import annotations

from typing import Any

from quant.figures import PEAK_SPHERE_DIAMETER_MM
from quant.segmentation.candidates import Detection
from quant.settings import QuantSettings
from quant.suv.tracers import TracerProfile


def _numbers(values: object) -> str:
    if isinstance(values, tuple | list):
        return ", ".join(f"{v:g}" for v in values)
    return f"{values:g}" if isinstance(values, float | int) else str(values)


def delineation_text(resolved: QuantSettings) -> str:
    """The delineation rule in words, e.g. ``"isocontour at 40% of the lesion SUVmax"``."""
    if resolved.delineation == "tm_threshold":
        return (
            f"voxels >= {_numbers(resolved.lowest_hypoxic_threshold)} x muscle SUVmean "
            "(lowest hypoxic threshold) connected to the lesion SUVmax"
        )
    return f"isocontour at {resolved.delineation_fraction_of_max * 100:g}% of the lesion SUVmax"


def _search_text(resolved: QuantSettings) -> str:
    parts = []
    if resolved.search_z_range_mm is not None:
        parts.append(f"z {_numbers(resolved.search_z_range_mm)} mm")
    if resolved.search_region is not None:
        parts.append(f"body region {resolved.search_region} (from the lungs on CT)")
    return ", ".join(parts) or "whole field of view"


def method_record(
    settings: QuantSettings,
    resolved: QuantSettings,
    tracer: TracerProfile,
    source: str,
    pattern: str,
    muscle_location: str,
) -> dict[str, Any]:
    """The provenance entries of one result.

    Parameters
    ----------
    settings
        The settings as configured (for where each value came from).
    resolved
        The same, resolved for ``tracer`` (:meth:`QuantSettings.for_tracer`).
    tracer
        The identified tracer profile.
    source
        ``"contour"`` (a supplied RTSTRUCT/SEG ROI) or ``"detected"``.
    pattern
        The tumour ROI name rule in force.
    muscle_location
        Where the muscle reference lies (:attr:`quant.results.MuscleResult.location`).
    """
    lo, hi = resolved.muscle_hu_range
    if source == "contour":
        lesions = (
            f"supplied contour: RTSTRUCT ROI or SEG segment named like {pattern!r}, "
            "or typed GTV / coded as tumour"
        )
    else:
        lesions = (
            f"automatic: T/M > {_numbers(resolved.lesion_tm_threshold)}, "
            f">= {_numbers(resolved.lesion_min_volume_ml)} ml, "
            f"excluded {', '.join(resolved.excluded_organs or ())}, "
            f"search {_search_text(resolved)}; {delineation_text(resolved)}"
        )
    sources = settings.sources(tracer)
    out: dict[str, Any] = {
        "tumour_source": source,
        "lesions": lesions,
        "muscle": (
            f"automatic: CT {lo:g}..{hi:g} HU, eroded 5 mm, within 30 mm of bone, "
            "low-uptake mode of the smoothed SUV (voxel level)"
        ),
        "muscle_location": muscle_location,
        "tracer_profile": tracer.name,
        "hypoxic_thresholds": list(resolved.hypoxic_thresholds or ()),
        "hypoxic_thresholds_from": sources["hypoxic_thresholds"],
        "suvpeak": f"highest mean in a {PEAK_SPHERE_DIAMETER_MM:g} mm sphere (PERCIST),"
        " partial-voxel weighted",
        "hypoxic_connectivity": "26-connected to the lesion maximum, inside the lesion VOI",
    }
    if source == "contour":
        out["tumour_roi_pattern"] = pattern
    else:
        out.update(
            {
                "lesion_tm_threshold": resolved.lesion_tm_threshold,
                "lesion_tm_threshold_from": sources["lesion_tm_threshold"],
                "lesion_min_volume_ml": resolved.lesion_min_volume_ml,
                "delineation": resolved.delineation,
                "delineation_from": sources["delineation"],
                "search": _search_text(resolved),
            }
        )
        if resolved.delineation == "percent_of_max":
            out["delineation_fraction_of_max"] = resolved.delineation_fraction_of_max
    return out


def detection_method(found: Detection, fov: str | None) -> dict[str, Any]:
    """Method entries of an automatic detection: field of view, organ rules, noise floor.

    Parameters
    ----------
    found
        The detector's record (:class:`quant.segmentation.candidates.Detection`).
    fov
        Field of view from the CT landmarks (:data:`quant.segmentation.landmarks.FOV_KINDS`), None:
        no CT.
    """
    if fov is None:
        rules = "none (no CT)"
    else:
        rules = ", ".join(found.organ_rules) or f"none (no such organ in a {fov} field of view)"
    return {
        "field_of_view": fov or "unknown (no CT)",
        "organ_rules_applied": rules,
        "noise_floor_suv": found.noise_floor,
        "excluded_candidates": len(found.excluded),
        "small_candidates_ignored": found.small_ignored,
    }
