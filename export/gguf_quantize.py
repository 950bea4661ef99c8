"""llama.cpp quantization of our F32/F16 GGUF files, the quant type names it accepts here, and the
tensor-type census of a GGUF file (`NAME.census.json`: what each file really holds).

Quantization is llama.cpp's (`llama_cpp.llama_model_quantize`). On small models K-quants fall back to
other types for rows not divisible by 256; the census next to each file says what it really holds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from common.errors import UserError, unknown_name
from common.gguf_header import read_gguf_header
from common.records import write_json_atomic

QUANT_TYPES = {
    "f32": "LLAMA_FTYPE_ALL_F32",
    **{
        q: f"LLAMA_FTYPE_MOSTLY_{q.upper()}"
        for q in (
            "f16 bf16 q8_0 q6_k q5_k_m q5_k_s q5_1 q5_0 q4_k_m q4_k_s q4_1 q4_0 "
            "q3_k_l q3_k_m q3_k_s q2_k iq4_nl iq4_xs"
        ).split()
    },
}
"""Quant type name -> llama.cpp ftype constant (llama_cpp.LLAMA_FTYPE_*). Types that need an
importance matrix (IQ1/IQ2/IQ3) are not offered."""


def check_quant_types(quants: list[str]) -> list[str]:
    """Lower-cased, de-duplicated quant names; UserError for a name llama.cpp's quantizer lacks here."""
    names = list(dict.fromkeys(q.strip().lower() for q in quants if q.strip()))
    if not names:
        raise UserError(f"no GGUF quant type given. Valid: {', '.join(QUANT_TYPES)}")
    for q in names:
        if q not in QUANT_TYPES:
            raise unknown_name("GGUF quant type", q, QUANT_TYPES, where="export gguf")
    return names


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


def _census(tensors: list[dict]) -> dict[str, dict[str, int]]:
    """{GGML type name: {"tensors", "params", "bytes"}} of a GGUF's tensors, most params first."""
    out: dict[str, dict[str, int]] = {}
    for t in tensors:
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
    tensors = read_gguf_header(gguf_path, metadata=False)[1]
    census = _census(tensors)
    params = sum(r["params"] for r in census.values())
    doc = {
        "file": gguf_path.name,
        "quant": quant,
        "bits_per_weight": round(bits_per_weight(census), 4),
        "params": params,
        "share_of_params": {k: round(r["params"] / params, 4) for k, r in census.items()},
        "types": census,
        "tensors": {t["name"]: t["type"] for t in tensors},
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
