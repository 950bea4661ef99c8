"""Checks run on a model directory before any export, for GGUF and ONNX alike. Hand-made exports
break in known ways; these catch the ones visible in the files: a vocabulary that does not match the
embedding, BOS/EOS ids that disagree between config, generation config and tokenizer, and a tied
embedding that an exporter could duplicate.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.errors import UserError
from common.safetensors_header import safetensors_tensors


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def model_config(model_dir: Path) -> dict:
    """config.json of a model directory, or a UserError saying what is wrong. Which architectures
    a format supports is each exporter's to say (export.gguf_convert, export.onnx_export)."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise UserError(f"export: model directory {model_dir} does not exist")
    if (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file():
        raise UserError(f"export: {model_dir} is a LoRA adapter; pass its base model with --base")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"export: {model_dir} has no config.json: not an HF model directory")
    config = _read_json(model_dir / "config.json")
    if not config.get("architectures"):
        raise UserError(
            f'export: {model_dir}/config.json names no "architectures" (e.g. ["LlamaForCausalLM"])'
        )
    return config


def embedding_rows(model_dir: Path) -> int | None:
    """Rows of the input embedding, read from the safetensors headers (no weights loaded)."""
    for t in safetensors_tensors(Path(model_dir)):
        if t.name.endswith("embed_tokens.weight"):
            return int(t.shape[0])
    return None


def _tokenizer_ids(model_dir: Path) -> tuple[int, dict[str, int]]:
    """(number of tokens, token text -> id) from tokenizer.json (model vocab + added tokens)."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"export: {model_dir} has no tokenizer.json (a fast tokenizer is required)")
    spec = _read_json(path)
    vocab = dict(spec.get("model", {}).get("vocab", {}))
    vocab.update({t["content"]: t["id"] for t in spec.get("added_tokens", [])})
    return (max(vocab.values()) + 1 if vocab else 0), vocab


def _as_set(value) -> set[int]:
    if value is None:
        return set()
    return set(value) if isinstance(value, list) else {value}


def _token_id(tok_config: dict, key: str, vocab: dict[str, int]) -> int | None:
    token = tok_config.get(key)
    if isinstance(token, dict):
        token = token.get("content")
    return vocab.get(token) if token else None


def pre_export_checks(model_dir: Path) -> dict:
    """Vocabulary sizes, BOS/EOS agreement and tied embeddings; raises a UserError on a mismatch
    that would make the exported model misbehave. Returns what was checked, for the manifest."""
    model_dir = Path(model_dir)
    config = model_config(model_dir)
    n_tokens, vocab = _tokenizer_ids(model_dir)
    rows, vocab_size = embedding_rows(model_dir), config.get("vocab_size")
    problems = []
    if rows is not None and rows != vocab_size:
        problems.append(f"embedding has {rows} rows but config.json vocab_size is {vocab_size}")
    if vocab_size is not None and n_tokens > vocab_size:
        problems.append(f"tokenizer has {n_tokens} tokens but the embedding only {vocab_size} rows")
    tok_config = (
        _read_json(model_dir / "tokenizer_config.json")
        if (model_dir / "tokenizer_config.json").is_file()
        else {}
    )
    gen_path = model_dir / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.is_file() else {}
    ids = {}
    for which in ("bos", "eos"):
        tok = _token_id(tok_config, f"{which}_token", vocab)
        cfg, gen_ids = _as_set(config.get(f"{which}_token_id")), _as_set(gen.get(f"{which}_token_id"))
        ids[which] = {"tokenizer": tok, "config": sorted(cfg), "generation_config": sorted(gen_ids)}
        if tok is not None and cfg and tok not in cfg:
            problems.append(f"{which.upper()}: tokenizer says {tok}, config.json says {sorted(cfg)}")
        if tok is not None and gen_ids and tok not in gen_ids:
            problems.append(
                f"{which.upper()}: tokenizer says {tok}, generation_config.json says {sorted(gen_ids)}"
            )
    if problems:
        raise UserError(
            f"export: {model_dir}: " + "; ".join(problems) + ". Fix the model files before exporting."
        )
    return {
        "architecture": config["architectures"][0],
        "vocab_size": vocab_size,
        "embedding_rows": rows,
        "tokenizer_tokens": n_tokens,
        "padded_vocab": bool(vocab_size and n_tokens < vocab_size),
        "special_ids": ids,
        "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
    }
