"""Chi-square, F and Student t quantiles without scipy, for the repeatability confidence intervals.

Method
------
The distribution functions are regularized incomplete gamma and beta functions, evaluated as in
Press et al., *Numerical Recipes* (3rd ed., sections 6.2 and 6.4):

- ``P(a, x)`` (regularized lower incomplete gamma): its power series when ``x < a + 1``, else
  ``1 - Q(a, x)`` with ``Q`` from its continued fraction (modified Lentz algorithm).
- ``I_x(a, b)`` (regularized incomplete beta): its continued fraction, directly when
  ``x < (a + 1) / (a + b + 2)``, else through the symmetry ``I_x(a, b) = 1 - I_{1-x}(b, a)``.

Then ``chi2_cdf(x; k) = P(k/2, x/2)``, ``f_cdf(x; d1, d2) = I_{d1 x / (d1 x + d2)}(d1/2, d2/2)``
and, since ``T^2 ~ F(1, k)`` for ``T ~ t(k)``, ``t_ppf(p; k) = sqrt(f_ppf(2p - 1; 1, k))`` for
``p >= 0.5``. Quantiles invert the (monotone) distribution functions by bisection: the upper
end of the bracket is doubled until it holds the quantile, then the bracket is halved until its
width is below ``1e-13`` of its upper end (about 13 significant digits; the series and continued
fractions converge to ``1e-15`` relative). Quantiles are cached, since a cohort asks for the
same few degrees of freedom many times.

Checked in ``tests/test_repeatability.py`` against printed tables (e.g. chi-square 0.975 with 19
degrees of freedom = 32.852) and closed forms (chi-square with 2 degrees of freedom, F(2, 2)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITERATIONS = 10_000


def _check_probability(p: float) -> None:
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")


def _check_dof(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of degrees of freedom, got {value}")


def regularized_gamma_p(a: float, x: float) -> float:
    """Regularized lower incomplete gamma function ``P(a, x) = gamma(a, x) / Gamma(a)``.

    Parameters
    ----------
    a : float
        Shape, > 0.
    x : float
        Upper limit of integration, >= 0.

    Returns
    -------
    float
        ``P(a, x)`` in [0, 1].
    """
    if a <= 0:
        raise ValueError(f"a must be > 0, got {a}")
    if x < 0:
        raise ValueError(f"x must be >= 0, got {x}")
    if x == 0:
        return 0.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(_MAX_ITERATIONS):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                return min(1.0, total * math.exp(log_prefactor))
        raise ArithmeticError(f"gamma series did not converge for a={a}, x={x}")
    # Continued fraction for Q(a, x), modified Lentz.
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = d if abs(d) > _TINY else _TINY
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return max(0.0, 1.0 - math.exp(log_prefactor) * h)
    raise ArithmeticError(f"gamma continued fraction did not converge for a={a}, x={x}")


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"beta continued fraction did not converge for a={a}, b={b}, x={x}")


def regularized_beta(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta function ``I_x(a, b)``.

    Parameters
    ----------
    x : float
        Upper limit of integration, in [0, 1].
    a, b : float
        Shapes, > 0.

    Returns
    -------
    float
        ``I_x(a, b)`` in [0, 1].
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"a and b must be > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def chi2_cdf(x: float, dof: float) -> float:
    """Chi-square distribution function with ``dof`` degrees of freedom."""
    _check_dof("dof", dof)
    return 0.0 if x <= 0 else regularized_gamma_p(dof / 2.0, x / 2.0)


def f_cdf(x: float, dof_num: float, dof_den: float) -> float:
    """F distribution function with ``dof_num`` (numerator) and ``dof_den`` degrees of freedom."""
    _check_dof("dof_num", dof_num)
    _check_dof("dof_den", dof_den)
    if x <= 0:
        return 0.0
    return regularized_beta(dof_num * x / (dof_num * x + dof_den), dof_num / 2.0, dof_den / 2.0)


def _invert(cdf: Callable[[float], float], p: float, start: float) -> float:
    """The ``x >= 0`` where the increasing function ``cdf`` reaches ``p`` (bisection)."""
    low, high = 0.0, max(start, 1.0)
    while cdf(high) < p:
        low, high = high, 2.0 * high
        if high > 1e300:
            raise ArithmeticError(f"quantile {p} not bracketed")
    for _ in range(2000):
        middle = 0.5 * (low + high)
        if cdf(middle) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return 0.5 * (low + high)


@lru_cache(maxsize=1024)
def chi2_ppf(p: float, dof: float) -> float:
    """Quantile of the chi-square distribution: ``x`` with ``chi2_cdf(x, dof) == p``.

    Parameters
    ----------
    p : float
        Probability, strictly between 0 and 1.
    dof : float
        Degrees of freedom, > 0.

    Returns
    -------
    float
        The ``p`` quantile.
    """
    _check_probability(p)
    _check_dof("dof", dof)
    return _invert(lambda x: chi2_cdf(x, dof), p, dof)


@lru_cache(maxsize=1024)
def f_ppf(p: float, dof_num: float, dof_den: float) -> float:
    """Quantile of the F distribution: ``x`` with ``f_cdf(x, dof_num, dof_den) == p``.

    Parameters
    ----------
    p : float
        Probability, strictly between 0 and 1.
    dof_num, dof_den : float
        Numerator and denominator degrees of freedom, > 0.

    Returns
    -------
    float
        The ``p`` quantile.
    """
    _check_probability(p)
    _check_dof("dof_num", dof_num)
    _check_dof("dof_den", dof_den)
    return _invert(lambda x: f_cdf(x, dof_num, dof_den), p, 1.0)


def t_ppf(p: float, dof: float) -> float:
    """Quantile of Student's t distribution with ``dof`` degrees of freedom (via ``T^2 ~ F``).

    Parameters
    ----------
    p : float
        Probability, strictly between 0 and 1.
    dof : float
        Degrees of freedom, > 0.

    Returns
    -------
    float
        The ``p`` quantile (negative for ``p < 0.5``, by symmetry).
    """
    _check_probability(p)
    if p == 0.5:
        return 0.0
    magnitude = math.sqrt(f_ppf(abs(2.0 * p - 1.0), 1.0, dof))
    return magnitude if p > 0.5 else -magnitude
