"""Fine-tuning plumbing shared by teacher alignment (`arte.stages.align`, DPO) and student SFT
(`arte.stages.train`): special tokens, LoRA, checkpoints and resume, safe saving, JSONL reading.

- Special tokens. trl pads with the EOS token when the tokenizer has no pad token, and transformers'
  `Trainer.train()` rewrites the model's eos/bos/pad ids to the tokenizer's. `prepare_special_tokens`
  (on a copy of the tokenizer) picks a pad token that is neither EOS nor BOS and makes the EOS that
  trl appends to completions one the model stops at. `save_trained_model` puts the model's original
  special-token ids back, saves, reloads the saved config, generation config and tokenizer, and
  raises if any of them differs from the input model's.
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

from common.config import to_dict
from common.errors import UserError
from common.records import sha256_file, write_json_atomic

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


"""Attention and MLP projections of Llama / Qwen2 / SmolLM2 blocks."""


PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]")


"""Existing tokens tried, in order, as the pad token when the tokenizer has none (never EOS/BOS)."""


PROBE_TEXT = "Question: What is 17 + 25? Answer: Let's think step by step. 17 + 25 = 42. <ans>42</ans>"


"""Encoded by the input and the saved tokenizer: the ids must agree (catches lost add_bos flags)."""


CHECKPOINTS = "checkpoints"


SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


Scheduler = Literal["cosine", "linear", "constant_with_warmup"]


def validate_common(cfg: Any) -> None:
    """Checks shared by TrainConfig and AlignConfig; the message names the flag."""
    checks = [
        (cfg.learning_rate > 0, "--learning_rate must be > 0"),
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


def load_for_training(model_dir: str, threads: int = 0):
    """(tokenizer, model) in fp32 for an embedded name, HF directory, .gguf file or hub id."""
    from arte.models import resolve_hf
    from common.hf_models import load_hf_model
    from common.threads import configure_torch_threads, pick_threads

    configure_torch_threads(pick_threads(threads))
    return load_hf_model(resolve_hf(model_dir))


def _as_list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def model_eos_ids(model) -> list[int]:
    """Ids the model stops generating at: config eos first, then the generation config's."""
    gen = getattr(model, "generation_config", None)
    ids = _as_list(model.config.eos_token_id) + _as_list(getattr(gen, "eos_token_id", None))
    return list(dict.fromkeys(ids))


def choose_pad_token(tokenizer, avoid: set[int]) -> str:
    """An existing token to pad with: the first of PAD_CANDIDATES, else the unknown token, that is in
    the vocabulary and not in `avoid` (EOS and BOS ids). Never adds a token (no embedding resize)."""
    vocab = tokenizer.get_vocab()
    for token in (*PAD_CANDIDATES, tokenizer.unk_token):
        if token is not None and token in vocab and vocab[token] not in avoid:
            return token
    raise UserError(
        "the tokenizer has no pad token and none of "
        f"{', '.join(PAD_CANDIDATES)} (or an unknown token) to pad with; set tokenizer.pad_token in "
        "the model's tokenizer_config.json"
    )


def prepare_special_tokens(tokenizer, model) -> dict[str, Any]:
    """Set the training tokenizer's pad and EOS deliberately (in place; pass a copy). Returns notes.

    - EOS: trl appends `tokenizer.eos_token` to every completion, so the model learns to end with
      it. If it is not one of the ids the model stops at, the model's own EOS is used instead.
    - pad: kept if the tokenizer has one; else an existing, otherwise unused token (PAD_CANDIDATES;
      for SmolLM2 '<|endoftext|>', id 0), never EOS: trl would then also set the model's pad id to
      EOS, and transformers would align the model's config to the tokenizer. Padding positions are
      masked by the trainers (attention mask, labels -100), so the choice does not change the loss.
    """
    notes: dict[str, Any] = {}
    eos_ids = model_eos_ids(model)
    if eos_ids and tokenizer.eos_token_id not in eos_ids:
        notes["tokenizer_eos_replaced"] = (
            f"tokenizer eos {tokenizer.eos_token!r} (id {tokenizer.eos_token_id}) is not one the model "
            f"stops at ({eos_ids}); completions end with id {eos_ids[0]} instead"
        )
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_ids[0])
    if tokenizer.pad_token is None:
        avoid = {*eos_ids, tokenizer.eos_token_id, tokenizer.bos_token_id} - {None}
        tokenizer.pad_token = choose_pad_token(tokenizer, avoid)
    notes.update(
        eos_token=tokenizer.eos_token,
        eos_token_id=tokenizer.eos_token_id,
        pad_token=tokenizer.pad_token,
        pad_token_id=tokenizer.pad_token_id,
    )
    return notes


def special_token_snapshot(model, tokenizer) -> dict[str, Any]:
    """What must survive training unchanged: special ids of the config, the generation config and
    the tokenizer, and the tokenizer's ids for PROBE_TEXT."""
    gen = getattr(model, "generation_config", None)
    return {
        "config": {k: getattr(model.config, k, None) for k in SPECIAL_IDS},
        "generation_config": {k: getattr(gen, k, None) for k in SPECIAL_IDS} if gen is not None else None,
        "tokenizer": tokenizer_specials(tokenizer),
    }


def tokenizer_specials(tokenizer) -> dict[str, Any]:
    return {
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "probe_ids": tokenizer(PROBE_TEXT)["input_ids"],
    }


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


def trainer_args(cfg: Any, checkpoint_dir: Path) -> dict[str, Any]:
    """Keyword arguments shared by DPOConfig and SFTConfig: fp32 (on CPU), Adam, no reporting."""
    import torch

    return dict(
        output_dir=str(checkpoint_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_ratio=cfg.warmup_ratio,
        optim="adamw_torch",
        weight_decay=0.0,  # AdamW without weight decay is the paper's Adam
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.checkpoint_steps else "no",
        save_steps=cfg.checkpoint_steps or 500,
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=False,  # trl defaults to bf16; CPU training here is fp32
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,  # trl defaults to on; small models don't need it, it costs ~20%
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
    trainer: Any = None


def start_run(kind: str, model_dir: str, data_path: Path, out_dir: Path, cfg: Any) -> TrainingRun:
    """Load the model, snapshot its special tokens, prepare a training copy of its tokenizer, and
    find a checkpoint to resume from (`kind`: 'sft' or 'dpo')."""
    tokenizer, model = load_for_training(model_dir, cfg.threads)
    original = special_token_snapshot(model, tokenizer)
    train_tokenizer = copy.deepcopy(tokenizer)
    notes = {**prepare_special_tokens(train_tokenizer, model), "method": cfg.method, "config": to_dict(cfg)}
    checkpoint_dir = Path(out_dir) / CHECKPOINTS
    resume_from = resume_point(checkpoint_dir, run_fingerprint(kind, model_dir, data_path, cfg))
    generation_config = copy.deepcopy(model.generation_config)
    return TrainingRun(
        model, tokenizer, train_tokenizer, original, generation_config, notes, checkpoint_dir, resume_from
    )


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
    ignored = ("threads", "checkpoint_steps", "logging_steps")
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ignored}
    return {"kind": kind, "model": str(model_dir), "data_sha256": sha256_file(data_path), "config": settings}


def restore_special_tokens(model, original: dict[str, Any], generation_config) -> dict[str, list]:
    """Put the input model's special-token ids back (trl/transformers align them to the training
    tokenizer, e.g. the pad chosen here); returns {field: [original, value during training]}."""
    changed = {}
    for key, value in original["config"].items():
        if getattr(model.config, key, None) != value:
            changed[f"config.{key}"] = [value, getattr(model.config, key, None)]
            setattr(model.config, key, value)
    gen = getattr(model, "generation_config", None)
    if gen is not None and generation_config is not None:
        for key, value in original["generation_config"].items():
            if getattr(gen, key, None) != value:
                changed[f"generation_config.{key}"] = [value, getattr(gen, key, None)]
        model.generation_config = copy.deepcopy(generation_config)
    return changed


def saved_special_token_mismatches(saved_dir: Path, original: dict[str, Any]) -> list[str]:
    """Reload the saved config, generation config and tokenizer; list every difference from `original`."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(saved_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(saved_dir, local_files_only=True)
    saved = {"config": {k: getattr(config, k, None) for k in SPECIAL_IDS}}
    if original["generation_config"] is not None:
        gen = GenerationConfig.from_pretrained(saved_dir, local_files_only=True)
        saved["generation_config"] = {k: getattr(gen, k, None) for k in SPECIAL_IDS}
    saved["tokenizer"] = tokenizer_specials(tokenizer)
    return [
        f"{part}.{key}: input model {value!r}, saved {saved[part].get(key)!r}"
        for part in saved
        for key, value in (original[part] or {}).items()
        if saved[part].get(key) != value
    ]


def save_trained_model(run: TrainingRun, model, out_dir: Path) -> dict[str, list]:
    """Save `model` (merged, plain HF) + the input tokenizer into `out_dir` atomically; check that the
    saved special tokens equal the input model's (RuntimeError if not). Returns restored fields."""
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


def summarize_log(log_history: list[dict], metrics: tuple[str, ...]) -> dict[str, Any]:
    """First/last training loss and first/last/mean of each logged metric."""
    out: dict[str, Any] = {}
    for key in ("loss", *metrics):
        values = [e[key] for e in log_history if key in e and "train_runtime" not in e]
        if values:
            name = "train_loss" if key == "loss" else key.replace("/", "_")
            out[f"{name}_first"], out[f"{name}_last"] = values[0], values[-1]
            out[f"{name}_mean"] = sum(values) / len(values)
    return out


def save_adapter(peft_model, adapter_dir: Path) -> None:
    """The trained LoRA adapter alone (adapter_config.json + weights), written atomically."""
    tmp = adapter_dir.with_name(adapter_dir.name + f".saving-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)


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
    if is_peft_model(model):  # keep the adapter (vLLM serves it unmerged), then fold it into the weights
        save_adapter(model, out_dir.with_name(out_dir.name + "-adapter"))
        model = model.merge_and_unload()
    restored = save_trained_model(run, model, out_dir)
    steps = trainer.state.global_step
    stats = {
        "steps": steps,
        "resumed_from": Path(run.resume_from).name if run.resume_from else None,
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(1, steps - started_step), 4),
        "train_loss": result.training_loss,
        **summarize_log(trainer.state.log_history, metrics),
        **run.notes,
        "special_tokens_restored": restored,
        "log": [e for e in trainer.state.log_history if "train_runtime" not in e],
    }
    write_json_atomic(out_dir / stats_name, stats)
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    return stats
