"""Out-of-domain evaluation (paper, Table 3): tasks that played no part in drafting, scoring,
aligning or training (`--evaluate.extra_tasks`), answered by every student of the run.

They are loaded like the run's tasks (built-in names, JSONL/JSON files, directories, `hf:` specs;
split with the run's --seed and --n_test, into 3 seeds and test questions: no validation split, as
nothing is selected or scored on them) and checked before the run directory is created: a name
shared with --tasks is refused (that task was trained on). Only the evaluate stage sees them: their
records go to evaluate/ood/VARIANT.jsonl, their data hashes into evaluate's provenance record
(`extra_task_hashes`), and their accuracies, with the same bootstrap intervals and paired
differences as the target tasks, into their own section of summary.md / summary.json.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.errors import UserError

if TYPE_CHECKING:
    from arte.run_config import RunConfig
    from common.tasks import Task

FLAG = "--evaluate.extra_tasks"


def load_extra_tasks(cfg: RunConfig, run_tasks: list[Task] | None = None) -> list[Task]:
    """The out-of-domain tasks of `cfg`, checked against the run's tasks (`run_tasks`, loaded when
    not given) and the shot settings (UserError naming the flag and the fix)."""
    from common.tasks import load_tasks

    specs = cfg.evaluate.extra_tasks
    if not specs:
        return []
    try:
        tasks = load_tasks(specs, n_validation=0, n_test=cfg.n_test, seed=cfg.seed)  # nothing to select
    except UserError as e:
        raise UserError(f"{FLAG}: {e}") from None
    if run_tasks is None:
        from arte.run_config import load_run_tasks

        run_tasks = load_run_tasks(cfg)
    run_names = {t.name for t in run_tasks}
    for task in tasks:
        if task.name in run_names:
            raise UserError(
                f"{FLAG}: {task.name!r} is also a target task (--tasks): an out-of-domain task must play no "
                "part in drafting, scoring or training; remove it from one of the two lists"
            )
        if len(task.seeds) < max(cfg.evaluate.shots):
            raise UserError(
                f"{FLAG}: task {task.name!r} has {len(task.seeds)} seed examples, too few for "
                f"{max(cfg.evaluate.shots)}-shot evaluation (--evaluate.shots): add labelled examples"
            )
        if not task.test:
            raise UserError(f"{FLAG}: task {task.name!r} has no test questions left: add labelled examples")
    return tasks


def extra_task_hashes(cfg: RunConfig) -> dict[str, str]:
    """{task: data hash} of the out-of-domain tasks, for the evaluate stage's provenance record."""
    from arte.run_config import task_hash

    return {t.name: task_hash(t) for t in load_extra_tasks(cfg)}


def ood_summary(
    cfg: RunConfig, records: dict[str, list[dict]], names: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """summary.json's "out_of_domain" part and summary.md's section for the OOD records."""
    from arte.stages.evaluate.stats import accuracy_table, format_table_markdown

    table = accuracy_table(records, baseline="vanilla", n_boot=cfg.evaluate.n_boot, seed=cfg.seed)
    tasks = list(dict.fromkeys(r["task"] for recs in records.values() for r in recs))
    lines = [
        "## Out-of-domain tasks",
        "",
        f"Tasks no stage drafted, scored or trained on ({', '.join(tasks)}; --evaluate.extra_tasks); the "
        "same intervals and paired differences as above.",
        "",
        format_table_markdown(table, names),
    ]
    return {"tasks": tasks, "accuracy": table}, lines
