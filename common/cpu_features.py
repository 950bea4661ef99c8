"""What this CPU is and which instructions it has, read from /proc/cpuinfo (Linux; empty elsewhere).

Shared by `edge_bench.host` (every benchmark report states the CPU) and `arte.training.precision`
(bf16 mixed precision by default only where the CPU has bf16 instructions). The functions on top take
the parsed cpuinfo as an optional argument, so the decisions built on it are tested with the facts
of CPUs this machine is not.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = "/proc/cpuinfo"

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""x86 flags of bf16 matrix instructions: AVX512_BF16 (AMD Zen 4 and later, Intel Cooper Lake and
Sapphire Rapids and later) and AMX_BF16 (Intel Sapphire Rapids and later). Without one of them
(AVX2-only CPUs, Skylake/Ice Lake AVX-512), PyTorch's CPU bf16 matmuls are converted back to fp32
and run slower than fp32."""


def cpuinfo() -> list[dict[str, str]]:
    """`CPUINFO` (/proc/cpuinfo) as one dict per processor (Linux; [] elsewhere)."""
    try:
        text = Path(CPUINFO).read_text()
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        blocks.append(entry)
    return blocks


def cpu_flags(info: list[dict[str, str]] | None = None) -> set[str]:
    """The raw flags of the first processor (x86 "flags", Arm "Features")."""
    info = cpuinfo() if info is None else info
    return set((info[0].get("flags") or info[0].get("Features") or "").split()) if info else set()


def native_bf16(info: list[dict[str, str]] | None = None) -> list[str]:
    """The bf16 matrix-instruction flags this CPU has (`NATIVE_BF16_FLAGS`); [] when it has none.
    Arm's "bf16" feature (Neoverse V1/V2) is not counted: bf16 training there is not measured."""
    flags = cpu_flags(info)
    return [f for f in NATIVE_BF16_FLAGS if f in flags]
