"""The paper's Table 2 ablations as training sets: each one mixes one teacher's questions with the
other teacher's rationales, through the same procedure as the arte and original sets (question
checks, labels, label caps, N per task: `collect`).

- question_only: the aligned teacher's questions, with rationales by the original teacher;
- rationale_only: the original teacher's questions, with rationales by the aligned teacher.

The questions are the ones the question teacher already drafted for its own set: its brainstorm log
(generate/SOURCE/TASK.questions.jsonl) is copied into generate/VARIANT/ and, only where the set needs
more questions, continued by that teacher with the same seeds (it is loaded only then). The
rationales are new calls of the other teacher with the naive prompt (greedy first, sampled where a
label needs them), logged in generate/VARIANT/TASK.rationales.jsonl, so the stage resumes. The call
budget (`generate.max_calls`) counts the copied brainstorm calls too, as it does for the source set.
Each row records `questions_by` and `rationales_by` (the set whose teacher wrote them).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from arte.backends import BackendConfig, load_backend
from arte.backends.streaming import generate_stream
from arte.stages.generate.collect import SEED_OFFSET, collect_training_set
from common.records import RecordLog

if TYPE_CHECKING:
    from arte.run_config import RunConfig
    from common.tasks.base import Task

ABLATIONS: dict[str, tuple[str, str]] = {
    "question_only": ("arte", "original"),
    "rationale_only": ("original", "arte"),
}
"""variant -> (the set whose teacher drafts its questions, the set whose teacher writes its rationales);
"arte" is the aligned teacher, "original" the original one."""
TRAINED_VARIANTS: tuple[str, ...] = ("original", "arte", *ABLATIONS)
"""Every student the train stage can make; `RunConfig.variants` picks among them."""


def check_variants(variants: list[str], original: str) -> None:
    """--variants: known names, each once, with the original and arte sets the ablations mix."""
    unknown = [v for v in variants if v not in TRAINED_VARIANTS]
    if unknown or len(set(variants)) < len(variants):
        raise ValueError(
            f"--variants must name distinct students among {', '.join(TRAINED_VARIANTS)}, got {variants}"
        )
    if not {"original", "arte"} <= set(variants):
        raise ValueError(
            f"--variants must include original and arte (the ablations mix their teachers' drafts, and "
            f"the summary compares with them), got {variants}"
        )
    if "rationale_only" in variants and original != "teacher":
        raise ValueError(
            "--variants rationale_only needs --generate.original teacher: its questions are the ones the "
            "original teacher drafts in the generate stage (with drafts there are none)"
        )


class LazyBackend:
    """A backend loaded on its first call (the question teacher of an ablation is often not needed)."""

    def __init__(self, cfg: BackendConfig):
        self.cfg, self.inner = cfg, None

    def _loaded(self):
        if self.inner is None:
            self.inner = load_backend(self.cfg)
        return self.inner

    def generate(self, prompts, params):
        return self._loaded().generate(prompts, params)

    def stream(self, prompts, params):
        """The engine's own stream where it has one (`arte.backends.streaming`), else its generate."""

        return generate_stream(self._loaded(), prompts, params, self.cfg.call_size)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def seed_questions(source_dir: Path, out: Path, task: Task) -> int:
    """Start out/TASK.questions.jsonl as a copy of the source set's brainstorm log (once; atomic).
    Returns the source log's calls (the ones this set did not make itself)."""
    target, source = out / f"{task.name}.questions.jsonl", source_dir / f"{task.name}.questions.jsonl"
    if not source.exists():
        return 0
    if not target.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".jsonl.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return len(RecordLog(source).read())


def ablation_set(
    cfg: RunConfig, variant: str, teachers: dict[str, BackendConfig], out: Path, tasks: list[Task]
) -> tuple[list[dict], dict]:
    """Every task's `variant` set (see module doc); `teachers`: the backend of "arte" and "original"."""
    from arte.stages.elicit import teacher_example

    questions_by, rationales_by = ABLATIONS[variant]
    rows, counts = [], {}
    question_teacher = LazyBackend(teachers[questions_by])
    rationale_teacher = load_backend(teachers[rationales_by])
    try:
        for task in tasks:
            copied = seed_questions(out.parent / questions_by, out, task)
            example, started = teacher_example(task, cfg.teacher_worked_example), time.time()
            got, report = collect_training_set(
                task,
                question_teacher,
                cfg.generate,
                out,
                source=variant,
                seed=cfg.seed + SEED_OFFSET,  # the source set's seeds: its questions, drawn on
                call_size=teachers[rationales_by].call_size,
                example=example,
                rationale_teacher=rationale_teacher,
            )
            for r in got:
                r.update(questions_by=questions_by, rationales_by=rationales_by)
            report.update(questions_by=questions_by, rationales_by=rationales_by)
            report["questions_copied_calls"] = copied
            report["questions_new_calls"] = report["questions"]["calls"] - copied  # by the question teacher
            report["seconds"] = round(time.time() - started, 1)
            rows += got
            counts[task.name] = report
    finally:
        rationale_teacher.close()
        question_teacher.close()
    return rows, counts


def size_mismatches(sizes: dict[str, dict[str, int]], wanted: int) -> list[str]:
    """One phrase per task whose trained sets are not all `wanted` examples: "TASK: arte 49,
    original 50 of 50" when they differ (the students then differ in the amount of data too), or
    "TASK: all 46 of 50" when they are matched but short."""
    out = []
    for task in dict.fromkeys(t for per_task in sizes.values() for t in per_task):
        got = {v: per_task.get(task, 0) for v, per_task in sizes.items()}
        if len(set(got.values())) > 1:
            out.append(f"{task}: {', '.join(f'{v} {n}' for v, n in got.items())} of {wanted}")
        elif any(n != wanted for n in got.values()):
            out.append(f"{task}: all {next(iter(got.values()))} of {wanted}")
    return out


def training_set_sizes(
    sets: dict[str, tuple[list[dict], dict]], tasks: list[Task]
) -> dict[str, dict[str, int]]:
    """{set: {task: rows}} of the sets the generate stage made ({set: (rows, counts)})."""
    return {
        n: {t.name: sum(r["task"] == t.name for r in rows) for t in tasks} for n, (rows, _) in sets.items()
    }
