"""The benchmark run: every variant x thread count x prompt length, then accuracy, then the report.

For each variant and thread count (pinned to that many of the quietest CPUs when `pin`), the runtime
is loaded (timed), and for each prompt length:
- the machine is checked for other load (`host.machine_busy`, recorded per configuration);
- one greedy generation is warmed up, then repeated until both `min_repeats` runs and `min_seconds`
  (`latency.benchmark_generation`): TTFT, prefill and decode tokens/s, per-token p50/p90/p99;
- peak RSS is measured in a fresh process (`memory.measure_peak_rss`, mmap recorded);
- efficiency = decode tokens/s x weight bytes per token / read bandwidth, measured with the same
  CPUs and thread count just before and just after the block (`bandwidth.BandwidthMeter`).
llama.cpp runs with flash attention (its own default), extra buffer types decided by
`common.llama_cpp_loader` (off where llama.cpp reports AMX) and, where `hugepages` and the process's
environment allow (`edge_bench.hugepages`; `arte bench` arranges it), with the GGUF read into
huge-page memory instead of mapped. Every row records the runtime settings it ran with.
At the largest thread count the loaded runtime also answers the task's test questions (accuracy) and
is compared token by token with its fp32 reference (top-1 agreement); references run first.

Speed prompts are the task's prompts (or a filler text) tokenized by the variant's harness tokenizer
and cut or cycled to each prompt length, so variants of one model all receive the same token ids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.llama_cpp_loader import decide_extra_bufts
from edge_bench import hugepages
from edge_bench.accuracy import Completion, Tokenizer, evaluate_runtime, load_tokenizer, task_prompts
from edge_bench.bandwidth import BandwidthMeter, efficiency
from edge_bench.host import (
    affinity,
    describe_host,
    llama_cpp_system_info,
    machine_busy,
    pin_affinity,
    pinned,
    quietest_cpus,
)
from edge_bench.latency import benchmark_generation, measure_load
from edge_bench.memory import measure_peak_rss
from edge_bench.report import (
    SCHEMA_VERSION,
    accuracy_drop,
    best_speed,
    choose,
    compare_reports,
    load_report,
    recommend,
    write_report,
)
from edge_bench.variants import Variant, discover_variants

FILLER = "The quick brown fox jumps over the lazy dog. " * 8
"""Speed prompt text when no task is given."""


@dataclass(frozen=True)
class BenchSettings:
    """Everything that shapes the measurements; recorded as the report's `config`."""

    threads: list[int] = field(default_factory=lambda: [1, 2])
    prompt_lengths: list[int] = field(default_factory=lambda: [64, 256])
    n_decode: int = 64
    min_repeats: int = 3
    min_seconds: float = 1.0
    warmup: int = 1
    n_questions: int = 20
    shots: int = 3
    max_new_tokens: int = 96
    seed: int = 0
    n_validation: int = 100
    n_test: int = 200
    max_accuracy_drop: float = 0.02
    pin: bool = True
    memory: bool = True
    bandwidth_mb: int = 1024
    busy_sample_s: float = 0.5
    plots: bool = True
    hugepages: bool = True
    flash_attn: bool = True
    extra_bufts: str = "auto"


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


def _log(msg: str) -> None:
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
        return measure_peak_rss(v.runtime, v.path, threads, length, s.n_decode,
                                options=runtime_options(v.runtime, s))  # fmt: skip
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


def measure_config(rt, v: Variant, threads: int, ids: list[int], load_s: float, s: BenchSettings,
                   warnings: list[str], pin: tuple[set[int], set[int]] | None = None) -> dict:  # fmt: skip
    """One result row: busy check, speed (repeated), peak RSS in a fresh process. The efficiency is
    filled in by `bench_threads` once the bandwidth after the block is known."""
    busy = check_busy(threads, s, pin)
    b = benchmark_generation(rt, ids, s.n_decode, min_count=s.min_repeats, min_seconds=s.min_seconds,
                             warmup=s.warmup)  # fmt: skip
    mem = _memory(v, threads, len(ids), s, warnings)
    decode = b.decode_tokens_per_s
    internal = (b.internal or {}).get("decode_tokens_per_s")
    return {
        "variant": v.name, "threads": threads, "prompt_tokens": len(ids), "n_decode": s.n_decode,
        "runs": b.runs, "capped": b.capped, "load_s": round(load_s, 4), "ttft_ms": b.ttft.ms(),
        "prefill_tokens_per_s": _finite(b.prefill_tokens_per_s, 2), "decode_tokens_per_s": _finite(decode, 3),
        "per_token_ms": b.per_token_latency.ms() if b.per_token_latency else None,
        "deterministic": b.deterministic,
        "peak_rss_mb": round(mem["peak_rss_bytes"] / 1e6, 1) if mem else None,
        "mmap": mem.get("mmap") if mem else None, "memory": mem,
        "efficiency": None, "bandwidth_gb_per_s": None, "bandwidth_before_after": None,
        "bandwidth_unstable": None,
        "runtime_settings": getattr(rt, "settings", None),
        "busy": bool(busy["busy"]),
        "busy_detail": {k: busy.get(k) for k in ("load1", "free_cores", "other_processes_cores", "warning")},
        "internal": b.internal, "harness_vs_internal": _finite(decode / internal, 4) if decode and internal else None,
    }  # fmt: skip


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


def bench_threads(v: Variant, threads: int, prompts: list[list[int]], s: BenchSettings,
                  meter: BandwidthMeter | None, warnings: list[str],
                  accuracy: Callable[[Any], dict] | None = None) -> tuple[list[dict], dict | None]:  # fmt: skip
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
                _log(f"{v.name} threads={threads} prompt={len(ids)}: decode "
                     f"{row['decode_tokens_per_s']} tok/s, TTFT {row['ttft_ms']['p50']} ms"
                     + (" (machine busy)" if row["busy"] else ""))  # fmt: skip
                rows.append(row)
            _set_efficiency(rows, v, before, meter.measure(threads) if meter else None)
            return rows, accuracy(rt) if accuracy else None
        finally:
            rt.close()


def _reference_first(variants: list[Variant]) -> list[Variant]:
    return sorted(variants, key=lambda v: not v.is_reference)


def _variant_entry(v: Variant) -> dict:
    d = v.to_json()
    d.update(accuracy=None, n_questions=0, missing_tag=None, top1_agreement=None, top1_steps=0,
             accuracy_drop=None, accuracy_threads=None, best=None, error=None)  # fmt: skip
    return d


class _Accuracy:
    """Accuracy runs: the task's items, the references' completions (for top-1), the answers."""

    def __init__(self, task, items: list[tuple[str, str]], s: BenchSettings):
        self.task, self.items, self.s = task, items, s
        self.reference_completions: dict[str, list[Completion]] = {}
        self.answers: list[dict] = []

    def runner(self, v: Variant, tokenizer: Tokenizer, entry: dict) -> Callable[[Any], dict]:
        def run(rt) -> dict:
            ref = self.reference_completions.get(v.reference) if v.reference else None
            summary, comps = evaluate_runtime(
                rt, tokenizer, self.task, self.items, self.s.max_new_tokens, ref
            )
            if v.is_reference:
                self.reference_completions[v.name] = comps
            self.answers += [{"variant": v.name, **r} for r in summary.pop("records")]
            entry.update(accuracy=summary["accuracy"], n_questions=summary["n"],
                         missing_tag=summary["missing_tag"], top1_agreement=summary["top1_agreement"],
                         top1_steps=summary["top1_steps"])  # fmt: skip
            _log(f"{v.name}: accuracy {summary['accuracy']:.3f} on {summary['n']} questions, "
                 f"top-1 agreement {summary['top1_agreement']}")  # fmt: skip
            return summary

        return run


def bench_variant(v: Variant, s: BenchSettings, speed_text: str, tokenizers: dict, acc: _Accuracy | None,
                  meter: BandwidthMeter | None, warnings: list[str]) -> tuple[dict, list[dict]]:  # fmt: skip
    """(variant entry, result rows) of one variant; an error is recorded in the entry, not raised."""
    entry, rows = _variant_entry(v), []
    acc_threads = max(s.threads)
    try:
        key = (v.runtime == "fake", str(v.tokenizer))
        if key not in tokenizers:
            tokenizers[key] = load_tokenizer(v.runtime, v.tokenizer)
        tok = tokenizers[key]
        prompts = [prompt_ids(tok, speed_text, n) for n in s.prompt_lengths]
        for t in s.threads:
            run_acc = acc.runner(v, tok, entry) if acc and t == acc_threads else None
            new_rows, _ = bench_threads(v, t, prompts, s, meter, warnings, run_acc)
            rows += new_rows
        if acc:
            entry["accuracy_threads"] = acc_threads
    except Exception as e:  # noqa: BLE001 - one broken variant must not cost the others' figures
        entry["error"] = f"{type(e).__name__}: {e}"
        warnings.append(f"{v.name}: not benchmarked: {entry['error']}")
        _log(f"{v.name}: ERROR {entry['error']}")
    entry["best"] = best_speed(rows)
    return entry, rows


def _load_accuracy(task: str | None, s: BenchSettings) -> _Accuracy | None:
    if not task:
        return None
    from arte.tasks import load_task

    t = load_task(task, n_validation=s.n_validation, n_test=s.n_test, seed=s.seed)
    return _Accuracy(t, task_prompts(t, s.shots, s.n_questions), s)


def _meter(s: BenchSettings) -> BandwidthMeter | None:
    if not s.bandwidth_mb:
        return None
    _log(f"memory read bandwidth: {s.bandwidth_mb} MB buffer, measured around every variant x threads")
    return BandwidthMeter(size_bytes=s.bandwidth_mb << 20, repeats=5)


def _hugepages_warning(variants: list[Variant], s: BenchSettings) -> list[str]:
    if not (s.hugepages and any(v.runtime == "llama_cpp" for v in variants)):
        return []
    mode = hugepages.thp_mode()
    if hugepages.hugepages_active() or mode is None:  # active, or not Linux: nothing to say
        return []
    how = ("the kernel has them off (THP 'never')" if mode == "never" else
           "run under GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as `arte bench` does itself")  # fmt: skip
    return [f"huge pages not active, so llama.cpp maps its weights in 4 KiB pages and decodes slower: {how}"]


def _host(variants: list[Variant], s: BenchSettings) -> dict:
    host = describe_host()
    host["pinned"] = s.pin
    host["hugepages"] = hugepages.describe()
    if any(v.runtime == "llama_cpp" for v in variants):
        host["llama_cpp_system_info"] = llama_cpp_system_info()
        host["llama_cpp_extra_bufts"] = decide_extra_bufts(s.extra_bufts).as_record()
    return host


def _summary_warnings(results: list[dict], variants: list[dict]) -> list[str]:
    out = []
    busy = [r for r in results if r["busy"]]
    if busy:
        out.append(f"machine busy during {len(busy)} of {len(results)} configurations "
                   f"({busy[0]['busy_detail']['warning']})")  # fmt: skip
    unstable = [r for r in results if r.get("bandwidth_unstable")]
    if unstable:
        out.append(f"memory bandwidth changed by more than {BANDWIDTH_UNSTABLE - 1:.0%} around "
                   f"{len(unstable)} of {len(results)} configurations (see bandwidth_before_after): their "
                   "efficiency is a lower bound")  # fmt: skip
    capped = [r for r in results if r["capped"]]
    if capped:
        out.append(f"{len(capped)} configuration(s) hit the repeat cap before min_seconds")
    for v in variants:
        if v["accuracy"] is not None and v["format"] != "pytorch" and v["reference"] is None:
            out.append(
                f"{v['name']}: no fp32 reference (manifest source missing?): no accuracy drop, no top-1"
            )
    return out


def run_bench(
    dirs: Sequence[str | Path | Variant],
    task: str | None,
    threads: Sequence[int] = (1, 2),
    prompt_lengths: Sequence[int] = (64, 256),
    out_dir: str | Path = "runs/bench",
    *,
    compare: str | Path | None = None,
    **settings: Any,
) -> dict:
    """Benchmark every variant found at `dirs` (see edge_bench.variants) and write OUT/report.json,
    OUT/report.md, OUT/answers.jsonl and the PNG plots; return the report. `settings` are
    `BenchSettings` fields (n_decode, min_repeats, min_seconds, n_questions, shots, ...)."""
    s = BenchSettings(threads=list(threads), prompt_lengths=list(prompt_lengths), **settings)
    out_dir = Path(out_dir)
    variants = _reference_first(discover_variants(dirs))
    if not variants:
        raise ValueError(f"no variants found at {list(map(str, dirs))}")
    acc = _load_accuracy(task, s)
    speed_text = "\n".join(p for p, _ in acc.items) if acc else FILLER
    host, meter = _host(variants, s), _meter(s)
    warnings: list[str] = _hugepages_warning(variants, s)
    entries, results, tokenizers = [], [], {}
    try:
        for v in variants:
            entry, rows = bench_variant(v, s, speed_text, tokenizers, acc, meter, warnings)
            entries.append(entry)
            results += rows
    finally:
        if meter:
            meter.close()
    report = _assemble(entries, results, s, task, acc, host, meter.summary() if meter else None, warnings)
    if compare:
        lines = compare_reports(report, load_report(compare), s.max_accuracy_drop)
        report["comparison"] = {"previous": str(compare), "lines": lines}
    _write(report, out_dir, acc)
    return report


def _assemble(entries, results, s: BenchSettings, task, acc, host, bandwidth, warnings) -> dict:
    report = {
        "schema_version": SCHEMA_VERSION, "tool": "edge_bench",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": dataclasses.asdict(s),
        "task": {"spec": task, "name": acc.task.name if acc else None, "shots": s.shots,
                 "n_questions": len(acc.items) if acc else 0, "max_new_tokens": s.max_new_tokens,
                 "threads": max(s.threads)},
        "host": host, "bandwidth": bandwidth, "variants": entries, "results": results,
        "recommendation": {}, "warnings": [], "comparison": None,
    }  # fmt: skip
    for v in entries:
        v["accuracy_drop"] = accuracy_drop(report, v)
    report["warnings"] = warnings + _summary_warnings(results, entries)
    chosen, _ = choose(report, s.max_accuracy_drop)
    report["recommendation"] = {"variant": chosen["name"] if chosen else None,
                                "max_accuracy_drop": s.max_accuracy_drop,
                                "line": recommend(report, s.max_accuracy_drop)}  # fmt: skip
    return report


def _write(report: dict, out_dir: Path, acc: _Accuracy | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    if report["config"]["plots"]:
        from edge_bench.plots import write_plots

        plots = [p.name for p in write_plots(report, out_dir)]
    if acc:
        (out_dir / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in acc.answers))
    write_report(report, out_dir, plots)
