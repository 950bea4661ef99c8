"""The answers a task admits, learnt from its labelled targets (seeds + validation): True/False,
option letters, numbers, a small closed set of words ("plausible"/"implausible"), or open text.

Labelling teacher data needs it twice: a majority vote counts only answers inside the space, and a
tag repair (`arte.stages.generate.tag_repair`) accepts only an answer inside it. The label
distribution of the same targets is what a training set is balanced to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.tasks.answers import normalize_answer, parse_number

if TYPE_CHECKING:
    from common.tasks.base import AnswerKind, Task

MAX_CLOSED_VALUES = 12
"""A text task whose targets take at most this many distinct values (each seen at least twice) has
a closed answer space; otherwise its space is open."""


@dataclass(frozen=True)
class AnswerSpace:
    """`kind` as the task's; `values` the closed set of normalised answers (empty = open); `integer`
    for number spaces whose targets are all whole numbers; `reference` the normalised label counts of
    the targets it was learnt from."""

    kind: AnswerKind
    values: frozenset[str] = frozenset()
    integer: bool = False
    reference: Counter = field(default_factory=Counter)

    @property
    def closed(self) -> bool:
        return bool(self.values)

    def canonical(self, answer: str) -> str | None:
        """The normalised answer if it lies in the space, else None."""
        text = normalize_answer(answer, self.kind)
        if not text:
            return None
        if self.kind == "number":
            value = parse_number(text)
            if value is None or (self.integer and value != value.to_integral_value()):
                return None
            return text
        if self.closed:
            return text if text in self.values else None
        return text

    def describe(self) -> str:
        if self.closed:
            return "{" + ", ".join(sorted(self.values)) + "}"
        return "integers" if self.kind == "number" and self.integer else f"open ({self.kind})"

    def distribution(self) -> dict[str, float]:
        """Share of each label among the reference targets."""
        total = sum(self.reference.values())
        return {k: v / total for k, v in sorted(self.reference.items())} if total else {}


def learn_answer_space(kind: AnswerKind, targets: Sequence[str]) -> AnswerSpace:
    """The space of a task of answer kind `kind` whose labelled targets are `targets`."""
    labels = Counter(normalize_answer(t, kind) for t in targets)
    if kind == "bool":
        return AnswerSpace(kind, frozenset({"true", "false"}), reference=labels)
    if kind == "choice":
        highest = max((ord(v) for v in labels if len(v) == 1 and v.isalpha()), default=ord("d"))
        letters = frozenset(chr(c) for c in range(ord("a"), max(highest, ord("b")) + 1))
        return AnswerSpace(kind, letters, reference=labels)
    if kind == "number":
        values = [parse_number(t) for t in targets]
        integer = all(v is not None and v == v.to_integral_value() for v in values)
        return AnswerSpace(kind, integer=integer, reference=labels)
    closed = len(labels) <= MAX_CLOSED_VALUES and all(n >= 2 for n in labels.values()) and len(targets) >= 6
    return AnswerSpace(kind, frozenset(labels) if closed else frozenset(), reference=labels)


def task_answer_space(task: Task) -> AnswerSpace:
    """`learn_answer_space` over the task's seeds and validation targets."""
    return learn_answer_space(task.answer_kind, [e.target for e in task.seeds + task.validation])
