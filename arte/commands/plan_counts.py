"""What a run config will cost, counted from the config alone: teacher and student generations per
task and stage, DPO pairs, training tokens and optimizer steps (`arte plan`, `arte run --dry_run`).

Every count is the stage's own (`Stage.plan_counts` and `Stage.plan_training`, declared beside the
code that makes it: elicit's m x n drafts and its brainstorm-call limits, prefset's respondent rows,
score's m x n x k, prefcheck's questions x n x n_validation, pairs' quantile split and cap,
generate's call budget, gain's 2 x n_examples x k, evaluate's students x shots x n_test, rounds'
repeats). Counts that depend on what the models write (questions the teacher gives up on, ties,
drops) are upper bounds, marked so. Here they are collected in pipeline order, with the IRT outlook
and evaluate's out-of-domain generations. Nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arte.paper_settings import respondent_models, respondent_rows
from arte.run_config import RunConfig
from arte.stages import PIPELINE
from arte.stages.evaluate import STAGE as EVALUATE
from arte.stages.evaluate import evaluated_students
from arte.stages.prefset.irt import FEW_RESPONDENTS
from arte.stages.stage import PlanCount, TaskSize

__all__ = ["Count", "TaskSize", "irt_outlook", "out_of_domain_count", "task_counts", "training_counts"]


@dataclass(frozen=True)
class Count:
    """One line of the plan: a stage's `PlanCount` with its stage and a stable key."""

    key: str
    """A stable name for scripts: "STAGE.what" ("score.student_generations")."""
    stage: str
    what: str
    low: int
    high: int
    formula: str

    @classmethod
    def of(cls, stage: str, c: PlanCount) -> Count:
        key = stage + "." + c.what.split(" (")[0].replace(",", "").replace("-", "_").replace(" ", "_")
        return cls(key, stage, c.what, c.low, c.high, c.formula)

    def as_record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stage": self.stage,
            "what": self.what,
            "low": self.low,
            "high": self.high,
            "formula": self.formula,
        }


def task_counts(cfg: RunConfig, size: TaskSize) -> list[Count]:
    """Every stage's generations and pairs for one task (`size`: its validation and test questions)."""
    return [Count.of(s.name, c) for s in PIPELINE if s.plan_counts for c in s.plan_counts(cfg, size)]


def training_counts(cfg: RunConfig, n_tasks: int) -> list[dict[str, Any]]:
    """Every training stage's sets over `n_tasks` tasks (DPO in align, one SFT per variant in train):
    examples, tokens and steps, all upper bounds (the pairs and the sets are at most their caps;
    every sequence at most max_length tokens). Steps are on one process; under accelerate divide by
    the processes."""
    return [
        {"stage": s.name, **row} for s in PIPELINE if s.plan_training for row in s.plan_training(cfg, n_tasks)
    ]


def irt_outlook(cfg: RunConfig) -> dict[str, Any]:
    """Whether the response matrix is big enough for the IRT fit (`irt.check_response_matrix`: fewer
    rows than --prefset.min_respondents falls back to a random k; below `irt.FEW_RESPONDENTS` the fit
    runs and warns)."""

    rows, minimum = respondent_rows(cfg), cfg.prefset.min_respondents
    models = respondent_models(cfg)
    plural = "s" * (models > 1)
    what = f"{rows} respondent rows ({models} model{plural} x {rows // models} (shots, rotation) settings)"
    if rows < minimum:
        verdict = (
            f"IRT will fall back to random: {what} < --prefset.min_respondents {minimum}; add "
            "--prefset.respondents or raise --prefset.demo_sets"
        )
    elif rows < FEW_RESPONDENTS:
        verdict = f"IRT fit runs, with a warning: {what} < {FEW_RESPONDENTS} (a loose ranking)"
    else:
        verdict = f"IRT fit runs: {what}"
    return {
        "rows": rows,
        "columns": cfg.n_validation,
        "k": cfg.prefset.k,
        "min_respondents": minimum,
        "few_respondents": FEW_RESPONDENTS,
        "verdict": verdict,
    }


def out_of_domain_count(cfg: RunConfig, sizes: list[TaskSize]) -> Count | None:
    """Evaluate's generations on the --evaluate.extra_tasks (every student, every shot setting)."""
    if not cfg.evaluate.extra_tasks:
        return None
    evaluated, shots = len(evaluated_students(cfg)), len(cfg.evaluate.shots)
    questions = sum(min(cfg.evaluate.n_test, s.test) for s in sizes)
    formula = (
        f"{evaluated} students x {shots} shot settings x {questions} test questions over "
        f"{len(sizes)} extra tasks"
    )
    what = "student generations, out-of-domain tasks"
    return Count.of(EVALUATE.name, PlanCount.exact(what, evaluated * shots * questions, formula))
