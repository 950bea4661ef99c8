"""`manifest.json` of an export directory: the source model (path, config, weight hash), the
pre-export checks, tool versions, and one record per exported variant (format, quant, file size,
bits per weight, sha256, verification). edge_bench reads this file; it imports neither arte nor export."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from common.records import read_json, write_json_atomic

MANIFEST = "manifest.json"


def weights_sha256(model_dir: Path) -> str:
    """One hash over the model's safetensors files (sorted by name)."""
    h = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def check_same_source(out_dir: Path, source: Path, overwrite: bool = False) -> None:
    """One export directory holds one source model: `out_dir` whose manifest names other weights
    (by weights sha256) is refused (UserError naming --out), or with `overwrite` cleared of that
    model's exports (gguf/, onnx/, manifest.json) first."""
    import shutil

    from common.errors import UserError

    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return
    old = read_json(path).get("source", {})
    if old.get("weights_sha256") == weights_sha256(source):
        return
    if not overwrite:
        raise UserError(
            f"--out {out_dir} holds the exports of another model ({old.get('path', '?')}, weights sha256 "
            f"{str(old.get('weights_sha256'))[:12]}): use another --out, or add --overwrite to replace them"
        )
    for sub in ("gguf", "onnx"):
        shutil.rmtree(Path(out_dir) / sub, ignore_errors=True)
    path.unlink()


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "arte-edge",
        "torch",
        "transformers",
        "gguf",
        "llama-cpp-python",
        "optimum",
        "optimum-onnx",
        "onnx",
        "onnxruntime",
        "peft",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def update_manifest(
    out_dir: Path,
    source: Path,
    checks: dict,
    records: list[dict],
    runtime: dict | None = None,
    weights: dict | None = None,
) -> dict:
    """Add (or replace, by format and quant) variant records in OUT/manifest.json. `runtime`: how
    the verifying runtimes ran ({"llama_cpp": {system_info, extra_bufts}}); each GGUF record also
    keeps its own copy, since a later export may run with another setting. `weights`: how the
    source weights were read ({"allow_pickle", "converted_from_pickle"}: `export.run`)."""
    path = Path(out_dir) / MANIFEST
    manifest = read_json(path) if path.exists() else {"variants": []}
    runtime = runtime or {}
    for r in records:
        if r["format"] == "gguf" and "llama_cpp" in runtime:
            r["llama_cpp_runtime"] = runtime["llama_cpp"]
    keep = {(r["format"], r["quant"]) for r in records}
    manifest["variants"] = [
        v for v in manifest["variants"] if (v["format"], v["quant"]) not in keep
    ] + records
    manifest.update(
        source={
            "path": str(Path(source).resolve()),
            "weights_sha256": weights_sha256(source),
            "config": read_json(Path(source) / "config.json"),
        },
        checks=checks,
        tool_versions=tool_versions(),
        runtime={**manifest.get("runtime", {}), **runtime},
        weights=weights or {"allow_pickle": False},
        updated_at=time.time(),
    )
    write_json_atomic(path, manifest)
    return manifest
