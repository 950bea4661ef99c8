"""llama.cpp's own HF -> GGUF converter (`convert_hf_to_gguf.py`, its `conversion/` package and
`gguf-py/`), taken from the llama-cpp-python sdist whose version is installed, so that the converter
and the runtime that loads its files are the same llama.cpp.

The converter is not in the llama-cpp-python wheel, only in its sdist under `vendor/llama.cpp/`.
`make setup` runs `python -m export.llama_cpp_converter install`: pip downloads the sdist (from its
cache after llama-cpp-python's own build) and the three parts are unpacked into the virtualenv
(`{sys.prefix}/share/arte-edge/llama.cpp-VERSION/`). Nothing is downloaded at run time: a missing
converter is a UserError that names the command above.

`supported_architectures()` reads the HF architecture names the converter registers
(`@ModelBase.register("LlamaForCausalLM", ...)`) from its source text, without importing it, so an
unsupported model is refused before any weights are loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path

from common.errors import UserError

ENV_OVERRIDE = "ARTE_LLAMA_CPP_CONVERTER"
"""A directory holding convert_hf_to_gguf.py, conversion/ and gguf-py/ (a llama.cpp checkout)."""

SCRIPT = "convert_hf_to_gguf.py"
PARTS = (SCRIPT, "conversion", "gguf-py", "LICENSE")
"""What is unpacked from the sdist's vendor/llama.cpp/ (LICENSE: llama.cpp's MIT licence)."""

MARKER = "arte-converter.json"


def llama_cpp_version() -> str:
    """The installed llama-cpp-python version (read from its metadata; llama_cpp is not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise UserError(
            "GGUF export needs llama-cpp-python. Install it: pip install 'llama-cpp-python==0.3.36'"
        ) from None


def install_dir(version: str | None = None) -> Path:
    """Where `install` puts the converter of llama-cpp-python `version` (default: the installed one)."""
    return Path(sys.prefix) / "share" / "arte-edge" / f"llama.cpp-{version or llama_cpp_version()}"


def install_command() -> str:
    return f"{sys.executable} -m export.llama_cpp_converter install   (or: make setup)"


def converter_dir() -> Path:
    """The converter's directory: $ARTE_LLAMA_CPP_CONVERTER, else the installed copy; UserError
    naming the install command when it is missing."""
    override = os.environ.get(ENV_OVERRIDE)
    path = Path(override).expanduser() if override else install_dir()
    if not (path / SCRIPT).is_file() or not (path / "conversion").is_dir():
        where = f"${ENV_OVERRIDE}={override}" if override else str(path)
        raise UserError(
            f"llama.cpp's HF->GGUF converter ({SCRIPT}) is not installed ({where} has none). "
            f"Install it from the llama-cpp-python sdist: {install_command()}"
        )
    return path


@cache
def _registered(conversion_dir: str) -> frozenset[str]:
    names: set[str] = set()
    for path in Path(conversion_dir).glob("*.py"):
        for args in re.findall(r"@ModelBase\.register\(([^)]*)\)", path.read_text(encoding="utf-8")):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", args))
    return frozenset(names)


def supported_architectures() -> frozenset[str]:
    """HF architecture names (config.json "architectures") the installed converter registers."""
    return _registered(str(converter_dir() / "conversion"))


def run_converter(model_dir: Path, out_path: Path, outtype: str, threads: int = 1) -> str:
    """Run convert_hf_to_gguf.py on `model_dir` in a subprocess (its own gguf-py first on sys.path,
    as the script arranges); returns its log. UserError with the log's tail if it fails."""
    script = converter_dir() / SCRIPT
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    env.update(OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, str(script), str(model_dir), "--outfile", str(out_path), "--outtype", outtype]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not Path(out_path).is_file():
        lines = [ln for ln in log.strip().splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[-800:]
        raise UserError(f"llama.cpp's converter failed on {model_dir} (exit {proc.returncode}): {tail}")
    return log


def install(sdist: Path | None = None, *, force: bool = False) -> Path:
    """Unpack the converter of the installed llama-cpp-python into `install_dir()`; returns it.
    `sdist`: a llama_cpp_python-VERSION.tar.gz already at hand, else pip downloads it."""
    version = llama_cpp_version()
    dest = install_dir(version)
    if (dest / MARKER).is_file() and not force:
        return dest
    with tempfile.TemporaryDirectory(prefix="arte-llama-cpp-") as tmp:
        sdist = Path(sdist) if sdist else _download_sdist(version, Path(tmp))
        staging = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            _extract(sdist, version, staging)
        except BaseException:  # a bad sdist: the installed copy stays, no half-written staging
            shutil.rmtree(staging, ignore_errors=True)
            raise
        (staging / MARKER).write_text(json.dumps({"llama_cpp_python": version, "sdist": sdist.name}))
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return dest


def _download_sdist(version: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += [f"llama-cpp-python=={version}", "-d", str(into), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not found:
        raise UserError(f"pip could not download the llama-cpp-python {version} sdist: {proc.stderr[-400:]}")
    return found[0]


def _extract(sdist: Path, version: str, staging: Path) -> None:
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        wanted = [m for m in members if m.name[len(prefix) :].split("/")[0] in PARTS]
        if not any(m.name == prefix + SCRIPT for m in wanted):
            raise UserError(f"{sdist.name} has no {prefix}{SCRIPT}: not a llama-cpp-python {version} sdist")
        for m in wanted:
            target = staging / m.name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.llama_cpp_converter", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="unpack the converter from the llama-cpp-python sdist")
    p.add_argument("--sdist", type=Path, help="a llama_cpp_python-VERSION.tar.gz (default: pip download)")
    p.add_argument("--force", action="store_true", help="re-install even if present")
    sub.add_parser("where", help="print the converter directory")
    args = parser.parse_args(argv)
    try:
        path = install(args.sdist, force=args.force) if args.cmd == "install" else converter_dir()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = len(supported_architectures()) if (path / SCRIPT).is_file() else 0
    print(f"llama.cpp converter: {path} ({n} HF architectures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
