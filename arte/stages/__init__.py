"""The pipeline's stages, one module each, in the order they run:

    elicit -> prefset -> score -> prefcheck -> pairs -> align -> generate -> gain -> train -> rounds
        -> evaluate

Every stage module holds its config dataclass (where it has one), `HELP` (its `arte STAGE --help`
line), its logic, and `run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict`, which
reads what earlier stages wrote and returns the counts recorded in `STAGE/done.json`, and
`DEPENDS_ON` / `READS`: the config fields and the earlier stages' files its own files are made from
(recorded in done.json and checked on every later command: `arte.provenance`). A module with
`TRAINS = True` also runs under `arte.train_launch` (every process of a launcher). Helpers that
serve one stage sit beside it: `draft_parsing` (elicit), `irt` (prefset), `training_set/`
(generate: question checks, labels, tag repair, label caps, the draw-until-enough loop),
`evaluate_stats`, `out_of_domain` and `summary` (evaluate).

Files, relative to the run directory:

    elicit/TASK.questions.jsonl, elicit/TASK.rationales.jsonl, elicit/drafts.jsonl
    prefset/TASK.json                      D_pref indices, method (irt | random) and why
    score/cache.jsonl, score/scores.jsonl  one scored draft per draft (cached by content hash)
    prefcheck/consistency.json             optional: best/worst rationale on D_pref vs the validation set
    pairs/dpo.jsonl                        question- and rationale-level DPO pairs
    align/teacher/                         the aligned teacher, merged, HF format (+ teacher-adapter/
                                           with LoRA, teacher-f16.gguf when it runs on llama.cpp);
                                           align/reused.json instead with --aligned_teacher_from
    generate/arte.jsonl, generate/original.jsonl   SFT data (tailored; original-teacher baseline)
    generate/{arte,original}/TASK.*.jsonl  each teacher's brainstorm calls, rationales, label check
    generate/VARIANT.jsonl, generate/VARIANT/   the ablations --variants names (question_only, ...)
    gain/scores.jsonl, gain/gain.json      a sample of both sets scored on D_pref; the preference gain
    train/VARIANT/                         the fine-tuned students (--variants), HF format
    rounds/rR/, rounds/rounds.json         iterative rounds 2..--rounds, each a run directory of its
                                           own (elicit ... gain, train/arte/); one record per round
    evaluate/VARIANT.jsonl, summary.md, summary.json
    evaluate/ood/VARIANT.jsonl             answers on the out-of-domain tasks (--evaluate.extra_tasks)

Importing this package imports the stage modules, which stay light: torch, transformers, trl and
the engines load inside `run` and the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from arte.stages import (
    align,
    elicit,
    evaluate,
    gain,
    generate,
    pairs,
    prefcheck,
    prefset,
    rounds,
    score,
    train,
)

if TYPE_CHECKING:
    from arte.pipeline import RunConfig
    from arte.run_dir import RunDir
    from common.tasks import Task

    StageRun = Callable[[RunConfig, RunDir, list[Task]], dict | None]

PIPELINE: tuple[ModuleType, ...] = (
    elicit,
    prefset,
    score,
    prefcheck,
    pairs,
    align,
    generate,
    gain,
    train,
    rounds,
    evaluate,
)
"""The stages in the order they run: the one list of them. The CLI's stage commands, their help,
the pipeline loop, `arte.train_launch` and the tests all derive from it."""


def stage_name(stage: ModuleType) -> str:
    """A stage's name: its module's ("arte.stages.elicit" -> "elicit")."""
    return stage.__name__.rsplit(".", 1)[1]


STAGE_NAMES: tuple[str, ...] = tuple(stage_name(s) for s in PIPELINE)
TRAINING_STAGES: tuple[str, ...] = tuple(stage_name(s) for s in PIPELINE if getattr(s, "TRAINS", False))


def get_stage(name: str) -> ModuleType:
    """The stage module called `name` (ValueError naming the stages if there is none)."""
    for stage in PIPELINE:
        if stage_name(stage) == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
