"""Label balance: a training set's labels kept near the reference distribution (the task's seeds and
validation targets) by capping each label, never by relabelling. Questions over a full cap are
dropped and counted; the collection loop then samples more questions for the labels still short.

Cap of a label with reference share p: floor(N * (p + tolerance)); a label the references never
show (a new number, say) gets floor(N * tolerance), at least 1.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from common.tasks.answer_space import AnswerSpace


class LabelCaps:
    """Per-label caps for a set of `n` examples."""

    def __init__(self, space: AnswerSpace, n: int, tolerance: float):
        self.shares = space.distribution()
        self.n, self.tolerance = n, tolerance
        self.taken: Counter = Counter()

    def cap(self, label: str) -> int:
        share = self.shares.get(label)
        if share is None:
            return max(1, math.floor(self.n * self.tolerance))
        return max(1, math.floor(self.n * (share + self.tolerance) + 1e-9))

    def is_full(self, label: str) -> bool:
        return self.taken[label] >= self.cap(label)

    def take(self, label: str) -> None:
        self.taken[label] += 1


def balance_report(labels: Iterable[str], space: AnswerSpace) -> dict:
    """The kept labels' shares next to the reference's, and the largest gap in points."""
    kept = Counter(labels)
    total = sum(kept.values())
    ref = space.distribution()
    names = sorted(set(kept) | set(ref))
    shares = {k: kept[k] / total for k in names} if total else {}
    gap = max((abs(shares.get(k, 0.0) - ref.get(k, 0.0)) for k in names), default=0.0) if total else None
    top = dict(Counter(kept).most_common(6))
    return {
        "kept_labels": top,
        "reference_shares": {k: round(v, 3) for k, v in ref.items()} if len(ref) <= 12 else "many",
        "max_gap_points": None if gap is None else round(100 * gap, 1),
    }
