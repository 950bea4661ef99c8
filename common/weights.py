"""Which weights a model holds, and whether they may be loaded: safetensors only, unless asked.

A PyTorch pickle (`pytorch_model.bin`, `*.pt`, ...) can run code when it is unpickled. Every loader
of this toolkit (the backends, training, export, bench) therefore loads safetensors only
(`use_safetensors=True`), and checks a model before loading it:

- `check_model_weights(path, allow_pickle, flag)`: an HF directory with safetensors is checked for
  truncated files (header and sizes, no weights read); a directory holding only pickles is refused
  with one message saying how to convert it, or loaded as pickle when `allow_pickle` (the caller's
  explicit opt-in flag, which it records); a `.gguf` file is checked for truncation.
- `convert_to_safetensors(src, dst)`: a pickle-only directory -> a safetensors copy (config,
  tokenizer and the other small files copied as they are). torch's `weights_only` unpickler stays
  on, so a pickle holding anything but tensors is refused.
- `explain_load_error(e)`: the real reason inside transformers' wrapped load errors (its own text
  suggests `from_tf=True` or `weights_only=False`, both wrong here).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common.errors import UserError

PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "adapter_model.bin", "training_args.bin")
"""Files that are PyTorch pickles (training_args.bin is not weights, but is a pickle all the same)."""
WEIGHT_PICKLES = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "adapter_model.bin")


def pickle_weight_files(model_dir: Path) -> list[Path]:
    """The pickle weight files of a directory, sorted by name."""
    return sorted({p for pattern in WEIGHT_PICKLES for p in Path(model_dir).glob(pattern)})


def convert_hint(model_dir: Path, flag: str) -> str:
    """How to get past a pickle-only directory: convert it once, or opt in with `flag`."""
    opt_in = f", or pass {flag} true to load the pickle as it is" if flag else ""
    return (
        f"convert it once, if you trust where it came from: arte models --to_safetensors {model_dir} "
        f"(writes {Path(str(model_dir).rstrip('/') + '-safetensors')}){opt_in}"
    )


def check_safetensors_files(files: list[Path]) -> None:
    """UserError naming the first safetensors file that is truncated or not safetensors at all."""
    from common.safetensors_header import read_safetensors_header

    for path in files:
        read_safetensors_header(path)


def check_model_weights(path: str | Path, allow_pickle: bool = False, flag: str = "") -> bool:
    """Check a local model before loading it; returns `use_safetensors` for `from_pretrained`.

    `path`: an HF directory (safetensors: checked; pickles only: refused unless `allow_pickle`) or a
    .gguf file (checked for truncation). `flag`: the option that sets `allow_pickle`, named in the
    refusal. A path that is neither is left to the loader (True: safetensors only)."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from common.gguf_header import read_gguf_header

        read_gguf_header(path, metadata=False)
        return True
    if not path.is_dir():
        return not allow_pickle
    from common.safetensors_header import safetensors_files

    tensors = safetensors_files(path)
    if tensors:
        check_safetensors_files(tensors)
        return True
    pickles = pickle_weight_files(path)
    if pickles and not allow_pickle:
        names = ", ".join(p.name for p in pickles[:3])
        raise UserError(
            f"{path} holds only PyTorch pickle weights ({names}); a pickle can run code when loaded, so "
            f"arte loads safetensors only: {convert_hint(path, flag)}"
        )
    return not pickles


def explain_load_error(e: BaseException) -> str:
    """The most useful line of a (chained) model-loading error: torch's refusal to unpickle, a
    safetensors error, else the outermost message."""
    chain, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for err in chain:
        text = str(err)
        if "Weights only load failed" in text:
            first = text.split("\n", 1)[0]
            return (
                f"torch refused to unpickle the weights: the file holds more than tensors and may run "
                f"code ({first[:200]}); do not load it, get safetensors weights from the model's source"
            )
    for err in chain:
        if type(err).__name__ in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall"):
            return f"corrupt safetensors file ({err})"
    return f"{type(chain[0]).__name__}: {chain[0]}"


def convert_to_safetensors(src: Path, dst: Path) -> Path:
    """Write a safetensors copy of the pickle-only HF directory `src` to `dst` (weights converted,
    every other file but pickles copied). Loads the pickle with torch's `weights_only` unpickler."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not (src / "config.json").is_file():
        raise UserError(f"{src} is not an HF model directory (no config.json)")
    if not pickle_weight_files(src):
        raise UserError(f"{src} holds no PyTorch pickle weights to convert")
    if dst.exists():
        raise UserError(f"{dst} exists already; remove it or choose another output")
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(src), use_safetensors=False, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a bad pickle is the user's file
        raise UserError(f"{src}: cannot convert: {explain_load_error(e)[:600]}") from None
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    skip = {p.name for pattern in PICKLE_PATTERNS for p in src.glob(pattern)}
    skip.add("pytorch_model.bin.index.json")
    for p in src.iterdir():
        if p.is_file() and p.name not in skip and not (tmp / p.name).exists():
            shutil.copy2(p, tmp / p.name)
    tmp.rename(dst)
    return dst
