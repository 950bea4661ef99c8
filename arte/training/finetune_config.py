"""The fine-tuning settings align (DPO on the teacher) and train (SFT of the student) share: one
dataclass, `FinetuneConfig`. `AlignConfig` and `TrainConfig` extend it with their own defaults and
the fields only one of them has (DPO's beta, prompt length and base model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from arte.training.finetune import LORA_TARGETS, TRAINING_RUNTIME_ONLY, Scheduler, validate_common
from arte.training.precision import (
    DTYPE_HELP,
    GRADIENT_CHECKPOINTING_HELP,
    MEMORY_CHECK_HELP,
    OPTIMIZER_HELP,
    QUANTIZATION_HELP,
    Dtype,
    Optimizer,
    Quantization,
)
from common.config import opt


@dataclass
class FinetuneConfig:
    """A fine-tuning run on CPU or GPU: method, schedule, LoRA, lengths, precision, checkpoints."""

    method: Literal["lora", "full"] = opt(
        "full",
        "full: update every weight. lora: train low-rank adapters, merged into the weights at the end.",
    )
    learning_rate: float = opt(2e-5, "Peak learning rate.")
    epochs: float = opt(1.0, "Passes over the training data.")
    batch_size: int = opt(4, "Examples per forward pass.")
    gradient_accumulation_steps: int = opt(
        4, "Forward passes per optimizer step; effective batch = batch_size x this."
    )
    warmup_ratio: float = opt(0.03, "Fraction of the steps with linear warm-up.")
    lr_scheduler: Scheduler = opt("cosine", "Learning-rate decay after warm-up.")
    lora_r: int = opt(8, "LoRA rank (method lora).")
    lora_alpha: int = opt(16, "LoRA scaling numerator; the update is scaled by lora_alpha / lora_r.")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA branch.")
    lora_target_modules: list[str] = opt(LORA_TARGETS, "Modules that get LoRA adapters (Llama/Qwen2 names).")
    max_length: int = opt(512, "Tokens per example (prompt + completion).")
    seed: int = opt(0, "Seed for initialisation (LoRA) and data order.")
    logging_steps: int = opt(1, "Log loss and metrics every this many optimizer steps.")
    checkpoint_steps: int = opt(
        100, "Save a resumable checkpoint every this many steps into out_dir/checkpoints (0 = never)."
    )
    dtype: Dtype = opt("auto", DTYPE_HELP)
    optimizer: Optimizer = opt("auto", OPTIMIZER_HELP)
    gradient_checkpointing: bool = opt(False, GRADIENT_CHECKPOINTING_HELP)
    quantization: Quantization = opt("none", QUANTIZATION_HELP)
    memory_check: bool = opt(True, MEMORY_CHECK_HELP)
    threads: int = opt(0, "torch CPU threads; 0 = the cores that are free right now.")

    RUNTIME_ONLY = TRAINING_RUNTIME_ONLY
    """Settings that do not change the trained model (left out of its provenance record)."""

    def __post_init__(self) -> None:
        validate_common(self)
