"""Transparent huge pages for model weights, so decode is measured the way a tuned deployment runs it.

Decode streams every weight once per token. With 4 KiB pages a 270 MB model spans ~66,000 pages and
the TLB misses on almost every one; with 2 MiB pages it spans ~130. numpy's bandwidth buffer already
gets huge pages (numpy madvises large allocations), so comparing a 4 KiB-page model against it is not
like with like.

On Linux with THP in "madvise" mode (the common default) memory gets huge pages only when asked.
llama.cpp never asks, and its default mmap of the GGUF gives page-cache pages. glibc >= 2.35 can ask
on its behalf: with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` every large malloc is madvised, so a
GGUF read into memory (`use_mmap=False`) sits in huge pages. The tunable is read once at process
start, which is why `arte bench` re-executes itself with it (`reexec_with_hugepages`). The same
setting for llama.cpp's own tools: `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 llama-server --no-mmap ...`.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_ENABLED) -> str | None:
    """The kernel's THP mode, "always" / "madvise" / "never" (the bracketed one), or None off Linux."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def glibc_hugetlb(env: Mapping[str, str] | None = None) -> bool:
    """Whether GLIBC_TUNABLES asks glibc's malloc to madvise huge pages (value 1 or 2)."""
    tunables = (os.environ if env is None else env).get("GLIBC_TUNABLES", "")
    return any(item.strip() in (f"{TUNABLE}=1", f"{TUNABLE}=2") for item in tunables.split(":"))


def _is_glibc(libc: tuple[str, str] | None = None) -> bool:
    """Linux with glibc >= 2.35, the first release with the malloc.hugetlb tunable (older ones
    ignore it, and a GGUF read into memory would then sit in 4 KiB pages: slower than mapped)."""
    name, version = libc or platform.libc_ver()
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return platform.system() == "Linux" and name == "glibc" and (major, minor) >= (2, 35)


def hugepages_active(env: Mapping[str, str] | None = None, mode: str | None = None) -> bool:
    """Whether memory a runtime mallocs for its weights now gets huge pages: THP "always", or THP
    "madvise" with the glibc tunable set in this process's environment."""
    mode = thp_mode() if mode is None else mode
    return mode == "always" or (mode == "madvise" and _is_glibc() and glibc_hugetlb(env))


def hugepages_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the glibc tunable added to GLIBC_TUNABLES (other tunables kept)."""
    out = dict(env)
    if glibc_hugetlb(out):
        return out
    items = [i for i in out.get("GLIBC_TUNABLES", "").split(":") if i and not i.startswith(TUNABLE + "=")]
    out["GLIBC_TUNABLES"] = ":".join([*items, f"{TUNABLE}=1"])
    return out


def reexec_with_hugepages(argv: Sequence[str] | None = None) -> None:
    """Replace this process with the same command plus the glibc tunable, where that would turn huge
    pages on (glibc, THP "madvise", tunable not yet set); otherwise return and do nothing. Call it
    before any work: the command starts again from the top."""
    if hugepages_active() or thp_mode() != "madvise" or not _is_glibc():
        return
    argv = list(sys.orig_argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], hugepages_env(os.environ))


def anon_huge_pages_bytes() -> int | None:
    """AnonHugePages of this process (/proc/self/smaps_rollup), None where it can't be read."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def describe() -> dict:
    """For the report's host section."""
    return {"thp_mode": thp_mode(), "glibc_hugetlb": glibc_hugetlb(), "active": hugepages_active()}
