"""GGUF export, end to end: an HF model directory is converted once to F16 (or F32,
`export.gguf_convert`), every other requested type is quantized from that file by llama.cpp
(`export.gguf_quantize`), each file gets its tensor-type census (`NAME.census.json`) and an Ollama
Modelfile (`NAME.Modelfile`, written here), and each is verified against the PyTorch model
(`export.gguf_verify`). `export_gguf` returns one manifest record per requested file.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from common.gguf_header import read_gguf_header
from common.records import sha256_file
from export.gguf_convert import convert_hf_to_gguf, read_model_config
from export.gguf_quantize import check_quant_types, quantize_gguf, write_census
from export.reference import ExportVerificationError

log = logging.getLogger(__name__)


_OLLAMA_CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
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
        "# Ollama Modelfile written by arte export gguf. "
        f"Use: ollama create NAME -f {gguf_path.stem}.Modelfile"
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
    model (`export.gguf_verify`: an F16/F32 file that disagrees raises ExportVerificationError, a weak
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
        from export.reference import load_reference, reference_logits

        reference = reference_logits(load_reference(model_dir, threads))
    records = []
    try:
        for q in quants:
            records.append(_record(model_dir, paths[q], q, config, reference, threads, extra_bufts))
    except ExportVerificationError as e:  # nothing unverified stays behind to be shipped by mistake
        removed = _remove_outputs(paths.values())
        raise ExportVerificationError(f"{e} (removed the unverified files: {', '.join(removed)})") from None
    return records


def _remove_outputs(paths) -> list[str]:
    """Delete GGUF files with their census and Modelfile; the names of the GGUF files removed."""
    removed = []
    for path in paths:
        for p in (path, path.with_name(path.stem + ".census.json"), path.with_name(path.stem + ".Modelfile")):
            if p.exists():
                p.unlink()
        removed.append(path.name)
    return removed


def _record(
    model_dir: Path, path: Path, q: str, config: dict, reference, threads: int, extra_bufts: str
) -> dict:
    """The manifest record of one GGUF file: census, Modelfile, hash and (with a reference) its
    verification (ExportVerificationError when an F16/F32 file disagrees)."""
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
        from export.gguf_verify import verify_gguf

        record["verification"] = verify_gguf(
            model_dir, path, q, reference=reference, threads=threads, extra_bufts=extra_bufts
        )
    return record
