"""The caveats and counts of summary.md / summary.json that come from the run directory rather than
from the accuracy numbers: D_pref (random, or an IRT fit that warned) and the DPO pairs behind the
aligned teacher, this run's or, for a reused teacher, the other run's (with its origin); the test
questions evaluated against those requested; and the questions the contamination guard dropped.

Rules (docs/method.md, "What the summary flags"):
- a handful of DPO pairs: fewer than SMALL_PAIRS per task the teacher was aligned on;
- a reused teacher carries its run's D_pref and pair caveats, prefixed "aligned teacher's run";
- a smaller test set: a task evaluated on fewer distinct test questions than requested
  (--evaluate.n_test, or fewer when the task has fewer left after the seeds and validation).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arte.stages.prefset import prefset_summary_lines
from common.records import RecordLog, read_json

SMALL_PAIRS = 50
"""DPO pairs per task below which the aligned teacher is flagged as aligned on a handful (paper: 50
question pairs per task, plus one rationale pair per question)."""
DONOR = "aligned teacher's run"


def aligning_run(run_path: Path) -> tuple[Path, dict | None]:
    """(the run directory whose pairs aligned this run's teacher, align/reused.json or None)."""
    path = run_path / "align" / "reused.json"
    if not path.is_file():
        return run_path, None
    reused = read_json(path)
    return Path(reused["reused_from"]), reused


def pair_lines(align_run: Path, where: str = "") -> list[str]:
    """A caveat when the teacher was aligned on fewer than SMALL_PAIRS DPO pairs on some task."""
    path = align_run / "pairs" / "dpo.jsonl"
    if not path.is_file():
        return []
    per_task = Counter(r.get("task", "?") for r in RecordLog(path))
    few = {t: n for t, n in per_task.items() if n < SMALL_PAIRS}
    if not few:
        return []
    listed = ", ".join(f"{t} {n}" for t, n in sorted(few.items()))
    return [
        f"{where}**the teacher was aligned on a handful of DPO pairs** ({listed}; under {SMALL_PAIRS} per "
        "task): what alignment changed says little about the method."
    ]


def origin_line(reused: Mapping[str, Any], cfg_teacher: str, cfg_student: str, tasks: Sequence[str]) -> str:
    """Where a reused teacher comes from, and what differs from this run (student, tasks, teacher)."""
    other = reused.get("other_run") or {}
    theirs_student = (other.get("student") or {}).get("model")
    theirs_teacher = (other.get("teacher") or {}).get("model")
    unseen = [t for t in tasks if t not in (other.get("tasks") or [])]
    diffs = []
    if theirs_student and theirs_student != cfg_student:
        diffs.append(f"aligned to student {theirs_student}, not this run's {cfg_student}")
    if unseen:
        diffs.append(f"tasks it never saw: {', '.join(unseen)}")
    if theirs_teacher and theirs_teacher != cfg_teacher:
        diffs.append(f"aligned from teacher {theirs_teacher}, while the original baseline uses {cfg_teacher}")
    said = "; ".join(diffs) if diffs else "same teacher, student and tasks"
    return (
        f"**the aligned teacher comes from another run** ({reused['reused_from']}, sha256 "
        f"{reused['sha256'][:12]}; {said}): its preferences are that run's student's, on that run's tasks."
    )


def teacher_lines(run_path: Path, cfg: Any, tasks: Sequence[Any]) -> list[str]:
    """The D_pref and pair caveats of the run that aligned the teacher (this one, for `tasks`; or the
    other run, for all of its tasks, then with its origin first)."""

    align_run, reused = aligning_run(run_path)
    if reused is None:
        return prefset_summary_lines(run_path, tasks) + pair_lines(run_path)
    where = f"{DONOR}: "
    lines = [origin_line(reused, cfg.teacher.model, cfg.student.model, [t.name for t in tasks])]
    lines += [where + line for line in prefset_summary_lines(align_run, None)]
    return lines + pair_lines(align_run, where)


def evaluated_test_sizes(
    records: Mapping[str, Sequence[Mapping[str, Any]]], requested: int
) -> dict[str, dict[str, int]]:
    """{task: {"requested", "evaluated"}}: distinct test questions evaluated per task (any variant)."""
    seen: dict[str, set[int]] = {}
    for recs in records.values():
        for r in recs:
            seen.setdefault(r["task"], set()).add(int(r["index"]))
    return {t: {"requested": requested, "evaluated": len(ix)} for t, ix in seen.items()}


def short_test_lines(sizes: Mapping[str, Mapping[str, int]], where: str = "") -> list[str]:
    """A caveat naming each task evaluated on fewer test questions than requested."""
    short = {t: s for t, s in sizes.items() if s["evaluated"] < s["requested"]}
    if not short:
        return []
    listed = "; ".join(f"{t} {s['evaluated']} of {s['requested']}" for t, s in short.items())
    return [
        f"{where}**fewer test questions than requested** ({listed}; --evaluate.n_test): those tasks had "
        "no more left after the seeds and validation questions, so their intervals are wider."
    ]


def contamination_counts(stages: Mapping[str, Any], run_path: Path) -> dict[str, Any]:
    """Questions the contamination guard dropped (`arte.stages.elicit.contamination`): drafts per task
    (elicit), training-set questions per task and set (generate), OOD test questions per task."""
    elicit = (stages.get("elicit") or {}).get("counts") or {}
    generate = (stages.get("generate") or {}).get("counts") or {}
    path = run_path / "evaluate" / "ood_overlap.json"
    return {
        "drafts": {t: c.get("split_overlap", 0) for t, c in elicit.items() if isinstance(c, dict)},
        "training": {
            t: {s: (c.get("questions") or {}).get("split_overlap", 0) for s, c in by_set.items()}
            for t, by_set in generate.items()
            if isinstance(by_set, dict)
        },
        "ood": read_json(path) if path.is_file() else {},
    }


def ood_overlap_lines(counts: Mapping[str, Any]) -> list[str]:
    """A caveat when out-of-domain test questions were left out as near-duplicates."""
    ood = {t: c for t, c in counts["ood"].items() if c["dropped"]}
    if not ood:
        return []
    listed = "; ".join(f"{t} {c['dropped']} left out, {c['kept']} evaluated" for t, c in ood.items())
    return [
        f"**out-of-domain test questions near-duplicated target-task or training questions** ({listed}): "
        "they were left out; the teacher may have written benchmark questions it had seen."
    ]


def contamination_lines(counts: Mapping[str, Any]) -> list[str]:
    """summary.md's Data lines: each count of the contamination guard ([] when nothing was checked)."""
    drafts = ", ".join(f"{t} {n}" for t, n in counts["drafts"].items())
    training = "; ".join(
        f"{t}: " + ", ".join(f"{s} {n}" for s, n in by_set.items())
        for t, by_set in counts["training"].items()
    )
    ood = ", ".join(f"{t} {c['dropped']}" for t, c in counts["ood"].items())
    named = (("drafts", drafts), ("training sets", training), ("out-of-domain tests", ood))
    return [f"- near-duplicates of held-out questions dropped from {k}: {v}" for k, v in named if v]
