"""How much accelerator memory a fine-tuning run needs, from the model's `config.json` alone.

`training_memory(model_config, settings)` counts the parameters of a decoder-only transformer
(Llama, Mistral, Qwen2/3, Gemma 1/2/3, Phi-3: the families `arte.tiny_model` builds) from its
config fields, without loading a weight, and adds up what one training process holds:

- weights: parameters x bytes of the load dtype (4-bit: the projection matrices at ~4.13 bits
  with double quantisation, the rest in the compute dtype);
- gradients and optimizer state: of the trainable parameters only (every weight for method full,
  the LoRA matrices for lora); AdamW keeps two states in the parameter's dtype; LoRA adapters are
  fp32 (peft upcasts bf16/fp16 adapters);
- reference: a second frozen copy for full DPO whose reference log-probs are not precomputed;
  nothing with LoRA (adapters off) or precomputed log-probs;
- activations (rough): per token and layer ~11 h + 4 I values (norm inputs and outputs, q/k/v, the
  attention output, the MLP's gate/up/act/product) in the compute dtype; with gradient
  checkpointing only each layer's input (h values) plus one layer's full set. trl computes the LM
  head's log-probs in chunks, so full-vocabulary logits are left out;
- sharding (FSDP full shard, DeepSpeed ZeRO-3) divides weights, gradients, optimizer state and the
  reference by the number of processes; DDP replicates them.

It is an estimate (no allocator overhead, no CUDA context, no temporary buffers): within ~20% for
weights-dominated runs, rougher for activations. Pure Python (no torch), so a planner can call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 4.127 / 8
"""bitsandbytes NF4 with double quantisation: 4 bits + ~0.127 bits of scales per parameter."""

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
"""model_type values whose parameter layout `count_parameters` knows."""
_TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3_text"}
_FOUR_NORMS = {"gemma2", "gemma3_text"}  # pre/post attention and pre/post MLP norms per layer
_QK_NORMS = {"qwen3", "gemma3_text"}
SHARDED = ("fsdp", "zero3")


@dataclass(frozen=True)
class Shape:
    """The config fields that fix a decoder's parameter count."""

    model_type: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    config: dict = field(repr=False, compare=False, default_factory=dict)


def model_shape(model_config: dict) -> Shape:
    """The Shape of a config.json dict (a multimodal Gemma 3 config: its text_config); ValueError
    for a family whose layout is not known (mixtures of experts, encoder-decoders, ...)."""
    cfg = model_config.get("text_config") or model_config
    model_type = cfg.get("model_type", "")
    if model_type == "gemma3":
        model_type = "gemma3_text"
    if model_type not in FAMILIES:
        known = ", ".join(FAMILIES)
        raise ValueError(f"model_type {model_type!r}: parameter layout unknown (known: {known})")
    heads = cfg["num_attention_heads"]
    tied = cfg.get("tie_word_embeddings", model_config.get("tie_word_embeddings"))
    return Shape(
        model_type=model_type,
        vocab=cfg["vocab_size"],
        hidden=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate=cfg["intermediate_size"],
        tied=model_type in _TIED_BY_DEFAULT if tied is None else bool(tied),
        config=cfg,
    )


def projection_shapes(s: Shape) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear projection of one layer, by module name."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    if s.model_type == "phi3":  # fused q/k/v and gate/up projections
        return {
            "qkv_proj": (s.hidden, q + 2 * kv),
            "o_proj": (q, s.hidden),
            "gate_up_proj": (s.hidden, 2 * s.intermediate),
            "down_proj": (s.intermediate, s.hidden),
        }
    return {
        "q_proj": (s.hidden, q),
        "k_proj": (s.hidden, kv),
        "v_proj": (s.hidden, kv),
        "o_proj": (q, s.hidden),
        "gate_proj": (s.hidden, s.intermediate),
        "up_proj": (s.hidden, s.intermediate),
        "down_proj": (s.intermediate, s.hidden),
    }


def layer_extras(s: Shape) -> int:
    """Per-layer parameters besides the projection matrices: norms and biases."""
    norms = (4 if s.model_type in _FOUR_NORMS else 2) * s.hidden
    if s.model_type in _QK_NORMS:
        norms += 2 * s.head_dim
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    biases = 0
    if s.model_type == "qwen2" or s.config.get("attention_bias"):
        biases += q + 2 * kv + (s.hidden if s.config.get("attention_bias") else 0)
    if s.config.get("mlp_bias"):
        biases += 2 * s.intermediate + s.hidden
    return norms + biases


def count_parameters(model_config: dict) -> dict[str, int]:
    """{"total", "projections"} parameter counts (projections: the linear layers 4-bit quantises)."""
    s = model_shape(model_config)
    projections = s.layers * sum(i * o for i, o in projection_shapes(s).values())
    embeddings = s.vocab * s.hidden * (1 if s.tied else 2)
    total = projections + s.layers * layer_extras(s) + embeddings + s.hidden  # + the final norm
    return {"total": total, "projections": projections}


def lora_parameters(model_config: dict, rank: int, targets: list[str]) -> int:
    """Trainable parameters of LoRA with `rank` on the modules named `targets` (peft's suffix match)."""
    s = model_shape(model_config)
    shapes = projection_shapes(s)
    return s.layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


@dataclass(frozen=True)
class TrainingSettings:
    """What a run's memory depends on besides the model (see `arte.training.precision`)."""

    dtype: str = "float32"  # the load dtype of the weights (float16 with method full loads fp32)
    compute_dtype: str = "float32"  # activations' dtype (bf16/fp16 under mixed precision)
    method: str = "full"  # full | lora
    lora_r: int = 8
    lora_targets: tuple[str, ...] = ()
    quantization: str = "none"  # none | 4bit (LoRA only)
    gradient_checkpointing: bool = False
    reference: str = "none"  # none (SFT) | adapter (LoRA DPO) | copy | precomputed (full DPO)
    batch_size: int = 1  # examples per device and forward pass
    sequences_per_example: int = 1  # DPO: 2 (chosen and rejected)
    max_length: int = 512
    num_processes: int = 1
    sharding: str = "none"  # none | ddp | fsdp | zero3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one process holds during training, by part; `total` is what must fit on one device."""

    parameters: int
    trainable: int
    weights: float
    gradients: float
    optimizer: float
    reference: float
    activations: float
    settings: TrainingSettings

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.reference + self.activations

    def lines(self) -> list[str]:
        """A small table for the log, one part per line, in GB."""
        s = self.settings
        where = f"{s.num_processes} process(es), {s.sharding}" if s.num_processes > 1 else "1 process"
        count = f"{self.parameters / 1e9:.2f}B" if self.parameters >= 1e9 else f"{self.parameters / 1e6:.1f}M"
        weights = f"{count} params, {'nf4' if s.quantization == '4bit' else s.dtype}"
        notes = {
            "weights": weights,
            "gradients": f"{self.trainable / 1e6:,.1f}M trainable ({s.method})",
            "optimizer": "AdamW, 2 states",
            "reference": s.reference,
            "activations": f"rough; {s.batch_size}x{s.sequences_per_example}x{s.max_length} tokens, "
            f"checkpointing {'on' if s.gradient_checkpointing else 'off'}",
        }
        rows = [f"  {part:<12}{getattr(self, part) / GB:9.2f} GB  {note}" for part, note in notes.items()]
        return [f"memory estimate per device ({where}):", *rows, f"  {'total':<12}{self.total / GB:9.2f} GB"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the parts in GB (2 decimals), the counts and the settings."""
        parts = ("weights", "gradients", "optimizer", "reference", "activations", "total")
        return {
            **{f"{p}_gb": round(getattr(self, p) / GB, 2) for p in parts},
            "parameters": self.parameters,
            "trainable_parameters": self.trainable,
            "settings": {**self.settings.__dict__, "lora_targets": list(self.settings.lora_targets)},
        }


def weight_bytes(counts: dict[str, int], s: TrainingSettings) -> float:
    if s.quantization == "4bit":
        rest = counts["total"] - counts["projections"]
        return counts["projections"] * NF4_BYTES + rest * DTYPE_BYTES[s.compute_dtype]
    return counts["total"] * DTYPE_BYTES[s.dtype]


def activation_bytes(shape: Shape, s: TrainingSettings) -> float:
    tokens = s.batch_size * s.sequences_per_example * s.max_length
    per_layer = 11 * shape.hidden + 4 * shape.intermediate
    values = (
        tokens * (shape.layers * shape.hidden + per_layer)
        if s.gradient_checkpointing
        else (tokens * shape.layers * per_layer)
    )
    return values * DTYPE_BYTES[s.compute_dtype]


def training_memory(model_config: dict, settings: TrainingSettings) -> MemoryEstimate:
    """The memory estimate of one training process for `model_config` (a config.json dict) under
    `settings`; ValueError for an architecture `model_shape` does not know."""
    s, shape, counts = settings, model_shape(model_config), count_parameters(model_config)
    if s.method == "lora":
        trainable = lora_parameters(model_config, s.lora_r, list(s.lora_targets))
        trainable_bytes = 4  # peft keeps adapters in fp32
    else:
        trainable, trainable_bytes = counts["total"], DTYPE_BYTES[s.dtype]
    weights = weight_bytes(counts, s)
    shards = s.num_processes if s.sharding in SHARDED else 1
    return MemoryEstimate(
        parameters=counts["total"],
        trainable=trainable,
        weights=weights / shards,
        gradients=trainable * trainable_bytes / shards,
        optimizer=2 * trainable * trainable_bytes / shards,
        reference=(weights if s.reference == "copy" else 0.0) / shards,
        activations=activation_bytes(shape, s),
        settings=s,
    )
