"""`arte plan` and `arte run --dry_run`: what a run config will do, before any GPU hour is spent.

The config goes through exactly the validation of `arte run` (the same dataclasses), then the plan
reads only what is cheap: the task files (built-in names and local paths; `hf:` datasets are not
downloaded), the run directory's records (done markers; stages made with another config, as
`arte.provenance.check_run_dir` finds them, asked so that it deletes nothing), and the model checks
`arte.stage_loop.check_models` makes without loading weights. No model, no torch, transformers or
llama_cpp is imported on this path (tests/test_plan.py checks `sys.modules`); nothing is written.

It prints the stages in order with their inputs (`READS`), config fields (`DEPENDS_ON`) and whether
this config runs them (`arte.stage_loop.not_needed`, `switched_off`, --variants); every stage's
generations per task (`arte.commands.plan_counts`); DPO pairs, training tokens and optimizer steps;
the settings where the config differs from the paper (`arte.paper_settings`); and what would stop
the run (a task file not found, a missing or placeholder model, recorded stages made with another
config). A task that cannot be read is reported, not fatal: its counts are per task, at the
config's sizes. Then one line of JSON for scripts (alone with --json).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import Any

from arte.commands.plan_counts import (
    TaskSize,
    irt_outlook,
    out_of_domain_count,
    task_counts,
    training_counts,
)
from arte.commands.plan_memory import memory_lines
from arte.commands.plan_render import render_plan
from arte.example_lengths import check_example_lengths
from arte.paper_settings import not_given, paper_differences
from arte.pipeline import run_pipeline_cli
from arte.provenance import check_run_dir
from arte.run_config import RunConfig, task_hash
from arte.run_dir import RunDir
from arte.stage_loop import check_models, not_needed, stages_to_run, switched_off
from arte.stages import PIPELINE
from arte.stages.align.teacher_reuse import other_align_dir
from arte.stages.evaluate.out_of_domain import load_extra_tasks
from arte.stages.prefset import check_task_sizes
from common.config import opt
from common.errors import UserError

PLAN_VERSION = 1
"""Version of the JSON line's layout."""


@dataclass
class PlanConfig(RunConfig):
    """`arte plan`: a run config (the options of `arte run`), shown as a plan."""

    json: bool = opt(False, "Print only the plan's one line of JSON (no human-readable text).")


@dataclass
class RunCommandConfig(RunConfig):
    """`arte run`: the run config, and --dry_run."""

    dry_run: bool = opt(
        False,
        "Print what this config will do (as `arte plan`: stages, generations, pairs, tokens, "
        "differences from the paper) and stop: no model is loaded and nothing is written.",
    )


def run_config(cfg: RunConfig) -> RunConfig:
    """The plain RunConfig of a command's config (its extra options left out)."""
    return RunConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)})


def read_tasks(cfg: RunConfig) -> tuple[list, list[dict[str, str]], list[str]]:
    """(tasks read, specs not read with why, problems) for --tasks, as `arte.run_config.load_run_tasks`
    loads and checks them; a spec that cannot be read is reported instead of raised."""
    from common.tasks import load_tasks

    tasks, unread, problems = [], [], []
    for spec in cfg.tasks:
        if spec.startswith("hf:"):
            unread.append({"spec": spec, "reason": "a Hugging Face dataset: the plan does not download it"})
            continue
        try:
            tasks += load_tasks([spec], n_validation=cfg.n_validation, n_test=cfg.n_test, seed=cfg.seed)
        except UserError as e:
            unread.append({"spec": spec, "reason": str(e)})
            problems.append(f"--tasks {spec}: {e}")
    seen: dict[str, str] = {}
    for task in tasks:
        if task.name in seen:
            problems.append(
                f"two tasks are named {task.name!r} ({seen[task.name]} and {task.source}); rename one"
            )
        seen[task.name] = task.source
        try:
            check_task_sizes(task, cfg.prefset.k)
        except UserError as e:
            problems.append(str(e))
    try:
        check_example_lengths(tasks, cfg)
    except UserError as e:
        problems.append(str(e))
    return tasks, unread, problems


def extra_task_sizes(cfg: RunConfig, tasks: list) -> tuple[list[TaskSize], list[str]]:
    """The --evaluate.extra_tasks as evaluate will see them (checked as the run checks them), or at
    --n_test each when they cannot be read here."""

    specs = cfg.evaluate.extra_tasks
    unread = [TaskSize(s, 0, cfg.n_test) for s in specs]
    if any(s.startswith("hf:") for s in specs):
        return unread, []
    try:
        return [TaskSize(t.name, 0, len(t.test)) for t in load_extra_tasks(cfg, tasks)], []
    except UserError as e:
        return unread, [str(e)]


def stage_rows(cfg: RunConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Each stage in order: what it reads, the config fields it depends on and what this config does
    with it; and the stages `arte run` would run now (a finished one is skipped on a re-run)."""
    run = RunDir(cfg.run_dir)
    skipped, off = not_needed(cfg), switched_off(cfg)
    rows = []
    for stage in PIPELINE:
        name = stage.name
        if name in skipped:
            status = f"not needed: {skipped[name]}"
        elif name in off:
            status = "switched off (its size is 0): runs, records that it skipped"
        elif run.is_done(name):
            status = f"done earlier in {run.path} (skipped on a re-run)"
        else:
            status = "runs" + (
                " (a training stage: accelerate launch -m arte.training.launch)" if stage.trains else ""
            )
        if stage.plan_note and name not in skipped:
            status += f"; {stage.plan_note(cfg)}"
        rows.append(
            {
                "stage": name,
                "reads": list(stage.reads),
                "depends_on": list(stage.depends_on),
                "status": status,
            }
        )
    return rows, stages_to_run(cfg, run, None, True)


PLACEHOLDER = "FILL-IN"
"""How configs/paper.yaml marks the models a user must fill in (a hub id to `check_models`)."""


def model_problems(cfg: RunConfig, stages: list[str]) -> list[str]:
    """The pipeline's own model checks for `stages` (no weights loaded), as problems, and the
    models still left as configs/paper.yaml's placeholder."""
    problems = [
        f"--{role}.model is still the placeholder {b.model!r}: give a hub id or a local path"
        for role, b in (("teacher", cfg.teacher), ("student", cfg.student))
        if PLACEHOLDER in b.model
    ]
    try:
        check_models(cfg, stages)
    except UserError as e:
        problems.append(str(e))
    return problems


def teacher_reuse_problems(cfg: RunConfig) -> list[str]:
    if not cfg.aligned_teacher_from:
        return []

    try:
        other_align_dir(cfg)
    except UserError as e:
        return [str(e)]
    return []


def recorded_stages(cfg: RunConfig, tasks: list, all_read: bool, to_run: list[str]) -> tuple[list, list]:
    """What `arte run` would say of the stages already in the run directory, as (problems, notes):
    made with another config or input, or damaged (`arte.provenance.check_run_dir`, asked as with
    --on_config_change stop, so that nothing is deleted); with --on_config_change redo the run goes
    on, deleting them, and that is a note. Needs every task read (their data hashes are compared)."""
    run = RunDir(cfg.run_dir)
    if not (all_read and run.path.is_dir()):
        return [], []

    hashes = {t.name: task_hash(t) for t in tasks}
    asked = dataclasses.replace(cfg, on_config_change="stop")
    try:
        check_run_dir(asked, run, hashes, rerun=set(to_run), only=None)
    except UserError as e:
        if cfg.on_config_change == "redo":
            return [], [f"--on_config_change redo: the run deletes and redoes what this says: {e}"]
        return [str(e)], []
    return [], []


def generation_counts(cfg: RunConfig, tasks: list, all_read: bool) -> tuple[list[dict], dict | None]:
    """Every stage's generations per task (at the config's sizes) and, when every task was read,
    summed over the tasks at their own sizes; stages this config does not need are left out."""
    skipped = set(not_needed(cfg))
    per_task = task_counts(cfg, TaskSize("per task", cfg.n_validation, cfg.n_test))
    keep = [i for i, c in enumerate(per_task) if c.stage not in skipped]
    if not (tasks and all_read):
        return [per_task[i].as_record() for i in keep], None
    by_task = [task_counts(cfg, TaskSize(t.name, len(t.validation), len(t.test))) for t in tasks]
    summed = [
        {
            **per_task[i].as_record(),
            "low": sum(counts[i].low for counts in by_task),
            "high": sum(counts[i].high for counts in by_task),
        }
        for i in keep
    ]
    return [per_task[i].as_record() for i in keep], {"tasks": len(tasks), "counts": summed}


def training_plan(cfg: RunConfig, n_tasks: int) -> list[dict[str, Any]]:
    """DPO and SFT over `n_tasks` tasks (no DPO when the aligned teacher is another run's)."""
    return training_counts(cfg, n_tasks)


def build_plan(cfg: RunConfig) -> dict[str, Any]:
    """The plan of `cfg` as one JSON-able dict (the JSON line; `render_plan` writes the text)."""
    tasks, unread, problems = read_tasks(cfg)
    stages, to_run = stage_rows(cfg)
    problems += teacher_reuse_problems(cfg) + model_problems(cfg, to_run)
    recorded, notes = recorded_stages(cfg, tasks, not unread, to_run)
    problems += recorded
    extra, extra_problems = extra_task_sizes(cfg, tasks)
    per_task, all_tasks = generation_counts(cfg, tasks, all_read=not unread)
    ood = out_of_domain_count(cfg, extra)
    return {
        "plan": PLAN_VERSION,
        "run_dir": cfg.run_dir,
        "ready": not (problems + extra_problems),
        "problems": problems + extra_problems,
        "notes": notes,
        "tasks": {
            "read": [{"name": t.name, "validation": len(t.validation), "test": len(t.test)} for t in tasks],
            "unread": unread,
            "per_task_sizes": {"validation": cfg.n_validation, "test": cfg.n_test},
        },
        "stages": stages,
        "stages_to_run": to_run,
        "irt": irt_outlook(cfg),
        "per_task": per_task,
        "all_tasks": all_tasks,
        "out_of_domain": ood.as_record() if ood else None,
        "training": training_plan(cfg, len(tasks) if all_tasks else 1),
        "training_per": "all tasks" if all_tasks else "task",
        "paper_differences": paper_differences(cfg),
        "paper_not_given": not_given(cfg),
        "memory": memory_lines(cfg),
    }


def print_plan(cfg: RunConfig, json_only: bool = False) -> int:
    plan = build_plan(cfg)
    if not json_only:
        print("\n".join(render_plan(plan)))
    print(json.dumps(plan, separators=(",", ":")))
    if not plan["ready"]:  # exit 2, as the run itself would be refused
        n = len(plan["problems"])
        print(
            f"arte: error: the run cannot start: {n} problem{'s' * (n > 1)} (the plan's 'Before the run "
            f"can start'): {plan['problems'][0] if plan['problems'] else ''}",
            file=sys.stderr,
        )
        return 2
    return 0


def run_plan_cli(cfg: PlanConfig) -> int:
    """`arte plan`: print the plan of the run config (and its JSON line; only that with --json)."""
    return print_plan(run_config(cfg), json_only=cfg.json)


def run_cli(cfg: RunCommandConfig) -> int:
    """`arte run`: the pipeline, or with --dry_run its plan."""
    if cfg.dry_run:
        return print_plan(run_config(cfg))
    return run_pipeline_cli(run_config(cfg))
