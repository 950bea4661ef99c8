"""Training that fits the hardware: the settings align (DPO) and train (SFT) share for dtype,
gradient checkpointing and a 4-bit base, what they resolve to on this machine, and the memory
check before any weight is loaded.

- `resolve_precision(dtype, method, facts)`: `auto` is bfloat16 on a CUDA GPU that supports it;
  bf16_mixed on a CPU with bf16 matrix instructions (AVX512_BF16 or AMX_BF16:
  `common.cpu_features.native_bf16`), where LoRA DPO steps on SmolLM2-135M ran 1.25x and full SFT
  steps 1.16x faster than float32 (AMD EPYC Zen 4, 2 threads, `benchmarks/training_precision.py`;
  docs/measurements.md, "Training in bf16 mixed
  precision on the CPU");
  float32 otherwise (a CPU without them, where bf16 is emulated and slower; a GPU without bf16, e.g.
  a V100 or T4: fp16 mixed precision overflows more easily in DPO's log-ratio, so it is only used
  when asked for). bfloat16 loads the weights in bf16 and trains with trl's `bf16` flag (also on
  CPU); bf16_mixed keeps fp32 weights (and fp32 optimizer state: no update is rounded away) and
  runs the forward and backward under bf16 autocast; float16 is GPU only: fp32 master weights with
  fp16 autocast for method full (transformers' loss scaling refuses fp16 gradients), fp16 weights
  with fp32 LoRA adapters for method lora.
- `quantization: 4bit` (QLoRA): bitsandbytes NF4 base with double quantisation, LoRA only, CUDA
  only; refused with the exact `pip install` where bitsandbytes is missing. UNVERIFIED here (no GPU).
- `plan_memory`: `arte.training.memory_estimate` for the run's settings, printed, and on a CUDA host refused
  (UserError) when it exceeds the free memory of the device (`torch.cuda.mem_get_info`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from arte.training.memory_estimate import MemoryEstimate, TrainingSettings, training_memory
from common.errors import UserError, missing_dependency

Dtype = Literal["auto", "bfloat16", "bf16_mixed", "float16", "float32"]
Quantization = Literal["none", "4bit"]
Optimizer = Literal["auto", "adamw_fused", "adamw"]
TRANSFORMERS_OPTIM = {"adamw_fused": "adamw_torch_fused", "adamw": "adamw_torch"}
"""Our optimizer names -> transformers' `optim` values (the same AdamW, two implementations)."""


def resolve_optimizer(optimizer: str, method: str) -> str:
    """transformers' `optim` for `optimizer` (auto: fused for method full, where the step over every
    weight is the cost; the plain one for lora, where the fused one measured slower per DPO step)."""
    if optimizer == "auto":
        optimizer = "adamw_fused" if method == "full" else "adamw"
    return TRANSFORMERS_OPTIM[optimizer]


BITSANDBYTES_PIP = "bitsandbytes>=0.43"

DTYPE_HELP = (
    "Weights and training precision. auto: bfloat16 on a CUDA GPU that supports it; bf16_mixed on a "
    "CPU with bf16 instructions (AVX512_BF16 or AMX_BF16: DPO steps 1.25x faster on an AMD Zen 4); else "
    "float32 (other CPUs, or a GPU without bf16). bfloat16: bf16 weights and bf16 autocast (works on "
    "CPU too; halves weight, gradient and Adam memory, but bf16 weights round away very small "
    "updates). bf16_mixed: fp32 weights and optimizer, bf16 autocast (CPU or GPU). float16: GPU only "
    "(fp32 master weights + fp16 autocast for method full, fp16 base with fp32 adapters for lora)."
)
GRADIENT_CHECKPOINTING_HELP = (
    "Recompute each layer's activations in the backward pass instead of storing them: activation "
    "memory drops from every layer's to about one layer's, for ~20% more time per step. Off by "
    "default: small models (the demo's 135M) don't need it."
)
QUANTIZATION_HELP = (
    "4bit: load the frozen base in 4-bit NF4 (QLoRA, bitsandbytes; CUDA GPU and method lora only); "
    "the adapters are merged into the base re-loaded unquantised. none: the base in --dtype."
)
OPTIMIZER_HELP = (
    "AdamW's implementation; the same update rule, results equal up to float rounding. adamw_fused: "
    "one fused kernel over all parameters (CPU and GPU; the optimizer step of a full fine-tune of the "
    "135M student took 0.06 s on 2 CPU threads, against 0.7 s). adamw: PyTorch's default (a loop over "
    "the tensors on CPU). auto: adamw_fused for method full (SFT steps 1.27x faster), adamw for lora "
    "(LoRA DPO steps measured 0.88x with the fused one; docs/measurements.md)."
)
MEMORY_CHECK_HELP = (
    "On a CUDA host, stop before loading the model when the memory estimate (printed at the start) "
    "exceeds the free memory of one device; false: try anyway (the estimate is rough)."
)


def validate_hardware_settings(cfg: Any) -> None:
    """Checks of the shared hardware fields (ValueError naming the flag: `common.config` reports it)."""
    if cfg.quantization == "4bit" and cfg.method != "lora":
        raise ValueError("--quantization 4bit needs --method lora (a 4-bit base cannot be updated)")


@dataclass(frozen=True)
class DeviceFacts:
    """What precision and memory decisions depend on: is there a CUDA device, does it do bf16,
    how much of its memory is free (bytes; None without CUDA); without CUDA, the CPU's bf16 matrix
    instruction flags (`common.cpu_features.native_bf16`; empty: none)."""

    cuda: bool
    bf16: bool = False
    free_bytes: int | None = None
    name: str = "cpu"
    cpu_bf16: tuple[str, ...] = ()


def device_facts() -> DeviceFacts:
    """The facts of this process's device (the launcher's LOCAL_RANK-th GPU under accelerate)."""
    import torch

    if not torch.cuda.is_available():
        from common.cpu_features import native_bf16

        return DeviceFacts(cuda=False, cpu_bf16=tuple(native_bf16()))
    index = int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count())
    free, _total = torch.cuda.mem_get_info(index)
    name = torch.cuda.get_device_name(index)
    return DeviceFacts(cuda=True, bf16=torch.cuda.is_bf16_supported(), free_bytes=free, name=name)


@dataclass(frozen=True)
class Precision:
    """What a dtype setting resolves to: the load dtype, the activations' dtype, trl's flags."""

    dtype: str  # the requested setting, resolved ("bfloat16", "bf16_mixed", "float16", "float32")
    load_dtype: str
    compute_dtype: str
    bf16: bool
    fp16: bool


def resolve_precision(dtype: str, method: str, facts: DeviceFacts, section: str = "") -> Precision:
    """`dtype` (auto / bfloat16 / bf16_mixed / float16 / float32) on a device with `facts`;
    UserError for float16 without a GPU (`section`: the config section, for the flag's name)."""
    flag = f"--{section}.dtype" if section else "--dtype"
    if dtype == "auto":
        if facts.cuda:
            dtype = "bfloat16" if facts.bf16 else "float32"
        else:
            dtype = "bf16_mixed" if facts.cpu_bf16 else "float32"
    if dtype == "bfloat16":
        return Precision("bfloat16", "bfloat16", "bfloat16", bf16=True, fp16=False)
    if dtype == "bf16_mixed":
        return Precision("bf16_mixed", "float32", "bfloat16", bf16=True, fp16=False)
    if dtype == "float16":
        if not facts.cuda:
            raise UserError(
                f"{flag} float16 needs a CUDA GPU (fp16 mixed precision scales the loss on the GPU); "
                "on CPU use bfloat16 or float32"
            )
        load = "float16" if method == "lora" else "float32"  # full: fp32 master weights, fp16 autocast
        return Precision("float16", load, "float16", bf16=False, fp16=True)
    if dtype == "float32":
        return Precision("float32", "float32", "float32", bf16=False, fp16=False)
    raise UserError(f"{flag} must be auto, bfloat16, bf16_mixed, float16 or float32, got {dtype!r}")


def quantization_config(quantization: str, precision: Precision, facts: DeviceFacts, section: str):
    """The BitsAndBytesConfig of `quantization` 4bit (None for none); UserError without CUDA or
    without bitsandbytes, naming the flag and the exact `pip install`."""
    if quantization != "4bit":
        return None
    flag = f"--{section}.quantization 4bit"
    if not facts.cuda:
        raise UserError(f"{flag} needs a CUDA GPU (bitsandbytes 4-bit kernels); use none on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise missing_dependency("bitsandbytes", BITSANDBYTES_PIP, flag) from e
    import torch
    from transformers import BitsAndBytesConfig

    compute = precision.compute_dtype if precision.compute_dtype != "float32" else "bfloat16"
    if compute == "bfloat16" and not facts.bf16:
        compute = "float16"
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute),
    )


def launcher_sharding(num_processes: int) -> str:
    """How the launcher shards the model, from the environment `accelerate launch` sets: fsdp (full
    shard), zero3, ddp or none. ZeRO-1/2 and FSDP's other strategies count as ddp (weights
    replicated: the estimate is then an upper bound)."""
    if num_processes <= 1:
        return "none"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        full = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD") in ("FULL_SHARD", "1")
        return "fsdp" if full else "ddp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "zero3" if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else "ddp"
    return "ddp"


def training_settings(kind: str, cfg: Any, precision: Precision, num_processes: int) -> TrainingSettings:
    """The memory-relevant settings of one run (`kind`: dpo or sft) of `cfg` (AlignConfig/TrainConfig)."""
    if kind == "sft":
        reference = "none"
    elif getattr(cfg, "precompute_ref_log_probs", False):
        reference = "precomputed"
    else:
        reference = "adapter" if cfg.method == "lora" else "copy"
    return TrainingSettings(
        dtype=precision.load_dtype,
        compute_dtype=precision.compute_dtype,
        method=cfg.method,
        lora_r=cfg.lora_r,
        lora_targets=tuple(cfg.lora_target_modules),
        quantization=cfg.quantization,
        gradient_checkpointing=cfg.gradient_checkpointing,
        reference=reference,
        batch_size=cfg.batch_size,
        sequences_per_example=2 if kind == "dpo" else 1,
        max_length=cfg.max_length,
        num_processes=num_processes,
        sharding=launcher_sharding(num_processes),
    )


def read_model_config(model_dir: str) -> dict | None:
    """config.json of a local HF directory; None for a .gguf file or hub id (estimated after loading)."""
    path = Path(model_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def check_memory_fits(estimate: MemoryEstimate, facts: DeviceFacts, section: str) -> None:
    """UserError when `estimate` exceeds the free memory of a CUDA device (nothing to check on CPU)."""
    if not facts.cuda or facts.free_bytes is None or estimate.total <= facts.free_bytes:
        return
    table = "\n".join(estimate.lines())
    raise UserError(
        f"{section}: the training run needs about {estimate.total / 1e9:.1f} GB per device, but "
        f"{facts.name} has {facts.free_bytes / 1e9:.1f} GB free.\n{table}\n"
        f"Lower it with --{section}.dtype bfloat16, --{section}.gradient_checkpointing true, "
        f"--{section}.method lora, --{section}.quantization 4bit (LoRA), a smaller --{section}.batch_size "
        f"or --{section}.max_length, or shard across GPUs (configs/accelerate/fsdp_full_shard.yaml, "
        f"zero3.yaml); --{section}.memory_check false tries anyway."
    )


def plan_memory(
    kind: str,
    model_config: dict,
    cfg: Any,
    precision: Precision,
    facts: DeviceFacts,
    num_processes: int,
    quiet: bool = False,
) -> dict[str, Any]:
    """Estimate, print (unless `quiet`: the other processes of a launcher) and (cfg.memory_check,
    CUDA) check the memory of a run; the estimate as a dict for the stats ({"unavailable": reason}
    for an architecture the estimate does not know)."""
    section = "align" if kind == "dpo" else "train"
    try:
        estimate = training_memory(model_config, training_settings(kind, cfg, precision, num_processes))
    except (ValueError, KeyError) as e:
        if not quiet:
            print(f"[{section}] no memory estimate: {e}", flush=True)
        return {"unavailable": str(e)}
    for line in [] if quiet else estimate.lines():
        print(f"[{section}] {line}", flush=True)
    if cfg.memory_check:
        check_memory_fits(estimate, facts, section)
    return estimate.as_dict()


def load_quantized(model_dir: str, quantization: Any, allow_pickle: bool, flag: str):
    """(tokenizer, model) with the base in 4-bit on this process's GPU, prepared for LoRA training
    (peft's `prepare_model_for_kbit_training`). UNVERIFIED here (no GPU, no bitsandbytes)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.hf_models import attention_kwargs
    from common.weights import check_model_weights

    path = Path(model_dir)
    if path.is_file():
        raise UserError(f"quantization 4bit: {path} is a .gguf file; give its HF directory (config.json)")
    kwargs: dict[str, Any] = {}
    if path.is_dir():
        kwargs = dict(local_files_only=True, use_safetensors=check_model_weights(path, allow_pickle, flag))
        kwargs.update(attention_kwargs(path))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=path.is_dir())
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=quantization,
        dtype=quantization.bnb_4bit_compute_dtype,
        device_map={"": int(os.environ.get("LOCAL_RANK", "0"))},
        **kwargs,
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return tokenizer, model
