"""Timing: latency statistics, the warm-up-then-repeat stopping rule, and one timed greedy generation
(TTFT, prefill and decode tokens/s, per-token latency) on any `Runtime`.

Every figure is wall-clock (`time.perf_counter`) around the runtime's own calls, load excluded. TTFT is
prefill plus choosing the first token (argmax); each decode step is `decode(previous token)` plus
the argmax of its logits, so the greedy tokens are fed back exactly as a real generation loop does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")
Clock = Callable[[], float]


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of latencies in seconds; percentiles by linear interpolation (numpy's default)."""

    n: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def from_samples(cls, seconds: Sequence[float]) -> LatencyStats:
        x = np.asarray(seconds, dtype=np.float64)
        if x.size == 0:
            raise ValueError("LatencyStats needs at least one sample")
        p50, p90, p99 = np.percentile(x, [50, 90, 99], method="linear")
        return cls(
            int(x.size), float(x.mean()), float(x.min()), float(p50), float(p90), float(p99), float(x.max())
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def ms(self) -> dict[str, float]:
        """The same figures in milliseconds (n unchanged), rounded to microseconds."""
        return {k: (v if k == "n" else round(v * 1000, 3)) for k, v in asdict(self).items()}


@dataclass
class Repeated(Generic[T]):
    """What `repeat_until` measured: one duration and one result per timed call (warm-up excluded)."""

    seconds: list[float]
    results: list[T]
    warmup: int
    total_seconds: float
    capped: bool
    """True when max_count stopped the loop before both minimums were met."""


def repeat_until(
    fn: Callable[[], T],
    *,
    min_count: int = 5,
    min_seconds: float = 1.0,
    max_count: int = 1000,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> Repeated[T]:
    """Call `fn` `warmup` times untimed, then time calls until BOTH `min_count` calls and
    `min_seconds` of measuring have been reached, or `max_count` calls (whichever comes first)."""
    if min_count < 1 or max_count < min_count:
        raise ValueError(
            f"need 1 <= min_count <= max_count, got min_count={min_count}, max_count={max_count}"
        )
    for _ in range(warmup):
        fn()
    seconds: list[float] = []
    results: list[T] = []
    start = clock()
    while True:
        t0 = clock()
        results.append(fn())
        t1 = clock()
        seconds.append(t1 - t0)
        enough = len(seconds) >= min_count and t1 - start >= min_seconds
        if enough or len(seconds) >= max_count:
            return Repeated(seconds, results, warmup, t1 - start, capped=not enough)


@dataclass
class GenerationTiming:
    """One greedy generation: prefill of `prompt_tokens`, then `decode_steps` one-token steps."""

    prompt_tokens: int
    decode_steps: int
    ttft_s: float
    prefill_tokens_per_s: float
    decode_s: float
    decode_tokens_per_s: float | None
    per_token_latency: LatencyStats | None
    step_seconds: list[float] = field(repr=False)
    tokens: list[int] = field(repr=False)
    """The greedy tokens: the first from the prefill logits, then one per decode step."""
    internal: dict | None = None
    """The runtime's own timing of this generation (llama.cpp's perf counters), when it keeps one."""

    def to_dict(self, with_samples: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["per_token_latency"] = self.per_token_latency.to_dict() if self.per_token_latency else None
        if not with_samples:
            d.pop("step_seconds")
        return d


def measure_generation(
    runtime, prompt_ids: Sequence[int], n_decode: int, clock: Clock = time.perf_counter
) -> GenerationTiming:
    """Time one greedy generation on a loaded runtime: TTFT (prefill + first argmax), then `n_decode`
    decode steps, each timed on its own (decode of the previous token + argmax)."""
    if not prompt_ids:
        raise ValueError("measure_generation needs a non-empty prompt")
    has_internal = hasattr(runtime, "internal_timings")
    if has_internal:
        runtime.reset_internal_timings()
    t0 = clock()
    token = int(np.argmax(runtime.prefill(prompt_ids)))
    ttft = clock() - t0
    tokens, steps = [token], []
    for _ in range(n_decode):
        t0 = clock()
        token = int(np.argmax(runtime.decode(token)))
        steps.append(clock() - t0)
        tokens.append(token)
    decode_s = float(sum(steps))
    return GenerationTiming(
        prompt_tokens=len(prompt_ids),
        decode_steps=n_decode,
        ttft_s=ttft,
        prefill_tokens_per_s=len(prompt_ids) / ttft if ttft > 0 else float("inf"),
        decode_s=decode_s,
        decode_tokens_per_s=n_decode / decode_s if decode_s > 0 else None,
        per_token_latency=LatencyStats.from_samples(steps) if steps else None,
        step_seconds=steps,
        tokens=tokens,
        internal=runtime.internal_timings() if has_internal else None,
    )


@dataclass
class GenerationBenchmark:
    """Repeated generations of the same prompt, pooled: TTFT over runs, per-token latency over all
    decode steps of all runs, decode tokens/s = all steps / all decode time."""

    runs: int
    capped: bool
    prompt_tokens: int
    decode_steps: int
    ttft: LatencyStats
    prefill_tokens_per_s: float
    """prompt tokens / median TTFT."""
    decode_tokens_per_s: float | None
    per_token_latency: LatencyStats | None
    tokens: list[int]
    deterministic: bool
    """Every run produced the same greedy tokens."""
    internal: dict | None = None
    """Sums of the runtime's own timing over the runs (decode_ms, decode_tokens, ...) + tokens/s."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ttft"] = self.ttft.to_dict()
        d["per_token_latency"] = self.per_token_latency.to_dict() if self.per_token_latency else None
        return d


def benchmark_generation(
    runtime,
    prompt_ids: Sequence[int],
    n_decode: int,
    *,
    min_count: int = 3,
    min_seconds: float = 2.0,
    max_count: int = 100,
    warmup: int = 1,
) -> GenerationBenchmark:
    """`measure_generation` under `repeat_until` (warm-up first, then both minimums), pooled."""
    rep = repeat_until(
        lambda: measure_generation(runtime, prompt_ids, n_decode),
        min_count=min_count,
        min_seconds=min_seconds,
        max_count=max_count,
        warmup=warmup,
    )
    runs: list[GenerationTiming] = rep.results
    steps = [s for r in runs for s in r.step_seconds]
    decode_s = sum(steps)
    ttft = LatencyStats.from_samples([r.ttft_s for r in runs])
    return GenerationBenchmark(
        runs=len(runs),
        capped=rep.capped,
        prompt_tokens=len(prompt_ids),
        decode_steps=n_decode,
        ttft=ttft,
        prefill_tokens_per_s=len(prompt_ids) / ttft.p50 if ttft.p50 > 0 else float("inf"),
        decode_tokens_per_s=len(steps) / decode_s if decode_s > 0 else None,
        per_token_latency=LatencyStats.from_samples(steps) if steps else None,
        tokens=runs[0].tokens,
        deterministic=all(r.tokens == runs[0].tokens for r in runs),
        internal=_sum_internal([r.internal for r in runs]),
    )


def _sum_internal(per_run: list[dict | None]) -> dict | None:
    if not per_run or per_run[0] is None:
        return None
    keys = ("prefill_ms", "prefill_tokens", "decode_ms", "decode_tokens")
    out = {k: sum(r[k] for r in per_run) for k in keys}
    out["decode_tokens_per_s"] = 1000 * out["decode_tokens"] / out["decode_ms"] if out["decode_ms"] else None
    out["prefill_tokens_per_s"] = (
        1000 * out["prefill_tokens"] / out["prefill_ms"] if out["prefill_ms"] else None
    )
    return out


def measure_load(
    runtime_name: str, path: Path, threads: int, clock: Clock = time.perf_counter, **options: Any
):
    """(loaded runtime, load seconds): `open_runtime` (with the runtime's `options`) timed. The first
    load of a file may include reading it from disk; later loads find it in the page cache."""
    from edge_bench.runtimes import open_runtime

    t0 = clock()
    runtime = open_runtime(runtime_name, Path(path), threads, **options)
    return runtime, clock() - t0
