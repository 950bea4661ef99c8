"""edge_bench targets on the embedded SmolLM2-135M: memory bandwidth, GGUF F16 decode efficiency, and
the harness's own overhead.

    .venv/bin/python benchmarks/bench_targets.py [--threads 1,2] [--work DIR] [--decode 64]

For each thread count (the process pinned to that many of the quietest CPUs first):
  bandwidth   numpy read bandwidth of a 1 GiB buffer with that many threads (edge_bench.bandwidth),
              best and median of 5;
  efficiency  GGUF F16 decode tokens/s x weight bytes read per token / best bandwidth.
              Target: >= 70% (issue 5), on the pooled decode tokens/s (all steps / all time);
              "eff@p50" uses 1 / the median per-token latency instead (robust to a busy core). Weights read per token: every tensor once, the tied
              embedding in full as the LM head, plus one embedding row;
  overhead    the harness's decode tokens/s (wall clock around every `decode` + argmax) against
              llama.cpp's internal timing of the same calls (llama_perf_context t_eval_ms / n_eval).
              Target: within 10%.
The F16 GGUF is converted from the embedded model with export.gguf_convert (once, into --work). The
embedded Q4_1 file is measured too, for context. Prints a human table, then one JSON line. Run it on
an idle machine: the load average is printed and a busy machine is flagged in both outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_bench.bandwidth import efficiency, gguf_bytes_per_token, measure_read_bandwidth  # noqa: E402
from edge_bench.host import describe_host, machine_busy, pinned, quietest_cpus  # noqa: E402
from edge_bench.latency import benchmark_generation, measure_load  # noqa: E402

PROMPT = (
    "<|im_start|>user\nA train leaves the station at 9:40 and arrives at 11:15. The return trip takes 20 "
    "minutes longer. How long is the return trip, in minutes? Think step by step.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
EFFICIENCY_TARGET, OVERHEAD_TARGET = 0.70, 0.10


def make_f16_gguf(work: Path) -> Path:
    """The embedded SmolLM2 as an F16 GGUF (converted once into `work`)."""
    path = work / "smollm2-135m-f16.gguf"
    if not path.is_file():
        from arte.models import resolve_hf
        from export.gguf_convert import convert_hf_to_gguf

        convert_hf_to_gguf(Path(resolve_hf("smollm2-135m")), path, "f16")
    return path


def bench_variant(name: str, path: Path, threads: int, bandwidth: dict, n_decode: int) -> dict:
    runtime, load_s = measure_load("llama_cpp", path, threads)
    try:
        ids = runtime.llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
        b = benchmark_generation(runtime, ids, n_decode, min_count=3, min_seconds=3.0, max_count=50, warmup=1)
    finally:
        runtime.close()
    per_token = gguf_bytes_per_token(path)
    tps, internal = b.decode_tokens_per_s, b.internal["decode_tokens_per_s"]
    return {
        "variant": name,
        "threads": threads,
        "file_bytes": path.stat().st_size,
        "bytes_per_token": per_token["bytes_per_token"],
        "load_s": round(load_s, 3),
        "runs": b.runs,
        "prompt_tokens": b.prompt_tokens,
        "ttft_ms_p50": round(b.ttft.p50 * 1000, 2),
        "decode_tokens_per_s": round(tps, 2),
        "per_token_ms": b.per_token_latency.ms(),
        "llama_cpp_decode_tokens_per_s": round(internal, 2),
        "harness_overhead": round(1 - tps / internal, 4),
        "efficiency_vs_best_bw": round(
            efficiency(tps, per_token["bytes_per_token"], bandwidth["best_gb_per_s"]), 4
        ),
        "efficiency_vs_median_bw": round(
            efficiency(tps, per_token["bytes_per_token"], bandwidth["median_gb_per_s"]), 4
        ),
        "achieved_gb_per_s": round(tps * per_token["bytes_per_token"] / 1e9, 2),
        # 1 / median per-token latency: less sensitive to another process stealing the core now and then
        "decode_tokens_per_s_p50": round(1 / b.per_token_latency.p50, 2),
        "efficiency_p50_vs_best_bw": round(
            efficiency(1 / b.per_token_latency.p50, per_token["bytes_per_token"], bandwidth["best_gb_per_s"]),
            4,
        ),
        "deterministic": b.deterministic,
    }


def print_table(rows: list[dict], bandwidths: dict, busy: dict) -> None:
    print("\nread bandwidth (numpy, 1 GiB): " + ", ".join(
        f"{t} thread(s) best {bw['best_gb_per_s']:.1f} / median {bw['median_gb_per_s']:.1f} GB/s"
        for t, bw in bandwidths.items()))  # fmt: skip
    head = (f"{'variant':<10} {'thr':>3} {'tok/s':>7} {'llama.cpp':>9} {'overhead':>8} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'GB/tok':>6} {'GB/s':>6} {'effic.':>6} {'eff@p50':>7}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['variant']:<10} {r['threads']:>3} {r['decode_tokens_per_s']:>7.1f} "
              f"{r['llama_cpp_decode_tokens_per_s']:>9.1f} {r['harness_overhead']:>8.1%} "
              f"{r['per_token_ms']['p50']:>7.2f} {r['per_token_ms']['p99']:>7.2f} "
              f"{r['bytes_per_token'] / 1e9:>6.3f} {r['achieved_gb_per_s']:>6.1f} "
              f"{r['efficiency_vs_best_bw']:>6.1%} {r['efficiency_p50_vs_best_bw']:>7.1%}")  # fmt: skip
    for t, b in busy.items():
        if b["warning"]:
            print(f"WARNING ({t} thread(s)): {b['warning']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="thread counts to sweep, comma-separated")
    p.add_argument(
        "--work", type=Path, default=None, help="where the F16 GGUF is written (default: a temp dir)"
    )
    p.add_argument("--decode", type=int, default=64, help="decode steps per generation")
    args = p.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()
    host = describe_host()
    print(
        f"host: {host['cpu_model']}, {host['logical_cores']} logical cores, flags {' '.join(host['isa_flags'])}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        f16 = make_f16_gguf(work)
        print(f"F16 GGUF: {f16} ({f16.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - started:.0f} s)")
        from arte.models import embedded_gguf

        variants = {"F16": f16, "Q4_1": embedded_gguf("smollm2-135m")}
        rows, bandwidths, busy = [], {}, {}
        for threads in thread_counts:
            busy[threads] = machine_busy(threads)
            with pinned(quietest_cpus(threads)) as cpus:
                bandwidths[threads] = {
                    **measure_read_bandwidth(1 << 30, threads, repeats=5),
                    "cpus": sorted(cpus),
                }
                for name, path in variants.items():
                    rows.append(bench_variant(name, path, threads, bandwidths[threads], args.decode))
    print_table(rows, bandwidths, busy)
    f16_rows = [r for r in rows if r["variant"] == "F16"]
    targets = {
        "f16_efficiency_min": EFFICIENCY_TARGET,
        "f16_efficiency_met": {
            r["threads"]: r["efficiency_vs_best_bw"] >= EFFICIENCY_TARGET for r in f16_rows
        },
        "harness_overhead_max": OVERHEAD_TARGET,
        "harness_overhead_met": {
            f"{r['variant']}@{r['threads']}": abs(r["harness_overhead"]) <= OVERHEAD_TARGET for r in rows
        },
    }
    print(json.dumps({"benchmark": "edge_bench_targets", "host": host, "load_before": load_before,
                      "load_after": os.getloadavg(), "busy": busy, "bandwidth": bandwidths, "rows": rows,
                      "targets": targets}))  # fmt: skip


if __name__ == "__main__":
    main()
