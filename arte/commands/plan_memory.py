"""The plan's memory estimate (`arte plan`): `arte.training.memory_estimate` for align (DPO on the teacher)
and train (SFT of the student) with the config's settings, from each model's config.json, without
loading a weight or importing torch.

Where the model's config.json is not on this machine (a hub id, a placeholder, an embedded model not
materialised yet), the paper's models stand in when the config names them or still holds the
`FILL-IN` placeholder (their hub config.json values are below), and the plan says so. `dtype: auto`
is shown as it resolves on a GPU with bf16 (the plan is usually made before the GPU hours); one
process, plus a line for 8 processes under FSDP full-shard (configs/accelerate/fsdp_full_shard.yaml).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from arte.models import BUILT_IN_RANDOM, EMBEDDED, EMBEDDED_F16, cache_dir
from arte.run_config import RunConfig
from arte.stages.align import align_base
from arte.training.memory_estimate import training_memory
from arte.training.precision import DeviceFacts, resolve_precision, training_settings

PAPER_SHAPES: dict[str, dict[str, Any]] = {
    "Llama-3-70B-Instruct": {  # meta-llama/Meta-Llama-3-70B-Instruct config.json
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
    },
    "Gemma-2B": {  # google/gemma-2b config.json
        "model_type": "gemma",
        "vocab_size": 256000,
        "hidden_size": 2048,
        "intermediate_size": 16384,
        "num_hidden_layers": 18,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "tie_word_embeddings": True,
    },
}
"""The paper's teacher and student, for a plan whose models are not on this machine."""
SHARDED_PROCESSES = 8


def local_model_config(spec: str) -> tuple[dict | None, str]:
    """(config.json, where it was read) of a model spec, without materialising anything: an HF
    directory, or the cached HF copy of an embedded or built-in model; (None, why) otherwise."""

    if spec in EMBEDDED or spec in EMBEDDED_F16 or spec in BUILT_IN_RANDOM:
        candidates = [cache_dir() / "models" / EMBEDDED_F16.get(spec, spec)]
    else:
        candidates = [Path(spec).expanduser()]
    for d in candidates:
        if (d / "config.json").is_file():
            return json.loads((d / "config.json").read_text()), str(d / "config.json")
    return None, f"no config.json for {spec} on this machine"


def stand_in(spec: str, paper_name: str) -> dict | None:
    """The paper's model's shape when `spec` is the placeholder or names that model."""
    squashed = spec.lower().replace("-", "").replace("_", "")
    named = paper_name.lower().replace("-", "") in squashed
    return PAPER_SHAPES[paper_name] if "FILL-IN" in spec or named else None


def _estimate_lines(section: str, kind: str, model_config: dict, tcfg: Any) -> list[str]:

    gpu = DeviceFacts(cuda=True, bf16=True, name="a GPU with bf16")
    precision = resolve_precision(tcfg.dtype, tcfg.method, gpu, section)
    settings = training_settings(kind, tcfg, precision, 1)
    one = training_memory(model_config, settings)
    sharded = training_memory(
        model_config, dataclasses.replace(settings, num_processes=SHARDED_PROCESSES, sharding="fsdp")
    )
    return [
        *one.lines(),
        f"  under FSDP full-shard on {SHARDED_PROCESSES} processes: {sharded.total / 1e9:.2f} GB per device",
    ]


def memory_lines(cfg: RunConfig) -> list[str]:
    """The plan's memory section: align's and train's estimate per device (see module doc)."""

    out = []
    for section, kind, spec, tcfg, paper in (
        ("align", "dpo", align_base(cfg), cfg.align, "Llama-3-70B-Instruct"),
        ("train", "sft", cfg.student.model, cfg.train, "Gemma-2B"),
    ):
        config, source = local_model_config(spec)
        if config is None and (shape := stand_in(spec, paper)) is not None:
            config, source = shape, f"{source}; the paper's {paper} shape stands in"
        head = f"{section} ({'DPO on the teacher' if kind == 'dpo' else 'SFT of the student'}, {spec}):"
        if config is None:
            out += [head, f"  no estimate: {source}"]
            continue
        try:
            out += [f"{head} {source}", *_estimate_lines(section, kind, config, tcfg)]
        except (ValueError, KeyError) as e:  # an architecture the estimate does not know
            out += [head, f"  no estimate: {e}"]
    return out
