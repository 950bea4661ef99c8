"""summary.md and summary.json of a run: the accuracy table with its intervals, the caveats a reader
needs next to those numbers, and where each training set's candidates went.

Caveats are written whenever they apply:
- a training set smaller than SMALL_SET, or two compared sets of very different sizes: a difference
  may come from the amount of data, not from alignment;
- a difference that the tag rates explain (format-explained, the same rule as the † marks:
  `arte.stages.evaluate.format_caveats`): it mostly measures the answer format (an untagged answer
  is scored wrong);
- a variant whose accuracy among its tagged answers sits at the guessing level (chance or majority
  class) on a task;
- the out-of-domain tasks' own format caveats (prefixed "out-of-domain: ");
- from the run directory (`arte.stages.evaluate.run_caveats`): a random D_pref or an IRT fit that
  warned, a handful of DPO pairs, a reused teacher's origin and its run's caveats, test sets smaller
  than --evaluate.n_test, out-of-domain questions left out as near-duplicates.
The rules are listed in docs/method.md ("What the summary flags").
Per task, the answer-format tables (`arte.stages.evaluate.format_report`) show the tag rate, the accuracy
among tagged answers and the guessing levels, and mark in the differences table each difference
that the tag rates explain.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages.align.alignment_report import alignment_markdown, alignment_summary
from arte.stages.evaluate import demonstration_kinds, demonstration_line
from arte.stages.evaluate.format_caveats import answer_format_checks, format_caveats, guess_caveats
from arte.stages.evaluate.format_report import MARK_LEGEND, format_tables_markdown
from arte.stages.evaluate.out_of_domain import ood_summary
from arte.stages.evaluate.run_caveats import (
    contamination_counts,
    contamination_lines,
    evaluated_test_sizes,
    ood_overlap_lines,
    short_test_lines,
    teacher_lines,
)
from arte.stages.evaluate.stats import accuracy_table, format_table_markdown
from arte.stages.generate.ablations import size_mismatches
from arte.stages.generate.size_match import size_match_lines
from arte.stages.prefcheck import consistency_markdown
from arte.stages.rounds import round_sets, rounds_info, rounds_markdown
from common.records import RecordLog, read_json, write_json_atomic

if TYPE_CHECKING:
    from common.tasks import Task

SMALL_SET = 50
"""Examples per task below which a trained variant is flagged as trained on a handful."""
SIZE_RATIO = 1.5
"""Two compared sets whose sizes differ by more than this factor are flagged."""
TRAINED = ("original", "arte")
DROPS = (
    "too_short",
    "too_long",
    "template",
    "fragment",
    "unverifiable",
    "no_agreeing_rationale",
    "no_majority",
    "over_cap",
)


def _count_lines(path: Path) -> int:
    return sum(1 for _ in RecordLog(path)) if path.exists() else 0


def training_sets(
    run_dir: RunDir, tasks: list[Task], variants: tuple[str, ...] | list[str] = TRAINED
) -> dict[str, dict[str, int]]:
    """Kept examples per trained variant and task (generate/VARIANT.jsonl)."""
    sizes: dict[str, dict[str, int]] = {}
    for v in variants:
        path = run_dir.path / "generate" / f"{v}.jsonl"
        rows = RecordLog(path).read() if path.exists() else []
        sizes[v] = {t.name: sum(1 for r in rows if r["task"] == t.name) for t in tasks}
    return sizes


def caveats(
    table: dict[str, Any], sizes: dict[str, dict[str, int]], fmt: dict[str, Any] | None = None
) -> list[str]:
    """The warnings that belong next to the accuracy numbers (see module doc); `fmt` is the
    format report (`arte.stages.evaluate.format_report.format_report`), when there is one."""
    out = []
    for v, per_task in sizes.items():
        small = {t: n for t, n in per_task.items() if n < SMALL_SET}
        if small:
            listed = ", ".join(f"{t} {n}" for t, n in small.items())
            out.append(
                f"**{v} was trained on a handful of examples** ({listed}; under {SMALL_SET} per task): "
                "its differences say little about the method."
            )
    a, o = sizes.get("arte", {}), sizes.get("original", {})
    uneven = [t for t in a if min(a[t], o.get(t, 0)) and max(a[t], o[t]) / min(a[t], o[t]) > SIZE_RATIO]
    if uneven:
        listed = ", ".join(f"{t} arte {a[t]} vs original {o[t]}" for t in uneven)
        out.append(f"**arte and original trained on different amounts of data** ({listed}).")
    return out + format_caveats(fmt) + guess_caveats(fmt)


def _size_notes(sizes: dict[str, dict[str, int]], wanted: int) -> list[str]:
    """The caveat for training sets of another size than --generate.n_examples per task."""

    short = size_mismatches(sizes, wanted)
    if not short:
        return []
    return [
        f"**training set sizes are not {wanted} per task** ({'; '.join(short)}): where they differ, so "
        "does the amount of data (--generate.size_match sample matches them)."
    ]


def _yield_rows(counts: dict[str, Any]) -> list[str]:
    """Markdown rows of the generate stage's per-task, per-teacher counts."""
    head = ["task", "set", "kept / wanted", "stop", "calls", "labels", "repaired", "teacher target ok"]
    head += list(DROPS) + ["balance gap (pts)", "vote check"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for task, by_set in counts.items():
        for name, c in by_set.items():
            sel = c.get("selection", {})
            kept = c.get("kept", 0)
            check = c.get("label_check") or {}
            vote = f"{check['agree']}/{check['labelled']} of {check['questions']}" if check else "-"
            labels = "solver" if sel.get("voted", 0) == 0 and c.get("stop") != "drafts" else "vote"
            cells = [
                task,
                name,
                f"{kept} / {c.get('wanted', '-')}",
                c.get("stop", "-"),
                c.get("teacher_calls", "-"),
            ]
            cells += [labels, sel.get("repaired", 0), f"{sel.get('teacher_target_agrees', 0)}/{kept}"]
            cells += [sel.get(k, 0) for k in DROPS]
            cells += [(c.get("balance") or {}).get("max_gap_points", "-"), vote]
            lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    return lines


def write_summary(
    cfg: RunConfig,
    run_dir: RunDir,
    tasks: list[Task],
    records: dict[str, list[dict]],
    ood_records: dict[str, list[dict]] | None = None,
    ood_tasks: list[Task] | None = None,
) -> dict:
    from common.tasks.answer_space import task_answer_space

    table = accuracy_table(records, baseline="vanilla", n_boot=cfg.evaluate.n_boot, seed=cfg.seed)
    spaces = {t.name: task_answer_space(t) for t in tasks}
    fmt, marks, format_notes = answer_format_checks(records, spaces, table)
    manifest = read_json(run_dir.path / "manifest.json")
    stages = dict(manifest.get("stages", {}))
    sizes = training_sets(run_dir, tasks, cfg.variants) | round_sets(run_dir)
    tested = evaluated_test_sizes(records, cfg.evaluate.n_test)
    contamination = contamination_counts(stages, run_dir.path)
    notes = caveats(table, sizes) + format_notes + _size_notes(sizes, cfg.generate.n_examples)
    notes += teacher_lines(run_dir.path, cfg, tasks)  # D_pref and pairs of the run that aligned the teacher
    notes += short_test_lines(tested) + ood_overlap_lines(contamination)
    reused = run_dir.path / "align" / "reused.json"  # arte.stages.align.teacher_reuse
    data = {
        "drafts": _count_lines(run_dir.path / "elicit" / "drafts.jsonl"),
        "pairs": _count_lines(run_dir.path / "pairs" / "dpo.jsonl"),
        "sft_examples": {v: sum(n.values()) for v, n in sizes.items()},
        "sft_examples_per_task": sizes,
        "generate": stages.get("generate", {}).get("counts", {}),
        "prefset": {  # none when the aligned teacher is another run's (arte.stages.align.teacher_reuse)
            t.name: read_json(path)["method"]
            for t in tasks
            if (path := run_dir.path / "prefset" / f"{t.name}.json").exists()
        },
        "aligned_teacher_from": read_json(reused) if reused.exists() else None,
        "test_questions": tested,
        "contamination": contamination,
    }
    alignment = alignment_summary(run_dir.path)
    path = run_dir.path / "prefcheck" / "consistency.json"
    consistency = read_json(path) if path.is_file() else None
    summary = {
        "accuracy": table,
        "demonstrations": demonstration_kinds(cfg.evaluate, tasks),
        "format": fmt,
        "alignment": alignment,
        "pref_consistency": consistency,
        "rounds": rounds_info(run_dir),
        "caveats": notes,
        "data": data,
        "stages": stages,
    }
    names = {v: f"{v} ({sum(sizes[v].values())} ex.)" for v in sizes}
    ood, ood_lines = ood_summary(cfg, ood_records, names, ood_tasks) if ood_records else (None, [])
    if ood:
        ood["test_questions"] = evaluated_test_sizes(ood_records, cfg.evaluate.n_test)
        summary["out_of_domain"] = ood
        notes += ood["caveats"] + short_test_lines(ood["test_questions"], "out-of-domain: ")
    write_json_atomic(run_dir.path / "summary.json", summary)
    lines = [f"# ARTE run: {run_dir.path}", ""]
    lines += [format_table_markdown(table, names, marks, MARK_LEGEND)]
    if demo_line := demonstration_line(summary["demonstrations"]):
        lines += [demo_line, ""]
    if notes:
        lines += ["### Read these numbers with care", ""] + [f"- {n}" for n in notes] + [""]
    lines += ood_lines
    lines += ["## Answer format and guessing levels", ""] + format_tables_markdown(fmt, names)
    lines += alignment_markdown(alignment) + rounds_markdown(summary["rounds"])
    lines += consistency_markdown(consistency)
    lines += ["## Data", ""]
    lines += [
        f"- drafts: {data['drafts']}; DPO pairs: {data['pairs']}",
        "- training examples per task: "
        + "; ".join(f"{v} {', '.join(f'{t} {n}' for t, n in per.items())}" for v, per in sizes.items()),
        f"- D_pref selection per task: {data['prefset']}",
        "- test questions per task (evaluated / requested): "
        + ", ".join(f"{t} {n['evaluated']} / {n['requested']}" for t, n in tested.items()),
    ]
    lines += contamination_lines(contamination)
    if matched := size_match_lines(data["generate"]):
        lines += ["- training examples per task before -> after size matching (--generate.size_match):"]
        lines += ["  " + line for line in matched]
    if data["aligned_teacher_from"]:
        r = data["aligned_teacher_from"]
        lines.append(f"- aligned teacher from another run: {r['reused_from']} (sha256 {r['sha256']})")
    lines += [""]
    if data["generate"]:
        lines += ["### Where the candidates went (generate)", ""] + _yield_rows(data["generate"]) + [""]
    lines += ["## Stage timings (s)", ""]
    lines += [f"- {name}: {info.get('seconds')}" for name, info in stages.items()]
    (run_dir.path / "summary.md").write_text("\n".join(lines) + "\n")
    return {"variants": list(records), "evaluated": {v: len(r) for v, r in records.items()}}
