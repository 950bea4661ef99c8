"""Out-of-domain evaluation (paper, Table 3): tasks that played no part in drafting, scoring,
aligning or training (`--evaluate.extra_tasks`), answered by every student of the run.

They are loaded like the run's tasks (built-in names, JSONL/JSON files, directories, `hf:` specs;
split with the run's --seed and --n_test, into 3 seeds and test questions: no validation split, as
nothing is selected or scored on them) and checked before the run directory is created: a name
shared with --tasks is refused (that task was trained on). Only the evaluate stage sees them: their
records go to evaluate/ood/VARIANT.jsonl, their data hashes into evaluate's provenance record
(`extra_task_hashes`), and their accuracies, with the same bootstrap intervals and paired
differences as the target tasks, into their own section of summary.md / summary.json.
Before evaluation, an OOD test question that near-duplicates a target task's question or a training
question (`arte.stages.elicit.contamination`) is left out, and counted (evaluate/ood_overlap.json,
summary.json's data.contamination).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from arte.run_config import RunConfig, load_run_tasks, task_hash
from arte.stages.elicit.contamination import split_guard
from arte.stages.evaluate.format_caveats import answer_format_checks
from arte.stages.evaluate.format_report import MARK_LEGEND, format_tables_markdown
from arte.stages.evaluate.stats import accuracy_table, format_table_markdown
from common.errors import UserError

if TYPE_CHECKING:
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

    return {t.name: task_hash(t) for t in load_extra_tasks(cfg)}


OVERLAP_FILE = "ood_overlap.json"
"""evaluate/ood_overlap.json: the OOD test questions left out as near-duplicates, counted per task."""


def training_questions(run_path: Path) -> list[str]:
    """Every question of the run's training sets (generate/*.jsonl, rounds/rR/generate/*.jsonl)."""
    from common.records import RecordLog

    paths = sorted(run_path.glob("generate/*.jsonl")) + sorted(run_path.glob("rounds/*/generate/*.jsonl"))
    return [r["question"] for p in paths for r in RecordLog(p) if "question" in r]


def drop_ood_overlap(
    extra: list[Task], run_tasks: list[Task], trained: list[str]
) -> tuple[list[Task], dict[str, dict[str, Any]]]:
    """The OOD tasks without the test questions that near-duplicate a target task's question (seeds,
    validation, test) or a training question (`arte.stages.elicit.contamination`), and per task
    {"dropped", "by": {rule: count}, "kept"}."""
    import dataclasses

    guard = split_guard(run_tasks)
    guard.extend(trained)
    kept_tasks, report = [], {}
    for task in extra:
        rules = [guard.match(ex.input) for ex in task.test]
        by = {rule: rules.count(rule) for rule in ("exact", "normalised", "ngram")}
        test = [ex for ex, rule in zip(task.test, rules) if rule is None]
        report[task.name] = {"dropped": len(task.test) - len(test), "by": by, "kept": len(test)}
        kept_tasks.append(dataclasses.replace(task, test=test))
    return kept_tasks, report


def ood_summary(
    cfg: RunConfig,
    records: dict[str, list[dict]],
    names: dict[str, str],
    tasks: list[Task] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """summary.json's "out_of_domain" part and summary.md's section for the OOD records, with the same
    answer-format checks as the target tasks (`arte.stages.evaluate.format_caveats`): tag-rate split,
    † marks and caveats (prefixed "out-of-domain: "; write_summary lists them with the others under
    "Read these numbers with care"). `tasks` gives the answer spaces (chance levels);
    a task not in it gets chance n/a."""
    from common.tasks.answer_space import task_answer_space

    table = accuracy_table(records, baseline="vanilla", n_boot=cfg.evaluate.n_boot, seed=cfg.seed)
    spaces = {t.name: task_answer_space(t) for t in tasks or []}
    fmt, marks, notes = answer_format_checks(records, spaces, table, where="out-of-domain: ")
    names_ = list(dict.fromkeys(r["task"] for recs in records.values() for r in recs))
    lines = [
        "## Out-of-domain tasks",
        "",
        f"Tasks no stage drafted, scored or trained on ({', '.join(names_)}; --evaluate.extra_tasks); the "
        "same intervals, paired differences and answer-format checks as above.",
        "",
        format_table_markdown(table, names, marks, MARK_LEGEND),
    ]
    lines += ["", "### Out-of-domain answer format", ""] + format_tables_markdown(fmt, names)
    return {"tasks": names_, "accuracy": table, "format": fmt, "caveats": notes}, lines
