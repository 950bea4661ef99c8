"""One call from "trained student" to "files I can ship": merge a LoRA adapter if given, run the
pre-export checks, export every requested GGUF and ONNX variant, verify each against the PyTorch
model, and record everything in OUT/manifest.json.

Weights are read from safetensors only (`common.weights`): a model (or adapter) that holds only
PyTorch pickles is refused, unless `allow_pickle` (`--allow_pickle`), in which case it is first
converted to safetensors in OUT/safetensors-source/NAME, and the manifest records that it was."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError
from common.paths import writable_dir
from common.weights import check_model_weights, convert_to_safetensors
from export.adapter import is_adapter, merge_adapter
from export.checks import pre_export_checks
from export.manifest import check_same_source, update_manifest

log = logging.getLogger(__name__)


def prepare_source(model: str | Path, base: str, out_dir: Path, allow_pickle: bool = False) -> Path:
    """The HF directory to export: `model` itself, or `model` (a LoRA adapter) merged into `base`;
    a pickle-only model is refused, or with `allow_pickle` converted to OUT/safetensors-source/NAME."""
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"export: {path} does not exist (give a local HF model directory)")
    if is_adapter(path) and not (path / "config.json").is_file():
        return merge_adapter(path, base, Path(out_dir) / "merged-source", allow_pickle=allow_pickle)
    if base:
        raise UserError(f"export: --base is only for a LoRA adapter, and {path} is a full model")
    if path.is_dir() and not check_model_weights(path, allow_pickle, "--allow_pickle"):
        converted = Path(out_dir) / "safetensors-source" / path.name  # the exports keep the model's name
        if converted.exists():
            import shutil

            shutil.rmtree(converted)
        converted.parent.mkdir(parents=True, exist_ok=True)
        log.warning("export: %s holds pickle weights (--allow_pickle): converting to %s", path, converted)
        return convert_to_safetensors(path, converted)
    return path


def export_model(
    model: str | Path,
    out_dir: str | Path,
    *,
    gguf: Sequence[str] = (),
    onnx: Sequence[str] = (),
    base: str = "",
    verify: bool = True,
    threads: int = 1,
    extra_bufts: str = "auto",
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> dict:
    """Export `model` to the GGUF quant types in `gguf` and the ONNX variants in `onnx`. GGUF files
    are verified by llama.cpp with extra buffer types as `extra_bufts` decides
    (`common.llama_cpp_loader`); the decision is recorded in the manifest. `allow_pickle`: a
    pickle-only model may be read (converted first; recorded in the manifest). An `out_dir` holding
    another model's exports is refused, or with `overwrite` cleared first (one source per folder)."""
    out_dir = Path(out_dir)
    if gguf:  # validate names before any heavy work
        from export.gguf_quantize import check_quant_types

        gguf = check_quant_types(list(gguf))
    if onnx:
        from export.onnx import QUANTS

        unknown = [q for q in onnx if q not in QUANTS]
        if unknown:
            raise UserError(f"export onnx: unknown variant(s) {unknown}; supported: {', '.join(QUANTS)}")
    runtime = {}
    if gguf:
        from common.llama_cpp_loader import LlamaCppSettingError, decide_extra_bufts, llama_system_info

        try:
            decision = decide_extra_bufts(extra_bufts)
        except LlamaCppSettingError as e:
            raise UserError(f"export: {e}") from None
        runtime["llama_cpp"] = {"system_info": llama_system_info(), "extra_bufts": decision.as_record()}
    writable_dir(out_dir, "--out")
    source = prepare_source(model, base, out_dir, allow_pickle)
    check_same_source(out_dir, source, overwrite)
    if gguf:  # each format refuses an architecture it cannot export, before the shared checks
        from export.gguf_convert import read_model_config

        read_model_config(source)
    if onnx:
        from export.onnx_export import check_model_dir

        check_model_dir(source)
    checks = pre_export_checks(source)
    weights: dict = {"allow_pickle": allow_pickle}
    if source.parent == out_dir / "safetensors-source":
        weights["converted_from_pickle"] = str(Path(model).expanduser().resolve())
    records: list[dict] = []
    if gguf:
        from export.gguf import export_gguf

        records += export_gguf(
            source, out_dir / "gguf", list(gguf), verify=verify, threads=threads, extra_bufts=extra_bufts
        )
    if onnx:
        from export.onnx import export_onnx

        records += export_onnx(source, out_dir / "onnx", list(onnx), threads=threads)
    return update_manifest(out_dir, source, checks, records, runtime, weights=weights)
