"""`python -m export.llama_cpp_converter install` (issue 29: an untested path that can lose work):
the converter is unpacked from a llama-cpp-python sdist (a small hand-made one here) into its own
directory, only the parts the export needs, atomically: a bad sdist leaves the installed copy and
no half-written directory behind."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from common.errors import UserError
from export import llama_cpp_converter as conv

VERSION = "0.3.36"


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{VERSION}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


VENDOR = "vendor/llama.cpp/"
GOOD = {
    VENDOR + conv.SCRIPT: "# the converter\n",
    VENDOR + "conversion/llama.py": "@ModelBase.register('LlamaForCausalLM')\nclass X: ...\n",
    VENDOR + "gguf-py/gguf/__init__.py": "",
    VENDOR + "LICENSE": "MIT\n",
    VENDOR + "tests/big.bin": "not needed\n",
    "llama_cpp/__init__.py": "not the converter\n",
}


@pytest.fixture
def dest(tmp_path, monkeypatch) -> Path:
    target = tmp_path / "share" / f"llama.cpp-{VERSION}"
    monkeypatch.setattr(conv, "llama_cpp_version", lambda: VERSION)
    monkeypatch.setattr(conv, "install_dir", lambda version=None: target)
    monkeypatch.delenv(conv.ENV_OVERRIDE, raising=False)
    return target


def test_install_unpacks_only_the_converter_and_is_idempotent(dest, tmp_path):
    sdist = make_sdist(tmp_path / f"llama_cpp_python-{VERSION}.tar.gz", GOOD)
    assert conv.install(sdist) == dest
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == sorted(
        ["LICENSE", conv.MARKER, conv.SCRIPT, "conversion/llama.py", "gguf-py/gguf/__init__.py"]
    )
    assert json.loads((dest / conv.MARKER).read_text())["llama_cpp_python"] == VERSION
    assert conv.converter_dir() == dest and "LlamaForCausalLM" in conv.supported_architectures()
    sdist.unlink()
    assert conv.install(tmp_path / "gone.tar.gz") == dest  # installed: the sdist is not read again


def test_a_bad_sdist_keeps_the_installed_converter_and_leaves_nothing_half_written(dest, tmp_path):
    conv.install(make_sdist(tmp_path / "good.tar.gz", GOOD))
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    bad = make_sdist(tmp_path / "bad.tar.gz", {VENDOR + "LICENSE": "MIT\n"})
    with pytest.raises(UserError, match=f"bad.tar.gz has no .*{conv.SCRIPT}"):
        conv.install(bad, force=True)
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no staging directory left
