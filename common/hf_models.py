"""Loading a causal LM with transformers for inference (fp32 on CPU by default): an HF directory, a
.gguf file (transformers de-quantizes it) or a hub id. Shared by the hf backend, the export
reference and the bench's PyTorch runtime path."""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError, missing_dependency
from common.gguf_tokenizer import repair_gguf_tokenizer
from common.weights import check_model_weights, explain_load_error

MATERIALIZED_MARKER = "arte-materialized.json"
"""The file `arte.models.materialize_hf` writes into an HF copy of a GGUF: {"source_gguf": path, ...}."""


def attention_kwargs(model_path: str | Path) -> dict:
    """from_pretrained keyword arguments for a correct forward: `attn_implementation="eager"` for a
    model with attention logit soft-capping (Gemma 2), because transformers' default SDPA attention
    silently drops the cap (tiny Gemma 2, cap 2.0: logits off by 2.4). {} otherwise or unreadable."""
    import json

    config = Path(model_path) / "config.json"
    try:
        capped = json.loads(config.read_text()).get("attn_logit_softcapping") is not None
    except (OSError, ValueError):
        return {}
    return {"attn_implementation": "eager"} if capped else {}


def source_gguf(path: Path) -> Path | None:
    """The GGUF a local model came from: the file itself, or the source recorded by
    `models.materialize_hf` in its marker file."""
    import json

    if path.is_file():
        return path
    marker = path / MATERIALIZED_MARKER
    if marker.is_file():
        source = Path(json.loads(marker.read_text()).get("source_gguf", ""))
        return source if source.is_file() else None
    return None


def load_hf_model(spec: str, dtype: str = "float32", *, allow_pickle: bool = False, flag: str = ""):
    """(tokenizer, model) for a resolved spec: an HF directory, a .gguf file (de-quantized by
    transformers) or a hub id. Local paths are loaded with local_files_only. Safetensors only
    (`common.weights`): pickle weights load only with `allow_pickle`, the opt-in set by the option
    `flag` (named when a pickle-only directory is refused). Errors -> UserError."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        spec = {"torch": "torch==2.13.0"}.get(e.name or "", "transformers==4.57.6")
        raise missing_dependency(e.name or "transformers", spec, "backend hf") from e
    path = Path(spec).expanduser()
    source, kwargs, model_kwargs = spec, {}, {}
    if path.exists():
        use_safetensors = check_model_weights(path, allow_pickle, flag)
        kwargs["local_files_only"] = True
        source = str(path)
        if path.is_file():  # a .gguf file: transformers reads it from its directory
            source, kwargs["gguf_file"] = str(path.parent), path.name
        else:
            model_kwargs["use_safetensors"] = use_safetensors
            model_kwargs.update(attention_kwargs(path))
    elif not allow_pickle:  # a hub id: safetensors only as well
        model_kwargs["use_safetensors"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), **kwargs, **model_kwargs
        )
    except Exception as e:  # noqa: BLE001 - any load failure is the user's model, reported as such
        raise UserError(f"cannot load model {spec!r}: {explain_load_error(e)[:600]}") from e
    origin = source_gguf(path) if path.exists() else None
    # A saved copy only needs the (2 s) repair while it still shows the converter's eos == bos bug.
    if origin is not None and (path.is_file() or tokenizer.eos_token == tokenizer.bos_token):
        repair_gguf_tokenizer(tokenizer, origin)
    model.eval()
    return tokenizer, model
