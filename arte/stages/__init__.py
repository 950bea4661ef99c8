"""The pipeline's stages, in the order they run:

    elicit -> prefset -> score -> prefcheck -> pairs -> align -> generate -> gain -> train -> rounds
        -> evaluate

Each stage is a module or a package (the stage in `__init__.py`, its helpers beside it) that ends
with one `STAGE = Stage(...)` (`arte.stages.stage`): its name, help, `run(cfg, run_dir, tasks)`,
the config fields and earlier files its own files are made from, what it writes, the models it
loads, when a config switches it off, whether teacher reuse skips it, whether rounds repeat it, and
its `arte plan` counts. `PIPELINE` below is the one ordered list of them: the CLI's stage commands,
the stage loop (`arte.stage_loop`), provenance, rounds, teacher reuse, `arte plan`,
`arte.training.launch` and the tests all derive from it.

Files, relative to the run directory (each stage's `writes`):

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
                                           own (the stages declared in_rounds, then train/arte/)
    evaluate/VARIANT.jsonl, summary.md, summary.json
    evaluate/ood/VARIANT.jsonl             answers on the out-of-domain tasks (--evaluate.extra_tasks)

Importing this package imports the stage modules, which stay light: torch, transformers, trl and
the engines load inside `run` and the functions that need them.
"""

from __future__ import annotations

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
from arte.stages.stage import Stage

PIPELINE: tuple[Stage, ...] = (
    elicit.STAGE,
    prefset.STAGE,
    score.STAGE,
    prefcheck.STAGE,
    pairs.STAGE,
    align.STAGE,
    generate.STAGE,
    gain.STAGE,
    train.STAGE,
    rounds.STAGE,
    evaluate.STAGE,
)
"""The stages in the order they run: the one list of them."""

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE)
TRAINING_STAGES: tuple[str, ...] = tuple(s.name for s in PIPELINE if s.trains)


def get_stage(name: str) -> Stage:
    """The stage called `name` (ValueError naming the stages if there is none)."""
    for stage in PIPELINE:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
