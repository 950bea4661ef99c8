"""The benchmark's statistics (edge_bench/stats.py, edge_bench/paired.py) against references: scipy's
Wilson interval and binomial test, Newcombe's (1998) published Wilson intervals, a brute-force score
inversion for Tango's paired interval, the coverage of both intervals on simulated answers with known
rates (with the textbook Wald interval failing the same check, so the check can fail), the error rate
and power of the recommendation's rule, and the pairing of answers by question."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from bench_fakes import answer_records

from edge_bench.accuracy import kl_divergence
from edge_bench.paired import accuracy_summary, pair_by_question, paired_accuracy, verdict
from edge_bench.stats import (
    mcnemar_exact_p,
    paired_difference_interval,
    questions_needed,
    wilson_interval,
    z_value,
)

Z = z_value()


# ---- reference values -------------------------------------------------------------------------------


def test_wilson_interval_matches_published_values_and_scipy():
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (score, no continuity correction)
    for (k, n), (lo, hi) in {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0000, 0.1611),
        (1, 29): (0.0061, 0.1718),
    }.items():
        got = wilson_interval(k, n)
        assert got == pytest.approx((lo, hi), abs=6e-5), (k, n)
    from scipy.stats import binomtest

    for n in (1, 7, 20, 200):
        for k in {0, 1, n // 3, n // 2, n - 1, n}:
            ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12), (k, n)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mcnemar_exact_p_matches_the_binomial_test():
    from scipy.stats import binomtest

    assert mcnemar_exact_p(1, 9) == 22 / 1024  # 2 * P(X <= 1), X ~ Binomial(10, 1/2)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(4, 4) == 1.0
    for b in range(0, 25, 3):
        for c in range(0, 25, 4):
            if b + c:
                assert mcnemar_exact_p(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


def _score_by_brute_force(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic with the nuisance p_c maximised over a fine grid of the likelihood
    b log(p_c + delta) + c log(p_c) + (n - b - c) log(1 - 2 p_c - delta): an independent route to
    the closed-form root in edge_bench.stats."""
    lo, hi = max(0.0, -delta), (1 - delta) / 2
    grid = np.linspace(lo, hi, 200_001)[1:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = (
            (b * np.log(grid + delta) if b else 0)
            + (c * np.log(grid) if c else 0)
            + (n - b - c) * np.log(1 - 2 * grid - delta)
        )
    pc = grid[np.nanargmax(ll)]
    return (b - c - n * delta) / math.sqrt(n * (2 * pc + delta * (1 - delta)))


@pytest.mark.parametrize("b, c, n", [(5, 1, 30), (12, 2, 1000), (0, 3, 40), (7, 7, 50), (20, 5, 100)])
def test_tango_interval_ends_are_where_the_score_statistic_crosses_z(b, c, n):
    lo, hi = paired_difference_interval(b, c, n)
    assert lo < (b - c) / n < hi
    assert _score_by_brute_force(b, c, n, lo) == pytest.approx(Z, abs=2e-3)
    assert _score_by_brute_force(b, c, n, hi) == pytest.approx(-Z, abs=2e-3)


def test_paired_interval_without_discordant_questions_is_not_zero_width():
    # b = c = 0: T(d) = -sqrt(n d / (1 - d)), so the ends are +-z^2 / (n + z^2), not [0, 0]
    for n in (20, 100, 1000):
        lo, hi = paired_difference_interval(0, 0, n)
        assert hi == pytest.approx(Z**2 / (n + Z**2), rel=1e-9) and lo == pytest.approx(-hi, rel=1e-9)


def test_questions_needed_closed_form_and_limits():
    # no disagreement: the first n with z'^2 / (n + z'^2) <= t, z' = z_0.975 + z_0.8
    zp = Z + 0.8416212335729143
    assert questions_needed(0.0, 0.02) == math.ceil(zp**2 * (1 - 0.02) / 0.02) == 385
    needs = [questions_needed(s, 0.02) for s in (0.0, 0.02, 0.05, 0.1, 0.3)]
    assert needs == sorted(needs) and needs[-1] > 5000  # more disagreement, more questions
    assert questions_needed(0.05, 0.01) > 3 * questions_needed(0.05, 0.02)  # ~ 1 / t^2
    assert questions_needed(0.1, 0.0) is None and questions_needed(0.0, 0.0) is None


def test_kl_divergence_matches_scipy():
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(300), rng.standard_normal(300)
    p, q = np.exp(a) / np.exp(a).sum(), np.exp(b) / np.exp(b).sum()
    assert kl_divergence(np.log(p), b) == pytest.approx(entropy(p, q), rel=1e-9)
    assert kl_divergence(np.log(p), a + 3.0) == pytest.approx(0.0, abs=1e-12)  # shift-invariant


# ---- coverage on simulated answers with known rates -------------------------------------------------


def _wald(k: int, n: int) -> tuple[float, float]:
    p = k / n
    half = Z * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def _accuracy_coverage(interval, p: float, n: int, reps: int, rng) -> float:
    """Share of `reps` simulated runs of n questions, each answered right with probability p, whose
    interval holds p."""
    counts = (rng.random((reps, n)) < p).sum(axis=1)
    cache: dict[int, tuple[float, float]] = {}
    hits = [lo <= p <= hi for lo, hi in (cache.setdefault(int(k), interval(int(k), n)) for k in counts)]
    return float(np.mean(hits))


def test_wilson_coverage_on_simulated_answers():
    rng = np.random.default_rng(17)
    cells = [(p, n) for p in (0.1, 0.3, 0.5, 0.8, 0.95) for n in (20, 60, 200)]
    cov = {cell: _accuracy_coverage(wilson_interval, *cell, reps=2000, rng=rng) for cell in cells}
    assert min(cov.values()) >= 0.90, cov  # Wilson dips a little below 95% at some (p, n)
    assert 0.935 <= np.mean(list(cov.values())) <= 0.965, cov
    # the same check on the textbook interval fails: it undercovers badly near 0 and 1 at small n
    wald = _accuracy_coverage(_wald, 0.05, 20, reps=2000, rng=rng)
    assert wald < 0.80, wald  # 0.64 exactly


def _simulate_pairs(p_b: float, p_c: float, n: int, reps: int, rng) -> np.ndarray:
    """(reps, 2) discordant counts (b, c): per question, only the reference right with probability
    p_b, only the variant right with p_c."""
    u = rng.random((reps, n))
    return np.stack([(u < p_b).sum(1), ((u >= p_b) & (u < p_b + p_c)).sum(1)], axis=1)


def _paired_coverage(interval, p_b, p_c, n, reps, rng) -> float:
    cache: dict[tuple[int, int], tuple[float, float]] = {}
    true = p_b - p_c
    hits = []
    for b, c in _simulate_pairs(p_b, p_c, n, reps, rng):
        lo, hi = cache.setdefault((int(b), int(c)), interval(int(b), int(c), n))
        hits.append(lo - 1e-12 <= true <= hi + 1e-12)
    return float(np.mean(hits))


def _paired_wald(b: int, c: int, n: int) -> tuple[float, float]:
    d = (b - c) / n
    half = Z * math.sqrt(max((b + c) / n - d * d, 0.0) / n)
    return d - half, d + half


def test_paired_interval_coverage_on_simulated_answers():
    rng = np.random.default_rng(18)
    rates = [(0.05, 0.05), (0.1, 0.02), (0.2, 0.1), (0.02, 0.0), (0.3, 0.3)]
    cov = {
        (pb, pc, n): _paired_coverage(paired_difference_interval, pb, pc, n, 1500, rng)
        for pb, pc in rates
        for n in (20, 60, 200)
    }
    assert min(cov.values()) >= 0.91, cov  # the lowest here, (0.02, 0, 200), is 0.933 exactly
    assert np.mean(list(cov.values())) >= 0.945, cov
    # the check can fail: the Wald interval of the paired difference (what a paired bootstrap
    # approximates) is [0, 0] when no question is discordant, and misses a 2-point drop at n = 20
    wald = _paired_coverage(_paired_wald, 0.02, 0.0, 20, 1500, rng)
    assert wald < 0.5, wald


def test_the_recommendation_rule_rarely_passes_a_variant_that_loses_more_than_the_tolerance():
    """True drop 7 points (p_b 0.10, p_c 0.03), tolerance 2 points: "within" must be rare (<= 2.5%
    in theory, the upper end of a two-sided 95% interval)."""
    rng = np.random.default_rng(19)
    for n in (20, 100, 400):
        pairs = _simulate_pairs(0.10, 0.03, n, 1000, rng)
        passed = np.mean([verdict(paired_difference_interval(b, c, n), 0.02) == "within" for b, c in pairs])
        assert passed <= 0.03, (n, passed)


def test_questions_needed_gives_the_promised_power():
    """A variant as accurate as fp32 that disagrees on 5% of the questions is shown within 2 points
    about 80% of the time at questions_needed(0.05, 0.02), and much less often at half of it."""
    rng = np.random.default_rng(20)
    n = questions_needed(0.05, 0.02)

    def power(m: int) -> float:
        cache: dict = {}
        pairs = _simulate_pairs(0.025, 0.025, m, 600, rng)
        return float(
            np.mean(
                [cache.setdefault((b, c), paired_difference_interval(b, c, m))[1] <= 0.02 for b, c in pairs]
            )
        )

    assert 0.72 <= power(n) <= 0.9
    assert power(n // 2) < 0.5


# ---- pairing by question ----------------------------------------------------------------------------


def test_paired_differences_use_the_same_questions():
    ref = answer_records([1] * 10 + [0] * 10)
    crossed = answer_records([0] * 10 + [1] * 10)  # same accuracy, the other half of the questions
    same = answer_records([1] * 10 + [0] * 10)
    a, b = paired_accuracy(ref, crossed, 0.02), paired_accuracy(ref, same, 0.02)
    assert accuracy_summary(crossed)["accuracy"] == accuracy_summary(same)["accuracy"] == 0.5
    assert (a["reference_only"], a["variant_only"], a["answers_differ"]) == (10, 10, 20)
    assert (b["reference_only"], b["variant_only"], b["answers_differ"]) == (0, 0, 0)
    assert a["drop"] == b["drop"] == 0  # equal accuracies, but the pairing sees what differs:
    assert a["drop_ci"][1] > 0.25 and b["drop_ci"][1] == pytest.approx(Z**2 / (20 + Z**2))
    # order does not matter, the question index does
    shuffled = list(crossed)
    random.Random(0).shuffle(shuffled)
    assert paired_accuracy(ref, shuffled, 0.02) == a
    assert [(r["index"], v["index"]) for r, v in pair_by_question(ref, shuffled)] == [
        (i, i) for i in range(20)
    ]
    shifted = [{**r, "index": r["index"] + 1} for r in crossed]  # answers moved by one question
    with pytest.raises(ValueError, match="same questions"):
        paired_accuracy(ref, shifted, 0.02)
    other = [{**r, "target": "other"} if r["index"] == 3 else r for r in crossed]
    with pytest.raises(ValueError, match="question 3 has target"):
        paired_accuracy(ref, other, 0.02)
    with pytest.raises(ValueError, match="occurs twice"):
        paired_accuracy(ref, crossed + crossed[:1], 0.02)
