"""`arte export gguf|onnx|all`: trained student -> quantized, verified files + manifest.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arte.models import BUILT_IN_RANDOM, EMBEDDED, resolve_hf
from common.config import opt
from common.errors import UserError
from common.paths import removed_if_refused

GGUF_DEFAULT = ["f16", "q8_0", "q4_k_m"]
ONNX_DEFAULT = ["fp32", "int8", "int4"]
_MODEL_HELP = "HF model directory to export (or a LoRA adapter directory, with --base)."
_PICKLE_HELP = (
    "Read PyTorch pickle weights (pytorch_model.bin) when the model has no safetensors: it is converted "
    "to safetensors in OUT/safetensors-source/NAME first; the manifest records it. A pickle can run code "
    "when loaded: only for a model you trust."
)
_OVERWRITE_HELP = (
    "OUT holds the exports of another model (its manifest names other weights, by sha256): delete "
    "them (OUT/gguf, OUT/onnx, the manifest) first. Without it such an OUT is refused."
)
_EXTRA_BUFTS_HELP = (
    "llama.cpp verification: extra buffer types (repacked weights). auto: off where llama.cpp reports AMX "
    "(its AMX path segfaults, llama.cpp #20824), on elsewhere, unless env ARTE_LLAMA_EXTRA_BUFTS is set."
)


@dataclass
class ExportGGUFConfig:
    """Export to GGUF (llama.cpp, Ollama, LM Studio)."""

    model: str = opt("", _MODEL_HELP, positional=True)
    quant: list[str] = opt(GGUF_DEFAULT, "GGUF types: f32, f16, q8_0, q6_k, q5_k_m, q4_k_m, q4_0, ...")
    out: str = opt("exports", "Output directory (GGUF files under OUT/gguf, OUT/manifest.json).")
    base: str = opt(
        "", "Base model of a LoRA adapter (merged in fp32 before export); an embedded name works."
    )
    allow_pickle: bool = opt(False, _PICKLE_HELP)
    overwrite: bool = opt(False, _OVERWRITE_HELP)
    verify: bool = opt(True, "Verify each file against the fp32 PyTorch model (tokenizer, top-1, KL, text).")
    threads: int = opt(1, "CPU threads for conversion and verification.")
    extra_bufts: Literal["auto", "on", "off"] = opt("auto", _EXTRA_BUFTS_HELP)


@dataclass
class ExportOnnxConfig:
    """Export to ONNX (onnxruntime) with KV cache."""

    model: str = opt("", _MODEL_HELP, positional=True)
    quant: list[str] = opt(
        ONNX_DEFAULT, "ONNX variants: fp32, int8 (dynamic, per-channel), int4 (MatMulNBits)."
    )
    out: str = opt("exports", "Output directory (ONNX variants under OUT/onnx, OUT/manifest.json).")
    base: str = opt(
        "", "Base model of a LoRA adapter (merged in fp32 before export); an embedded name works."
    )
    allow_pickle: bool = opt(False, _PICKLE_HELP)
    overwrite: bool = opt(False, _OVERWRITE_HELP)
    threads: int = opt(1, "CPU threads for export and verification.")


@dataclass
class ExportAllConfig:
    """Every requested variant of a model, or of an ARTE run's student (--run_dir)."""

    model: str = opt("", _MODEL_HELP + " Empty: the ARTE student of --run_dir.", positional=True)
    run_dir: str = opt("", "An ARTE run directory: exports its trained student (train/arte).")
    gguf: list[str] = opt(GGUF_DEFAULT, "GGUF types (empty list: none).")
    onnx: list[str] = opt(ONNX_DEFAULT, "ONNX variants (empty list: none).")
    out: str = opt("", "Output directory; default RUN_DIR/export or ./exports.")
    base: str = opt(
        "", "Base model of a LoRA adapter (merged in fp32 before export); an embedded name works."
    )
    allow_pickle: bool = opt(False, _PICKLE_HELP)
    overwrite: bool = opt(False, _OVERWRITE_HELP)
    threads: int = opt(1, "CPU threads for export and verification.")
    extra_bufts: Literal["auto", "on", "off"] = opt("auto", _EXTRA_BUFTS_HELP)


def _need_model(model: str) -> str:
    if not model:
        raise UserError("export: give the model directory to export (see --help)")
    return _local(model)


def _local(spec: str) -> str:
    """An embedded or built-in model name as its local HF directory (made once); others unchanged."""

    return resolve_hf(spec) if spec in EMBEDDED or spec in BUILT_IN_RANDOM else spec


def _print(manifest: dict, out: str) -> int:
    print(f"{'format':<6} {'quant':<8} {'MB':>8} {'bits/w':>7} {'top-1':>6} {'KL':>9}  flagged")
    for v in manifest["variants"]:
        ver = v.get("verification") or {}
        top1, kl = ver.get("top1_agreement"), ver.get("mean_kl")
        top1 = f"{top1:.3f}" if top1 is not None else "-"
        kl = f"{kl:.4f}" if kl is not None else "-"
        print(
            f"{v['format']:<6} {v['quant']:<8} {v['size_bytes'] / 1e6:>8.1f} {v['bits_per_weight']:>7.2f} "
            f"{top1:>6} {kl:>9}  {ver.get('reason', '') if ver.get('flagged') else ''}"
        )
    print(f"\nmanifest: {Path(out).resolve() / 'manifest.json'}")
    return 0


def _export(model: str, out: str, cfg, **formats) -> dict:
    """export_model with the options every `arte export` command shares; a refusal leaves no empty
    --out behind."""
    from export.run import export_model

    with removed_if_refused(out):
        return export_model(
            _need_model(model),
            out,
            base=_local(cfg.base),
            threads=cfg.threads,
            allow_pickle=cfg.allow_pickle,
            overwrite=cfg.overwrite,
            **formats,
        )


def run_export_gguf(cfg: ExportGGUFConfig) -> int:
    m = _export(cfg.model, cfg.out, cfg, gguf=cfg.quant, verify=cfg.verify, extra_bufts=cfg.extra_bufts)
    return _print(m, cfg.out)


def run_export_onnx(cfg: ExportOnnxConfig) -> int:
    return _print(_export(cfg.model, cfg.out, cfg, onnx=cfg.quant), cfg.out)


def run_export_all(cfg: ExportAllConfig) -> int:
    if not cfg.model and cfg.run_dir and not (Path(cfg.run_dir) / "train" / "done.json").is_file():
        raise UserError(
            f"--run_dir {cfg.run_dir}: its train stage has not finished (no train/done.json): "
            "finish the run first (arte run --run_dir ...), or give the model directory"
        )
    model = cfg.model or (str(Path(cfg.run_dir) / "train" / "arte") if cfg.run_dir else "")
    out = cfg.out or (str(Path(cfg.run_dir) / "export") if cfg.run_dir else "exports")
    m = _export(model, out, cfg, gguf=cfg.gguf, onnx=cfg.onnx, extra_bufts=cfg.extra_bufts)
    from export.model_card import write_model_card

    print(f"model card: {write_model_card(out, m, cfg.run_dir or None)}")  # OUT/README.md (issue 28)
    return _print(m, out)
