"""ARTE step 4a: the aligned teacher writes the tailored training set; the original teacher writes
the baseline's the same way.

Per task and teacher, candidates are drawn until `n_examples` survive or `max_calls` generations are
spent (`arte.stages.generate.collect`): questions from the brainstorm prompt (temperature 1.0,
`generate.questions`), rationales from the *naive* prompt (the teacher picks its own strategy;
rationale 0 greedy, as in the paper, more sampled where a label needs them). Questions are checked
against the task's own (length, unfilled templates, fragments); labels come from the task's exact
solver where it has one (the teacher's target is only checked), else from a majority vote over
sampled rationales inside the task's answer space; untagged rationales whose final sentence states
an answer are repaired; labels are capped to the validation set's distribution. Every drop is
counted per task.

The baseline (`generate.original`): "teacher" runs the original teacher through exactly this
procedure, so the two sets differ only by alignment; "drafts" takes elicit's drafts with their
best-scoring rationale that agrees with the label (no new calls; at most elicit's m questions).

The ablations that `variants` names (paper, Table 2) mix the two teachers: question_only (aligned
questions, original rationales), rationale_only (the reverse): `arte.stages.generate.ablations`.

Last, every set is matched per task to the same size (`generate.size_match`, default a seeded sample
within each label down to the smallest set: `arte.stages.generate.size_match`).

The helpers beside this module, in the order a candidate meets them:

    question_checks -> labels (the task's solver, else a majority vote) -> tag_repair (rationales
    that agree; tags repaired where the final sentence states an answer) -> balance (label quotas)
    -> collect (draws until N examples are kept or the call budget is spent) -> size_match

Each counts what it drops, per task, in generate/done.json and the summary; `ablations` builds the
paper's mixed sets.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from arte.backends import BackendConfig, load_backend
from arte.backends.base import Backend
from arte.models import resolve_hf
from arte.run_dir import RunDir
from arte.stages.elicit import QuestionConfig
from arte.stages.generate.ablations import (
    ABLATIONS,
    ablation_set,
    size_mismatches,
    training_set_sizes,
)
from arte.stages.generate.collect import SEED_OFFSET, collect_training_set, draw_rationales, select
from arte.stages.generate.labels import majority
from arte.stages.generate.size_match import match_sizes
from arte.stages.generate.tag_repair import read_rationale
from arte.stages.score import ScoredDraft
from arte.stages.stage import PlanCount, Stage, TaskSize
from common.config import opt
from common.errors import UserError
from common.records import RecordLog, write_jsonl_atomic
from common.tasks.answer_space import task_answer_space
from common.tasks.base import Task

if TYPE_CHECKING:
    from arte.run_config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """Tailored data generation by the aligned teacher (ARTE step 4), and the baseline's data."""

    questions: QuestionConfig = opt(
        QuestionConfig(),
        "Brainstorm settings; m = questions drafted in the first round (later rounds are sized by the "
        "share kept so far).",
    )
    n_examples: int = opt(250, "Examples to keep per task and teacher (paper: ~250 per BBH task).")
    max_calls: int = opt(
        4000, "Call budget: teacher generations (brainstorm calls + rationales) per task and teacher."
    )
    rationale_max_new_tokens: int = opt(160, "Decode budget of one rationale.")
    samples: int = opt(
        4,
        "Rationales per question at most: the greedy one, then sampled ones where the label needs them "
        "(a vote, or a solver label the greedy one missed).",
    )
    sample_temperature: float = opt(0.7, "Temperature of the sampled rationales.")
    min_votes: int = opt(2, "Votes the majority answer needs to become a label (tasks without a solver).")
    balance_tolerance: float = opt(
        0.05, "Each label is capped at its validation share plus this (0.05 = 5 points) of n_examples."
    )
    verify: bool = opt(
        True,
        "Label with the task's exact solver where it has one (the teacher's target is only checked); off: "
        "majority vote everywhere.",
    )
    label_check: int = opt(
        20,
        "Validation questions labelled by the vote, without the solver, and compared with their gold "
        "labels: how far the vote can be trusted (0 = skip).",
    )
    size_match: Literal["sample", "trim", "report"] = opt(
        "sample",
        "Like-for-like sets: every trained variant gets the same number of examples per task "
        "(--generate.size_match_n). sample: a random sample with --seed, drawn within each label so a "
        "balanced set stays balanced; trim: each set's first rows; report: no matching (raw sets, sizes "
        "flagged in the summary). See arte/stages/training_set/size_match.py.",
    )
    size_match_n: int = opt(
        0,
        "Examples per task and set after matching; 0 = the smallest surviving set's size (a larger value "
        "is capped there). Unused with --generate.size_match report.",
    )
    original: Literal["teacher", "drafts"] = opt(
        "teacher",
        "The original-teacher baseline: the original teacher through this same procedure, or elicit's "
        "drafts with their best-scoring agreeing rationale (no new calls, at most elicit.m questions).",
    )

    def __post_init__(self) -> None:
        for flag, value in (
            ("--rationale_max_new_tokens", self.rationale_max_new_tokens),
            ("--n_examples", self.n_examples),
            ("--max_calls", self.max_calls),
            ("--samples", self.samples),
            ("--min_votes", self.min_votes),
        ):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if self.min_votes > self.samples:
            raise ValueError(f"--min_votes ({self.min_votes}) is more than --samples ({self.samples})")
        if not 0 <= self.balance_tolerance <= 1:
            raise ValueError(f"--balance_tolerance must be within 0..1, got {self.balance_tolerance}")
        if self.size_match_n < 0:
            raise ValueError(f"--size_match_n must be >= 0 (0 = the smallest set), got {self.size_match_n}")
        if self.label_check < 0 or self.sample_temperature < 0:
            raise ValueError("--label_check and --sample_temperature must be >= 0")


def check_labels(
    task: Task,
    teacher: Backend,
    cfg: GenerateConfig,
    log: RecordLog,
    *,
    seed: int,
    call_size: int,
    example: str,
) -> dict:
    """The vote's labels on `cfg.label_check` validation questions against their gold labels."""
    space = task_answer_space(task)
    questions = [
        {"qid": f"{task.name}-val{i:04d}", "input": ex.input, "target": ex.target}
        for i, ex in enumerate(task.validation[: cfg.label_check])
    ]
    done = {(r["qid"], r["sample"]): r["text"] for r in log}
    needs = [(q, i) for q in questions for i in range(cfg.samples) if (q["qid"], i) not in done]
    made = draw_rationales(task, teacher, needs, cfg, log, seed=seed, call_size=call_size, example=example)
    done.update({(r["qid"], r["sample"]): r["text"] for r in made})
    labelled = agree = 0
    for q in questions:
        reads = [read_rationale(done[(q["qid"], i)], space).answer for i in range(cfg.samples)]
        vote = majority(reads, cfg.min_votes)
        labelled += vote.label is not None
        agree += vote.label is not None and vote.label == space.canonical(q["target"])
    return {
        "questions": len(questions),
        "labelled": labelled,
        "agree": agree,
        "accuracy": round(agree / labelled, 3) if labelled else None,
    }


def baseline_from_drafts(
    task: Task, scored: Sequence[ScoredDraft], cfg: GenerateConfig
) -> tuple[list[dict], dict]:
    """The 'drafts' baseline: elicit's questions with their strategy rationales as the samples, the
    best-scoring one that agrees with the label kept; nothing is generated."""
    questions: dict[str, dict] = {}
    rationales: dict[tuple[str, int], str] = {}
    for d in scored:
        q = questions.setdefault(d.qid, {"qid": d.qid, "input": d.question, "target": d.target, "scores": []})
        rationales[(d.qid, len(q["scores"]))] = d.rationale
        q["scores"].append(d.score)
    sel = select(task, list(questions.values()), rationales, cfg, "original", can_sample=False)
    return sel.rows, {"stop": "drafts", "kept": len(sel.rows), "selection": dict(sel.counts)}


def aligned_teacher_config(cfg: RunConfig, run_dir: RunDir) -> BackendConfig:
    """The aligned teacher for its engine: the F16 GGUF (llama_cpp), the base model plus the unmerged
    LoRA adapter as a LoRA request (vllm, when align used LoRA), else the merged HF directory."""

    if cfg.aligned_teacher_from:  # another run's (arte.stages.align.teacher_reuse)
        from arte.stages.align.teacher_reuse import reused_teacher

        return dataclasses.replace(cfg.aligned_teacher, model=reused_teacher(run_dir))
    align, name = run_dir.path / "align", cfg.aligned_teacher.name
    if name == "vllm" and (align / "teacher-adapter" / "adapter_config.json").is_file():
        from arte.stages.align import align_base

        model, adapter = resolve_hf(align_base(cfg)), str(align / "teacher-adapter")
        return dataclasses.replace(cfg.aligned_teacher, model=model, lora_adapter=adapter)
    aligned = align / ("teacher-f16.gguf" if name == "llama_cpp" else "teacher")
    if not aligned.exists():
        raise UserError(f"{aligned} is missing: re-run the align stage with this --aligned_teacher.name")
    return dataclasses.replace(cfg.aligned_teacher, model=str(aligned))


def _teacher_sets(
    cfg: RunConfig, backend_cfg: BackendConfig, out: Path, tasks: list[Task], source: str
) -> tuple[list[dict], dict]:
    """Every task's set from one teacher (loaded once), with its label check."""
    from arte.stages.elicit import teacher_example

    rows, counts = [], {}
    teacher = load_backend(backend_cfg)
    try:
        for task in tasks:
            example = teacher_example(task, cfg.teacher_worked_example)
            kw = {"seed": cfg.seed + SEED_OFFSET, "call_size": backend_cfg.call_size, "example": example}
            started = time.time()
            got, report = collect_training_set(task, teacher, cfg.generate, out, source=source, **kw)
            report["seconds"] = round(time.time() - started, 1)
            if cfg.generate.label_check:
                log = RecordLog(out / f"{task.name}.label_check.jsonl", resume=True)
                report["label_check"] = check_labels(task, teacher, cfg.generate, log, **kw)
            rows += got
            counts[task.name] = report
    finally:
        teacher.close()
    return rows, counts


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """generate/arte.jsonl from the aligned teacher (logs in generate/arte/), generate/original.jsonl
    for the baseline (logs in generate/original/), then the ablation sets that `variants` names
    (generate/VARIANT.jsonl, logs in generate/VARIANT/: `generate.ablations`); counts per task
    and set."""
    from arte.stages.score import read_scored_drafts

    out = run_dir.stage("generate")
    teachers = {"arte": aligned_teacher_config(cfg, run_dir), "original": cfg.teacher}
    sets = {"arte": _teacher_sets(cfg, teachers["arte"], out / "arte", tasks, "arte")}
    if cfg.generate.original == "teacher":
        sets["original"] = _teacher_sets(cfg, cfg.teacher, out / "original", tasks, "original")
    else:
        scored, original_rows, original_counts = read_scored_drafts(run_dir), [], {}
        for task in tasks:
            got, original_counts[task.name] = baseline_from_drafts(
                task, [d for d in scored if d.task == task.name], cfg.generate
            )
            original_rows += got
        sets["original"] = (original_rows, original_counts)
    for variant in (v for v in cfg.variants if v in ABLATIONS):
        sets[variant] = ablation_set(cfg, variant, teachers, out / variant, tasks)
    mode, wanted = cfg.generate.size_match, cfg.generate.size_match_n
    matched = match_sizes(sets, tasks, mode, seed=cfg.seed, wanted=wanted)
    if mode != "report" and wanted and any(n < wanted for n in matched.values()):
        log.warning("--generate.size_match_n %d capped at the smallest set per task: %s", wanted, matched)
    counts = {t.name: {name: c[t.name] for name, (_, c) in sets.items()} for t in tasks}
    for name, (rows, _) in sets.items():
        if not rows:
            raise UserError(
                f"the {name} training set is empty after filtering; see {out / name} and the counts: {counts}"
            )
        write_jsonl_atomic(out / f"{name}.jsonl", rows)
    short = size_mismatches(training_set_sizes(sets, tasks), cfg.generate.n_examples)
    if short:
        log.warning("training sets not of --generate.n_examples each: %s", "; ".join(short))
    return counts


def generate_teachers(cfg: RunConfig) -> list[str]:
    """The sets generate draws with new teacher calls: arte, original (unless it comes from the
    drafts), and each ablation --variants names."""
    sets = ["arte"] + (["original"] if cfg.generate.original == "teacher" else [])
    return sets + [v for v in cfg.variants if v in ABLATIONS]


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """The call budget of every set drawn (plus the label check of arte and original)."""
    g = cfg.generate
    teachers = generate_teachers(cfg)
    checked = sum(s in ("arte", "original") for s in teachers) if g.label_check else 0  # not the ablations
    calls = len(teachers) * g.max_calls + checked * min(g.label_check, size.validation) * g.samples
    formula = f"{len(teachers)} sets ({', '.join(teachers)}) x max_calls {g.max_calls}"
    if checked:
        formula += f" + label check {g.label_check} x samples {g.samples} x {checked} sets"
    return [
        PlanCount.at_most("teacher generations", calls, formula),
        PlanCount.at_most("examples kept per set", g.n_examples, "n_examples"),
    ]


def plan_note(cfg: RunConfig) -> str:
    sets = generate_teachers(cfg)
    original = "" if "original" in sets else ", original from elicit's drafts (no calls)"
    return f"sets {', '.join(sets)}{original}"


STAGE = Stage(
    name="generate",
    help="Step 4a: the aligned teacher writes the tailored training set, the original teacher the "
    "baseline's.",
    run=run,
    depends_on=("seed", "teacher", "aligned_teacher", "generate", "teacher_worked_example", "variants"),
    reads=("align", "score/scores.jsonl"),
    writes=("generate/VARIANT.jsonl", "generate/VARIANT/TASK.*.jsonl"),
    sections=("teacher", "aligned_teacher", "generate", "teacher_worked_example", "variants"),
    in_rounds=True,
    plan_counts=plan_counts,
    plan_note=plan_note,
)
