"""The statistics behind the benchmark's accuracy figures, in plain Python (no scipy at run time).

- `wilson_interval(k, n)`: a 95% interval for one accuracy, the Wilson score interval (Wilson 1927).
  Its coverage stays close to the nominal 95% down to small n and near 0 or 1, where the textbook
  "p +- 1.96 se" interval collapses (Brown, Cai & DasGupta 2001). It is an approximate interval:
  coverage wobbles around 95% with p and n rather than being guaranteed >= 95% (Clopper-Pearson is,
  at the price of wider intervals).
- `paired_difference_interval(b, c, n)`: a 95% interval for the difference of two accuracies
  measured on the SAME n questions, from the discordant counts b (only the first is right) and c (only
  the second is right): Tango's score interval (Tango 1998, Stat. Med. 17:891). Unlike a paired
  bootstrap, it does not collapse to [0, 0] when no question differs: 0 of 20 discordant questions
  still leaves a drop of up to ~16 points possible, and the interval says so.
- `mcnemar_exact_p(b, c)`: the exact (binomial) McNemar test of "the two accuracies are equal".
- `questions_needed(share, tolerance)`: how many questions a drop tolerance needs, from the share of
  questions on which the two disagree, for an 80% chance of deciding (see its docstring).
"""

from __future__ import annotations

import math
from statistics import NormalDist

LEVEL = 0.95
"""Confidence level of every interval in the report."""


def z_value(level: float = LEVEL) -> float:
    """The two-sided standard normal quantile: 1.96 for 0.95."""
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = z_value(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the edges (no rounding)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under equal accuracies each of the b + c discordant questions
    falls on either side with probability 1/2, so min(b, c) is Binomial(b + c, 1/2) in its lower tail.
    1.0 when no question is discordant."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


def _tango_statistic(b: float, c: float, n: float, delta: float) -> float:
    """Tango's score statistic for H0: p_b - p_c = delta, with p_c at its constrained maximum
    likelihood (the root of 2n x^2 + B x + C = 0 below)."""
    a2 = 2 * n
    bq = -b - c + (2 * n - b + c) * delta
    cq = -c * delta * (1 - delta)
    x = (math.sqrt(max(bq * bq - 4 * a2 * cq, 0.0)) - bq) / (2 * a2)
    numerator = b - c - n * delta
    variance = n * (2 * x + delta * (1 - delta))
    if variance <= 0:
        return 0.0 if abs(numerator) < 1e-12 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def _bisect(f, lo: float, hi: float, iterations: int = 80) -> float:
    """A root of f (f(lo) and f(hi) of opposite signs, or f(lo) == 0) by bisection."""
    f_lo = f(lo)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return (lo + hi) / 2


def paired_difference_interval(b: float, c: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """Tango's score interval for p_b - p_c on n paired questions: b questions where only the first
    of the two is right, c where only the second is. For an accuracy drop, the first is the reference:
    drop = (b - c) / n. Counts may be fractional (expected counts, in `questions_needed`)."""
    if n <= 0 or b < 0 or c < 0 or b + c > n + 1e-9:
        raise ValueError(f"paired counts need b, c >= 0 and b + c <= n, got b={b}, c={c}, n={n}")
    z = z_value(level)
    estimate = (b - c) / n
    eps = 1e-12
    lo_end, hi_end = -1 + eps, 1 - eps
    lower = (
        lo_end
        if _tango_statistic(b, c, n, lo_end) <= z
        else _bisect(lambda d: _tango_statistic(b, c, n, d) - z, lo_end, estimate)
    )
    upper = (
        hi_end
        if _tango_statistic(b, c, n, hi_end) >= -z
        else _bisect(lambda d: _tango_statistic(b, c, n, d) + z, estimate, hi_end)
    )
    return max(-1.0, lower), min(1.0, upper)


POWER = 0.8
"""The chance `questions_needed` aims for: that a variant as accurate as fp32 is shown to be within."""


def questions_needed(
    discordant_share: float,
    tolerance: float,
    level: float = LEVEL,
    power: float = POWER,
    cap: int = 1_000_000,
) -> int | None:
    """Questions at which a variant as accurate as its reference, but disagreeing with it on a share
    `discordant_share` of the questions (one right, the other wrong), has the upper end of its drop
    interval within `tolerance` with probability about `power`.

    The upper end is about drop + z se, with se = sqrt(share / n) and the observed drop ~ N(0, se^2),
    so it is within `tolerance` with probability `power` when tolerance = (z + z_power) se. That is
    computed with the interval itself: the smallest n with
    `paired_difference_interval(s n / 2, s n / 2, n, level')[1] <= tolerance`, where level' is the
    two-sided level of z + z_power (0.995 for 95% and 80%). Roughly (z + z_power)^2 s / tolerance^2;
    for 2 points: 385 questions at s = 0, 1105 at s = 0.05, 2023 at s = 0.1, 5898 at s = 0.3.
    None when no n up to `cap` is enough (tolerance 0 with any disagreement)."""
    if not 0 <= discordant_share <= 1:
        raise ValueError(f"discordant share must be in [0, 1], got {discordant_share}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if tolerance <= 0:
        return None
    normal = NormalDist()
    planning_level = 2 * normal.cdf(z_value(level) + normal.inv_cdf(power)) - 1

    def enough(n: int) -> bool:
        half = discordant_share * n / 2
        return paired_difference_interval(half, half, n, planning_level)[1] <= tolerance

    if not enough(cap):
        return None
    lo, hi = 1, 1
    while not enough(hi):
        lo, hi = hi + 1, hi * 2
    while lo < hi:  # the upper end shrinks as n grows: the first n that is enough
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi
