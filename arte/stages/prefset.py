"""ARTE step 2a: select the preference set D_pref, the k questions the student is scored on.

Scoring every draft on all ~100 validation questions is too costly (m * n * 100 generations), so the
paper keeps the k = 40 most *discriminative* ones: build a response matrix (rows = student-like
respondents, each model at 0/1/2/3 shots; columns = validation questions; 1 = correct), fit a
2-parameter logistic IRT model and keep the top-k questions by discrimination. With too few
respondents or a degenerate matrix the fit means nothing; then a seeded random k is used and the
reason is logged and reported.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from arte.backends import BackendConfig, SamplingParams, load_backend
from common.config import opt
from common.errors import UserError
from common.prompts import STUDENT_STOP, answer_only_rationale, icl_prompt
from common.records import read_json, write_json_atomic
from common.tasks.base import Task

if TYPE_CHECKING:
    from arte.pipeline import RunConfig
    from arte.run_dir import RunDir

HELP = "Step 2a: select the preference set D_pref (IRT on a response matrix, top-k)."

DEPENDS_ON = ("seed", "student", "prefset")
"""The RunConfig fields this stage's files depend on (recorded in done.json: `arte.provenance`)."""
READS: tuple[str, ...] = ()
"""Files of earlier stages it reads, relative to the run directory."""

log = logging.getLogger(__name__)


@dataclass
class PrefsetConfig:
    """Preference-set selection (ARTE step 2, D_pref)."""

    k: int = opt(40, "Questions kept in D_pref (paper: k = 40 of ~100 validation questions).")
    shots: list[int] = opt([0, 1, 2, 3], "Shot settings per respondent model (rows of the response matrix).")
    extra_respondents: list[str] = opt(
        [], "More student-like models (same backend as the student) to widen the IRT response matrix."
    )
    demo_sets: int = opt(
        1,
        "Demonstration sets per shot setting (1-3): each k-shot setting (k >= 1) is asked again with the "
        "seeds rotated, so one model gives more respondent rows (1 + 3 * 3 = 10 at 3).",
    )
    min_respondents: int = opt(8, "Below this many respondent rows the IRT fit is skipped (random k).")
    max_new_tokens: int = opt(128, "Decode budget per respondent answer.")

    def __post_init__(self) -> None:
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


def respondent_rows(
    task: Task, backend, settings: Sequence[tuple[int, int]], max_new_tokens: int, call_size: int = 1
) -> list[list[int]]:
    """One row per (shots, rotation): 1 where `backend` answers the validation question correctly.
    Settings go to the backend together until a call holds `call_size` prompts (a batching engine
    then keeps its batch full; the stage resumes per task, so nothing is lost by bigger calls)."""
    from tqdm import tqdm

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=STUDENT_STOP)
    rows, n = [], len(task.validation)
    group = max(1, -(-call_size // max(1, n)))  # settings per call
    bar = tqdm(total=len(settings), desc=f"prefset {task.name}", unit="setting")
    for start in range(0, len(settings), group):
        prompts = []
        for s, r in settings[start : start + group]:
            seeds = task.seeds[r:] + task.seeds[:r]
            demos = [(ex.input, answer_only_rationale(ex.target)) for ex in seeds[:s]]
            prompts += [icl_prompt(task.description, demos, ex.input) for ex in task.validation]
        gens = backend.generate(prompts, params)
        for k in range(0, len(gens), n):
            rows.append(
                [int(task.is_correct(g.text, ex.target)) for g, ex in zip(gens[k : k + n], task.validation)]
            )
        bar.update(len(prompts) // max(1, n))
    bar.close()
    return rows


def select_pref_set(
    task: Task, student_cfg: BackendConfig, cfg: PrefsetConfig, *, seed: int = 0, student=None
) -> dict:
    """Build the response matrix, select k questions; returns a JSON-able record (indices, method, reason)."""
    import numpy as np

    from arte.stages.irt import select_discriminative_questions

    check_task_sizes(task, cfg.k)
    matrix, names = [], []
    models = [student_cfg.model, *cfg.extra_respondents]
    settings = respondent_settings(cfg.shots, cfg.demo_sets)
    for i, model in enumerate(models):
        reuse = student is not None and i == 0
        backend = student if reuse else load_backend(dataclasses.replace(student_cfg, model=model))
        try:
            matrix += respondent_rows(task, backend, settings, cfg.max_new_tokens, student_cfg.call_size)
        finally:
            if not reuse:
                backend.close()
        names += [f"{model}@{s}shot/r{r}" for s, r in settings]
    responses = np.array(matrix, dtype=float)
    sel = select_discriminative_questions(responses, cfg.k, seed=seed, min_respondents=cfg.min_respondents)
    if sel.method != "irt":
        log.warning("task %s: D_pref is a random %d questions: %s", task.name, cfg.k, sel.reason)
    return {
        "task": task.name,
        "indices": [int(i) for i in sel.indices],
        "method": sel.method,
        "reason": sel.reason,
        "notes": sel.notes,
        "discrimination": sel.discrimination,
        "respondents": names,
        "respondent_accuracy": [round(float(r.mean()), 3) for r in responses],
        "responses": matrix,
    }


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """prefset/TASK.json per task: the D_pref indices, the method (irt | random) and why."""
    out, counts = run_dir.stage("prefset"), {}
    student = load_backend(cfg.student)
    try:
        for task in tasks:
            path = out / f"{task.name}.json"
            if not path.exists():  # per-task resume
                write_json_atomic(
                    path, select_pref_set(task, cfg.student, cfg.prefset, seed=cfg.seed, student=student)
                )
            rec = read_json(path)
            counts[task.name] = {"k": len(rec["indices"]), "method": rec["method"], "reason": rec["reason"]}
    finally:
        student.close()
    return counts
