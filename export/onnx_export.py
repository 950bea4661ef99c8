"""The fp32 ONNX export of a causal LM of a tested family (SUPPORTED_ARCHITECTURES), and the
ONNX-directory plumbing the quantizers share (load, save with or without external data, publish a
finished directory, copy the tokenizer files, initializer byte sizes).

`export_onnx_fp32` runs optimum-onnx's `main_export` with task text-generation-with-past: one
`model.onnx` that takes `past_key_values.*` and returns `present.*`; the tokenizer and generation
files are copied from the source. Tied embeddings (one matrix for the input embedding and the LM
head) are stored once: optimum already ties them (the Gather reads `model.embed_tokens.weight`, the
LM head MatMul a `Transpose` of it); `_share_duplicate_weights` rewires any exact or transposed copy
that an export still holds to the one kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import UserError, missing_dependency
from common.hf_models import attention_kwargs
from common.onnx_decode import EXTERNAL_DATA_FILE, ONNX_FILE
from common.onnx_tensors import tensor_bytes

SUPPORTED_ARCHITECTURES = {
    "llama": "Llama",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "mistral": "Mistral",
    "phi3": "Phi-3",
    "gemma2": "Gemma 2",
    "gemma3_text": "Gemma 3 (text)",
}
"""config.json model_type -> the causal-LM family this exporter supports: each is exported and
verified against torch through the KV cache by tests/test_architectures.py. optimum-onnx registers
more; they are refused until tested."""

EXTERNAL_DATA_MIN_BYTES = 1 << 30
"""Weights above this go to `model.onnx_data` (a protobuf file cannot exceed 2 GB)."""

SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
)
"""Copied verbatim from the source model, so tokenizer and generation settings cannot drift."""


def check_model_dir(model_dir: Path) -> dict:
    """config.json of a supported HF causal-LM directory; UserError (listing what is supported) else."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise UserError(f"export onnx: model directory {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        if (model_dir / "adapter_config.json").is_file():
            raise UserError(f"export onnx: {model_dir} is a LoRA adapter without its base; merge it first")
        raise UserError(f"export onnx: {model_dir} has no config.json: not an HF model directory")
    config = json.loads((model_dir / "config.json").read_text())
    model_type, archs = config.get("model_type"), config.get("architectures") or []
    if model_type not in SUPPORTED_ARCHITECTURES or not all(a.endswith("ForCausalLM") for a in archs):
        raise UserError(
            f"export onnx: {model_dir}: unsupported architecture {', '.join(archs) or model_type!r} "
            f"(model_type {model_type!r}). Supported: {', '.join(SUPPORTED_ARCHITECTURES.values())}"
        )
    return config


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fresh_dir(out_dir: Path) -> Path:
    """An empty temporary sibling of `out_dir`; `publish` renames it into place when complete."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out_dir: Path) -> Path:
    """Replace `out_dir` with the finished directory `tmp` (from `fresh_dir`); returns `out_dir`."""
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def copy_side_files(src: Path, dst: Path, names: Sequence[str] = (*SIDE_FILES, "config.json")) -> None:
    """Copy the files of `names` that `src` has into `dst`."""
    for name in names:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def load_model(onnx_dir: Path, external: bool = True):
    """The ModelProto of onnx_dir/model.onnx, with its external weights loaded if `external`."""
    import onnx

    return onnx.load(str(Path(onnx_dir) / ONNX_FILE), load_external_data=external)


def save_model(model, out_dir: Path, external_data: bool | None = None) -> None:
    """out_dir/model.onnx, with the weights in model.onnx_data if `external_data` (None: if large)."""
    import onnx

    if external_data is None:
        external_data = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_MIN_BYTES
    kw = dict(save_as_external_data=True, all_tensors_to_one_file=True, location=EXTERNAL_DATA_FILE)
    onnx.save_model(model, str(out_dir / ONNX_FILE), **(kw if external_data else {}))


def replace_initializers(model, keep) -> None:
    """Keep only the initializers for which `keep(tensor)` is true."""
    kept = [t for t in model.graph.initializer if keep(t)]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def embedding_copies(model, vocab_size: int, hidden_size: int) -> list[dict]:
    """Initializers that hold the vocab x hidden matrix in any layout ([V,H], [H,V], packed 4-bit
    [V, H/block, block/2]): one entry when a tied embedding is stored once."""
    out = []
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 0
        if vocab_size in t.dims and n in (vocab_size * hidden_size, vocab_size * hidden_size // 2):
            out.append({"name": t.name, "dims": list(t.dims), "bytes": tensor_bytes(t)})
    return out


def _share_duplicate_weights(model) -> list[str]:
    """Rewire each large 2-D initializer that equals another one (or its transpose, through a
    Transpose node) to the one kept and drop it; returns the names dropped."""
    from onnx import helper, numpy_helper

    big = [t for t in model.graph.initializer if len(t.dims) == 2 and np.prod(t.dims) >= 4096]
    by_size: dict[tuple, list] = {}
    for t in big:
        by_size.setdefault((t.data_type, int(np.prod(t.dims))), []).append(t)
    dropped: dict[str, str] = {}
    for group in (g for g in by_size.values() if len(g) > 1):
        arrays = [numpy_helper.to_array(t) for t in group]
        for i, j in [(a, b) for a in range(len(group)) for b in range(a + 1, len(group))]:
            keep, dup = group[i], group[j]
            if keep.name in dropped or dup.name in dropped:
                continue
            if arrays[i].shape == arrays[j].shape and np.array_equal(arrays[i], arrays[j]):
                dropped[dup.name] = keep.name
            elif arrays[i].shape == arrays[j].shape[::-1] and np.array_equal(arrays[i].T, arrays[j]):
                dropped[dup.name] = f"{keep.name}_shared_transposed"
                # just before the copy's first reader, after the embedding's Gather: the int8 quantizer
                # walks the nodes in order and quantizes a Transpose only of an already quantized input
                # (at the graph's head, Gemma 3's fp32 embedding stayed beside its int8 copy)
                first = next(k for k, n in enumerate(model.graph.node) if dup.name in n.input)
                transpose = helper.make_node("Transpose", [keep.name], [dropped[dup.name]])
                model.graph.node.insert(first, transpose)
    for node in model.graph.node:
        node.input[:] = [dropped.get(x, x) for x in node.input]
    replace_initializers(model, lambda t: t.name not in dropped)
    return list(dropped)


def _export_eager(model_dir: Path, out_dir: Path) -> None:
    """optimum-onnx's export of the model loaded here with eager attention (Gemma 2's soft-capped
    attention; `common.hf_models.attention_kwargs`)."""
    import torch
    from optimum.exporters.onnx import onnx_export_from_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, local_files_only=True, **attention_kwargs(model_dir)
    ).eval()
    onnx_export_from_model(model, out_dir, task="text-generation-with-past", do_validation=False)


def export_onnx_fp32(model_dir: Path, out_dir: Path, threads: int = 1) -> Path:
    """optimum-onnx export (text-generation-with-past, fp32) of `model_dir` into `out_dir`, the tied
    embedding stored once, the source tokenizer/generation files beside it. Returns `out_dir`."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as e:
        raise missing_dependency("optimum.exporters.onnx", "optimum-onnx==0.1.0", "export onnx") from e
    model_dir, out_dir = Path(model_dir).expanduser(), Path(out_dir)
    check_model_dir(model_dir)
    tmp = fresh_dir(out_dir)
    with _torch_threads(threads):
        if attention_kwargs(model_dir):  # main_export would load it with SDPA, which drops the caps
            _export_eager(model_dir, tmp)
        else:
            main_export(
                str(model_dir),
                tmp,
                task="text-generation-with-past",
                dtype="fp32",
                device="cpu",
                local_files_only=True,
                do_validation=False,
                library_name="transformers",
            )
    model = load_model(tmp)
    if _share_duplicate_weights(model):
        (tmp / EXTERNAL_DATA_FILE).unlink(missing_ok=True)
        save_model(model, tmp)
    copy_side_files(model_dir, tmp, SIDE_FILES)
    return publish(tmp, out_dir)
