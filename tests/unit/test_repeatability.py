"""quant.stats.repeatability and quant.distributions: hand-computed tables, printed quantiles and
confidence-interval coverage over simulated test-retest cohorts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pingouin
import pytest

from quant.stats.repeatability import (
    RC_FACTOR,
    anova_one_way,
    bland_altman,
    relative_rc_from_log_wsd,
    repeatability,
    wcv_from_log_wsd,
)

# --- quantiles against printed tables and closed forms -------------------------------------


# --- ICC cross-checked against an independent implementation (pingouin) ----------------


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k", [2, 3])
def test_icc_and_its_interval_agree_with_pingouin(seed: int, k: int) -> None:
    """ICC(1,1) and its 95 % F-based interval equal pingouin's ICC1 on random cohorts."""

    rng = np.random.default_rng(seed)
    n = 12
    truth = rng.lognormal(1.0, 0.4, size=n)
    values = truth[:, None] * rng.lognormal(0.0, 0.1, size=(n, k))
    ours = repeatability(values, confidence=0.95)
    long = pd.DataFrame(
        [(i, j, values[i, j]) for i in range(n) for j in range(k)],
        columns=["subject", "scan", "value"],
    )
    table = pingouin.intraclass_corr(long, targets="subject", raters="scan", ratings="value")
    icc1 = table.set_index("Type").loc["ICC(1,1)"]
    np.testing.assert_allclose(ours.icc, icc1["ICC"], rtol=1e-10)
    # pingouin rounds its interval to two decimals
    np.testing.assert_allclose([ours.icc_ci.low, ours.icc_ci.high], icc1["CI95"], atol=0.006)


# --- ANOVA, ICC and Bland-Altman on hand-computed tables -----------------------------------

TWO_SCANS = [[10.0, 12.0], [20.0, 18.0], [30.0, 33.0], [40.0, 41.0]]
# Subject means 11, 19, 31.5, 40.5; grand mean 25.5.
# SSW = (1 + 1) + (1 + 1) + (2.25 + 2.25) + (0.25 + 0.25) = 9 on 4 df: MSW = 9 / 4.
# SSB = 2 (14.5^2 + 6.5^2 + 6^2 + 15^2) = 1027 on 3 df: MSB = 1027 / 3.
# ICC(1,1) = (MSB - MSW) / (MSB + MSW) = (4108 - 27) / (4108 + 27) = 4081 / 4135.
THREE_SCANS = [[1.0, 2.0, 3.0], [4.0, 5.0, 9.0], [6.0, 8.0, 7.0]]
# Subject means 2, 6, 7; grand mean 5. SSW = 2 + 14 + 2 = 18 on 6 df: MSW = 3.
# SSB = 3 (9 + 1 + 4) = 42 on 2 df: MSB = 21. ICC = (21 - 3) / (21 + 2 x 3) = 2 / 3.


def test_anova_two_scans_by_hand() -> None:
    table = anova_one_way(TWO_SCANS)
    assert (table.n_subjects, table.n_replicates) == (4, 2)
    assert (table.df_between, table.df_within) == (3, 4)
    np.testing.assert_allclose(
        [table.grand_mean, table.ss_within, table.ss_between, table.ms_within, table.ms_between],
        [25.5, 9.0, 1027.0, 2.25, 1027.0 / 3.0],
    )


def test_statistics_two_scans_by_hand() -> None:
    result = repeatability(TWO_SCANS, "suv_max")
    assert result.figure == "suv_max" and result.n_subjects == 4
    np.testing.assert_allclose(result.icc, 4081.0 / 4135.0, rtol=1e-12)
    np.testing.assert_allclose(result.wsd, 1.5, rtol=1e-12)
    np.testing.assert_allclose(result.rc, 1.959964 * math.sqrt(2.0) * 1.5, rtol=1e-6)
    assert result.wcv_raw is not None
    np.testing.assert_allclose(result.wcv_raw, 1.5 / 25.5)
    # wSD interval: sqrt(SSW / chi2) with chi2_{0.975}(4) = 11.143, chi2_{0.025}(4) = 0.4844.
    np.testing.assert_allclose(
        [result.wsd_ci.low, result.wsd_ci.high],
        [math.sqrt(9.0 / 11.143), math.sqrt(9.0 / 0.4844)],
        rtol=2e-4,
    )
    # ICC interval with F_{0.975}(3, 4) = 9.9792 and F_{0.975}(4, 3) = 15.101.
    f0 = (1027.0 / 3.0) / 2.25
    f_low, f_high = f0 / 9.9792, f0 * 15.101
    np.testing.assert_allclose(
        [result.icc_ci.low, result.icc_ci.high],
        [(f_low - 1.0) / (f_low + 1.0), (f_high - 1.0) / (f_high + 1.0)],
        rtol=2e-4,
    )
    # Bland-Altman: differences 2, -2, 3, 1: mean 1, SD sqrt(14 / 3); t_{0.975}(3) = 3.1824.
    ba = result.bland_altman
    assert ba is not None
    sd = math.sqrt(14.0 / 3.0)
    np.testing.assert_allclose([ba.mean_difference, ba.sd_difference], [1.0, sd])
    np.testing.assert_allclose(
        [ba.loa_low, ba.loa_high], [1.0 - 1.96 * sd, 1.0 + 1.96 * sd], rtol=1e-4
    )
    half = 3.1824 * sd / 2.0
    np.testing.assert_allclose(
        [ba.mean_difference_ci.low, ba.mean_difference_ci.high],
        [1.0 - half, 1.0 + half],
        rtol=1e-4,
    )


def test_log_scale_statistics_by_hand() -> None:
    result = repeatability(TWO_SCANS)
    assert result.log is not None and result.log.bland_altman is not None
    logs = np.log(np.array(TWO_SCANS))
    d = logs[:, 1] - logs[:, 0]
    # For two scans, SSW on logs = sum(d^2) / 2 on n df.
    wsd_log = math.sqrt(np.sum(d**2) / 2.0 / 4.0)
    np.testing.assert_allclose(result.log.wsd_log, wsd_log, rtol=1e-12)
    np.testing.assert_allclose(result.log.wcv, math.sqrt(math.exp(wsd_log**2) - 1.0), rtol=1e-12)
    np.testing.assert_allclose(result.log.rc_log, 2.7718 * wsd_log, rtol=1e-4)
    np.testing.assert_allclose(result.log.relative_rc, math.exp(2.7718 * wsd_log) - 1.0, rtol=1e-4)
    np.testing.assert_allclose(result.log.bland_altman.mean_difference, d.mean(), rtol=1e-12)
    ci = result.log.wsd_log_ci
    np.testing.assert_allclose(result.log.wcv_ci.low, wcv_from_log_wsd(ci.low))
    np.testing.assert_allclose(result.log.relative_rc_ci.high, relative_rc_from_log_wsd(ci.high))


def test_statistics_three_scans_by_hand() -> None:
    result = repeatability(THREE_SCANS, confidence=0.95)
    np.testing.assert_allclose([result.icc, result.wsd], [2.0 / 3.0, math.sqrt(3.0)], rtol=1e-12)
    # F0 = 7; F_{0.975}(2, 6) = 7.2599, F_{0.975}(6, 2) = 39.331; k = 3.
    f_low, f_high = 7.0 / 7.2599, 7.0 * 39.331
    np.testing.assert_allclose(
        [result.icc_ci.low, result.icc_ci.high],
        [(f_low - 1.0) / (f_low + 2.0), (f_high - 1.0) / (f_high + 2.0)],
        rtol=1e-3,
    )
    assert result.bland_altman is None
    assert result.log is not None and result.log.bland_altman is None


def test_wcv_and_relative_rc_formulas() -> None:
    np.testing.assert_allclose(wcv_from_log_wsd(0.1), math.sqrt(math.exp(0.01) - 1.0))
    np.testing.assert_allclose(relative_rc_from_log_wsd(0.1), math.exp(0.1 * RC_FACTOR) - 1.0)
    np.testing.assert_allclose(RC_FACTOR, 2.77, atol=0.002)


def test_zero_values_have_no_log_statistics() -> None:
    result = repeatability([[0.0, 1.0], [2.0, 3.0], [4.0, 4.5]])
    assert result.log is None
    assert result.to_row()["wcv"] is None and result.to_row()["ba_log_loa_low"] is None
    assert result.to_row().keys() == repeatability(TWO_SCANS).to_row().keys()


def test_identical_replicates() -> None:
    result = repeatability([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert result.wsd == 0.0 and result.rc == 0.0 and result.icc == 1.0
    assert math.isnan(repeatability([[2.0, 2.0], [2.0, 2.0]]).icc)


@pytest.mark.parametrize(
    ("values", "confidence", "message"),
    [
        ([1.0, 2.0], 0.95, "2-D"),
        ([[1.0, 2.0]], 0.95, "2 subjects"),
        ([[1.0], [2.0]], 0.95, "2 replicates"),
        ([[1.0, math.nan], [2.0, 3.0]], 0.95, "finite"),
        ([[1.0, 2.0], [2.0, 3.0]], 1.5, "confidence"),
    ],
)
def test_bad_input_is_refused(values: object, confidence: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        repeatability(values, confidence=confidence)  # type: ignore[arg-type]


def test_bland_altman_of_unequal_lengths_is_refused() -> None:
    with pytest.raises(ValueError):
        bland_altman(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0]))


# --- confidence intervals over simulated cohorts ---------------------------------------------

N_COHORTS = 200
N_SUBJECTS = 20


def multiplicative_cohort(
    rng: np.random.Generator, n: int, k: int, sd_between_log: float, wsd_log: float
) -> np.ndarray:
    """Log-normal true values between subjects, times log-normal noise of SD ``wsd_log``."""
    true = rng.normal(math.log(3.0), sd_between_log, size=(n, 1))
    return np.exp(true + rng.normal(0.0, wsd_log, size=(n, k)))


def additive_cohort(
    rng: np.random.Generator, n: int, k: int, sd_between: float, wsd: float
) -> np.ndarray:
    """Normal true values between subjects plus normal noise of SD ``wsd``."""
    return 10.0 + rng.normal(0.0, sd_between, size=(n, 1)) + rng.normal(0.0, wsd, size=(n, k))


def _coverage(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


@pytest.mark.parametrize("wsd_log", [0.05, 0.12])
def test_wcv_and_relative_rc_intervals_cover_the_truth(wsd_log: float) -> None:
    true_wcv = math.sqrt(math.exp(wsd_log**2) - 1.0)
    true_relative_rc = math.exp(RC_FACTOR * wsd_log) - 1.0
    wcv_hits, rc_hits, estimates = [], [], []
    for seed in range(N_COHORTS):
        values = multiplicative_cohort(np.random.default_rng(seed), N_SUBJECTS, 2, 0.4, wsd_log)
        log = repeatability(values).log
        assert log is not None
        wcv_hits.append(log.wcv_ci.contains(true_wcv))
        rc_hits.append(log.relative_rc_ci.contains(true_relative_rc))
        estimates.append(log.wcv)
    assert 0.90 <= _coverage(wcv_hits) <= 0.99
    assert 0.90 <= _coverage(rc_hits) <= 0.99
    np.testing.assert_allclose(np.median(estimates), true_wcv, rtol=0.1)


@pytest.mark.parametrize("k", [2, 3])
def test_rc_and_icc_intervals_cover_the_truth(k: int) -> None:
    sd_between, wsd = 2.0, 1.0
    true_rc = RC_FACTOR * wsd
    true_icc = sd_between**2 / (sd_between**2 + wsd**2)
    rc_hits, icc_hits = [], []
    for seed in range(N_COHORTS):
        rng = np.random.default_rng(1000 + seed)
        result = repeatability(additive_cohort(rng, N_SUBJECTS, k, sd_between, wsd))
        rc_hits.append(result.rc_ci.contains(true_rc))
        icc_hits.append(result.icc_ci.contains(true_icc))
    assert 0.90 <= _coverage(rc_hits) <= 0.99
    assert 0.90 <= _coverage(icc_hits) <= 0.99


def test_one_cohort_of_twenty_recovers_wcv_and_rc() -> None:
    """The issue's example: 20 patients, 10% multiplicative noise."""
    wsd_log = 0.1
    result = repeatability(multiplicative_cohort(np.random.default_rng(9), 20, 2, 0.4, wsd_log))
    assert result.log is not None
    assert result.log.wcv_ci.contains(math.sqrt(math.exp(wsd_log**2) - 1.0))
    assert result.log.wsd_log_ci.contains(wsd_log)
    np.testing.assert_allclose(result.log.rc_log, RC_FACTOR * result.log.wsd_log)
