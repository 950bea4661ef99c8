"""What turning llama.cpp's extra buffer types off costs: prefill and decode tokens/s of the embedded
SmolLM2-135M as F16, Q8_0, Q4_K_M and Q4_0 GGUFs (plus the embedded Q4_1 file), extra buffer types on
and off, measured by `edge_bench.bench.run_bench` (the code `arte bench` runs) in one process.

    .venv/bin/python benchmarks/extra_bufts_cost.py [--threads 1,2] [--rounds 2] [--work DIR]

Extra buffer types are llama.cpp's repacked weight layouts (AVX2/AVX-512 interleaved rows for some
quant types, AMX tiles on Intel Xeons with AMX). `common.llama_cpp_loader` turns them off where
llama.cpp reports AMX (its AMX path segfaults there, llama.cpp #20824) and keeps them on elsewhere.
The rounds alternate on/off so that drift on a shared machine hits both. Settings are `arte bench`'s:
flash attention, the GGUF read into huge-page memory (the script restarts itself with glibc's
tunable), pinned threads. On a CPU with AMX, "on" crashes for the quantized types: run it there with
`--settings off` only, or expect a segfault. Prints a table per round, the median over rounds with
the off/on ratio, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_targets import make_f16_gguf  # noqa: E402

from edge_bench.bench import run_bench  # noqa: E402
from edge_bench.host import describe_host, llama_cpp_system_info  # noqa: E402
from edge_bench.hugepages import reexec_with_hugepages  # noqa: E402
from edge_bench.settings import BenchSettings  # noqa: E402

QUANTS = ("f16", "q8_0", "q4_k_m", "q4_0")


def make_ggufs(work: Path) -> list[Path]:
    """The embedded SmolLM2 converted once to F16 and quantized from it, plus the embedded Q4_1."""
    from arte.models import embedded_gguf
    from export.gguf_quantize import quantize_gguf

    f16 = make_f16_gguf(work)
    files = [f16]
    for q in QUANTS[1:]:
        path = work / f"smollm2-135m-{q}.gguf"
        if not path.is_file():
            quantize_gguf(f16, path, q, threads=2)
        files.append(path)
    return [*files, Path(embedded_gguf("smollm2-135m"))]


def bench_once(files: list[Path], setting: str, threads: list[int], args, out: Path) -> list[dict]:
    settings = BenchSettings(
        threads=threads,
        prompt_lengths=[args.prompt],
        n_decode=args.decode,
        min_repeats=3,
        min_seconds=args.min_seconds,
        memory=False,
        plots=False,
        bandwidth_mb=0,
        extra_bufts=setting,
    )
    report = run_bench(files, None, out, settings)
    decision = report["host"]["llama_cpp_extra_bufts"]
    return [
        {
            "setting": setting,
            "use_extra_bufts": r["runtime_settings"]["use_extra_bufts"],
            "variant": r["variant"],
            "threads": r["threads"],
            "prefill_tokens_per_s": r["prefill_tokens_per_s"],
            "decode_tokens_per_s": r["decode_tokens_per_s"],
            "p50_ms": r["per_token_ms"]["p50"],
            "busy": r["busy"],
            "decision_reason": decision["reason"],
        }
        for r in report["results"]
    ]


def median_table(rows: list[dict]) -> list[dict]:
    """Per variant x threads: median prefill/decode tok/s with extra buffer types on and off, ratio."""
    out = []
    keys = sorted({(r["variant"], r["threads"]) for r in rows})
    for variant, threads in keys:
        line: dict = {"variant": variant, "threads": threads}
        for setting in ("on", "off"):
            mine = [
                r for r in rows if (r["variant"], r["threads"], r["setting"]) == (variant, threads, setting)
            ]
            for what in ("prefill_tokens_per_s", "decode_tokens_per_s"):
                line[f"{what}_{setting}"] = statistics.median(r[what] for r in mine) if mine else None
        for what in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            on, off = line[f"{what}_on"], line[f"{what}_off"]
            line[f"{what}_off_over_on"] = round(off / on, 3) if on and off else None
        out.append(line)
    return out


def print_table(lines: list[dict]) -> None:
    head = (
        f"{'variant':<24} {'thr':>3}  {'prefill on':>10} {'off':>8} {'off/on':>6}  "
        f"{'decode on':>9} {'off':>7} {'off/on':>6}"
    )
    print(head + "\n" + "-" * len(head))
    f = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731
    for ln in lines:
        print(
            f"{ln['variant']:<24} {ln['threads']:>3}  {f(ln['prefill_tokens_per_s_on'], '.0f'):>10} "
            f"{f(ln['prefill_tokens_per_s_off'], '.0f'):>8} "
            f"{f(ln['prefill_tokens_per_s_off_over_on'], '.2f'):>6}  "
            f"{f(ln['decode_tokens_per_s_on'], '.1f'):>9} {f(ln['decode_tokens_per_s_off'], '.1f'):>7} "
            f"{f(ln['decode_tokens_per_s_off_over_on'], '.2f'):>6}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="thread counts to sweep, comma-separated")
    p.add_argument("--rounds", type=int, default=2, help="on/off pairs, alternating")
    p.add_argument("--settings", default="on,off", help="which settings to run: on,off or off alone")
    p.add_argument("--work", type=Path, default=None, help="where the GGUFs and reports go (default: temp)")
    p.add_argument("--decode", type=int, default=64, help="decode steps per generation")
    p.add_argument("--prompt", type=int, default=128, help="prompt length in tokens (prefill)")
    p.add_argument("--min_seconds", type=float, default=2.0, help="timed seconds per configuration, at least")
    args = p.parse_args()
    reexec_with_hugepages()
    threads = [int(t) for t in args.threads.split(",")]
    settings = args.settings.split(",")
    host = describe_host()
    print(
        f"host: {host['cpu_model']}, {host['logical_cores']} logical cores, "
        f"flags {' '.join(host['isa_flags'])}"
    )
    print(f"llama.cpp: {llama_cpp_system_info()}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        files = make_ggufs(work)
        print(f"GGUFs ready in {time.perf_counter() - started:.0f} s: {', '.join(f.name for f in files)}")
        for i in range(args.rounds):
            order = settings if i % 2 == 0 else settings[::-1]
            for setting in order:
                got = bench_once(files, setting, threads, args, work / f"round{i}-{setting}")
                rows += [{**r, "round": i} for r in got]
                busy = sum(r["busy"] for r in got)
                print(
                    f"round {i + 1}, extra buffer types {setting}: {len(got)} rows"
                    + (f", {busy} BUSY" if busy else "")
                )
    lines = median_table(rows)
    print(f"\nmedian over {args.rounds} round(s); prompt {args.prompt} tokens, {args.decode} decode steps")
    print_table(lines)
    print(json.dumps({"benchmark": "extra_bufts_cost", "host": host, "rows": rows, "median": lines}))


if __name__ == "__main__":
    main()
