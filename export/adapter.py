"""A base model plus a LoRA adapter becomes one merged HF directory before export. The merge is
done in fp32 (or fp16) weights, never into a quantized base: merging into rounded weights and
quantizing again compounds the error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from common.errors import UserError
from common.weights import check_model_weights


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def merge_adapter(
    adapter_dir: Path,
    base: str,
    out_dir: Path,
    dtype: Literal["float32", "float16"] = "float32",
    allow_pickle: bool = False,
) -> Path:
    """Merge the LoRA adapter in `adapter_dir` into `base` (local HF directory); save to `out_dir`.
    Both are read from safetensors only, unless `allow_pickle` (`common.weights`)."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not base:
        recorded = json.loads((adapter_dir / "adapter_config.json").read_text()).get(
            "base_model_name_or_path"
        )
        if not recorded or not Path(recorded).is_dir():
            raise UserError(
                f"export: {adapter_dir} is a LoRA adapter and its base ({recorded or 'not recorded'}) "
                "is not a local directory: pass the base model with --base"
            )
        base = recorded
    base_dir = Path(base).expanduser()
    if base_dir.suffix == ".gguf" or not (base_dir / "config.json").is_file():
        raise UserError(f"export: base {base} must be an HF model directory with fp32/fp16 weights")
    if "quantization_config" in json.loads((base_dir / "config.json").read_text()):
        raise UserError(f"export: base {base} is quantized; merge the adapter into fp32/fp16 weights")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    use_safetensors = check_model_weights(base_dir, allow_pickle, "--allow_pickle")
    if not (adapter_dir / "adapter_model.safetensors").is_file() and not allow_pickle:
        raise UserError(
            f"export: {adapter_dir} holds no adapter_model.safetensors (a pickle can run code when "
            "loaded, so arte reads safetensors only): save the adapter again with safe_serialization, "
            "or pass --allow_pickle true"
        )
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=getattr(torch, dtype), local_files_only=True, use_safetensors=use_safetensors
    )
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tok_source = adapter_dir if (adapter_dir / "tokenizer.json").is_file() else base_dir
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tok_source / name).is_file():
            shutil.copy2(tok_source / name, tmp / name)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
