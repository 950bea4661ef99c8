"""Fine-tuning plumbing shared by teacher alignment (`arte.stages.align`, DPO) and student SFT
(`arte.stages.train`): special tokens, LoRA, checkpoints and resume, safe saving, JSONL reading.

- Special tokens (`arte.training.special_tokens`): a training copy of the tokenizer gets a pad token that is
  neither EOS, BOS nor an end-of-turn token (an added one where none exists: the embeddings grow
  for training and are shrunk back before saving); `save_trained_model` puts the model's original
  special-token ids back, saves, reloads the saved config, generation config and tokenizer, and
  raises if any of them differs from the input model's.
- Hardware (`arte.training.precision`): `start_run` resolves --dtype on this device, prints the
  memory estimate (`arte.training.memory_estimate`) before loading, refuses a run that cannot fit on a
  GPU, and loads the weights in the resolved dtype (or 4-bit); `trainer_args` sets trl's bf16/fp16
  and gradient-checkpointing flags to match. All of it lands in the stats (precision,
  memory_estimate, pad_token_origin).
- LoRA is trained with peft and merged into the weights (`merge_and_unload`): the output is a plain
  HF model that the backends and exporters load like any other.
- Resume: checkpoints go to `out_dir/checkpoints/` every `checkpoint_steps`; a re-run with the same
  model, data and config resumes from the last complete one. The final model is written to a
  temporary directory and moved into `out_dir` with `config.json` last, then the stats file, so a
  killed run never leaves a directory that looks like a complete model.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from arte.models import resolve_hf
from arte.training import processes
from arte.training.divergence import check_learning_rate, check_training_finite
from arte.training.log import resumed_train_loss, summarize_log
from arte.training.precision import (
    DeviceFacts,
    Precision,
    device_facts,
    load_quantized,
    plan_memory,
    quantization_config,
    read_model_config,
    resolve_optimizer,
    resolve_precision,
    validate_hardware_settings,
)
from arte.training.special_tokens import (  # noqa: F401 - choose_pad_token: part of this module's interface
    choose_pad_token,
    prepare_special_tokens,
    restore_special_tokens,
    saved_special_token_mismatches,
    special_token_snapshot,
)
from common.config import to_dict
from common.errors import UserError
from common.records import sha256_file, write_json_atomic

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""Attention and MLP projections of Llama / Qwen2 / SmolLM2 blocks."""

CHECKPOINTS = "checkpoints"

Scheduler = Literal["cosine", "linear", "constant_with_warmup"]

TRAINING_RUNTIME_ONLY = (
    "threads",
    "checkpoint_steps",
    "logging_steps",
    "gradient_checkpointing",
    "memory_check",
    "precompute_ref_log_probs",
    "optimizer",
)
"""Settings of align and train that do not change the trained model (`RUNTIME_ONLY` of their configs):
gradient checkpointing recomputes the same activations, precomputed reference log-probs are the
ones computed on the fly (dropout is off in DPO), the two AdamW implementations compute the same
update."""
SECTIONS = {"dpo": "align", "sft": "train"}
"""The config section of each kind of training (flags are named --SECTION.key)."""


def validate_common(cfg: Any) -> None:
    """Checks shared by TrainConfig and AlignConfig; the message names the flag."""
    checks = [
        (cfg.epochs > 0, "--epochs must be > 0"),
        (cfg.batch_size >= 1, "--batch_size must be >= 1"),
        (cfg.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps must be >= 1"),
        (0 <= cfg.warmup_ratio < 1, "--warmup_ratio must be in [0, 1)"),
        (cfg.lora_r >= 1, "--lora_r must be >= 1"),
        (cfg.lora_alpha > 0, "--lora_alpha must be > 0"),
        (0 <= cfg.lora_dropout < 1, "--lora_dropout must be in [0, 1)"),
        (cfg.method != "lora" or bool(cfg.lora_target_modules), "--lora_target_modules is empty"),
        (cfg.max_length >= 8, "--max_length must be >= 8"),
        (cfg.logging_steps >= 1, "--logging_steps must be >= 1"),
        (cfg.checkpoint_steps >= 0, "--checkpoint_steps must be >= 0 (0 = no checkpoints)"),
        (cfg.threads >= 0, "--threads must be >= 0 (0 = auto)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    section = {"AlignConfig": "align", "TrainConfig": "train"}.get(type(cfg).__name__, "")
    check_learning_rate(cfg.learning_rate, f"--{section}.learning_rate" if section else "--learning_rate")
    validate_hardware_settings(cfg)


def read_jsonl_rows(path: Path, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """The `fields` of every row of a JSONL file; a bad row raises a UserError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object with keys {', '.join(fields)}")
            for key in fields:
                if not isinstance(row.get(key), str) or not row[key]:
                    got = "missing" if key not in row else f"got {row[key]!r}"[:80]
                    raise UserError(f"{path}:{lineno}: {key!r} must be a non-empty string ({got})")
            rows.append({key: row[key] for key in fields})
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


PICKLE_FLAGS = {"dpo": "--teacher.allow_pickle", "sft": "--student.allow_pickle"}
"""The option that lets each kind of training load a pickle-only model (`common.weights`)."""


def load_for_training(
    model_dir: str,
    threads: int = 0,
    allow_pickle: bool = False,
    flag: str = "",
    dtype: str = "float32",
    quantization: Any = None,
):
    """(tokenizer, model) in `dtype` for an embedded name, HF directory, .gguf file or hub id
    (safetensors only, unless `allow_pickle`, the opt-in set by the option `flag`); with a
    `quantization` config (`arte.training.precision.quantization_config`), 4-bit on the GPU."""
    from common.hf_models import load_hf_model
    from common.threads import configure_torch_threads, pick_threads

    configure_torch_threads(pick_threads(threads))
    if quantization is not None:
        tokenizer, model = load_quantized(resolve_hf(model_dir), quantization, allow_pickle, flag)
    else:
        tokenizer, model = load_hf_model(resolve_hf(model_dir), dtype, allow_pickle=allow_pickle, flag=flag)
    point_base_model_at_backbone(model)
    return tokenizer, model


def point_base_model_at_backbone(model) -> None:
    """Make `model.base_model` the decoder backbone. transformers 4.57's Gemma3ForCausalLM names its
    base_model_prefix "language_model" but keeps the backbone in `.model`, so `base_model` is the
    whole model, and trl 1.16's fused LM head (SFTTrainer) then reads `last_hidden_state` from the
    LM's own output and fails. Set on this instance only."""
    if model.base_model is model and hasattr(model, "model") and hasattr(model, "lm_head"):
        model.base_model_prefix = "model"


def lora_config(cfg: Any):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def trainer_args(cfg: Any, checkpoint_dir: Path, precision: Precision) -> dict[str, Any]:
    """Keyword arguments shared by DPOConfig and SFTConfig: `precision`'s bf16/fp16 flags, gradient
    checkpointing as configured (non-reentrant, which LoRA's frozen inputs need), Adam, no reporting."""
    import torch

    return dict(
        output_dir=str(checkpoint_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_ratio=cfg.warmup_ratio,
        optim=resolve_optimizer(cfg.optimizer, cfg.method),
        weight_decay=0.0,  # AdamW without weight decay is the paper's Adam
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.checkpoint_steps else "no",
        save_steps=cfg.checkpoint_steps or 500,
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision.bf16,  # trl defaults to bf16: set from --dtype (arte.training.precision)
        fp16=precision.fp16,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=cfg.gradient_checkpointing,  # trl defaults to on; ours: off (~20% slower)
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        report_to="none",
        dataloader_num_workers=0,
    )


@dataclass
class TrainingRun:
    """One fine-tuning run: the input model as loaded and as it was before anything touched it, and,
    once built, the trainer and where its checkpoints go."""

    model: Any
    tokenizer: Any  # the input model's tokenizer, unmodified: it is saved with the output
    train_tokenizer: Any  # a copy with pad/eos set by `prepare_special_tokens`, given to trl
    original: dict[str, Any]  # special_token_snapshot of the input model
    generation_config: Any  # the input model's generation config, restored before saving
    notes: dict[str, Any]
    checkpoint_dir: Path
    resume_from: str | None
    precision: Precision
    model_dir: str = ""  # what was loaded (a 4-bit run merges its adapter into this, re-loaded)
    quantized: bool = False
    trainer: Any = None
    section: str = "train"  # the config section of its flags (SECTIONS): named in its errors


def start_run(
    kind: str, model_dir: str, data_path: Path, out_dir: Path, cfg: Any, allow_pickle: bool = False
) -> TrainingRun:
    """Load the model, snapshot its special tokens, prepare a training copy of its tokenizer, and
    find a checkpoint to resume from (`kind`: 'sft' or 'dpo'; `allow_pickle`: a pickle-only model
    may be loaded)."""

    facts, section = device_facts(), SECTIONS[kind]
    precision = resolve_precision(cfg.dtype, cfg.method, facts, section)
    forget_accelerator_state()
    quantization = quantization_config(cfg.quantization, precision, facts, section)
    procs = processes.current()
    plan = (cfg, precision, facts, procs.num_processes, not procs.is_main)
    model_config = read_model_config(model_dir)
    memory = plan_memory(kind, model_config, *plan) if model_config else None
    tokenizer, model = load_for_training(
        model_dir, cfg.threads, allow_pickle, PICKLE_FLAGS[kind], precision.load_dtype, quantization
    )
    if memory is None:  # a .gguf file or hub id: the config is known once loaded
        memory = plan_memory(kind, model.config.to_dict(), *plan)
    original = special_token_snapshot(model, tokenizer)
    train_tokenizer = copy.deepcopy(tokenizer)
    notes = {
        **prepare_special_tokens(train_tokenizer, model),
        "method": cfg.method,
        "precision": precision_notes(precision, facts, quantization is not None),
        "memory_estimate": memory,
        "config": to_dict(cfg),
    }
    checkpoint_dir = Path(out_dir) / CHECKPOINTS
    resume_from = resume_point(checkpoint_dir, run_fingerprint(kind, model_dir, data_path, cfg))
    generation_config = copy.deepcopy(model.generation_config)
    return TrainingRun(
        model,
        tokenizer,
        train_tokenizer,
        original,
        generation_config,
        notes,
        checkpoint_dir,
        resume_from,
        precision,
        str(model_dir),
        quantization is not None,
        section=section,
    )


def forget_accelerator_state() -> None:
    """Let the next Trainer set its own mixed precision. transformers' TrainingArguments writes its
    bf16/fp16 choice into ACCELERATE_MIXED_PRECISION and never clears it, and accelerate keeps one
    AcceleratorState per process: in one `arte run`, align in bf16 then train with --train.dtype
    float32 ran train's forward under bf16 autocast (tests/test_training_bf16_and_pad.py). Precision
    comes from --align.dtype / --train.dtype alone (the launch configs say mixed_precision 'no'); the
    process group (PartialState) is kept, for launchers."""
    from accelerate.state import AcceleratorState

    os.environ["ACCELERATE_MIXED_PRECISION"] = "no"
    AcceleratorState._reset_state(reset_partial_state=False)


def precision_notes(precision: Precision, facts: DeviceFacts, quantized: bool) -> dict[str, Any]:
    """What the dtype setting resolved to on this device (for the stats)."""
    return {
        "dtype": precision.dtype,
        "load_dtype": "nf4" if quantized else precision.load_dtype,
        "bf16": precision.bf16,
        "fp16": precision.fp16,
        "device": facts.name,
        **({"cpu_bf16": list(facts.cpu_bf16)} if not facts.cuda else {}),
    }


def resume_point(checkpoint_dir: Path, fingerprint: dict[str, Any]) -> str | None:
    """The last complete checkpoint of an interrupted run with the same fingerprint, else None
    (checkpoints of a different model, data or config are deleted)."""
    marker = checkpoint_dir / "arte-fingerprint.json"
    if checkpoint_dir.is_dir():
        same = marker.is_file() and json.loads(marker.read_text()) == fingerprint
        if not same:
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, fingerprint)
    complete = [p for p in checkpoint_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    complete.sort(key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return str(complete[-1]) if complete else None


def run_fingerprint(kind: str, model_dir: str, data_path: Path, cfg: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (not threads nor checkpoint/logging frequency)."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in TRAINING_RUNTIME_ONLY}
    return {"kind": kind, "model": str(model_dir), "data_sha256": sha256_file(data_path), "config": settings}


def save_trained_model(run: TrainingRun, model, out_dir: Path) -> dict[str, list]:
    """Save `model` (merged, plain HF) + the input tokenizer into `out_dir` atomically; check that the
    saved special tokens equal the input model's (RuntimeError if not). Returns restored fields."""
    rows = run.notes.get("embedding_rows")
    if rows:  # a pad token was added for training: back to the input's vocabulary
        model.resize_token_embeddings(rows[0])
    restored = restore_special_tokens(model, run.original, run.generation_config)
    tmp = out_dir / f".saving-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    run.tokenizer.save_pretrained(tmp)
    (tmp / "tokenizer.model").unlink(missing_ok=True)  # a GGUF-derived tokenizer writes the whole GGUF
    mismatches = saved_special_token_mismatches(tmp, run.original)
    if mismatches:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError("training changed the model's special tokens: " + "; ".join(mismatches))
    publish_dir(tmp, out_dir)
    return restored


def publish_dir(tmp: Path, out_dir: Path) -> None:
    """Move the files of `tmp` into `out_dir`, replacing a previous model: its config.json goes
    first and the new config.json comes last, so a model in `out_dir` is always complete."""
    old = [out_dir / "config.json", *out_dir.glob("*.safetensors"), *out_dir.glob("*.safetensors.index.json")]
    for path in old + [out_dir / p.name for p in tmp.iterdir()]:
        path.unlink(missing_ok=True)
    for path in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):
        os.replace(path, out_dir / path.name)
    tmp.rmdir()


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_adapter(peft_model, adapter_dir: Path) -> None:
    """The trained LoRA adapter alone (adapter_config.json + weights), written atomically."""
    tmp = adapter_dir.with_name(adapter_dir.name + f".saving-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)


def merge_into_unquantized(run: TrainingRun, adapter_dir: Path):
    """A 4-bit run's adapter merged into its base re-loaded (CPU) in the compute dtype, never into
    the quantized weights (UNVERIFIED: no GPU here)."""
    from peft import PeftModel

    _tokenizer, base = load_for_training(run.model_dir, dtype=run.precision.compute_dtype, allow_pickle=True)
    rows = run.notes.get("embedding_rows")
    if rows:
        base.resize_token_embeddings(rows[1], mean_resizing=False)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def run_training(run: TrainingRun, out_dir: Path, stats_name: str, metrics: tuple[str, ...]) -> dict:
    """Train (resuming if possible), merge LoRA, save the model and `stats_name`; return the stats."""
    trainer = run.trainer
    started_step = 0
    if run.resume_from:
        started_step = json.loads((Path(run.resume_from) / "trainer_state.json").read_text())["global_step"]
    started = time.time()
    result = trainer.train(resume_from_checkpoint=run.resume_from)
    seconds = time.time() - started
    model = trainer.model
    try:  # a diverged run (NaN/inf) is never saved as a model; its checkpoints are dropped
        check_training_finite(model, trainer.state.log_history, run.section, trainer.args)
    except UserError:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
        raise
    if is_peft_model(model):  # keep the adapter (vLLM serves it unmerged), then fold it into the weights
        adapter_dir = out_dir.with_name(out_dir.name + "-adapter")
        save_adapter(model, adapter_dir)
        model = merge_into_unquantized(run, adapter_dir) if run.quantized else model.merge_and_unload()
    restored = save_trained_model(run, model, out_dir)
    steps = trainer.state.global_step
    stats = {
        "steps": steps,
        "resumed_from": Path(run.resume_from).name if run.resume_from else None,
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(1, steps - started_step), 4),
        "train_loss": resumed_train_loss(
            result.training_loss, steps, started_step, trainer.state.log_history
        ),
        **summarize_log(trainer.state.log_history, metrics),
        **run.notes,
        "special_tokens_restored": restored,
        "log": [e for e in trainer.state.log_history if "train_runtime" not in e],
    }
    write_json_atomic(out_dir / stats_name, stats)
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    return stats
