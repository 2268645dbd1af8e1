"""Comparison of a scan with an earlier scan of the same subject: matched lesions and changes.

Pure: the prior comes as its ``quantify --json`` document (plus, for Dice, its hypoxic masks
already resampled onto the current PET grid), the current scan as a
:class:`~quant.results.StudyResult`.

Lesion matching
    Each lesion's centroid (patient coordinates, mm) is compared with the prior's after
    mapping it into the prior's frame (identity when both share a frame of reference; the
    registration's transform otherwise). Pairs closer than the tolerance are matched greedily,
    closest first, each lesion at most once. Without an alignment nothing is matched and the
    comparison says why: a wrong match is worse than none.
Changes
    ``absolute = current - prior``; ``relative = current / prior - 1`` (undefined for a prior of
    0). A change exceeds a relative repeatability coefficient ``RC%`` (95% of test-retest ratios
    lie within ``[1 / (1 + RC%), 1 + RC%]``, :mod:`quant.stats.repeatability`) when
    ``current / prior > 1 + RC%`` or ``current / prior < 1 / (1 + RC%)``. Without an RC for the
    figure, or with a prior of 0, the change is not assessed (``exceeds`` None).
Dice
    ``2 |A and B| / (|A| + |B|)`` of the hypoxic sub-volumes on the current grid; undefined
    (None) when both are empty.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from quant.figure_registry import keys
from quant.longitudinal.pairing import Pair, PairKind
from quant.results import LesionResult, StudyResult

Point = tuple[float, float, float]
LESION_FIGURES = keys("lesion", compared=True)
"""Figures compared per lesion (``LesionResult`` attributes and ``to_json`` keys)."""
HYPOXIC_FIGURES = keys("hypoxic", compared=True)
STUDY_FIGURES = keys("study", compared=True)
ALL_FIGURES = (*LESION_FIGURES, *STUDY_FIGURES, *HYPOXIC_FIGURES)
DEFAULT_TOLERANCE_MM = 20.0
NOT_ALIGNED = "lesions not matched: different frames of reference"


@dataclass(frozen=True)
class RcInUse:
    """The relative repeatability coefficient a change is judged against, and where it is from."""

    relative_rc: float | None
    """A fraction (0.25 is 25%); None when there is none for the figure."""
    source: str


@dataclass(frozen=True)
class FigureChange:
    """One figure in the prior and the current scan, its change and the RC decision."""

    figure: str
    prior: float
    current: float
    absolute: float
    relative: float | None
    relative_rc: float | None
    exceeds: bool | None
    """Whether the change exceeds the RC; None when not assessed."""
    rc_source: str

    def to_json(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dict(self.__dict__)


def exceeds_rc(prior: float, current: float, relative_rc: float | None) -> bool | None:
    """Whether ``current`` differs from ``prior`` by more than a relative RC allows.

    Parameters
    ----------
    prior, current
        The figure in the earlier and the later scan (non-negative).
    relative_rc
        Relative repeatability coefficient as a fraction, or None.

    Returns
    -------
    bool or None
        None when not assessable (no RC, prior not positive, a value not finite or negative).
    """
    if relative_rc is None or not (math.isfinite(prior) and math.isfinite(current)):
        return None
    if relative_rc < 0:
        raise ValueError(f"relative_rc must be >= 0, got {relative_rc}")
    if prior <= 0 or current < 0:
        return None
    ratio = current / prior
    return ratio > 1.0 + relative_rc or ratio < 1.0 / (1.0 + relative_rc)


def figure_change(figure: str, prior: float, current: float, rc: RcInUse | None) -> FigureChange:
    """The change of one figure and whether it exceeds ``rc``."""
    relative = current / prior - 1.0 if prior > 0 else None
    value = rc.relative_rc if rc is not None else None
    return FigureChange(
        figure=figure,
        prior=float(prior),
        current=float(current),
        absolute=float(current - prior),
        relative=relative,
        relative_rc=value,
        exceeds=exceeds_rc(prior, current, value),
        rc_source=rc.source if rc is not None else "no repeatability coefficient for this figure",
    )


@dataclass(frozen=True)
class LesionMatch:
    """Lesion ``prior_index`` of the prior matched with ``current_index`` (0-based)."""

    prior_index: int
    current_index: int
    distance_mm: float


def match_lesions(
    prior: Sequence[Point | None],
    current: Sequence[Point | None],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    to_prior: Callable[[Point], Point] | None = None,
) -> list[LesionMatch]:
    """Match lesions by centroid distance, closest pairs first, each lesion at most once.

    Parameters
    ----------
    prior, current
        Centroids (mm) of the prior's and the current lesions; None for an unknown position
        (never matched).
    tolerance_mm
        Largest distance of a match.
    to_prior
        Maps a current point into the prior's frame; None: the frames are shared.

    Returns
    -------
    list of LesionMatch
        Sorted by ``current_index``.
    """
    if tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    mapped = [
        None if c is None else (to_prior(c) if to_prior is not None else c) for c in current
    ]
    candidates = []
    for i, p in enumerate(prior):
        for j, c in enumerate(mapped):
            if p is None or c is None:
                continue
            distance = math.dist(p, c)
            if distance <= tolerance_mm:
                candidates.append((distance, i, j))
    used_prior: set[int] = set()
    used_current: set[int] = set()
    matches = []
    for distance, i, j in sorted(candidates):
        if i in used_prior or j in used_current:
            continue
        used_prior.add(i)
        used_current.add(j)
        matches.append(LesionMatch(i, j, distance))
    return sorted(matches, key=lambda m: m.current_index)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice coefficient of two boolean masks of one shape; None when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one shape, got {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return None
    return 2.0 * float(np.logical_and(a, b).sum()) / total


@dataclass(frozen=True)
class HypoxicComparison:
    """The hypoxic sub-volumes of a matched lesion at one threshold."""

    threshold: float
    volume: FigureChange
    fraction: FigureChange
    dice: float | None

    def to_json(self) -> dict[str, Any]:
        """Plain dict."""
        return {
            "threshold": self.threshold,
            "volume_ml": self.volume.to_json(),
            "fraction": self.fraction.to_json(),
            "dice": self.dice,
        }


@dataclass(frozen=True)
class LesionComparison:
    """A lesion of the current scan matched with one of the prior."""

    current_number: int
    """1-based, in the current report's order (SUVmax, highest first)."""
    prior_number: int
    current_label: str
    prior_label: str
    distance_mm: float
    changes: list[FigureChange]
    hypoxic: list[HypoxicComparison]

    def to_json(self) -> dict[str, Any]:
        """Plain dict."""
        return {
            "current_number": self.current_number,
            "prior_number": self.prior_number,
            "current_label": self.current_label,
            "prior_label": self.prior_label,
            "distance_mm": self.distance_mm,
            "changes": [c.to_json() for c in self.changes],
            "hypoxic": [h.to_json() for h in self.hypoxic],
        }


@dataclass
class PairComparison:
    """Everything the later scan's report says about the earlier one."""

    kind: PairKind
    prior_study_instance_uid: str
    prior_pet_series_instance_uid: str
    prior_scan_time: datetime | None
    interval_days: float
    alignment: str
    """``"shared frame of reference"``, ``"rigid registration of the CTs"`` or a note why
    lesions were not matched."""
    muscle: FigureChange
    lesions: list[LesionComparison]
    unmatched_current: list[int] = field(default_factory=list)
    unmatched_prior: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``comparison`` entry of the node's study result."""
        return {
            "kind": self.kind.value,
            "prior_study_instance_uid": self.prior_study_instance_uid,
            "prior_pet_series_instance_uid": self.prior_pet_series_instance_uid,
            "prior_scan_datetime": (
                self.prior_scan_time.isoformat() if self.prior_scan_time else None
            ),
            "interval_days": self.interval_days,
            "alignment": self.alignment,
            "muscle_suv_mean": self.muscle.to_json(),
            "lesions": [les.to_json() for les in self.lesions],
            "unmatched_current": self.unmatched_current,
            "unmatched_prior": self.unmatched_prior,
            "notes": self.notes,
        }


def _point(value: object) -> Point | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    return (float(value[0]), float(value[1]), float(value[2]))


def _hypoxic(
    lesion: LesionResult,
    prior: dict[str, Any],
    prior_number: int,
    rc: Mapping[str, RcInUse],
    prior_masks: Mapping[tuple[int, float], np.ndarray],
) -> list[HypoxicComparison]:
    out = []
    for sub in lesion.hypoxic:
        before = next(
            (h for h in prior.get("hypoxic", []) if math.isclose(h["threshold"], sub.threshold)),
            None,
        )
        if before is None:
            continue
        mask = prior_masks.get((prior_number, float(sub.threshold)))
        if mask is None and float(before["volume_ml"]) == 0.0:
            mask = np.zeros_like(sub.mask, dtype=bool)
        out.append(
            HypoxicComparison(
                threshold=float(sub.threshold),
                volume=figure_change(
                    "hypoxic_volume_ml", float(before["volume_ml"]), sub.volume_ml,
                    rc.get("hypoxic_volume_ml"),
                ),
                fraction=figure_change(
                    "hypoxic_fraction", float(before["fraction"]), sub.fraction,
                    rc.get("hypoxic_fraction"),
                ),
                dice=dice(sub.mask.astype(bool), mask) if mask is not None else None,
            )
        )
    return out


def compare(
    pair: Pair,
    prior: dict[str, Any],
    current: StudyResult,
    rc: Mapping[str, RcInUse],
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    alignment: str = "shared frame of reference",
    to_prior: Callable[[Point], Point] | None = None,
    aligned: bool = True,
    prior_masks: Mapping[tuple[int, float], np.ndarray] | None = None,
) -> PairComparison:
    """Compare the current scan with the prior of ``pair``.

    Parameters
    ----------
    pair
        The pair (:func:`quant.longitudinal.pairing.find_prior`).
    prior
        The prior's :meth:`~quant.results.StudyResult.to_json` document.
    current
        The current scan's result.
    rc
        Relative RC in use per figure (keys of :data:`ALL_FIGURES`); a missing figure is not
        assessed.
    tolerance_mm
        Largest centroid distance of a lesion match.
    alignment
        How the two scans were put in one frame (reported as is).
    to_prior
        Maps current patient coordinates into the prior's; None when the frame is shared.
    aligned
        False when the scans could not be aligned: no lesion is matched, ``alignment`` says
        why.
    prior_masks
        Prior hypoxic sub-volumes resampled onto the current PET grid, keyed by
        ``(prior lesion number, threshold)``; Dice is None where one is missing.

    Returns
    -------
    PairComparison
    """
    current_lesions = sorted(current.lesions, key=lambda les: les.suv_max, reverse=True)
    prior_lesions = list(prior.get("lesions") or [])
    muscle = figure_change(
        "muscle_suv_mean",
        float(prior["muscle"]["suv_mean"]),
        current.muscle.suv_mean,
        rc.get("muscle_suv_mean"),
    )
    notes: list[str] = []
    matches: list[LesionMatch] = []
    if aligned:
        prior_points = [_point(les.get("centroid_mm")) for les in prior_lesions]
        if prior_lesions and all(p is None for p in prior_points):
            notes.append("lesions not matched: the prior result holds no lesion positions")
        matches = match_lesions(
            prior_points, [les.centroid_mm for les in current_lesions], tolerance_mm, to_prior
        )
    lesions = []
    for match in matches:
        lesion = current_lesions[match.current_index]
        before = prior_lesions[match.prior_index]
        changes = [
            figure_change(name, float(before[name]), float(getattr(lesion, name)), rc.get(name))
            for name in LESION_FIGURES
        ]
        lesions.append(
            LesionComparison(
                current_number=match.current_index + 1,
                prior_number=match.prior_index + 1,
                current_label=lesion.label,
                prior_label=str(before.get("label", "")),
                distance_mm=match.distance_mm,
                changes=changes,
                hypoxic=_hypoxic(lesion, before, match.prior_index + 1, rc, prior_masks or {}),
            )
        )
    matched_current = {m.current_index for m in matches}
    matched_prior = {m.prior_index for m in matches}
    return PairComparison(
        kind=pair.kind,
        prior_study_instance_uid=pair.prior.study_instance_uid,
        prior_pet_series_instance_uid=pair.prior.pet_series_instance_uid,
        prior_scan_time=pair.prior.scan_time,
        interval_days=pair.interval_days,
        alignment=alignment,
        muscle=muscle,
        lesions=lesions,
        unmatched_current=[i + 1 for i in range(len(current_lesions)) if i not in matched_current],
        unmatched_prior=[i + 1 for i in range(len(prior_lesions)) if i not in matched_prior],
        notes=notes,
    )
