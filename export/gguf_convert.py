"""HF model directory -> one F32 or F16 GGUF file, by llama.cpp's own converter
(`export.llama_cpp_converter`: convert_hf_to_gguf.py from the installed llama-cpp-python's sdist), so
every architecture llama.cpp converts can be exported and the file is what llama.cpp itself writes.
`export.gguf_quantize` then quantizes it.

Our part is around the converter: `read_model_config` refuses what cannot work before any weights
are loaded (no config.json, a LoRA adapter, an architecture the converter does not register), and the
converter runs in a subprocess (its bundled gguf-py must not replace the `gguf` package we import),
writing to a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

from common.errors import UserError

log = logging.getLogger(__name__)

TESTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "Phi3ForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
)
"""Architectures whose GGUF F16 export is verified against torch by the tests (tests/test_architectures.py);
the converter accepts many more (`supported_architectures()`), unverified by us."""


def supported_architectures() -> frozenset[str]:
    """HF architectures llama.cpp's installed converter registers."""
    from export.llama_cpp_converter import supported_architectures as registered

    return registered()


def read_model_config(model_dir: Path) -> tuple[dict, str]:
    """(config.json as a dict, HF architecture name) of an HF model directory; UserError if it is
    missing, is a LoRA adapter, names no architecture, or one llama.cpp's converter lacks."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        what = "is a file" if model_dir.exists() else "does not exist"
        raise UserError(
            f"GGUF export needs an HF model directory (config.json + weights): {model_dir} {what}"
        )
    if not (model_dir / "config.json").is_file():
        if (model_dir / "adapter_config.json").is_file():
            raise UserError(f"{model_dir} is a LoRA adapter without its base: merge it into the base first")
        raise UserError(f"{model_dir} has no config.json: not an HF model directory")
    config = json.loads((model_dir / "config.json").read_text())
    archs = config.get("architectures") or []
    if not archs:
        raise UserError(
            f'{model_dir}/config.json has no "architectures" (e.g. ["LlamaForCausalLM"]); '
            "llama.cpp's converter needs it: save the model with save_pretrained"
        )
    if archs[0] not in supported_architectures():
        tested = ", ".join(TESTED_ARCHITECTURES)
        raise UserError(
            f"{model_dir}: architecture {archs[0]!r} is not supported by llama.cpp's converter "
            f"(llama-cpp-python's sdist). Tested here: {tested}; `python -m export.llama_cpp_converter "
            "where` shows the converter, `grep ModelBase.register` in it lists the rest"
        )
    return config, archs[0]


def convert_hf_to_gguf(
    model_dir: Path, out_path: Path, outtype: Literal["f32", "f16"] = "f16", threads: int = 1
) -> Path:
    """Write the HF model in `model_dir` as a GGUF file with llama.cpp's converter (F32, or F16 with
    norms and 1-D tensors in F32, as llama.cpp decides); atomic."""
    from export.llama_cpp_converter import run_converter

    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in ("f32", "f16"):
        raise UserError(f"convert_hf_to_gguf: outtype must be 'f32' or 'f16', got {outtype!r}")
    read_model_config(model_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        converter_log = run_converter(model_dir, tmp, outtype, threads=threads)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed or interrupted run leaves nothing behind
        raise
    log.debug("llama.cpp converter log:\n%s", converter_log)
    tmp.replace(out_path)
    return out_path
