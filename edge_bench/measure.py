"""Measuring one variant at one thread count: load it (pinned to the quietest CPUs), then per prompt
length a busy check, the timed generations (`latency.benchmark_generation`), peak RSS in a fresh
process (`memory`), and the efficiency against the memory bandwidth measured just before and just
after the block on the same CPUs (`bandwidth`). llama.cpp's runtime options (mmap or huge pages,
flash attention, extra buffer types) come from the settings here."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from edge_bench import hugepages
from edge_bench.accuracy import Tokenizer
from edge_bench.bandwidth import BandwidthMeter, efficiency
from edge_bench.host import (
    affinity,
    machine_busy,
    pin_affinity,
    pinned,
    quietest_cpus,
)
from edge_bench.latency import benchmark_generation, measure_load
from edge_bench.memory import measure_peak_rss
from edge_bench.settings import BenchSettings
from edge_bench.variants import Variant


def runtime_options(runtime: str, s: BenchSettings) -> dict:
    """Keyword options for `open_runtime`: llama.cpp reads the GGUF into memory (no mmap) only where
    that memory gets huge pages, and uses flash attention and extra buffer types as `s` says; other
    runtimes take none."""
    if runtime != "llama_cpp":
        return {}
    return {
        "use_mmap": not (s.hugepages and hugepages.hugepages_active()),
        "flash_attn": s.flash_attn,
        "extra_bufts": s.extra_bufts,
    }


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _finite(x: float | None, nd: int = 3) -> float | None:
    return round(x, nd) if x is not None and math.isfinite(x) else None


def prompt_ids(tokenizer: Tokenizer, text: str, length: int) -> list[int]:
    """`length` token ids of `text`, cycled when the text is shorter."""
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("the speed prompt text encodes to no tokens")
    return (ids * (length // len(ids) + 1))[:length]


def _memory(v: Variant, threads: int, length: int, s: BenchSettings, warnings: list[str]) -> dict | None:
    if not s.memory:
        return None
    try:
        return measure_peak_rss(
            v.runtime, v.path, threads, length, s.n_decode, options=runtime_options(v.runtime, s)
        )
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:  # costs the memory figure only
        warnings.append(f"{v.name}: peak RSS not measured ({threads} threads, {length} tokens): {e}")
        return None


def check_busy(threads: int, s: BenchSettings, pin: tuple[set[int], set[int]] | None) -> dict:
    """`machine_busy` over the whole machine: while pinned (`pin` = (all CPUs, pinned CPUs)), the
    process is unpinned for the sample, since machine_busy counts the cores of the current affinity."""
    if pin is None:
        return machine_busy(threads, s.busy_sample_s)
    pin_affinity(pin[0])
    try:
        return machine_busy(threads, s.busy_sample_s)
    finally:
        pin_affinity(pin[1])


def measure_config(
    rt,
    v: Variant,
    threads: int,
    ids: list[int],
    load_s: float,
    s: BenchSettings,
    warnings: list[str],
    pin: tuple[set[int], set[int]] | None = None,
) -> dict:
    """One result row: busy check, speed (repeated), peak RSS in a fresh process. The efficiency is
    filled in by `bench_threads` once the bandwidth after the block is known."""
    busy = check_busy(threads, s, pin)
    b = benchmark_generation(
        rt, ids, s.n_decode, min_count=s.min_repeats, min_seconds=s.min_seconds, warmup=s.warmup
    )
    mem = _memory(v, threads, len(ids), s, warnings)
    decode = b.decode_tokens_per_s
    internal = (b.internal or {}).get("decode_tokens_per_s")
    return {
        "variant": v.name,
        "threads": threads,
        "prompt_tokens": len(ids),
        "n_decode": s.n_decode,
        "runs": b.runs,
        "capped": b.capped,
        "load_s": round(load_s, 4),
        "ttft_ms": b.ttft.ms(),
        "prefill_tokens_per_s": _finite(b.prefill_tokens_per_s, 2),
        "decode_tokens_per_s": _finite(decode, 3),
        "per_token_ms": b.per_token_latency.ms() if b.per_token_latency else None,
        "deterministic": b.deterministic,
        "peak_rss_mb": round(mem["peak_rss_bytes"] / 1e6, 1) if mem else None,
        "mmap": mem.get("mmap") if mem else None,
        "memory": mem,
        "efficiency": None,
        "bandwidth_gb_per_s": None,
        "bandwidth_before_after": None,
        "bandwidth_unstable": None,
        "runtime_settings": getattr(rt, "settings", None),
        "busy": bool(busy["busy"]),
        "busy_detail": {k: busy.get(k) for k in ("load1", "free_cores", "other_processes_cores", "warning")},
        "internal": b.internal,
        "harness_vs_internal": _finite(decode / internal, 4) if decode and internal else None,
        "parallel": [rt.parallel_decode(ids, s.n_decode, n) for n in s.parallel]
        if s.parallel and hasattr(rt, "parallel_decode")
        else None,
    }


BANDWIDTH_UNSTABLE = 1.2
"""Before/after bandwidths further apart than this ratio: the host changed under the block."""


def _set_efficiency(rows: list[dict], v: Variant, before: dict | None, after: dict | None) -> None:
    """Each row's efficiency against the higher of the two bandwidth bests around its block; the
    row is marked `bandwidth_unstable` when the two disagree by more than BANDWIDTH_UNSTABLE."""
    if before is None or after is None:
        return
    lo, gbps = sorted([before["best_gb_per_s"], after["best_gb_per_s"]])
    for row in rows:
        row["bandwidth_unstable"] = gbps > BANDWIDTH_UNSTABLE * lo
        decode = row["decode_tokens_per_s"]
        row["bandwidth_gb_per_s"] = gbps
        row["bandwidth_before_after"] = [before["best_gb_per_s"], after["best_gb_per_s"]]
        row["efficiency"] = _finite(efficiency(decode, v.bytes_per_token, gbps), 4) if decode else None


def bench_threads(
    v: Variant,
    threads: int,
    prompts: list[list[int]],
    s: BenchSettings,
    meter: BandwidthMeter | None,
    warnings: list[str],
    accuracy: Callable[[Any], dict] | None = None,
) -> tuple[list[dict], dict | None]:
    """Load `v` with `threads` (pinned), measure every prompt length between two bandwidth
    measurements on the same CPUs, then run `accuracy(runtime)`."""
    pin = (set(affinity()), set(quietest_cpus(threads))) if s.pin else None
    with pinned(pin[1]) if pin else contextlib.nullcontext():
        before = meter.measure(threads) if meter else None
        rt, load_s = measure_load(v.runtime, v.path, threads, **runtime_options(v.runtime, s))
        try:
            rows = []
            for ids in prompts:
                row = measure_config(rt, v, threads, ids, load_s, s, warnings, pin)
                log(
                    f"{v.name} threads={threads} prompt={len(ids)}: decode "
                    f"{row['decode_tokens_per_s']} tok/s, TTFT {row['ttft_ms']['p50']} ms"
                    + (" (machine busy)" if row["busy"] else "")
                )
                rows.append(row)
            _set_efficiency(rows, v, before, meter.measure(threads) if meter else None)
            return rows, accuracy(rt) if accuracy else None
        finally:
            rt.close()
