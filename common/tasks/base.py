"""What a task is: a description, labelled examples split into seeds / validation / test, an answer
normaliser and, optionally, an exact verifier that recomputes the answer from the question text."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from common.errors import UserError

AnswerKind = Literal["text", "choice", "number", "bool"]
"""How answers are normalised before comparison (see `common.tasks.answers.normalize_answer`)."""


@dataclass(frozen=True)
class Example:
    """One labelled example. `input` is the full question text shown to a model (multiple-choice
    options already rendered BBH-style, "Options:\\n(A) ..."); `target` the gold answer
    (the letter, for multiple choice); `rationale` optional written reasoning that ends in
    `<ans>target</ans>` (a JSONL record's "rationale" field), shown to the teacher as a worked example."""

    input: str
    target: str
    options: tuple[str, ...] = ()
    rationale: str = ""
    where: str = field(default="", compare=False)
    """Where it was read ("FILE:LINE"; empty for a generated one): named by errors about it."""


Verifier = Callable[[str, str], "bool | None"]
"""verify(question_text, answer) -> True/False, or None when the question cannot be parsed."""
Solver = Callable[[str], "str | None"]
"""solve(question_text) -> the exact answer, or None when the question cannot be parsed."""
Explainer = Callable[[str], "str | None"]
"""explain(question_text) -> a short step-by-step rationale ending in `<ans>answer</ans>`, or None."""


@dataclass
class Task:
    """A target task with reproducible splits.

    seeds: the 3 demonstrations given to the teacher (and the 3-shot evaluation prompts).
    validation: labelled questions the preference set D_pref is selected from (~100).
    test: held-out questions for evaluation.
    """

    name: str
    description: str
    seeds: list[Example]
    validation: list[Example]
    test: list[Example]
    answer_kind: AnswerKind = "text"
    verifier: Verifier | None = field(default=None, repr=False)
    source: str = "builtin"
    solver: Solver | None = field(default=None, repr=False)
    explainer: Explainer | None = field(default=None, repr=False)
    validation_source: str = ""
    """The file the validation split was read from ("" = cut from the task's own examples)."""
    validation_overlap: int = 0
    """Questions of that file dropped because a seed or test question is the same text."""

    def worked_rationale(self, example: Example) -> str | None:
        """Written reasoning for `example` (a seed): its own `rationale`, else the task's explainer;
        None when neither exists."""
        if example.rationale.strip():
            return example.rationale.strip()
        return self.explainer(example.input) if self.explainer is not None else None

    def demonstrations(self, shots: int, rationales: bool = True) -> list[tuple[str, str]]:
        """(question, rationale) of the first `shots` seeds, the k-shot evaluation's demonstrations in
        the format the student is trained on (`common.prompts.icl_prompt`): the seed's written
        reasoning (`worked_rationale`) ending in `<ans>target</ans>` where it has one and `rationales`
        is on, else only `<ans>target</ans>` (answer-only)."""
        from common.prompts import answer_only_rationale

        out = []
        for ex in self.seeds[:shots]:
            shown = self.worked_rationale(ex) if rationales else None
            out.append((ex.input, shown or answer_only_rationale(ex.target)))
        return out

    def demonstration_kind(self, shots: int, rationales: bool = True) -> str:
        """What the first `shots` demonstrations show: "with rationales", "answer-only", or "N of K with
        rationales" when only some seeds have written reasoning."""
        with_reasoning = sum(
            rationales and self.worked_rationale(ex) is not None for ex in self.seeds[:shots]
        )
        if with_reasoning == shots:
            return "with rationales"
        return "answer-only" if with_reasoning == 0 else f"{with_reasoning} of {shots} with rationales"

    def normalize(self, answer: str) -> str:
        from common.tasks.answers import normalize_answer

        return normalize_answer(answer, self.answer_kind)

    def is_correct(self, completion: str, target: str) -> bool:
        """True when the `<ans>` of `completion` matches `target` after normalisation."""
        from common.tasks.answers import extract_answer

        got = extract_answer(completion)
        return got is not None and self.normalize(got) == self.normalize(target)


def split_examples(
    examples: Sequence[Example],
    *,
    name: str,
    n_seeds: int = 3,
    n_validation: int = 100,
    n_test: int | None = None,
    seed: int = 0,
) -> tuple[list[Example], list[Example], list[Example]]:
    """Shuffle with a fixed seed and cut seeds / validation / test (test = the rest if None).

    Validation shrinks to what is left after seeds and at least a third for test, so small
    datasets still split; callers that need k validation questions check the size themselves.
    """
    if len(examples) < n_seeds + 2:
        raise UserError(
            f"task {name!r} has {len(examples)} examples; need at least {n_seeds + 2} "
            f"({n_seeds} seeds + validation + test). Add more labelled examples."
        )
    order = list(examples)
    random.Random(seed).shuffle(order)
    seeds, rest = order[:n_seeds], order[n_seeds:]
    n_val = min(n_validation, len(rest) - max(1, len(rest) // 3))
    validation, test = rest[:n_val], rest[n_val:]
    if n_test is not None:
        test = test[:n_test]
    return seeds, validation, test
