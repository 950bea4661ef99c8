"""The machine a benchmark ran on, and whether it was quiet enough to trust the figures.

- `describe_host()`: CPU model, physical/logical cores and this process's affinity, the ISA flags
  that decide which kernels the runtimes use (AVX2, AVX-512, VNNI, AMX, NEON/dot-product, SVE),
  caches, RAM, OS and runtime versions. Every report states it.
- `machine_busy(threads)`: a warning when the 1-minute load average exceeds the cores this benchmark
  leaves free, with a short /proc/stat sample of how many cores other processes keep busy. On a small
  box a busy core makes OpenMP/ggml workers spin at every barrier: figures become unreliable.
- `pin_affinity(cpus)` / `pinned(cpus)`: pin every thread of this process to `cpus` for a thread sweep;
  `quietest_cpus(n)` picks the n least busy ones.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from common.cpu_features import cpu_flags
from common.cpu_features import cpuinfo as _cpuinfo

ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",  # x86
    "neon",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sme",  # Arm ("neon": asimd)
)
"""Flags worth stating in a report: each selects different matmul kernels in ggml/MLAS/oneDNN."""

RUNTIME_PACKAGES = ("torch", "onnxruntime", "llama-cpp-python", "transformers", "numpy", "optimum-onnx")


def cpu_model(cpuinfo: list[dict[str, str]] | None = None) -> str:
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    for entry in cpuinfo:
        for key in ("model name", "Model Name", "Hardware", "cpu model"):
            if entry.get(key):
                return entry[key]
    if cpuinfo and "CPU part" in cpuinfo[0]:  # Arm without a model name: implementer + part ids
        return f"Arm implementer {cpuinfo[0].get('CPU implementer')} part {cpuinfo[0]['CPU part']}"
    return platform.processor() or platform.machine()


def isa_flags(cpuinfo: list[dict[str, str]] | None = None) -> list[str]:
    """The ISA_FLAGS this CPU reports (x86 "flags", Arm "Features"; Apple arm64 has NEON + dotprod)."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    raw = cpu_flags(cpuinfo)
    if "asimd" in raw:
        raw.add("neon")
    if not cpuinfo and platform.system() == "Darwin" and platform.machine() == "arm64":
        raw |= {"neon", "asimd", "asimddp"}
    return [f for f in ISA_FLAGS if f in raw]


def physical_cores(cpuinfo: list[dict[str, str]] | None = None) -> int | None:
    """Distinct (package, core id) pairs, or psutil's count where /proc/cpuinfo lacks them."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    cores = {(e.get("physical id"), e.get("core id")) for e in cpuinfo if "core id" in e}
    if cores:
        return len(cores)
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota (/sys/fs/cgroup/cpu.max), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def caches() -> dict[str, str]:
    """{"L1d": "32K", "L2": "1024K", "L3": "32768K", ...} of cpu0 from sysfs (Linux)."""
    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        out[name] = size
    return out


def total_ram_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    match = (
        re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if Path("/proc/meminfo").exists()
        else None
    )
    return int(match.group(1)) * 1024 if match else None


def runtime_versions(packages: Iterable[str] = RUNTIME_PACKAGES) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def describe_host() -> dict:
    """Everything a report needs to say about the machine (see the module docstring)."""
    info = _cpuinfo()
    return {
        "cpu_model": cpu_model(info),
        "machine": platform.machine(),
        "physical_cores": physical_cores(info),
        "logical_cores": os.cpu_count(),
        "affinity": affinity(),
        "cgroup_cpu_limit": cgroup_cpu_limit(),
        "isa_flags": isa_flags(info),
        "caches": caches(),
        "ram_bytes": total_ram_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime_versions": runtime_versions(),
    }


def llama_cpp_system_info() -> str | None:
    """llama.cpp's own view of the CPU features it was built for (imports llama_cpp), or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


# ---- is the machine quiet? -------------------------------------------------------------------------


def _cpu_jiffies() -> dict[int, tuple[int, int]]:
    """{cpu id: (busy, total) jiffies} from /proc/stat ({} where it can't be read)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in values[:8]]  # user nice system idle iowait irq softirq steal
            out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def cpu_busy_sample(seconds: float = 0.5) -> dict:
    """Busy share of each CPU over `seconds` (/proc/stat), and how many cores other processes kept
    busy (total busy minus this process's own CPU time in the window)."""
    before, own_before, t0 = _cpu_jiffies(), os.times(), time.monotonic()
    time.sleep(seconds)
    after, own_after, elapsed = _cpu_jiffies(), os.times(), time.monotonic() - t0
    per_cpu = {}
    for cpu, (busy1, total1) in after.items():
        busy0, total0 = before.get(cpu, (busy1, total1))
        per_cpu[cpu] = round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else 0.0
    own = (own_after.user - own_before.user + own_after.system - own_before.system) / elapsed
    return {
        "seconds": seconds,
        "per_cpu_busy": per_cpu,
        "other_processes_cores": round(max(0.0, sum(per_cpu.values()) - own), 2),
    }


def machine_busy(threads: int, sample_seconds: float = 0.5) -> dict:
    """{"busy", "load1", "free_cores", "other_processes_cores", "per_cpu_busy", "warning"}: busy when
    the /proc/stat sample sees *other* processes use more than the cores this benchmark leaves free.
    The 1-minute load average counts this benchmark's own recent work too (a 2-thread run alone
    pushes it to ~2), so it decides only where no /proc/stat sample is available."""
    logical = len(affinity())
    free = max(0, logical - threads)
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):
        load1 = None
    sample = cpu_busy_sample(sample_seconds) if sample_seconds > 0 else {}
    others = sample.get("other_processes_cores")
    reasons = []
    if others is None and load1 is not None and load1 > free:
        reasons.append(
            f"1-min load average {load1:.2f} > {free} free core(s) ({logical} logical - {threads} used)"
        )
    if others is not None and others > free + 0.25:
        reasons.append(f"other processes use {others:.2f} cores right now")
    warning = (
        "machine busy: " + "; ".join(reasons) + ". Timings are unreliable; compare percentiles, not means."
        if reasons
        else None
    )
    return {
        "busy": bool(reasons),
        "load1": load1,
        "free_cores": free,
        "threads": threads,
        "other_processes_cores": others,
        "per_cpu_busy": sample.get("per_cpu_busy"),
        "warning": warning,
    }


# ---- affinity -------------------------------------------------------------------------------------


def pin_affinity(cpus: Iterable[int]) -> set[int]:
    """Pin every thread of this process (and the threads it starts later) to `cpus`; return the
    previous mask. Call it before loading a runtime: thread pools inherit the mask at creation, and
    `os.sched_setaffinity(0)` alone would only move the calling thread."""
    cpus = set(cpus)
    previous = os.sched_getaffinity(0)
    tids = [int(t) for t in os.listdir("/proc/self/task")] if Path("/proc/self/task").is_dir() else [0]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # a thread that exited meanwhile
            os.sched_setaffinity(tid, cpus)
    os.sched_setaffinity(0, cpus)
    return previous


@contextlib.contextmanager
def pinned(cpus: Iterable[int]) -> Iterator[set[int]]:
    """`pin_affinity(cpus)` for the block, the previous mask restored after."""
    previous = pin_affinity(cpus)
    try:
        yield set(cpus)
    finally:
        pin_affinity(previous)


def quietest_cpus(n: int, sample_seconds: float = 0.3) -> list[int]:
    """The `n` allowed CPUs that other processes kept least busy over a short /proc/stat sample."""
    allowed = affinity()
    if n >= len(allowed):
        return allowed
    busy = cpu_busy_sample(sample_seconds)["per_cpu_busy"]
    return sorted(sorted(allowed, key=lambda c: busy.get(c, 0.0))[:n])
