"""ARTE step 2a: select the preference set D_pref, the k questions the student is scored on.

Scoring every draft on all ~100 validation questions is too costly (m * n * 100 generations), so the
paper keeps the k = 40 most *discriminative* ones: build a response matrix (rows = student-like
respondents, each model at 0/1/2/3 shots; columns = validation questions; 1 = correct), fit a
2-parameter logistic IRT model and keep the top-k questions by discrimination. The respondents (the
student, then `prefset.respondents`) answer one engine at a time into prefset/answers.jsonl
(`arte.stages.prefset.respondents`). With too few respondents, a degenerate matrix or a failed fit, a seeded
random k is used instead: the stage warns, TASK.json records why and what to add, and summary.md
says so (`fallback_summary_lines`). A fit that warns (EM not converged, parameters at a bound, fewer
than 30 respondents) keeps its IRT selection, but its warnings go to the log, TASK.json
("irt_warnings") and summary.md's caveats (`irt_warning_lines`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from arte.backends import BackendConfig, SamplingParams
from arte.run_dir import RunDir
from arte.stages.prefset.respondents import (
    ANSWERS,
    AnswerKey,
    collect_answers,
    respondent_configs,
    respondent_id,
)
from arte.stages.stage import PlanCount, Stage, TaskSize, student_if_local
from common.config import opt
from common.errors import UserError
from common.prompts import STUDENT_STOP
from common.records import RecordLog, read_json, write_json_atomic
from common.tasks.base import Task

if TYPE_CHECKING:
    from arte.run_config import RunConfig


log = logging.getLogger(__name__)


@dataclass
class PrefsetConfig:
    """Preference-set selection (ARTE step 2, D_pref)."""

    k: int = opt(40, "Questions kept in D_pref (paper: k = 40 of ~100 validation questions).")
    shots: list[int] = opt([0, 1, 2, 3], "Shot settings per respondent model (rows of the response matrix).")
    respondents: list[BackendConfig] = opt(
        [],
        "Student-like models that answer the validation questions too (rows of the IRT response matrix; "
        "the student is always the first). Each is an engine section like student's: {name, model, ...}; "
        "in YAML a list of mappings, on the command line a YAML flow list, e.g. "
        "'[{name: hf, model: google/gemma-2b}]'. The paper: 5 models x 4 shot settings = 20 rows.",
    )
    extra_respondents: list[str] = opt(
        [],
        "Shorthand for respondents on the student's engine and options: just the models (asked after the "
        "student, before prefset.respondents).",
    )
    respondent_process: Literal["auto", "in_process", "subprocess"] = opt(
        "auto",
        "Where each respondent runs: in_process (loaded, used, closed and freed before the next), "
        "subprocess (a process of its own that writes its answers to prefset/answers.jsonl), auto "
        "(subprocess for vllm, which may not free GPU memory inside a process; in_process otherwise).",
    )
    demo_sets: int = opt(
        1,
        "Demonstration sets per shot setting (1-3): each k-shot setting (k >= 1) is asked again with the "
        "seeds rotated, so one model gives more respondent rows (1 + 3 * 3 = 10 at 3).",
    )
    min_respondents: int = opt(8, "Below this many respondent rows the IRT fit is skipped (random k).")
    max_new_tokens: int = opt(128, "Decode budget per respondent answer.")

    RUNTIME_ONLY = ("respondent_process",)
    """Fields that change where respondents run, not what they answer (`arte.provenance`)."""

    def __post_init__(self) -> None:
        for i, r in enumerate(self.respondents):
            if not isinstance(r, BackendConfig) or not r.model:
                raise ValueError(
                    f"--prefset.respondents entry {i} must be an engine section with a model, "
                    f"e.g. {{name: hf, model: google/gemma-2b}}; got {r!r}"
                )
        if self.k < 1:
            raise ValueError(f"--prefset.k must be >= 1, got {self.k}")
        if not 1 <= self.demo_sets <= 3:
            raise ValueError(
                f"--prefset.demo_sets must be 1, 2 or 3 (a task has 3 seeds), got {self.demo_sets}"
            )
        if not self.shots or any(s < 0 or s > 3 for s in self.shots):
            raise ValueError(f"--prefset.shots must be within 0..3 (a task has 3 seeds), got {self.shots}")
        if self.min_respondents < 1 or self.max_new_tokens < 1:
            raise ValueError(
                f"--prefset.min_respondents and --prefset.max_new_tokens must be >= 1, "
                f"got {self.min_respondents} and {self.max_new_tokens}"
            )


def check_task_sizes(task: Task, k: int) -> None:
    """Refuse a task that cannot support the pipeline, saying what is missing."""
    if len(task.seeds) < 3:
        raise UserError(
            f"task {task.name!r} has {len(task.seeds)} seed examples; ARTE needs 3. Add labelled examples."
        )
    if len(task.validation) < k:
        raise UserError(
            f"task {task.name!r} has {len(task.validation)} validation questions but --prefset.k is {k}: "
            f"add labelled examples (or lower --prefset.k)."
        )


def respondent_settings(shots: Sequence[int], demo_sets: int) -> list[tuple[int, int]]:
    """(shots, rotation) pairs: rotation r shows seeds r, r+1, ... (0-shot has a single setting)."""
    return [(s, r) for s in shots for r in range(demo_sets if s > 0 else 1)]


def select_pref_set(
    task: Task,
    answers: dict[AnswerKey, str],
    respondents: Sequence[str],
    settings: Sequence[tuple[int, int]],
    cfg: PrefsetConfig,
    *,
    seed: int = 0,
) -> dict:
    """The response matrix of `task` (a row per respondent and setting, 1 = correct), the k
    selected questions; returns a JSON-able record (indices, method, reason, advice)."""
    import numpy as np

    from arte.stages.prefset.irt import select_discriminative_questions

    check_task_sizes(task, cfg.k)
    matrix, names = [], []
    for rid in respondents:
        for s, r in settings:
            texts = [answers[(rid, task.name, s, r, i)] for i in range(len(task.validation))]
            matrix.append([int(task.is_correct(t, ex.target)) for t, ex in zip(texts, task.validation)])
            names.append(f"{rid}@{s}shot/r{r}")
    responses = np.array(matrix, dtype=float)
    sel = select_discriminative_questions(responses, cfg.k, seed=seed, min_respondents=cfg.min_respondents)
    advice = "" if sel.method == "irt" else fallback_advice(len(respondents), len(settings), cfg)
    for warning in sel.fit.warnings if sel.fit is not None else []:
        log.warning("task %s: IRT fit of D_pref: %s", task.name, warning)
    if sel.method != "irt":
        log.warning(
            "task %s: D_pref is a RANDOM %d questions, not IRT-selected: %s. %s",
            task.name,
            cfg.k,
            sel.reason,
            advice,
        )
    return {
        "task": task.name,
        "indices": [int(i) for i in sel.indices],
        "method": sel.method,
        "reason": sel.reason,
        "advice": advice,
        "notes": sel.notes,
        "irt_warnings": list(sel.fit.warnings) if sel.fit is not None else [],
        "irt_converged": sel.fit.converged if sel.fit is not None else None,
        "discrimination": sel.discrimination,
        "respondents": names,
        "respondent_accuracy": [round(float(r.mean()), 3) for r in responses],
        "responses": matrix,
    }


def fallback_advice(n_models: int, n_settings: int, cfg: PrefsetConfig) -> str:
    """What to add so that the next run fits IRT: more respondent rows than `cfg.min_respondents`."""
    return (
        f"The matrix had {n_models} respondent model(s) x {n_settings} shot setting(s) = "
        f"{n_models * n_settings} rows (IRT needs >= {cfg.min_respondents} that differ): list "
        "student-like models under prefset.respondents (the paper: 5 models x 0/1/2/3 shots = 20 rows, "
        "configs/paper.yaml) or rotate the demonstrations (prefset.demo_sets 3)"
    )


def prefset_records(run_path: Path, tasks: Sequence[Task] | None = None) -> list[tuple[str, dict]]:
    """(task name, prefset/TASK.json) of `tasks` that have one; every task there when None (another
    run's, whose Task objects this run does not load)."""
    folder = run_path / "prefset"
    names = [t.name for t in tasks] if tasks is not None else sorted(p.stem for p in folder.glob("*.json"))
    recs = [(n, read_json(folder / f"{n}.json")) for n in names if (folder / f"{n}.json").is_file()]
    return [(n, rec) for n, rec in recs if "method" in rec]  # not done.json, started.json


def fallback_summary_lines(run_path: Path, tasks: Sequence[Task] | None) -> list[str]:
    """summary.md's caveat for the tasks whose D_pref is random (from prefset/TASK.json); [] if none."""
    random, advice = [], ""
    for name, rec in prefset_records(run_path, tasks):
        if rec.get("method", "irt") != "irt":
            random.append(f"{name}: {rec.get('reason', '')}")
            advice = advice or rec.get("advice", "")
    if not random:
        return []
    return [
        f"**D_pref is a random sample, not IRT-selected** ({'; '.join(random)}): draft scores are "
        f"accuracies on arbitrary validation questions, not the most discriminative ones. {advice}."
    ]


def irt_warning_lines(run_path: Path, tasks: Sequence[Task] | None) -> list[str]:
    """summary.md's caveat for the tasks whose D_pref was IRT-selected by a fit that warned (EM not
    converged, parameters at a bound, fewer than 30 respondents: prefset/TASK.json's
    "irt_warnings"); [] if none."""
    warned = [
        f"{name}: {'; '.join(rec['irt_warnings'])}"
        for name, rec in prefset_records(run_path, tasks)
        if rec.get("method") == "irt" and rec.get("irt_warnings")
    ]
    if not warned:
        return []
    return [
        f"**D_pref was IRT-selected from a fit that warned** ({' | '.join(warned)}): its discrimination "
        "ranking is uncertain, so D_pref may be little better than a random sample."
    ]


def prefset_summary_lines(run_path: Path, tasks: Sequence[Task] | None) -> list[str]:
    """Every caveat about D_pref (random fallback, IRT warnings) for summary.md and summary.json."""
    return fallback_summary_lines(run_path, tasks) + irt_warning_lines(run_path, tasks)


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """prefset/TASK.json per task: the D_pref indices, the method (irt | random) and why. The
    respondents answer first, one engine at a time, into prefset/answers.jsonl (`respondents`)."""
    out, counts = run_dir.stage("prefset"), {}
    RecordLog(out / ANSWERS, resume=True)  # a re-run mends a last line cut short, even with nothing to do
    todo = [t for t in tasks if not (out / f"{t.name}.json").exists()]  # per-task resume
    for task in todo:
        check_task_sizes(task, cfg.prefset.k)
    if todo:
        respondents = respondent_configs(cfg.student, cfg.prefset)
        settings = respondent_settings(cfg.prefset.shots, cfg.prefset.demo_sets)
        params = SamplingParams(max_new_tokens=cfg.prefset.max_new_tokens, temperature=0.0, stop=STUDENT_STOP)
        log.info(
            "prefset: %d respondent model(s) x %d setting(s) = %d rows, one engine at a time",
            len(respondents),
            len(settings),
            len(respondents) * len(settings),
        )
        answers = collect_answers(respondents, todo, settings, params, out, cfg.prefset.respondent_process)
        names = [respondent_id(r) for r in respondents]
        for task in todo:
            rec = select_pref_set(task, answers, names, settings, cfg.prefset, seed=cfg.seed)
            write_json_atomic(out / f"{task.name}.json", rec)
    for task in tasks:
        rec = read_json(out / f"{task.name}.json")
        counts[task.name] = {
            "k": len(rec["indices"]),
            "method": rec["method"],
            "reason": rec["reason"],
            "irt_warnings": rec.get("irt_warnings", []),
        }
    return counts


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """Every respondent row answers every validation question."""
    from arte.paper_settings import respondent_rows

    rows = respondent_rows(cfg)
    return [
        PlanCount.exact(
            "student generations",
            rows * size.validation,
            f"respondent rows {rows} x validation {size.validation}",
        )
    ]


STAGE = Stage(
    name="prefset",
    help="Step 2a: select the preference set D_pref (IRT on a response matrix, top-k).",
    run=run,
    depends_on=("seed", "student", "prefset"),
    reads=(),
    writes=("prefset/TASK.json", "prefset/answers.jsonl"),
    sections=("student", "prefset"),
    models=student_if_local,
    skipped_with_reused_teacher=True,
    in_rounds=True,
    plan_counts=plan_counts,
)
