"""How many CPU threads an inference engine should use: the cores that are free right now.

On a small box, asking for more threads than there are idle cores is much worse than asking for
too few: OpenMP (torch) and ggml (llama.cpp) worker threads spin-wait at every barrier, so one
thread that shares its core with another process stalls all the others. Measured here (2 cores,
the other core busy with another process, SmolLM2-135M greedy decode): torch 2 threads 3.3x slower
per token than 1; llama.cpp 2 threads 4.9 tokens/s vs 76 with 1 (idle box: 124 vs 75). So
`threads=0` (auto) means "cores this process may run on, minus the ones other processes keep busy",
from a 0.2 s /proc/stat sample (Linux) or the 1-minute load average (elsewhere). It is sampled once,
when a backend starts: load that starts later is not seen.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

SAMPLE_SECONDS = 0.2
"""How long `busy_cores` watches /proc/stat. Long enough to see a busy core, short enough to ignore."""


def available_cores() -> list[int]:
    """CPU ids this process may run on (its affinity mask), capped by a cgroup v2 CPU quota."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    quota = _cgroup_cpu_quota()
    if quota is not None and quota < len(cpus):
        cpus = cpus[: max(1, quota)]
    return cpus


def _cgroup_cpu_quota() -> int | None:
    """Whole CPUs allowed by /sys/fs/cgroup/cpu.max ("max 100000" = no limit), or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.floor(int(quota) / int(period)))


def _read_cpu_jiffies(cpus: list[int]) -> dict[int, tuple[int, int]] | None:
    """{cpu id: (busy jiffies, total jiffies)} from /proc/stat, or None where it can't be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}": c for c in cpus}
    out: dict[int, tuple[int, int]] = {}
    for line in lines:
        name, _, rest = line.partition(" ")
        if name in wanted:
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
            v = [int(x) for x in rest.split()[:8]]
            idle = v[3] + v[4]
            out[wanted[name]] = (sum(v) - idle, sum(v))
    return out if len(out) == len(cpus) else None


def busy_cores(cpus: list[int], seconds: float = SAMPLE_SECONDS) -> float:
    """How many of `cpus` other work keeps busy: a /proc/stat sample over `seconds` (this process
    sleeps meanwhile, so it counts only itself if it has other threads running), else the 1-minute
    load average."""
    before = _read_cpu_jiffies(cpus)
    if before is not None:
        time.sleep(seconds)
        after = _read_cpu_jiffies(cpus)
        if after is not None:
            busy = 0.0
            for c in cpus:
                d_busy, d_total = after[c][0] - before[c][0], after[c][1] - before[c][1]
                busy += d_busy / d_total if d_total > 0 else 0.0
            return busy
    try:
        return min(float(len(cpus)), os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def pick_threads(requested: int) -> int:
    """`requested` if > 0; for 0 (auto), the available cores not busy right now, at least 1."""
    if requested > 0:
        return requested
    if requested < 0:
        raise ValueError(f"threads must be >= 0 (0 = auto), got {requested}")
    cpus = available_cores()
    return max(1, len(cpus) - round(busy_cores(cpus)))


def configure_torch_threads(n: int) -> None:
    """Make torch use `n` intra-op threads (and `n` inter-op threads where that can still be set).

    `torch.set_num_interop_threads` may only be called before any inter-op work has started; later
    calls raise RuntimeError and are ignored.

    OMP_WAIT_POLICY=PASSIVE (OpenMP workers sleep instead of spinning at barriers) is read once when
    the OpenMP runtime starts, i.e. at `import torch`, so it cannot be set from here; export it in
    the shell. Measured on the 2-core box (SmolLM2-135M fp32 decode, ms/token p50):
    1 thread 52 either way; 2 threads with the other core busy 172 (default) vs 112 (PASSIVE);
    2 threads on an idle box 53 (default) vs 56 (PASSIVE). PASSIVE softens oversubscription but
    threads = free cores is what fixes it, which is why `pick_threads` exists.
    """
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass
