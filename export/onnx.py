"""ONNX export, end to end, of a Llama- or Qwen2-family causal LM for onnxruntime: the fp32 export
(`export.onnx_export`), the int8 and int4 variants made from it (`export.onnx_quantize`), each
loaded back in two runtimes and verified against the fp32 PyTorch model (`export.onnx_verify`).
`export_onnx` writes out_dir/<quant>/ per variant and returns one manifest record per variant (also
written to out_dir/onnx_export.json): files, sizes, hashes, bits per weight, embedding copies,
quantization settings, tool versions, load checks and verification.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from common.errors import unknown_name
from common.onnx_decode import EXTERNAL_DATA_FILE, ONNX_FILE
from common.onnx_tensors import tensor_bytes
from common.records import sha256_file, write_json_atomic
from export.onnx_export import check_model_dir, embedding_copies, export_onnx_fp32, load_model
from export.onnx_quantize import quantize_onnx_int4, quantize_onnx_int8
from export.onnx_verify import load_checks, verify_onnx
from export.reference import load_reference, reference_logits

QUANTS = ("fp32", "int8", "int4")
"""The variants `export_onnx` can write."""


def tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("optimum", "optimum-onnx", "onnx", "onnxruntime", "onnx-ir", "torch", "transformers"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def file_record(onnx_dir: Path, n_params: int) -> dict:
    """Files, size (incl. external data), sha256 per model file, weight bytes, bits per weight
    (all initializer bytes * 8 / the PyTorch model's parameter count) and embedding copies."""
    model = load_model(onnx_dir, external=False)
    files = [p for p in (onnx_dir / ONNX_FILE, onnx_dir / EXTERNAL_DATA_FILE) if p.is_file()]
    weight_bytes = sum(tensor_bytes(t) for t in model.graph.initializer)
    config = json.loads((onnx_dir / "config.json").read_text())
    return {
        "files": [p.name for p in files],
        "size_bytes": sum(p.stat().st_size for p in files),
        "sha256": {p.name: sha256_file(p) for p in files},
        "weight_bytes": weight_bytes,
        "n_params": n_params,
        "bits_per_weight": round(weight_bytes * 8 / n_params, 3),
        "embedding_copies": embedding_copies(model, config["vocab_size"], config["hidden_size"]),
    }


def export_onnx(
    model_dir: Path, out_dir: Path, quants: Sequence[str] = QUANTS, threads: int = 1
) -> list[dict]:
    """Export `model_dir` to out_dir/<quant>/ for each of `quants`, load-check and verify each against
    PyTorch (one shared reference run); returns one record per variant, also written to
    out_dir/onnx_export.json. int8/int4 are made from the fp32 export (kept only if asked for)."""
    model_dir, out_dir = Path(model_dir).expanduser(), Path(out_dir).expanduser()
    quants = list(dict.fromkeys(q.strip().lower() for q in quants))
    for q in quants or ["(none)"]:
        if q not in QUANTS:
            raise unknown_name("ONNX quant type", q, QUANTS, where="export onnx")
    config = check_model_dir(model_dir)
    fp32_dir = out_dir / ("fp32" if "fp32" in quants else ".fp32-intermediate")
    started = time.time()
    export_onnx_fp32(model_dir, fp32_dir, threads)
    seconds = {"fp32": time.time() - started}
    for quant, build in (("int8", quantize_onnx_int8), ("int4", quantize_onnx_int4)):
        if quant in quants:
            started = time.time()
            build(fp32_dir, out_dir / quant)
            seconds[quant] = time.time() - started
    reference_model = load_reference(model_dir, threads)
    n_params = sum(p.numel() for p in reference_model.model.parameters())  # a tied matrix counts once
    reference = reference_logits(reference_model)
    records = []
    for quant in [q for q in QUANTS if q in quants]:
        onnx_dir = out_dir / quant
        qconfig = onnx_dir / "quantize_config.json"
        loads = load_checks(onnx_dir)
        verification = verify_onnx(model_dir, onnx_dir, quant, reference=reference, threads=threads)
        records.append(
            {
                "format": "onnx",
                "quant": quant,
                "path": str(onnx_dir),
                "architecture": config["model_type"],
                "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
                **file_record(onnx_dir, n_params),
                "quantization": json.loads(qconfig.read_text()) if qconfig.is_file() else None,
                "export_seconds": round(seconds[quant], 2),
                "tool_versions": tool_versions(),
                "load": loads,
                "verification": verification,
                "flagged": verification["flagged"],
            }
        )
    if "fp32" not in quants:
        shutil.rmtree(fp32_dir, ignore_errors=True)
    write_json_atomic(out_dir / "onnx_export.json", records)
    return records
