"""Preference alignment of the teacher, ARTE step 3 (arXiv 2406.19227, see docs/method.md).

The teacher is trained with DPO (trl's DPOTrainer) on the chosen/rejected pairs written by
`arte.stages.pairs`: question-level pairs (question prompt -> a top-25% vs a bottom-25% draft question) and
rationale-level pairs (naive prompt -> the question's best vs worst rationale), mixed in one file.

Paper: lr 1e-7, batch 16, 1 epoch, 10% warm-up then cosine; beta and LoRA-vs-full not given. Our
default: LoRA (peft, r=8 on the attention and MLP projections), beta 0.1, lr 5e-5, merged into the
weights at the end; `method: full` is full-parameter DPO.

Reference policy: its log-probs are computed once before training by default
(`precompute_ref_log_probs`): with LoRA by the network with adapters disabled, with full DPO by the
untrained model itself, so no second copy is held. Without precomputing, LoRA still needs no copy
(adapters off in every step) and full DPO loads a frozen second copy in the training dtype.

Precision, gradient checkpointing, 4-bit bases and the memory estimate printed before loading:
`arte.training.precision`, `arte.training.memory_estimate`.

trl 1.16 details handled here: it joins prompt + chosen / rejected as they are (the separator belongs
to the completion); it appends the EOS token to both; it has no `max_prompt_length`, only
`max_length`, which keeps the start of prompt + completion, so `truncate_prompt` keeps the last
`max_prompt_length` tokens of each prompt before trl sees it. Special tokens, LoRA merge,
checkpoints and the atomic, checked save are shared with student training: see `arte.stages.train`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from arte.run_dir import RunDir
from arte.stages.align.teacher_reuse import external_inputs, reuse_aligned_teacher
from arte.stages.stage import ModelNeed, Stage, optimizer_steps, teacher_model
from arte.training import processes
from arte.training.finetune import (
    Scheduler,
    TrainingRun,
    load_for_training,
    lora_config,
    read_jsonl_rows,
    run_training,
    start_run,
    trainer_args,
)
from arte.training.finetune_config import FinetuneConfig
from common.config import opt
from common.records import read_json

if TYPE_CHECKING:
    from arte.run_config import RunConfig
    from common.tasks import Task


DPO_METRICS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
"""What trl's DPOTrainer logs per step besides the loss (first/last/mean go into the stats)."""


@dataclass
class AlignConfig(FinetuneConfig):
    """DPO on the teacher (ARTE step 3). Paper: lr 1e-7, batch 16, 1 epoch, 10% warm-up, cosine."""

    method: Literal["lora", "full"] = opt(
        "lora",
        "lora: train low-rank adapters (peft) and merge them into the weights at the end; the reference "
        "policy is the same network with adapters off, so no second copy is held. full: update every "
        "weight against a frozen copy (the paper's setting, with its lr 1e-7). The paper does not say "
        "which it used.",
    )
    beta: float = opt(
        0.1, "DPO beta: how far the teacher may move from the reference (larger = less). Paper: not given."
    )
    learning_rate: float = opt(
        5e-5,
        "Peak learning rate. 5e-5 suits LoRA, whose adapters start at zero and need a 10-100x larger "
        "rate than full fine-tuning; the paper's 1e-7 was for full DPO of a 70B teacher (use ~1e-6 "
        "with method full on a small one).",
    )
    epochs: float = opt(1.0, "Passes over the pairs (paper: 1).")
    batch_size: int = opt(4, "Pairs per forward pass (each pair is two sequences).")
    gradient_accumulation_steps: int = opt(
        4, "Forward passes per optimizer step; effective batch = batch_size x this (paper: 16)."
    )
    warmup_ratio: float = opt(0.1, "Fraction of the steps with linear warm-up (paper: 10%).")
    lr_scheduler: Scheduler = opt("cosine", "Learning-rate decay after warm-up (paper: cosine).")
    max_length: int = opt(
        768, "Tokens of prompt + completion; longer completions are cut at the end (counted in the stats)."
    )
    max_prompt_length: int = opt(
        512,
        "Tokens kept of each prompt, from its end (the question prompt with 3 seed questions is the "
        "long one); must be < max_length so every completion keeps some tokens.",
    )
    base_model: str = opt(
        "",
        "Weights DPO starts from (model spec: HF directory, GGUF, built-in name); empty: --teacher.model. "
        "Iterative rounds (--rounds) set it per round; set it yourself when the teacher is served "
        "elsewhere (openai) and its weights sit here.",
    )
    logging_steps: int = opt(1, "Log loss and reward metrics every this many optimizer steps.")
    checkpoint_steps: int = opt(
        50, "Save a resumable checkpoint every this many steps into out_dir/checkpoints (0 = never)."
    )
    precompute_ref_log_probs: bool = opt(
        True,
        "Compute the reference policy's log-probs of every pair once, before training (trl), instead "
        "of in every step. method full: no second, frozen copy of the teacher is held during training "
        "(the model itself, untrained, computes them); lora: one forward pass per step fewer. Same "
        "numbers either way (dropout is off); false only to save the pass before training.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta must be > 0, got {self.beta}")
        if not 0 < self.max_prompt_length < self.max_length:
            raise ValueError(
                f"--max_prompt_length ({self.max_prompt_length}) must be > 0 "
                f"and < --max_length ({self.max_length})"
            )


def truncate_prompt(tokenizer, prompt: str, max_tokens: int) -> tuple[str, bool]:
    """The end of `prompt` that is `max_tokens` tokens long (cut at a token boundary of the original
    tokenization), and whether anything was cut."""
    encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    n = len(encoded["input_ids"])
    if n <= max_tokens:
        return prompt, False
    start = encoded["offset_mapping"][n - max_tokens][0]
    return prompt[start:], True


def reference_copy(model_dir: str, cfg: AlignConfig, run: TrainingRun, allow_pickle: bool):
    """The frozen reference policy DPOTrainer gets: None with LoRA (the adapters switched off) and
    with precomputed reference log-probs (trl computes them with the untrained model itself before
    training, so no copy is ever held); else a second copy of the teacher in the training dtype."""
    if cfg.method == "lora" or cfg.precompute_ref_log_probs:
        return None
    _tokenizer, reference = load_for_training(
        model_dir, cfg.threads, allow_pickle, "--teacher.allow_pickle", run.precision.load_dtype
    )
    rows = run.notes.get("embedding_rows")
    if rows:  # the policy's embeddings grew by an added pad token: the reference's must match
        reference.resize_token_embeddings(rows[1], mean_resizing=False)
    return reference


def pairs_dataset(rows: list[dict], checkpoint_dir: Path, precompute: bool):
    """The pairs as a datasets.Dataset. Under a launcher with precomputed reference log-probs it is
    saved to `checkpoint_dir` by the main process and loaded from there by all: trl caches the
    log-probs next to the dataset's files and the other processes read the main one's, which an
    in-memory dataset (one temporary directory per process) does not allow."""
    import shutil

    from datasets import Dataset, load_from_disk

    dataset, procs = Dataset.from_list(rows), processes.current()
    if not precompute or procs.num_processes == 1:
        return dataset
    path = checkpoint_dir / "pairs-dataset"
    if procs.is_main:
        shutil.rmtree(path, ignore_errors=True)
        dataset.save_to_disk(str(path))
    procs.barrier()
    return load_from_disk(str(path))


def build_dpo_trainer(
    model_dir: str, pairs_path: Path, out_dir: Path, cfg: AlignConfig, allow_pickle: bool = False
) -> TrainingRun:
    """A DPOTrainer on the pairs, with LoRA or against a frozen copy (method full); `allow_pickle`:
    the teacher may be a pickle-only model (--teacher.allow_pickle)."""
    from trl import DPOConfig, DPOTrainer

    rows = read_jsonl_rows(pairs_path, ("prompt", "chosen", "rejected"))
    run = start_run("dpo", model_dir, pairs_path, out_dir, cfg, allow_pickle)
    truncated = 0
    for row in rows:
        row["prompt"], cut = truncate_prompt(run.train_tokenizer, row["prompt"], cfg.max_prompt_length)
        truncated += cut
    run.trainer = DPOTrainer(
        model=run.model,
        ref_model=reference_copy(model_dir, cfg, run, allow_pickle),
        args=DPOConfig(
            **trainer_args(cfg, run.checkpoint_dir, run.precision),
            beta=cfg.beta,
            precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        ),
        train_dataset=pairs_dataset(rows, run.checkpoint_dir, cfg.precompute_ref_log_probs),
        processing_class=run.train_tokenizer,
        peft_config=lora_config(cfg) if cfg.method == "lora" else None,
    )
    longest = [
        len(ex["prompt_ids"]) + max(len(ex["chosen_ids"]), len(ex["rejected_ids"]))
        for ex in run.trainer.train_dataset
    ]
    run.notes.update(
        pairs=len(rows),
        prompts_truncated=truncated,
        pairs_cut_by_max_length=sum(n > cfg.max_length for n in longest),
        trainable_parameters=sum(p.numel() for p in run.trainer.model.parameters() if p.requires_grad),
    )
    return run


def align_teacher(model_dir: str, pairs_path: Path, out_dir: Path, cfg: AlignConfig) -> dict:
    """ARTE step 3: DPO on the teacher with the pairs in `pairs_path` (JSONL {"prompt", "chosen",
    "rejected", ...}); save the aligned teacher (merged, HF safetensors + fast tokenizer) to
    `out_dir`, with `out_dir/align_stats.json`. Returns the stats (steps, losses, rewards, seconds)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = build_dpo_trainer(model_dir, Path(pairs_path), out_dir, cfg)
    return run_training(run, out_dir, "align_stats.json", metrics=DPO_METRICS)


def align_base(cfg: RunConfig) -> str:
    """The model spec DPO starts from: --align.base_model, else --teacher.model."""
    return cfg.align.base_model or cfg.teacher.model


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict | None:
    """DPO on the teacher with pairs/dpo.jsonl into align/teacher (merged; plus teacher-adapter/ with
    LoRA, and teacher-f16.gguf when the aligned teacher runs on llama.cpp). A complete aligned teacher
    from an earlier attempt is reused. With --aligned_teacher_from, another run's teacher is taken
    instead (`arte.stages.align.teacher_reuse`). Under a launcher every process trains; only the main one
    saves and returns the stats (the others: None)."""
    procs = processes.current()
    if cfg.aligned_teacher_from:  # the teacher of another run (arte.stages.align.teacher_reuse)
        return reuse_aligned_teacher(cfg, run_dir) if procs.is_main else None
    out = run_dir.stage("align")
    teacher_dir, pairs = out / "teacher", run_dir.path / "pairs" / "dpo.jsonl"
    if (teacher_dir / "config.json").is_file() and (teacher_dir / "align_stats.json").is_file():
        stats = read_json(teacher_dir / "align_stats.json")  # trained before a later step failed
    else:
        acfg = dataclasses.replace(cfg.align, threads=procs.threads(cfg.align.threads))
        model_dir = procs.prepare_model("dpo", align_base(cfg), pairs, teacher_dir, acfg)
        teacher_dir.mkdir(parents=True, exist_ok=True)
        trainer = build_dpo_trainer(model_dir, pairs, teacher_dir, acfg, cfg.teacher.allow_pickle)
        stats = procs.train_and_save(trainer, teacher_dir, "align_stats.json", DPO_METRICS, model_dir)
    if procs.is_main and cfg.aligned_teacher.name == "llama_cpp":  # generation runs on llama.cpp
        from export.gguf_convert import convert_hf_to_gguf

        stats["gguf"] = str(convert_hf_to_gguf(teacher_dir, out / "teacher-f16.gguf", "f16"))
    return stats


def models(cfg: RunConfig) -> tuple[ModelNeed, ...]:
    """DPO starts from --align.base_model when set (rounds), else from the teacher."""
    if cfg.align.base_model:
        t = cfg.teacher
        return (
            ModelNeed(cfg.align.base_model, "--align.base_model", t.allow_pickle, "--teacher.allow_pickle"),
        )
    return (teacher_model(cfg),)


def plan_training(cfg: RunConfig, n_tasks: int) -> list[dict]:
    """DPO over every task's pairs at most; no DPO when the aligned teacher is another run's."""
    from arte.stages.pairs import question_pairs_at_most, rationale_pairs_at_most

    if cfg.aligned_teacher_from:
        return []
    m, a = cfg.elicit.m, cfg.align
    pairs = n_tasks * (question_pairs_at_most(cfg, m) + rationale_pairs_at_most(cfg, m))
    return [
        {
            "set": "dpo pairs",
            "examples": pairs,
            "tokens": int(pairs * a.epochs * 2 * a.max_length),
            "tokens_formula": f"pairs x epochs {a.epochs:g} x 2 sequences x max_length {a.max_length}",
            "steps": optimizer_steps(pairs, a.batch_size, a.gradient_accumulation_steps, a.epochs),
            "effective_batch": a.batch_size * a.gradient_accumulation_steps,
        }
    ]


STAGE = Stage(
    name="align",
    help="Step 3b: DPO on the teacher (LoRA by default), merged and saved.",
    run=run,
    depends_on=("teacher.model", "align", "aligned_teacher_from"),
    reads=("pairs/dpo.jsonl",),
    writes=("align/teacher/", "align/teacher-adapter/", "align/teacher-f16.gguf", "align/reused.json"),
    sections=("teacher", "align", "aligned_teacher", "aligned_teacher_from", "allow_teacher_mismatch"),
    models=models,
    in_rounds=True,
    trains=True,
    external_inputs=external_inputs,
    plan_training=plan_training,
)
