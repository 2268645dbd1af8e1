"""Test-retest statistics of one figure over a cohort: wSD, wCV, RC, ICC and Bland-Altman.

Input is an ``(n_subjects, n_replicates)`` array ``y``: row ``i`` holds the replicate scans of
subject ``i`` (``n_replicates >= 2``, same number for every subject, all values finite).

Definitions (Raunig et al., Stat Methods Med Res 2015; Bland & Altman, BMJ 1996)
--------------------------------------------------------------------------------
One-way random-effects ANOVA, ``y_ij = mu + s_i + e_ij``, ``e_ij ~ N(0, wSD^2)``:

- ``SSW = sum_ij (y_ij - ybar_i)^2`` with ``n (k - 1)`` degrees of freedom, ``MSW = SSW / df``;
  ``SSB = k sum_i (ybar_i - ybar)^2`` with ``n - 1`` degrees of freedom, ``MSB = SSB / df``.
- ``wSD = sqrt(MSW)``; its confidence interval comes from ``SSW / wSD^2 ~ chi2(n (k - 1))``:
  ``[sqrt(SSW / chi2_{1 - a/2}), sqrt(SSW / chi2_{a/2})]``.
- Repeatability coefficient ``RC = 1.96 sqrt(2) wSD = 2.77 wSD`` (in the figure's units): 95%
  of differences between two scans of one subject are expected within ``+/- RC``. Its interval
  is ``2.77`` times that of wSD.
- ``ICC(1,1) = (MSB - MSW) / (MSB + (k - 1) MSW)`` (Shrout & Fleiss 1979, case 1). With
  ``F0 = MSB / MSW``, ``FL = F0 / F_{1 - a/2}(n - 1, n (k - 1))`` and
  ``FU = F0 F_{1 - a/2}(n (k - 1), n - 1)``, the interval is
  ``[(FL - 1) / (FL + k - 1), (FU - 1) / (FU + k - 1)]`` (McGraw & Wong 1996, case 1).

On natural-log values (proportional error, figures that are all positive), the same ANOVA gives
``wSD_log`` and:

- ``wCV = sqrt(exp(wSD_log^2) - 1)``: the coefficient of variation of a log-normal error;
- ``RC_log = 2.77 wSD_log`` and the relative repeatability coefficient
  ``RC% = exp(RC_log) - 1``: 95% of retest/test ratios are expected below ``1 + RC%`` and above
  ``exp(-RC_log) = 1 / (1 + RC%)`` (so a fall must exceed ``1 - exp(-RC_log)``);
- their intervals are those of ``wSD_log`` pushed through these increasing functions.

``wcv_raw = wSD / mean`` (raw scale) is also given, for figures that can be zero (hypoxic
volume and fraction), where logarithms are undefined.

Quantiles of the chi-square, F and t distributions come from :mod:`scipy.stats`.

Bland-Altman (two replicates): ``d_i = y_i2 - y_i1``; bias ``mean(d)`` with a t interval,
``SD(d)`` (``n - 1`` denominator), limits of agreement ``bias +/- 1.96 SD(d)``; on log values
``d_i = ln(y_i2 / y_i1)``, whose limits are reported back as ratios ``exp(bias +/- 1.96 SD)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

Z_975 = 1.959963984540054
"""Standard normal 0.975 quantile: the "1.96" of RC and of the limits of agreement."""
RC_FACTOR = Z_975 * math.sqrt(2.0)
"""``1.96 sqrt(2) = 2.77``: RC per wSD (the SD of a difference of two scans is sqrt(2) wSD)."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]``."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the closed interval."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class AnovaTable:
    """One-way random-effects ANOVA of an ``(n_subjects, n_replicates)`` table."""

    n_subjects: int
    n_replicates: int
    grand_mean: float
    ss_between: float
    ss_within: float
    df_between: int
    df_within: int

    @property
    def ms_between(self) -> float:
        """Between-subject mean square ``SSB / (n - 1)``."""
        return self.ss_between / self.df_between

    @property
    def ms_within(self) -> float:
        """Within-subject mean square ``SSW / (n (k - 1))``."""
        return self.ss_within / self.df_within


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman statistics of ``second - first`` (or ``ln(second / first)``)."""

    n_subjects: int
    mean_difference: float
    """Bias: mean of the differences."""
    mean_difference_ci: Interval
    sd_difference: float
    loa_low: float
    """Lower 95% limit of agreement, ``bias - 1.96 SD``."""
    loa_high: float
    """Upper 95% limit of agreement, ``bias + 1.96 SD``."""


@dataclass(frozen=True)
class LogRepeatability:
    """Figures from the ANOVA of natural-log values (proportional error)."""

    wsd_log: float
    wsd_log_ci: Interval
    wcv: float
    """``sqrt(exp(wsd_log^2) - 1)``, a fraction (0.12 is 12%)."""
    wcv_ci: Interval
    rc_log: float
    """``2.77 wsd_log``: limit for ``|ln(retest / test)|``."""
    relative_rc: float
    """``exp(rc_log) - 1``, a fraction: 95% of retest/test ratios lie below ``1 + relative_rc``."""
    relative_rc_ci: Interval
    bland_altman: BlandAltman | None
    """Of ``ln(second / first)``; ``None`` unless there are exactly two replicates."""


@dataclass(frozen=True)
class Repeatability:
    """Test-retest statistics of one figure (see the module docstring for the definitions)."""

    figure: str
    n_subjects: int
    n_replicates: int
    confidence: float
    mean: float
    wsd: float
    wsd_ci: Interval
    wcv_raw: float | None
    """``wsd / mean``; ``None`` when the mean is not positive."""
    rc: float
    rc_ci: Interval
    icc: float
    icc_ci: Interval
    log: LogRepeatability | None
    """``None`` when a value is zero or negative."""
    bland_altman: BlandAltman | None
    """``None`` unless there are exactly two replicates."""

    def to_row(self) -> dict[str, Any]:
        """A flat dict for one CSV row (``None`` where a figure does not apply)."""
        row: dict[str, Any] = {
            "figure": self.figure,
            "n_subjects": self.n_subjects,
            "n_replicates": self.n_replicates,
            "confidence": self.confidence,
            "mean": self.mean,
        }
        row.update(_with_ci("wsd", self.wsd, self.wsd_ci))
        row["wcv_raw"] = self.wcv_raw
        row.update(_with_ci("rc", self.rc, self.rc_ci))
        row.update(_with_ci("icc", self.icc, self.icc_ci))
        row.update(_log_row(self.log))
        row.update(_ba_row("ba", self.bland_altman))
        row.update(_ba_row("ba_log", self.log.bland_altman if self.log else None))
        return row


def _with_ci(name: str, value: float | None, ci: Interval | None) -> dict[str, float | None]:
    return {
        name: value,
        f"{name}_ci_low": ci.low if ci else None,
        f"{name}_ci_high": ci.high if ci else None,
    }


def _log_row(log: LogRepeatability | None) -> dict[str, float | None]:
    if log is None:
        return {
            **_with_ci("wsd_log", None, None),
            **_with_ci("wcv", None, None),
            "rc_log": None,
            **_with_ci("relative_rc", None, None),
        }
    return {
        **_with_ci("wsd_log", log.wsd_log, log.wsd_log_ci),
        **_with_ci("wcv", log.wcv, log.wcv_ci),
        "rc_log": log.rc_log,
        **_with_ci("relative_rc", log.relative_rc, log.relative_rc_ci),
    }


def _ba_row(prefix: str, ba: BlandAltman | None) -> dict[str, float | None]:
    name = f"{prefix}_mean_difference"
    if ba is None:
        row = _with_ci(name, None, None)
        sd = low = high = None
    else:
        row = _with_ci(name, ba.mean_difference, ba.mean_difference_ci)
        sd, low, high = ba.sd_difference, ba.loa_low, ba.loa_high
    row[f"{prefix}_sd_difference"] = sd
    row[f"{prefix}_loa_low"] = low
    row[f"{prefix}_loa_high"] = high
    return row


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def check_table(values: np.ndarray | list[list[float]]) -> np.ndarray:
    """``values`` as a float ``(n_subjects >= 2, n_replicates >= 2)`` array of finite numbers."""
    table = np.asarray(values, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"values must be 2-D (subjects x replicates), got shape {table.shape}")
    n, k = table.shape
    if n < 2:
        raise ValueError(f"values needs at least 2 subjects (rows), got {n}")
    if k < 2:
        raise ValueError(f"values needs at least 2 replicates (columns), got {k}")
    if not np.isfinite(table).all():
        raise ValueError("values must all be finite (drop subjects with a missing scan first)")
    return table


def anova_one_way(values: np.ndarray | list[list[float]]) -> AnovaTable:
    """Sums of squares of the one-way random-effects ANOVA (subjects as the random factor).

    Parameters
    ----------
    values : array_like, shape (n_subjects, n_replicates)
        Replicate measurements, one row per subject.

    Returns
    -------
    AnovaTable
    """
    table = check_table(values)
    n, k = table.shape
    subject_means = table.mean(axis=1)
    grand_mean = float(table.mean())
    return AnovaTable(
        n_subjects=n,
        n_replicates=k,
        grand_mean=grand_mean,
        ss_between=float(k * np.sum((subject_means - grand_mean) ** 2)),
        ss_within=float(np.sum((table - subject_means[:, None]) ** 2)),
        df_between=n - 1,
        df_within=n * (k - 1),
    )


def within_subject_sd(anova: AnovaTable, confidence: float = 0.95) -> tuple[float, Interval]:
    """wSD ``= sqrt(MSW)`` and its chi-square confidence interval.

    Parameters
    ----------
    anova : AnovaTable
    confidence : float
        Two-sided confidence level of the interval.

    Returns
    -------
    tuple of (float, Interval)
    """
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    df = anova.df_within
    low = math.sqrt(anova.ss_within / float(stats.chi2.ppf(1.0 - alpha / 2.0, df)))
    high = math.sqrt(anova.ss_within / float(stats.chi2.ppf(alpha / 2.0, df)))
    return math.sqrt(anova.ms_within), Interval(low, high)


def icc_one_way(anova: AnovaTable, confidence: float = 0.95) -> tuple[float, Interval]:
    """ICC(1,1) of the one-way random-effects model and its F-based confidence interval.

    Parameters
    ----------
    anova : AnovaTable
    confidence : float
        Two-sided confidence level of the interval.

    Returns
    -------
    tuple of (float, Interval)
        ``nan`` throughout when every value is the same; ``1.0`` with interval ``[1, 1]`` when
        replicates agree exactly but subjects differ.
    """
    _check_confidence(confidence)
    msb, msw, k = anova.ms_between, anova.ms_within, anova.n_replicates
    if msw == 0.0:
        value = math.nan if msb == 0.0 else 1.0
        return value, Interval(value, value)
    alpha = 1.0 - confidence
    f0 = msb / msw
    f_low = f0 / float(stats.f.ppf(1.0 - alpha / 2.0, anova.df_between, anova.df_within))
    f_high = f0 * float(stats.f.ppf(1.0 - alpha / 2.0, anova.df_within, anova.df_between))
    icc = (msb - msw) / (msb + (k - 1) * msw)
    return icc, Interval((f_low - 1.0) / (f_low + k - 1), (f_high - 1.0) / (f_high + k - 1))


def wcv_from_log_wsd(wsd_log: float) -> float:
    """Within-subject coefficient of variation ``sqrt(exp(wsd_log^2) - 1)`` (a fraction)."""
    return math.sqrt(math.expm1(wsd_log**2))


def relative_rc_from_log_wsd(wsd_log: float) -> float:
    """Relative repeatability coefficient ``exp(2.77 wsd_log) - 1`` (a fraction)."""
    return math.expm1(RC_FACTOR * wsd_log)


def bland_altman(first: np.ndarray, second: np.ndarray, confidence: float = 0.95) -> BlandAltman:
    """Bland-Altman statistics of ``second - first``.

    Parameters
    ----------
    first, second : numpy.ndarray, shape (n_subjects,)
        The two scans of each subject (pass logarithms for log ratios).
    confidence : float
        Two-sided confidence level of the interval on the bias (Student t).

    Returns
    -------
    BlandAltman
    """
    _check_confidence(confidence)
    table = check_table(np.column_stack([np.asarray(first), np.asarray(second)]))
    differences = table[:, 1] - table[:, 0]
    n = differences.size
    bias = float(differences.mean())
    sd = float(differences.std(ddof=1))
    half = float(stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    return BlandAltman(
        n_subjects=n,
        mean_difference=bias,
        mean_difference_ci=Interval(bias - half, bias + half),
        sd_difference=sd,
        loa_low=bias - Z_975 * sd,
        loa_high=bias + Z_975 * sd,
    )


def _log_repeatability(table: np.ndarray, confidence: float) -> LogRepeatability:
    logs = np.log(table)
    wsd_log, ci = within_subject_sd(anova_one_way(logs), confidence)
    return LogRepeatability(
        wsd_log=wsd_log,
        wsd_log_ci=ci,
        wcv=wcv_from_log_wsd(wsd_log),
        wcv_ci=Interval(wcv_from_log_wsd(ci.low), wcv_from_log_wsd(ci.high)),
        rc_log=RC_FACTOR * wsd_log,
        relative_rc=relative_rc_from_log_wsd(wsd_log),
        relative_rc_ci=Interval(
            relative_rc_from_log_wsd(ci.low), relative_rc_from_log_wsd(ci.high)
        ),
        bland_altman=(
            bland_altman(logs[:, 0], logs[:, 1], confidence) if table.shape[1] == 2 else None
        ),
    )


def repeatability(
    values: np.ndarray | list[list[float]], figure: str = "", confidence: float = 0.95
) -> Repeatability:
    """All test-retest statistics of one figure.

    Parameters
    ----------
    values : array_like, shape (n_subjects, n_replicates)
        Replicate measurements, one row per subject, all finite; ``n_subjects >= 2`` and
        ``n_replicates >= 2``.
    figure : str
        Name of the figure (e.g. ``"suv_max"``), carried into the result.
    confidence : float
        Two-sided confidence level of the intervals (the 1.96 of RC and of the limits of
        agreement stays at 95%, as defined).

    Returns
    -------
    Repeatability
        The log-scale figures are ``None`` when a value is not positive; the Bland-Altman
        figures are ``None`` unless there are exactly two replicates.
    """
    _check_confidence(confidence)
    table = check_table(values)
    anova = anova_one_way(table)
    wsd, wsd_ci = within_subject_sd(anova, confidence)
    icc, icc_ci = icc_one_way(anova, confidence)
    return Repeatability(
        figure=figure,
        n_subjects=anova.n_subjects,
        n_replicates=anova.n_replicates,
        confidence=confidence,
        mean=anova.grand_mean,
        wsd=wsd,
        wsd_ci=wsd_ci,
        wcv_raw=wsd / anova.grand_mean if anova.grand_mean > 0 else None,
        rc=RC_FACTOR * wsd,
        rc_ci=Interval(RC_FACTOR * wsd_ci.low, RC_FACTOR * wsd_ci.high),
        icc=icc,
        icc_ci=icc_ci,
        log=_log_repeatability(table, confidence) if (table > 0).all() else None,
        bland_altman=(
            bland_altman(table[:, 0], table[:, 1], confidence) if table.shape[1] == 2 else None
        ),
    )
