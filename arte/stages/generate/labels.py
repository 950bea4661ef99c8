"""The label of a drafted question: the task's exact solver where it has one (the teacher's own
target is then only checked), else the majority answer of several sampled rationales, counted only
inside the task's answer space (self-consistency).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from common.tasks.answer_space import AnswerSpace
from common.tasks.base import Task


@dataclass(frozen=True)
class Vote:
    """The outcome of a majority vote over normalised answers (None = no answer in the space)."""

    label: str | None
    votes: int
    answered: int


def majority(answers: Sequence[str | None], min_votes: int) -> Vote:
    """The most common answer when it has at least `min_votes` votes and no other answer has as
    many; else label None."""
    counts = Counter(a for a in answers if a is not None)
    answered = sum(counts.values())
    ranked = counts.most_common(2)
    if not ranked or ranked[0][1] < min_votes or (len(ranked) == 2 and ranked[1][1] == ranked[0][1]):
        return Vote(None, ranked[0][1] if ranked else 0, answered)
    return Vote(ranked[0][0], ranked[0][1], answered)


def solver_label(task: Task, space: AnswerSpace, question: str) -> str | None:
    """The solver's answer, normalised; None when the solver cannot read the question (or the task
    has no solver)."""
    if task.solver is None:
        return None
    answer = task.solver(question)
    return space.canonical(answer) if answer is not None else None


def uses_solver(task: Task, verify: bool) -> bool:
    """Whether labels of `task` come from its solver (`GenerateConfig.verify` and a solver exists)."""
    return verify and task.solver is not None
