"""What a run config will cost, counted from the config alone: teacher and student generations per
task and stage, DPO pairs, training tokens and optimizer steps (`arte plan`, `arte run --dry_run`).

Every count follows the stage that makes it (read from the stage modules, which are not changed for
this): elicit's m x n drafts and its brainstorm-call limits, prefset's respondent rows
(`prefset.respondent_settings`) and the IRT minimum, score's m x n x k, prefcheck's questions x n x
n_validation, pairs' quantile split and cap (`pairs.split_quantiles`, `build_question_pairs`),
generate's call budget, gain's 2 x n_examples x k and evaluate's (variants + vanilla) x shots x
n_test. Counts that depend on what the models write (questions the teacher gives up on, ties, drops)
are upper bounds, marked so. Nothing here loads a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arte.paper_settings import respondent_models, respondent_rows
from arte.stages.elicit import QUESTIONS_PER_CALL
from arte.stages.training_set.ablations import ABLATIONS

if TYPE_CHECKING:
    from arte.pipeline import RunConfig


@dataclass(frozen=True)
class TaskSize:
    """A task as the plan counts it: its validation and test questions (the config's sizes when its
    file was not read)."""

    name: str
    validation: int
    test: int


@dataclass(frozen=True)
class Count:
    """One line of the plan: `low` to `high` (equal when exact) of `what`, and how it is computed."""

    key: str
    """A stable name for scripts: "STAGE.what" ("score.student_generations")."""
    stage: str
    what: str
    low: int
    high: int
    formula: str

    def as_record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stage": self.stage,
            "what": self.what,
            "low": self.low,
            "high": self.high,
            "formula": self.formula,
        }


def _key(stage: str, what: str) -> str:
    return stage + "." + what.split(" (")[0].replace(",", "").replace("-", "_").replace(" ", "_")


def exact(stage: str, what: str, n: int, formula: str) -> Count:
    return Count(_key(stage, what), stage, what, n, n, formula)


def at_most(stage: str, what: str, n: int, formula: str) -> Count:
    return Count(_key(stage, what), stage, what, 0, n, formula)


def question_pairs_at_most(cfg: RunConfig, questions: int) -> int:
    """Question-level pairs of one task at most: every (top, bottom) combination of the quantile split
    (`pairs.split_quantiles`: n = min(max(1, int(quantile x questions)), questions // 2) each side),
    capped by --pairs.max_question_pairs_per_task."""
    side = quantile_side(cfg, questions)
    return min(side * side, cfg.pairs.max_question_pairs_per_task)


def quantile_side(cfg: RunConfig, questions: int) -> int:
    """Questions in the top (and in the bottom) quantile, as `pairs.split_quantiles` takes them."""
    return min(max(1, int(cfg.pairs.quantile * questions)), questions // 2)


def rationale_pairs_at_most(cfg: RunConfig, questions: int) -> int:
    """One pair per question (its best against its worst rationale), none with a single strategy."""
    return questions if len(cfg.elicit.strategies) > 1 else 0


def irt_outlook(cfg: RunConfig) -> dict[str, Any]:
    """Whether the response matrix is big enough for the IRT fit (`irt.check_response_matrix`: fewer
    rows than --prefset.min_respondents falls back to a random k; below `irt.FEW_RESPONDENTS` the fit
    runs and warns)."""
    from arte.stages.irt import FEW_RESPONDENTS

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


def generate_teachers(cfg: RunConfig) -> list[str]:
    """The sets generate draws with new teacher calls: arte, original (unless it comes from the
    drafts), and each ablation --variants names."""
    sets = ["arte"] + (["original"] if cfg.generate.original == "teacher" else [])
    return sets + [v for v in cfg.variants if v in ABLATIONS]


def evaluated_students(cfg: RunConfig) -> list[str]:
    """The students evaluate tests: vanilla, each --variants entry, each later round's (arte_rR)."""
    from arte.stages.rounds import round_variant

    return ["vanilla", *cfg.variants, *(round_variant(r) for r in range(2, cfg.rounds + 1))]


def task_counts(cfg: RunConfig, size: TaskSize) -> list[Count]:
    """Every stage's generations for one task (`size`: its validation and test questions)."""
    return preference_counts(cfg, size) + tailoring_counts(cfg, size) + round_counts(cfg)


def round_counts(cfg: RunConfig) -> list[Count]:
    """Rounds 2..N (`arte.stages.rounds`) for one task: each drafts m x n, scores m x n x k, and
    draws one tailored set (its baseline is the round before's, read back) plus the gain's scoring."""
    extra = cfg.rounds - 1
    if extra < 1:
        return []
    e, g, k = cfg.elicit, cfg.generate, cfg.prefset.k
    m, n = e.m, len(e.strategies)
    teacher = extra * (m * n + g.max_calls)
    student = extra * (m * n * k + 2 * cfg.gain.n_examples * k)
    return [
        at_most(
            "rounds",
            "teacher generations",
            teacher,
            f"{extra} rounds x (m {m} x n {n} drafts + max_calls {g.max_calls}) (+ brainstorm calls)",
        ),
        exact(
            "rounds",
            "student generations",
            student,
            f"{extra} rounds x (m x n x k {m * n * k} + gain 2 x {cfg.gain.n_examples} x k {k})",
        ),
    ]


def preference_counts(cfg: RunConfig, size: TaskSize) -> list[Count]:
    """Steps 1-3a for one task: elicit, prefset, score, prefcheck, pairs."""
    e = cfg.elicit
    m, n, k, rows = e.m, len(e.strategies), cfg.prefset.k, respondent_rows(cfg)
    per_call, factor = QUESTIONS_PER_CALL, e.max_calls_factor
    calls_max = max(1, round(m / per_call * factor))
    checked = cfg.prefcheck.questions
    return [
        Count(
            "elicit.teacher_brainstorm_calls",
            "elicit",
            "teacher brainstorm calls",
            math.ceil(m / per_call),
            calls_max,
            f"m/{per_call} .. m/{per_call} x max_calls_factor {factor:g}",
        ),
        exact("elicit", "teacher rationales (drafts)", m * n, f"m {m} x n {n} strategies"),
        exact(
            "prefset",
            "student generations",
            rows * size.validation,
            f"respondent rows {rows} x validation {size.validation}",
        ),
        exact("score", "student generations", m * n * k, f"m {m} x n {n} x k {k}"),
        exact(
            "prefcheck",
            "student generations",
            checked * n * size.validation,
            f"questions {checked} x n {n} x validation {size.validation}",
        ),
        at_most("pairs", "question-level pairs", question_pairs_at_most(cfg, m), pairs_formula(cfg, m)),
        at_most("pairs", "rationale-level pairs", rationale_pairs_at_most(cfg, m), "one per question (m)"),
    ]


def tailoring_counts(cfg: RunConfig, size: TaskSize) -> list[Count]:
    """Step 4 and after for one task: generate's call budget, gain, evaluate."""
    g, k = cfg.generate, cfg.prefset.k
    teachers = generate_teachers(cfg)
    checked = sum(s in ("arte", "original") for s in teachers) if g.label_check else 0  # not the ablations
    calls = len(teachers) * g.max_calls + checked * min(g.label_check, size.validation) * g.samples
    calls_formula = f"{len(teachers)} sets ({', '.join(teachers)}) x max_calls {g.max_calls}"
    if checked:
        calls_formula += f" + label check {g.label_check} x samples {g.samples} x {checked} sets"
    students, shots = len(evaluated_students(cfg)), len(cfg.evaluate.shots)
    n_eval = min(cfg.evaluate.n_test, size.test)
    return [
        at_most("generate", "teacher generations", calls, calls_formula),
        at_most("generate", "examples kept per set", g.n_examples, "n_examples"),
        exact(
            "gain",
            "student generations",
            2 * cfg.gain.n_examples * k,
            f"2 sets x n_examples {cfg.gain.n_examples} x k {k}",
        ),
        exact(
            "evaluate",
            "student generations",
            students * shots * n_eval,
            f"{students} students ({', '.join(evaluated_students(cfg))}) x {shots} shot settings "
            f"x n_test {n_eval}",
        ),
    ]


def pairs_formula(cfg: RunConfig, questions: int) -> str:
    side, cap = quantile_side(cfg, questions), cfg.pairs.max_question_pairs_per_task
    return f"min({side} top x {side} bottom, max_question_pairs_per_task {cap})"


def optimizer_steps(items: int, batch_size: int, accumulation: int, epochs: float) -> int:
    """Optimizer steps of a trainer on one process: ceil(epochs x ceil(batches / accumulation))."""
    batches = math.ceil(items / batch_size)
    return math.ceil(epochs * math.ceil(batches / accumulation)) if items else 0


def training_counts(cfg: RunConfig, n_tasks: int) -> list[dict[str, Any]]:
    """DPO (align) and each variant's SFT (train) over `n_tasks` tasks: examples, tokens and steps,
    all upper bounds (the pairs and the sets are at most their caps; every sequence at most
    max_length tokens). Steps are on one process; under accelerate divide by the processes."""
    m, a, t = cfg.elicit.m, cfg.align, cfg.train
    pairs = n_tasks * (question_pairs_at_most(cfg, m) + rationale_pairs_at_most(cfg, m))
    out = [
        {
            "stage": "align",
            "set": "dpo pairs",
            "examples": pairs,
            "tokens": int(pairs * a.epochs * 2 * a.max_length),
            "tokens_formula": f"pairs x epochs {a.epochs:g} x 2 sequences x max_length {a.max_length}",
            "steps": optimizer_steps(pairs, a.batch_size, a.gradient_accumulation_steps, a.epochs),
            "effective_batch": a.batch_size * a.gradient_accumulation_steps,
        }
    ]
    for variant in cfg.variants:
        per_task = cfg.generate.n_examples
        if variant == "original" and cfg.generate.original == "drafts":
            per_task = min(per_task, m)  # the drafts baseline has at most elicit's m questions
        examples = n_tasks * per_task
        out.append(
            {
                "stage": "train",
                "set": variant,
                "examples": examples,
                "tokens": int(examples * t.epochs * t.max_length),
                "tokens_formula": f"examples x epochs {t.epochs:g} x max_length {t.max_length}",
                "steps": optimizer_steps(examples, t.batch_size, t.gradient_accumulation_steps, t.epochs),
                "effective_batch": t.batch_size * t.gradient_accumulation_steps,
            }
        )
    return out


def out_of_domain_count(cfg: RunConfig, sizes: list[TaskSize]) -> Count | None:
    """Evaluate's generations on the --evaluate.extra_tasks (every student, every shot setting)."""
    if not cfg.evaluate.extra_tasks:
        return None
    evaluated, shots = len(evaluated_students(cfg)), len(cfg.evaluate.shots)
    questions = sum(min(cfg.evaluate.n_test, s.test) for s in sizes)
    return exact(
        "evaluate",
        "student generations, out-of-domain tasks",
        evaluated * shots * questions,
        f"{evaluated} students x {shots} shot settings x {questions} test questions over "
        f"{len(sizes)} extra tasks",
    )
