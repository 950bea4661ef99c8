"""The human-readable text of a plan (`arte.commands.plan.build_plan`'s dict): markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _n(count: dict[str, Any]) -> str:
    low, high = count["low"], count["high"]
    if low == high:
        return f"{high:,}"
    return f"<= {high:,}" if low == 0 else f"{low:,}-{high:,}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def _task_lines(plan: dict[str, Any]) -> list[str]:
    t = plan["tasks"]
    lines = [f"- {r['name']}: validation {r['validation']}, test {r['test']}" for r in t["read"]]
    lines += [f"- {u['spec']}: not read ({u['reason']})" for u in t["unread"]]
    if t["unread"]:
        sizes = t["per_task_sizes"]
        lines.append(
            f"- so the counts are per task, at --n_validation {sizes['validation']} and --n_test "
            f"{sizes['test']}; multiply by the number of tasks"
        )
    return ["## Tasks", "", *lines, ""]


def _stage_lines(plan: dict[str, Any]) -> list[str]:
    rows = [
        [str(i), s["stage"], s["status"], ", ".join(s["reads"]) or "-", ", ".join(s["depends_on"])]
        for i, s in enumerate(plan["stages"], 1)
    ]
    return ["## Stages, in order", "", *_table(["#", "stage", "this config", "reads", "depends on"], rows)]


def _work_lines(plan: dict[str, Any]) -> list[str]:
    everything = plan["all_tasks"]
    head = ["stage", "what", "per task"]
    totals: dict[str, dict] = {}
    if everything:
        head.append(f"all {everything['tasks']} tasks")
        totals = {c["key"]: c for c in everything["counts"]}
    rows = []
    for c in plan["per_task"]:
        row = [c["stage"], c["what"], _n(c)]
        if everything:
            row.append(_n(totals[c["key"]]))
        rows.append(row + [c["formula"]])
    ood = plan["out_of_domain"]
    if ood:  # over every extra task: in the last column of counts
        rows.append([ood["stage"], ood["what"], *(["-"] if everything else []), _n(ood), ood["formula"]])
    lines = ["## Generations", "", *_table([*head, "how"], rows)]
    lines += [
        "Counts without `<=` assume elicit reaches its m questions (it gives up after max_calls_factor "
        "x m/5 calls); `<=` marks an upper bound (ties, drops, a budget not used up).",
        "",
    ]
    irt = plan["irt"]
    lines += [
        f"prefset: response matrix {irt['rows']} x {irt['columns']} (respondent rows x validation "
        f"questions), k {irt['k']} kept per task. {irt['verdict']}.",
        "",
    ]
    return lines


def _training_lines(plan: dict[str, Any]) -> list[str]:
    rows = [
        [
            t["stage"],
            t["set"],
            f"<= {t['examples']:,}",
            f"<= {t['tokens']:,}",
            f"<= {t['steps']:,}",
            str(t["effective_batch"]),
            t["tokens_formula"],
        ]
        for t in plan["training"]
    ]
    head = ["stage", "set", "examples", "tokens", "optimizer steps", "effective batch", "tokens at most"]
    over = "per task" if plan["training_per"] == "task" else f"over all {len(plan['tasks']['read'])} tasks"
    return [
        f"## Training (upper bounds {over}; steps on one process: divide by the processes)",
        "",
        *_table(head, rows),
    ]


def _paper_lines(plan: dict[str, Any]) -> list[str]:
    rows = [[d["flag"], d["value"], d["paper"], d["note"]] for d in plan["paper_differences"]]
    lines = ["## Differences from the paper (arXiv 2406.19227)", ""]
    lines += _table(["flag", "this config", "paper", "note"], rows) if rows else ["none", ""]
    open_ = ", ".join(f"{g['flag']} ({g['value']})" for g in plan["paper_not_given"])
    return lines + [f"Not given by the paper (this config's value): {open_}.", ""]


def render_plan(plan: dict[str, Any]) -> list[str]:
    """The plan as lines of markdown-ish text: tasks, stages, generations, training, the paper, memory
    and what would stop the run."""
    lines = [f"# arte plan: {plan['run_dir']} (no model loaded, nothing written)", ""]
    lines += _task_lines(plan) + _stage_lines(plan) + _work_lines(plan) + _training_lines(plan)
    lines += _paper_lines(plan)
    lines += ["## Memory", "", *plan["memory"], ""]
    problems = plan["problems"]
    lines += ["## Before the run can start", ""]
    lines += [f"- {p}" for p in problems] if problems else ["nothing found that would stop it"]
    lines += [f"- note: {n}" for n in plan["notes"]]
    return lines + [""]
