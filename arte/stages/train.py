"""Student fine-tuning, ARTE step 4b (arXiv 2406.19227, see docs/method.md).

`train_student` fine-tunes the student on the aligned teacher's data with trl's SFTTrainer. Paper:
full fine-tuning, 1 epoch, Adam, lr 2e-5, 3% warm-up, loss on the completion only.

Data: JSONL rows {"prompt", "completion"} (other keys are ignored). trl joins prompt + completion as
they are, so the separator belongs to the completion (`arte.stages.generate` writes " " + rationale) and the
prompt must be exactly the text the student is evaluated with (`common.prompts.icl_prompt`): nothing
here reformats it. trl 1.16 tokenizes the prompt and prompt + completion, labels every prompt token
-100 (`completion_only_loss`, set explicitly here) and appends the EOS token to the completion.

The plumbing shared with `arte.stages.align` lives in `arte.training.finetune`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from arte.run_dir import RunDir
from arte.stages.generate.ablations import TRAINED_VARIANTS
from arte.stages.stage import Stage, optimizer_steps, student_model
from arte.training import processes
from arte.training.finetune import (
    Scheduler,
    TrainingRun,
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


SFT_METRICS = ("mean_token_accuracy",)


@dataclass
class TrainConfig(FinetuneConfig):
    """Student SFT (ARTE step 4). Paper: full fine-tuning, 1 epoch, Adam, lr 2e-5, 3% warm-up."""

    method: Literal["full", "lora"] = opt(
        "full",
        "full: update every weight, as the paper does; a 135M student fits easily on CPU (fp32 weights, "
        "grads and Adam state ~2.2 GB). lora: train low-rank adapters, merged into the weights at the "
        "end (raise --learning_rate to ~1e-4..2e-4).",
    )
    learning_rate: float = opt(2e-5, "Peak learning rate (paper: 2e-5, full fine-tuning; LoRA wants ~1e-4).")
    epochs: float = opt(1.0, "Passes over the training data (paper: 1).")
    warmup_ratio: float = opt(0.03, "Fraction of the steps with linear warm-up (paper: 3%).")
    lr_scheduler: Scheduler = opt("cosine", "Learning-rate decay after warm-up (not given by the paper).")
    max_length: int = opt(
        512,
        "Tokens per example (prompt + completion); longer ones lose the end of the completion, and a "
        "prompt that fills it alone drops the example (counted in the stats).",
    )


def build_sft_trainer(
    model_dir: str, data_path: Path, out_dir: Path, cfg: TrainConfig, allow_pickle: bool = False
) -> TrainingRun:
    """An SFTTrainer on prompt/completion rows with the loss on the completion only; `allow_pickle`:
    the student may be a pickle-only model (--student.allow_pickle)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = read_jsonl_rows(data_path, ("prompt", "completion"))
    run = start_run("sft", model_dir, data_path, out_dir, cfg, allow_pickle)
    run.trainer = SFTTrainer(
        model=run.model,
        args=SFTConfig(**trainer_args(cfg, run.checkpoint_dir, run.precision), completion_only_loss=True),
        train_dataset=Dataset.from_list(rows),
        processing_class=run.train_tokenizer,
        peft_config=lora_config(cfg) if cfg.method == "lora" else None,
    )
    dataset, eos_id = run.trainer.train_dataset, run.notes["eos_token_id"]
    run.notes.update(
        rows=len(rows),
        rows_dropped_prompt_too_long=len(rows) - len(dataset),
        completions_cut_by_max_length=sum(ex["input_ids"][-1] != eos_id for ex in dataset),
        trainable_parameters=sum(p.numel() for p in run.trainer.model.parameters() if p.requires_grad),
    )
    return run


def train_student(model_dir: str, data_path: Path, out_dir: Path, cfg: TrainConfig) -> dict:
    """ARTE step 4: fine-tune the student on `data_path` (JSONL {"prompt", "completion"}) and save it
    (merged, HF safetensors + fast tokenizer) to `out_dir`, with `out_dir/train_stats.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = build_sft_trainer(model_dir, Path(data_path), out_dir, cfg)
    return run_training(run, out_dir, "train_stats.json", metrics=SFT_METRICS)


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict | None:
    """SFT of the student on generate/VARIANT.jsonl into train/VARIANT for every trained variant
    (`--variants`: original, arte, the ablations); a student already saved is kept. Under a launcher
    every process trains; only the main one saves and returns the stats (the others: None)."""
    counts = {variant: train_variant(cfg, run_dir, variant) for variant in cfg.variants}
    return counts if processes.current().is_main else None


def train_variant(cfg: RunConfig, run_dir: RunDir, variant: str) -> dict | None:
    """SFT of `cfg.student` on run_dir/generate/VARIANT.jsonl into run_dir/train/VARIANT (kept when
    already saved); its stats (None outside the main process). Iterative rounds call it for each
    round's tailored set (`arte.stages.rounds`)."""
    procs = processes.current()
    target, data = run_dir.stage("train") / variant, run_dir.path / "generate" / f"{variant}.jsonl"
    if (target / "config.json").is_file():
        stats_file = target / "train_stats.json"
        return read_json(stats_file) if stats_file.exists() else {}
    tcfg = dataclasses.replace(cfg.train, threads=procs.threads(cfg.train.threads))
    model_dir = procs.prepare_model("sft", cfg.student.model, data, target, tcfg)
    target.mkdir(parents=True, exist_ok=True)
    trainer = build_sft_trainer(model_dir, data, target, tcfg, cfg.student.allow_pickle)
    return procs.train_and_save(trainer, target, "train_stats.json", SFT_METRICS, model_dir)


def plan_training(cfg: RunConfig, n_tasks: int) -> list[dict]:
    """One SFT per --variants entry, over every task's set at most."""
    t, out = cfg.train, []
    for variant in cfg.variants:
        per_task = cfg.generate.n_examples
        if variant == "original" and cfg.generate.original == "drafts":
            per_task = min(per_task, cfg.elicit.m)  # the drafts baseline has at most elicit's m questions
        examples = n_tasks * per_task
        out.append(
            {
                "set": variant,
                "examples": examples,
                "tokens": int(examples * t.epochs * t.max_length),
                "tokens_formula": f"examples x epochs {t.epochs:g} x max_length {t.max_length}",
                "steps": optimizer_steps(examples, t.batch_size, t.gradient_accumulation_steps, t.epochs),
                "effective_batch": t.batch_size * t.gradient_accumulation_steps,
            }
        )
    return out


def plan_note(cfg: RunConfig) -> str:
    left_out = [v for v in TRAINED_VARIANTS if v not in cfg.variants]
    return f"variants {', '.join(cfg.variants)}" + (f" (not {', '.join(left_out)})" if left_out else "")


STAGE = Stage(
    name="train",
    help="Step 4b: fine-tune the student on each training set --variants names (original, ARTE, ablations).",
    run=run,
    depends_on=("student.model", "train", "variants"),
    reads=tuple(f"generate/{v}.jsonl" for v in TRAINED_VARIANTS),
    writes=("train/VARIANT/",),
    sections=("student", "train", "variants"),
    models=lambda cfg: (student_model(cfg),),
    trains=True,
    plan_training=plan_training,
    plan_note=plan_note,
)
