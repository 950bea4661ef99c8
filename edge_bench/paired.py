"""A variant's accuracy with its interval, and its difference from the fp32 reference measured on the
same questions (paired), from the per-question answer records of `edge_bench.accuracy`.

Pairing is by question: each record carries the index of its test question and its target, and
`pair_by_question` refuses two answer sets that do not cover the same questions with the same
targets. On paired questions the drop is (b - c) / n, b = questions only the reference got right,
c = questions only the variant got right; its interval is Tango's score interval and the test of
"no difference" is the exact McNemar test (`edge_bench.stats`). Questions where the two give
different answers (both wrong in different ways included) are counted too: a share more sensitive
than accuracy, since it moves even when accuracy does not.

The verdict against a tolerance t on the drop (`verdict`):
- "within": the upper end of the drop interval is <= t (the variant may be recommended);
- "beyond": the lower end is > t (it loses more than t, at 95% confidence);
- "undecided": the interval straddles t: more questions are needed (`questions_needed`).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_bench.stats import (
    LEVEL,
    mcnemar_exact_p,
    paired_difference_interval,
    questions_needed,
    wilson_interval,
)

TOLERANCE_EPS = 1e-9
"""Float slack when an interval end is compared with the tolerance."""


def accuracy_summary(records: Sequence[dict], level: float = LEVEL) -> dict:
    """{accuracy, correct, n, accuracy_ci (Wilson)} of one variant's answer records."""
    n = len(records)
    correct = sum(int(r["correct"]) for r in records)
    if n == 0:
        return {"accuracy": None, "correct": 0, "n": 0, "accuracy_ci": None}
    lo, hi = wilson_interval(correct, n, level)
    return {"accuracy": correct / n, "correct": correct, "n": n, "accuracy_ci": [lo, hi]}


def pair_by_question(reference: Sequence[dict], variant: Sequence[dict]) -> list[tuple[dict, dict]]:
    """(reference record, variant record) per question, matched by question index; a ValueError when
    the two do not answer the same questions (indices, or a target that differs)."""
    ref = {r["index"]: r for r in reference}
    var = {r["index"]: r for r in variant}
    if len(ref) != len(reference) or len(var) != len(variant):
        raise ValueError("paired accuracy: a question index occurs twice in one variant's answers")
    if ref.keys() != var.keys():
        only_ref, only_var = sorted(ref.keys() - var.keys()), sorted(var.keys() - ref.keys())
        raise ValueError(
            f"paired accuracy needs the same questions: only the reference answered {only_ref[:5]}, "
            f"only the variant {only_var[:5]}"
        )
    pairs = [(ref[i], var[i]) for i in sorted(ref)]
    for r, v in pairs:
        if r["target"] != v["target"]:
            raise ValueError(
                f"paired accuracy: question {r['index']} has target {r['target']!r} for the reference "
                f"and {v['target']!r} for the variant (not the same question)"
            )
    return pairs


def verdict(drop_ci: Sequence[float], tolerance: float) -> str:
    """ "within", "beyond" or "undecided" (see the module docstring)."""
    lo, hi = drop_ci
    if hi <= tolerance + TOLERANCE_EPS:
        return "within"
    if lo > tolerance + TOLERANCE_EPS:
        return "beyond"
    return "undecided"


def paired_accuracy(
    reference: Sequence[dict], variant: Sequence[dict], tolerance: float, level: float = LEVEL
) -> dict:
    """The variant against its reference on the same questions: the four counts, the drop with its
    interval, the McNemar p-value, the share of differing answers (with its Wilson interval), the
    verdict at `tolerance` and the questions that tolerance needs at the observed disagreement."""
    pairs = pair_by_question(reference, variant)
    n = len(pairs)
    if n == 0:
        raise ValueError("paired accuracy: no questions")
    b = sum(r["correct"] and not v["correct"] for r, v in pairs)
    c = sum(v["correct"] and not r["correct"] for r, v in pairs)
    both = sum(r["correct"] and v["correct"] for r, v in pairs)
    differ = sum(r.get("answer") != v.get("answer") for r, v in pairs)
    drop_ci = list(paired_difference_interval(b, c, n, level))
    return {
        "n": n,
        "both_correct": int(both),
        "reference_only": int(b),
        "variant_only": int(c),
        "neither": int(n - both - b - c),
        "drop": (b - c) / n,
        "drop_ci": drop_ci,
        "mcnemar_p": mcnemar_exact_p(int(b), int(c)),
        "discordant_share": (b + c) / n,
        "answers_differ": int(differ),
        "answers_differ_share": differ / n,
        "answers_differ_ci": list(wilson_interval(int(differ), n, level)),
        "verdict": verdict(drop_ci, tolerance),
        "questions_needed": questions_needed((b + c) / n, tolerance, level),
    }
