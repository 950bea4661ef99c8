"""Built-in procedural tasks modelled on BIG-Bench Hard: generated offline from a seed, any split size,
exact answers, and an exact verifier that recomputes the answer from the question text.

Each task is one module with NAME, DESCRIPTION, ANSWER_KIND, `generate(rng) -> Example`,
`verify(question, answer) -> bool | None`, `solve(question) -> str | None` and `explain(question) ->
str | None` (a short step-by-step rationale, the teacher's worked example). The verifiers parse the
text themselves (no eval/exec), so they can check teacher-written questions and return None when a
question is not in the task's form.
"""

from __future__ import annotations

import random
from types import ModuleType

from common.errors import UserError, unknown_name
from common.tasks.base import Example, Task
from common.tasks.builtin import (
    boolean_expressions,
    multistep_arithmetic,
    navigate,
    object_counting,
    word_sorting,
)

_MODULES: dict[str, ModuleType] = {
    m.NAME: m for m in (boolean_expressions, multistep_arithmetic, navigate, object_counting, word_sorting)
}
BUILTIN_TASKS: dict[str, str] = {name: m.DESCRIPTION for name, m in _MODULES.items()}
"""Built-in task name -> description."""

_MAX_TRIES_PER_EXAMPLE = 200
MAX_SPLIT = 10_000
"""The most questions a built-in split is generated with (10,000 take ~0.5 s): the bound on
--n_validation and --n_test, checked before any question is drawn (1e8 used to hang for hours)."""


def _draw(module: ModuleType, rng: random.Random, n: int, seen: set[str], where: str) -> list[Example]:
    """n new examples from `rng`, skipping any question already in `seen` (and adding the new ones)."""
    out: list[Example] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > _MAX_TRIES_PER_EXAMPLE * (n + 1):
            raise UserError(
                f"built-in task {module.NAME!r}: could only make {len(out)} distinct {where} questions"
            )
        example = module.generate(rng)
        if example.input not in seen:
            seen.add(example.input)
            out.append(example)
    return out


def make_builtin_task(
    name: str, *, n_seeds: int = 3, n_validation: int = 100, n_test: int = 200, seed: int = 0
) -> Task:
    """A built-in task with seeds / validation / test drawn from disjoint RNG streams of `seed`.

    Later splits skip questions already used by earlier ones, so no test question repeats a seed or
    validation question. The same arguments always give the same task.
    """
    if name not in _MODULES:
        raise unknown_name("built-in task", name, _MODULES)
    module = _MODULES[name]
    for flag, n in (("--n_validation", n_validation), ("--n_test", n_test)):
        if n > MAX_SPLIT:
            raise UserError(
                f"built-in task {name!r}: {flag} {n} is more than the {MAX_SPLIT} questions a built-in "
                f"split is made with: lower {flag}"
            )
    seen: set[str] = set()
    splits = []
    for split, n in (("seeds", n_seeds), ("validation", n_validation), ("test", n_test)):
        rng = random.Random(f"arte-builtin:{name}:{seed}:{split}")
        splits.append(_draw(module, rng, n, seen, split))
    return Task(
        name=name,
        description=module.DESCRIPTION,
        seeds=splits[0],
        validation=splits[1],
        test=splits[2],
        answer_kind=module.ANSWER_KIND,
        verifier=module.verify,
        source="builtin",
        solver=module.solve,
        explainer=module.explain,
    )


def solve_builtin(name: str, question: str) -> str | None:
    """The exact answer to a question of built-in task `name` (None if unparsable). Used by the
    `fake` backend's simulated teacher and student, never on the evaluation path."""
    return _MODULES[name].solve(question)


def draw_builtin_questions(name: str, rng: random.Random, n: int) -> list[Example]:
    """`n` fresh questions of built-in task `name` from `rng` (may repeat across calls)."""
    return [_MODULES[name].generate(rng) for _ in range(n)]


__all__ = ["BUILTIN_TASKS", "draw_builtin_questions", "make_builtin_task", "solve_builtin"]
