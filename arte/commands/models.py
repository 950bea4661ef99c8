"""`arte models`: what models are available locally, and where."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arte.models import EMBEDDED, cache_dir, list_models, materialize_hf
from common.config import opt
from common.errors import unknown_name


@dataclass
class ModelsConfig:
    """List local models; optionally materialise an embedded model's HF copy now."""

    materialize: str = opt(
        "", "Embedded model to write as HF safetensors into the cache now (smollm2-135m, gemma3-270m)."
    )
    to_safetensors: str = opt(
        "",
        "An HF model directory holding only PyTorch pickle weights (pytorch_model.bin): write a "
        "safetensors copy to DIR-safetensors (or --out). Loading a pickle can run code: only for a "
        "model you trust; torch's weights-only unpickler stays on.",
    )
    out: str = opt("", "Output directory of --to_safetensors (default: DIR-safetensors).")


def run_models(cfg: ModelsConfig) -> int:
    if cfg.to_safetensors:
        from common.paths import writable_dir
        from common.weights import convert_to_safetensors

        src = Path(cfg.to_safetensors).expanduser()
        dst = Path(cfg.out).expanduser() if cfg.out else Path(str(src).rstrip("/") + "-safetensors")
        writable_dir(dst.parent, "--out")
        print(f"converting {src} -> {convert_to_safetensors(src, dst)} (safetensors)")
        return 0
    if cfg.materialize:
        if cfg.materialize not in EMBEDDED:
            raise unknown_name("embedded model", cfg.materialize, EMBEDDED)
        print(f"materialising {cfg.materialize} (once: 20 s for 135M, ~3 min for 1.5B) ...", flush=True)
        print(f"  -> {materialize_hf(cfg.materialize)}")
    rows = list_models()
    width = max(len(r.name) for r in rows)
    print(f"{'name':<{width}}  {'kind':<18} {'MB':>7}  path")
    for r in rows:
        note = f"   ({r.note})" if r.note else ""
        print(f"{r.name:<{width}}  {r.kind:<18} {r.size_mb:>7.1f}  {r.path}{note}")
    print(f"\ncache: {cache_dir()}  (set ARTE_CACHE_DIR to move it)")
    print("Any other model: a local HF directory, a .gguf file, or a hub id (needs network).")
    return 0
