"""Test-retest statistics of the node's own index: per tracer and figure, and the RC in use.

The index's quantified studies (``study_facts``) are paired per subject
(:func:`quant.longitudinal.pairing.cohort_pairs`, one test-retest pair per subject); each scan
contributes
the figures of its hottest lesion
(:func:`service.report.repeatability_inputs.figures_from_quantify_json`,
first hypoxic threshold). The statistics are :func:`quant.stats.repeatability.repeatability`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from quant.longitudinal.comparison import ALL_FIGURES, RcInUse
from quant.longitudinal.pairing import Pair, cohort_pairs
from quant.stats.repeatability import Repeatability, repeatability
from service.config.follow_up import FollowUpConfig
from service.report.repeatability_inputs import Cohort, Scan, figures_from_quantify_json
from service.storage.index_facts import FactsRow


@dataclass(frozen=True)
class TracerCohort:
    """The test-retest pairs of one tracer and their figures."""

    tracer: str
    pairs: list[Pair]
    values: dict[str, np.ndarray]
    """Figure -> ``(n, 2)`` array of the pairs with both values finite."""


def index_cohorts(rows: list[FactsRow], test_retest_days: float) -> list[TracerCohort]:
    """Test-retest pairs of every tracer in ``rows``, with their figures."""
    documents = {
        (r.facts.study_instance_uid, r.facts.pet_series_instance_uid): r.result for r in rows
    }
    pairs = cohort_pairs([r.facts for r in rows], test_retest_days=test_retest_days)
    by_tracer: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_tracer[pair.current.tracer].append(pair)
    out = []
    for tracer in sorted(by_tracer):
        table: dict[str, list[list[float]]] = {f: [] for f in ALL_FIGURES}
        for pair in by_tracer[tracer]:
            scans = [
                figures_from_quantify_json(
                    documents[(s.study_instance_uid, s.pet_series_instance_uid)]
                )
                for s in (pair.prior, pair.current)
            ]
            for figure in ALL_FIGURES:
                row = [scans[0][figure], scans[1][figure]]
                if all(math.isfinite(v) for v in row):
                    table[figure].append(row)
        values = {f: np.array(v, dtype=float).reshape(len(v), 2) for f, v in table.items()}
        out.append(TracerCohort(tracer, by_tracer[tracer], values))
    return out


def cohort_statistics(
    rows: list[FactsRow], test_retest_days: float, confidence: float = 0.95
) -> list[tuple[str, Repeatability]]:
    """``(tracer, statistics)`` per tracer and figure with at least two complete pairs."""
    out = []
    for cohort in index_cohorts(rows, test_retest_days):
        for figure in ALL_FIGURES:
            values = cohort.values[figure]
            if values.shape[0] >= 2:
                out.append((cohort.tracer, repeatability(values, figure, confidence)))
    return out


def statistics_json(stats: list[tuple[str, Repeatability]]) -> list[dict[str, Any]]:
    """Rows for ``/api/repeatability``: tracer plus :meth:`Repeatability.to_row`.

    Values that are not finite (an ICC of identical replicates) become None (JSON null).
    """
    def finite(value: object) -> object:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return [
        {"tracer": tracer, **{k: finite(v) for k, v in r.to_row().items()}}
        for tracer, r in stats
    ]


def rc_in_use(rows: list[FactsRow], tracer: str, settings: FollowUpConfig) -> dict[str, RcInUse]:
    """Relative RC per figure for ``tracer``: the site's own when it has enough pairs.

    Parameters
    ----------
    rows
        The index's quantified studies (any tracers).
    tracer
        The tracer of the study being reported.
    settings
        ``[follow_up]`` (``min_site_pairs``, reference values and their source).

    Returns
    -------
    dict of str to RcInUse
        Figures with no site value and no reference value are absent (not assessed).
    """
    chosen = settings.reference_rc()
    cohorts = [c for c in index_cohorts(rows, settings.test_retest_days) if c.tracer == tracer]
    if not cohorts:
        return chosen
    for figure, values in cohorts[0].values.items():
        n = values.shape[0]
        if n < settings.min_site_pairs or not (values > 0).all():
            continue
        stats = repeatability(values, figure)
        assert stats.log is not None
        log = stats.log
        chosen[figure] = RcInUse(
            log.relative_rc,
            f"this site's own test-retest pairs of {tracer} (n = {n}): relative RC"
            f" {log.relative_rc:.1%} (95% CI {log.relative_rc_ci.low:.1%}"
            f" to {log.relative_rc_ci.high:.1%})",
        )
    return chosen


def index_scan_cohort(rows: list[FactsRow], test_retest_days: float, tracer: str) -> Cohort:
    """The test-retest pairs of ``tracer`` as a :class:`Cohort` (two scans per subject).

    For ``hypoxnode repeatability --index``: the same pairs the status page and the RC in use
    are computed from.
    """
    documents = {
        (r.facts.study_instance_uid, r.facts.pet_series_instance_uid): r.result for r in rows
    }
    pairs = [
        p for p in cohort_pairs([r.facts for r in rows], test_retest_days=test_retest_days)
        if p.current.tracer == tracer
    ]
    scans = []
    for pair in pairs:
        patient, issuer, _ = pair.current.subject
        subject = f"{patient} ({issuer})" if issuer else patient
        for order, facts in enumerate((pair.prior, pair.current), start=1):
            document = documents[(facts.study_instance_uid, facts.pet_series_instance_uid)]
            scans.append(
                Scan(subject, (order,), figures_from_quantify_json(document),
                     f"index: study {facts.study_instance_uid}")
            )
    return Cohort(scans, list(ALL_FIGURES))


def index_tracers(rows: list[FactsRow], test_retest_days: float) -> list[str]:
    """Tracers with at least one test-retest pair in ``rows``."""
    pairs = cohort_pairs([r.facts for r in rows], test_retest_days=test_retest_days)
    return sorted({p.current.tracer for p in pairs})
