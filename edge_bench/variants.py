"""What to benchmark: the variants found in export directories, each with the runtime that runs it,
the tokenizer the harness uses for it, its size and an estimate of the weight bytes read per token.

`discover_variants(paths)` accepts, per path:
- an export directory with `manifest.json` (written by `arte export`): every GGUF and ONNX variant
  it records, plus the fp32 PyTorch reference (the manifest's source model directory);
- a bare `.gguf` file (llama.cpp; tokenizer read from the GGUF itself);
- an ONNX directory (`model.onnx` + tokenizer files, as written by `arte export onnx`);
- a Hugging Face model directory (`config.json` + `*.safetensors`): a PyTorch fp32 reference;
- a JSON file with `"runtime": "fake"` (tests): the deterministic fake runtime
  (`edge_bench.runtimes.fake`), its name, format, quant, size, reference and bits/weight read from it.

Bytes read per decoded token (for the bandwidth efficiency) come from `edge_bench.bandwidth`:
every weight matrix once per token, an untied input embedding one row, the KV cache left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common.gguf_header import read_gguf_header
from common.safetensors_header import safetensors_files, safetensors_tensors
from common.weights import convert_hint, pickle_weight_files
from edge_bench.bandwidth import bytes_per_token

MANIFEST = "manifest.json"
ACCEPTED = "an export directory with manifest.json, a .gguf file, an ONNX directory or an HF model directory"


@dataclass(frozen=True)
class Variant:
    """One benchmarked model file (or directory) and how to run it."""

    name: str
    """Unique label in the report, e.g. "gguf-q4_k_m", "onnx-int8", "pytorch-fp32"."""
    format: str
    """"gguf", "onnx" or "pytorch" (or "fake" in tests)."""
    runtime: str
    """Name in `edge_bench.runtimes.RUNTIMES`."""
    path: Path
    quant: str
    size_bytes: int
    """On disk: the file(s) the runtime loads (weights only for an HF directory)."""
    bits_per_weight: float | None
    tokenizer: Path | None
    """An HF tokenizer directory, or a .gguf file whose metadata holds the tokenizer."""
    bytes_per_token: int
    """Estimated weight bytes read per decoded token (see the module docstring)."""
    reference: str | None = None
    """Name of the fp32 reference variant it is compared with (None: it is a reference, or has none)."""
    source: str = ""
    """The export directory or path it was discovered from."""

    @property
    def is_reference(self) -> bool:
        """An fp32 reference: the PyTorch model (or a fake whose format says "pytorch")."""
        return self.format == "pytorch"

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(path=str(self.path), tokenizer=str(self.tokenizer) if self.tokenizer else None)
        return d


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _bytes_per_token(runtime: str, path: Path) -> int:
    return int(bytes_per_token(runtime, path)["bytes_per_token"])


def _safetensors_params(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes on disk) of an HF directory's safetensors files, from their JSON headers."""
    n_params = sum(t.numel for t in safetensors_tensors(Path(model_dir)))
    return n_params, sum(path.stat().st_size for path in safetensors_files(model_dir))


def pytorch_variant(model_dir: Path, source: str = "") -> Variant:
    """The fp32 PyTorch reference for an HF model directory (weights cast to fp32 when loaded)."""
    model_dir = Path(model_dir).expanduser().resolve()
    n_params, disk = _safetensors_params(model_dir)
    if n_params == 0:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights (expected an HF model directory)")
    return Variant(
        name="pytorch-fp32",
        format="pytorch",
        runtime="pytorch",
        path=model_dir,
        quant="fp32",
        size_bytes=disk,
        bits_per_weight=round(8 * disk / n_params, 3),
        tokenizer=model_dir,
        bytes_per_token=_bytes_per_token("pytorch", model_dir),
        source=source or str(model_dir),
    )


def gguf_variant(
    path: Path, quant: str = "", record: dict | None = None, tokenizer: Path | None = None, source: str = ""
) -> Variant:
    """A GGUF file run by llama.cpp; `record` is its manifest entry when there is one."""
    path = Path(path).expanduser().resolve()
    record = record or {}
    tensors = read_gguf_header(path, metadata=False)[1]
    n_params = sum(t["params"] for t in tensors)
    tensor_bytes = sum(t["bytes"] for t in tensors)
    quant = quant or record.get("quant") or path.stem.rsplit("-", 1)[-1].lower()
    bpw = record.get("bits_per_weight") or (round(8 * tensor_bytes / n_params, 4) if n_params else None)
    return Variant(
        name=f"gguf-{quant}",
        format="gguf",
        runtime="llama_cpp",
        path=path,
        quant=quant,
        size_bytes=int(record.get("size_bytes") or path.stat().st_size),
        bits_per_weight=bpw,
        tokenizer=tokenizer or path,
        bytes_per_token=_bytes_per_token("llama_cpp", path),
        source=source or str(path),
    )


def onnx_variant(onnx_dir: Path, quant: str = "", record: dict | None = None, source: str = "") -> Variant:
    """An ONNX directory (model.onnx [+ model.onnx_data], tokenizer files) run by onnxruntime."""
    onnx_dir = Path(onnx_dir).expanduser().resolve()
    record = record or {}
    files = [onnx_dir / f for f in record.get("files", [])] or [
        p for p in (onnx_dir / "model.onnx", onnx_dir / "model.onnx_data") if p.is_file()
    ]
    size = int(record.get("size_bytes") or sum(p.stat().st_size for p in files))
    bpw = record.get("bits_per_weight")  # needs the PyTorch parameter count: only from the manifest
    return Variant(
        name=f"onnx-{quant or record.get('quant') or onnx_dir.name}",
        format="onnx",
        runtime="onnxruntime",
        path=onnx_dir,
        quant=quant or record.get("quant") or onnx_dir.name,
        size_bytes=size,
        bits_per_weight=bpw,
        tokenizer=onnx_dir,
        bytes_per_token=_bytes_per_token("onnxruntime", onnx_dir),
        source=source or str(onnx_dir),
    )


def _is_fake_spec(path: Path) -> bool:
    try:
        spec = _read_json(path)
    except (OSError, ValueError):
        return False
    return isinstance(spec, dict) and spec.get("runtime") == "fake"


def fake_variant(spec_path: Path) -> Variant:
    """A fake-runtime variant described by a JSON spec (see `edge_bench.runtimes.fake`)."""
    spec_path = Path(spec_path).expanduser().resolve()
    spec = _read_json(spec_path)
    size = int(spec.get("size_bytes", 1_000_000))
    return Variant(
        name=spec.get("name", spec_path.stem),
        format=spec.get("format", "fake"),
        runtime="fake",
        path=spec_path,
        quant=spec.get("quant", "fake"),
        size_bytes=size,
        bits_per_weight=spec.get("bits_per_weight"),
        tokenizer=None,
        bytes_per_token=int(spec.get("bytes_per_token", size)),
        reference=spec.get("reference"),
        source=str(spec_path.parent),
    )


def _resolve(raw: str, export_dir: Path, fmt: str) -> Path:
    """A manifest path: as written (absolute, or relative to where export ran), else under the export
    directory (the directory may have been moved or copied since)."""
    path = Path(raw).expanduser()
    for candidate in (path, export_dir / path, export_dir / fmt / path.name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{export_dir / MANIFEST}: variant file {raw} not found (also looked in {export_dir})"
    )


def variants_from_manifest(export_dir: Path) -> list[Variant]:
    """The fp32 reference (manifest source) and every recorded GGUF and ONNX variant."""
    export_dir = Path(export_dir).expanduser().resolve()
    manifest = _read_json(export_dir / MANIFEST)
    source_dir = Path(manifest["source"]["path"])
    out: list[Variant] = []
    ref = None
    if (source_dir / "config.json").is_file():
        ref = pytorch_variant(source_dir, source=str(export_dir))
        out.append(ref)
    for rec in manifest.get("variants", []):
        path = _resolve(rec["path"], export_dir, rec["format"])
        if rec["format"] == "gguf":
            v = gguf_variant(
                path, rec["quant"], rec, tokenizer=source_dir if ref else None, source=str(export_dir)
            )
        elif rec["format"] == "onnx":
            v = onnx_variant(path, rec["quant"], rec, source=str(export_dir))
        else:
            raise ValueError(f"{export_dir / MANIFEST}: unknown variant format {rec['format']!r}")
        out.append(replace(v, reference=ref.name if ref else None))
    return out


def discover(path: str | Path) -> list[Variant]:
    """The variants at one path (see the module docstring for the accepted forms)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return [gguf_variant(p)]
    if p.is_file() and p.suffix == ".json" and _is_fake_spec(p):
        return [fake_variant(p)]
    if p.is_dir() and (p / MANIFEST).is_file():
        return variants_from_manifest(p)
    if p.is_dir() and (p / "model.onnx").is_file():
        return [onnx_variant(p)]
    if p.is_dir() and (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return [pytorch_variant(p)]
    if p.is_dir() and (p / "config.json").is_file() and pickle_weight_files(p):
        names = ", ".join(f.name for f in pickle_weight_files(p)[:3])
        raise FileNotFoundError(
            f"{p} holds only PyTorch pickle weights ({names}); a pickle can run code when loaded, so bench "
            f"reads safetensors only: {convert_hint(p, '')}"
        )
    what = "does not exist" if not p.exists() else "is not a benchmarkable model"
    raise FileNotFoundError(f"{p} {what}; give {ACCEPTED}")


def _labels(sources: list[str]) -> dict[str, str]:
    """A short prefix per source: its directory name (numbered where two share a name)."""
    labels = {s: Path(s).name or s for s in sources}
    if len(set(labels.values())) < len(sources):
        labels = {s: f"{i}:{labels[s]}" for i, s in enumerate(sources)}
    return labels


def discover_variants(paths: Iterable[str | Path | Variant]) -> list[Variant]:
    """Every variant at `paths` (Variant objects pass through), each named uniquely: where two sources
    hold the same names, every name gets its source directory as a prefix ("student_a/gguf-q4_k_m").
    A model found twice (e.g. the reference of two manifests of one student) is kept once."""
    found: list[Variant] = []
    for p in paths:
        found += [p] if isinstance(p, Variant) else discover(p)
    kept: dict[tuple[str, str], Variant] = {}
    alias: dict[tuple[str, str], tuple[str, str]] = {}  # (source, name) -> key of the kept copy
    for v in found:
        key = (v.runtime, str(v.path))
        kept.setdefault(key, v)
        alias[(v.source, v.name)] = key
    labels = _labels(list(dict.fromkeys(v.source for v in kept.values())))
    collide = len({v.name for v in kept.values()}) < len(kept)  # e.g. two students' gguf-q4_k_m
    final = {key: f"{labels[v.source]}/{v.name}" if collide else v.name for key, v in kept.items()}
    out = []
    for key, v in kept.items():
        ref = alias.get((v.source, v.reference)) if v.reference else None
        out.append(replace(v, name=final[key], reference=final[ref] if ref else None))
    return out
