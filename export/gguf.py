"""GGUF export: HF model directory -> F16/F32 GGUF (our converter) -> llama.cpp quantizations, each
with its tensor-type census (`NAME.census.json`) and an Ollama Modelfile, then verified (export/verify.py).

The converter is built on the `gguf` package and writes what llama.cpp's own convert_hf_to_gguf.py
(llama-cpp-python 0.3.36, vendor/llama.cpp/conversion/: TextModel, LlamaModel, Qwen2Model) writes
for the architectures we support:
- hyper-parameters as `{arch}.*` keys; Llama's Q/K rows permuted from HF's rotate-half layout to
  GGML's interleaved pairs (Qwen2 is not permuted: llama.cpp runs it with NEOX rope); Qwen2's q/k/v
  biases; F16 output keeps 1-D tensors and norms in F32; tied embeddings are written once, as
  `token_embd` (llama.cpp uses it for the output when `output.weight` is absent).
- the tokenizer from `tokenizer.json` (byte-level BPE: tokenizer.ggml.model "gpt2"): tokens padded to
  the embedding rows with [PADi], token types, merges, special ids, chat template (gguf.SpecialVocab),
  add_bos/add_eos as the HF tokenizer really behaves, and the pre-tokenizer name llama.cpp needs to
  split text like HF: found by the same hash as llama.cpp's converter, else from the pre-tokenizer's
  structure. A model directory without a usable tokenizer.json but with a recorded source GGUF
  (`arte-materialized.json`) gets that GGUF's tokenizer.* metadata copied instead.

Quantization is llama.cpp's (`llama_cpp.llama_model_quantize`). On small models K-quants fall back to
other types for rows not divisible by 256; the census next to each file says what it really holds.

The conversion itself lives in `export.gguf_convert`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

from arte.errors import UserError
from arte.run_dir import sha256_file, write_json_atomic
from export.gguf_convert import (
    QUANT_TYPES,
    check_quant_types,
    convert_hf_to_gguf,
    log,
    read_model_config,
)


def quantize_gguf(src: Path, dst: Path, qtype: str, threads: int = 1) -> Path:
    """Quantize an F32/F16 GGUF with llama.cpp's quantizer (`llama_model_quantize`). It reads the
    tensors on the CPU and never places weights in backend buffers, so the extra-buffer-type (AMX)
    setting of `common.llama_cpp_loader` does not apply to it."""
    (qtype,) = check_quant_types([qtype])
    import ctypes

    import llama_cpp
    from llama_cpp._logger import logger as llama_logger

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[qtype])
    params.nthread = threads
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    # Quiets llama.cpp's per-tensor INFO lines (llama-cpp-python maps ggml's INFO to WARNING); the
    # per-tensor fallback warnings and the "N of M tensors required fallback" summary still print.
    level = llama_logger.level
    llama_logger.setLevel(logging.ERROR)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    finally:
        llama_logger.setLevel(level)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise UserError(f"llama.cpp could not quantize {src} to {qtype} (return code {rc})")
    tmp.replace(dst)
    return dst


def read_gguf_header(path: Path) -> tuple[dict, list[dict]]:
    """(metadata, tensor infos) of a GGUF v2/v3 file, parsed directly: GGUFReader takes seconds on a
    50k-token vocabulary. Tensor infos: name, type (GGML type name), shape, params, bytes."""
    import mmap
    import struct

    import gguf
    import numpy as np

    scalar = {i: "<" + c for i, c in [*enumerate("BbHhIif?"), (10, "Q"), (11, "q"), (12, "d")]}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = 0

        def take(fmt: str):
            nonlocal pos
            (value,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return value

        def string() -> str:
            nonlocal pos
            n = take("<Q")
            pos += n
            return buf[pos - n : pos].decode("utf-8", errors="replace")

        def value(vtype: int):
            nonlocal pos
            if vtype == 8:
                return string()
            if vtype != 9:
                return take(scalar[vtype])
            item, n = take("<I"), take("<Q")
            if item in (8, 9):
                return [value(item) for _ in range(n)]
            arr = np.frombuffer(buf, dtype=np.dtype(scalar[item]), count=n, offset=pos).tolist()
            pos += n * struct.calcsize(scalar[item])
            return arr

        magic, version = take("<4s"), take("<I")
        if magic != b"GGUF" or version not in (2, 3):
            raise UserError(f"{path} is not a GGUF v2/v3 file (magic {magic!r}, version {version})")
        n_tensors, n_kv = take("<Q"), take("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = string()
            metadata[key] = value(take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = string()
            shape = [take("<Q") for _ in range(take("<I"))]
            qtype = gguf.GGMLQuantizationType(take("<I"))
            take("<Q")  # data offset
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            params = math.prod(shape)
            tensors.append(
                {
                    "name": name,
                    "type": qtype.name,
                    "shape": shape,
                    "params": params,
                    "bytes": params // block * type_size,
                }
            )
    return metadata, tensors


def tensor_census(path: Path) -> dict[str, dict[str, int]]:
    """{GGML type name: {"tensors", "params", "bytes"}} of a GGUF file, most params first."""
    out: dict[str, dict[str, int]] = {}
    for t in read_gguf_header(path)[1]:
        row = out.setdefault(t["type"], {"tensors": 0, "params": 0, "bytes": 0})
        row["tensors"] += 1
        row["params"] += t["params"]
        row["bytes"] += t["bytes"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["params"]))


def bits_per_weight(census: dict[str, dict[str, int]]) -> float:
    """8 * tensor bytes / params over the whole file."""
    params = sum(r["params"] for r in census.values())
    return 8 * sum(r["bytes"] for r in census.values()) / params if params else 0.0


def write_census(gguf_path: Path, quant: str) -> dict:
    """Write `NAME.census.json` beside the GGUF (per-type totals + every tensor's type); return it."""
    census = tensor_census(gguf_path)
    params = sum(r["params"] for r in census.values())
    doc = {
        "file": gguf_path.name,
        "quant": quant,
        "bits_per_weight": round(bits_per_weight(census), 4),
        "params": params,
        "share_of_params": {k: round(r["params"] / params, 4) for k, r in census.items()},
        "types": census,
        "tensors": {t["name"]: t["type"] for t in read_gguf_header(gguf_path)[1]},
    }
    if quant.startswith(("q", "iq")) and "_k" in quant:
        k_share = sum(r["params"] for k, r in census.items() if k.endswith("_K")) / params
        doc["k_quant_share"] = round(k_share, 4)
        if k_share < 0.5:
            doc["note"] = (
                f"{quant}: only {k_share:.0%} of the weights are K-quants; rows not divisible by 256 "
                "fell back to other types (see 'types')"
            )
    write_json_atomic(gguf_path.with_name(gguf_path.name.removesuffix(".gguf") + ".census.json"), doc)
    return doc


_OLLAMA_CHATML = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"


"""Ollama's ChatML template (its docs/template.md example); a SYSTEM line supplies the default system turn."""


def write_modelfile(gguf_path: Path, chat_template: str | None = None, eos_token: str | None = None) -> Path:
    """Write `NAME.Modelfile` beside the GGUF: FROM it, a ChatML TEMPLATE (+ the template's default
    system prompt) when the chat template is ChatML, and stop strings for EOS / <|im_end|>. The
    chat template and EOS default to what the GGUF itself carries."""
    gguf_path = Path(gguf_path)
    if chat_template is None or eos_token is None:
        meta_template, meta_eos = _gguf_chat_metadata(gguf_path)
        chat_template = chat_template if chat_template is not None else meta_template
        eos_token = eos_token if eos_token is not None else meta_eos
    lines = [
        f"# Ollama Modelfile written by arte export gguf. Use: ollama create NAME -f {gguf_path.stem}.Modelfile"
    ]
    lines.append(f"FROM ./{gguf_path.name}")
    stops = [eos_token] if eos_token else []
    if chat_template and "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        lines.append(f'TEMPLATE """{_OLLAMA_CHATML}"""')
        system = default_system_prompt(chat_template)
        if system:
            lines.append(f'SYSTEM """{system}"""')
        stops += ["<|im_end|>", "<|im_start|>"]
    elif chat_template:
        lines.append(
            "# The chat template is not ChatML: not converted; Ollama reads the GGUF's own template."
        )
    for stop in dict.fromkeys(stops):
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    path = gguf_path.with_name(gguf_path.stem + ".Modelfile")
    path.write_text("\n".join(lines) + "\n")
    return path


def default_system_prompt(chat_template: str) -> str | None:
    """The constant system turn a ChatML template inserts when the conversation has none (SmolLM2:
    "You are a helpful AI assistant named SmolLM, ..."), or None: the first literal
    `<|im_start|>system\n...<|im_end|>` without Jinja in it."""
    for m in re.finditer(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", chat_template, re.S):
        if not re.search(r"[{}'\"]", m.group(1)):
            return m.group(1).replace("\\n", "\n")
    return None


def _gguf_chat_metadata(gguf_path: Path) -> tuple[str | None, str | None]:
    """(tokenizer.chat_template, EOS token text) of a GGUF file."""
    meta = read_gguf_header(gguf_path)[0]
    eos_id, tokens = meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.tokens") or []
    eos = tokens[eos_id] if eos_id is not None and eos_id < len(tokens) else None
    return meta.get("tokenizer.chat_template"), eos


def export_gguf(
    model_dir: Path,
    out_dir: Path,
    quants: list[str],
    *,
    verify: bool = True,
    name: str | None = None,
    threads: int = 1,
    extra_bufts: str = "auto",
) -> list[dict]:
    """Convert `model_dir` once (F16, or F32 when "f32" is requested), quantize every other type from
    it, write a census JSON and a Modelfile beside each file, and verify each against the PyTorch
    model (export/verify.py: an F16/F32 file that disagrees raises ExportVerificationError, a weak
    quantization is flagged). Returns one record per requested file."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    quants = check_quant_types(quants)
    config, _ = read_model_config(model_dir)  # fail fast on bad input, before any heavy import
    name = name or model_dir.name
    base = "f32" if "f32" in quants else "f16"
    base_path = out_dir / f"{name}-{base}.gguf"
    log.info("GGUF export: converting %s -> %s", model_dir, base_path)
    convert_hf_to_gguf(model_dir, base_path, base)
    paths = {base: base_path}
    for q in quants:
        if q != base:
            paths[q] = quantize_gguf(base_path, out_dir / f"{name}-{q}.gguf", q, threads=threads)
    if base not in quants:  # only the source of the quantizations
        base_path.unlink()
        del paths[base]

    reference = None
    if verify:
        from export.verify import load_reference, reference_logits

        reference = reference_logits(load_reference(model_dir, threads))
    records = []
    for q in quants:
        path = paths[q]
        census = write_census(path, q)
        record = {
            "format": "gguf",
            "path": str(path),
            "quant": q,
            "size_bytes": path.stat().st_size,
            "bits_per_weight": census["bits_per_weight"],
            "sha256": sha256_file(path),
            "census": census["types"],
            "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
            "modelfile": str(write_modelfile(path)),
        }
        if reference is not None:
            from export.verify import verify_gguf

            record["verification"] = verify_gguf(
                model_dir, path, q, reference=reference, threads=threads, extra_bufts=extra_bufts
            )
        records.append(record)
    return records
