"""Decode throughput of the llama_cpp backend by batch width (`--batch_size`): how many sequences one
`llama_decode` step should carry on a small CPU, for each GGUF type, thread count and extra-buffer-
type setting.

    .venv/bin/python benchmarks/batched_decode.py [--widths 1,2,4,8,16] [--threads 1,2] [--work DIR]

The workload is ARTE scoring's: `--prompts` prompts that share one demonstration (a ~150-token
prefix), each followed by its own question, decoded greedily for `--new_tokens` tokens without stop
strings, through `LlamaCppBackend.generate` (prefix sharing, continuous batching, the sampling in
numpy). Figures: generated tokens per second over the whole call (prefill included, as the pipeline
pays it) and the share of prompts whose text equals width 1's. Files: the embedded SmolLM2-135M as
F16 and Q8_0 (converted once into --work) and its Q4_1 file. Prints a table, then one JSON line.
Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arte.backends import BackendConfig, load_backend  # noqa: E402
from arte.backends.base import SamplingParams  # noqa: E402
from common.prompts import icl_prompt  # noqa: E402
from common.tasks import load_task  # noqa: E402
from edge_bench.host import describe_host, llama_cpp_system_info  # noqa: E402


def scoring_prompts(n: int) -> list[str]:
    """n boolean_expressions questions behind one shared demonstration."""
    task = load_task("boolean_expressions", n_validation=n + 1, n_test=4)
    demo = task.validation[-1]
    rationale = (
        "We evaluate the expression from the innermost parentheses outwards, one operator at a "
        "time, applying not before and, and and before or. "
        * 2
        + f"So the answer is {demo.target}. <ans>{demo.target}</ans>"
    )
    return [icl_prompt(task.description, [(demo.input, rationale)], ex.input) for ex in task.validation[:n]]


def ggufs(work: Path) -> dict[str, Path]:
    from arte.models import embedded_gguf, resolve_hf
    from export.gguf_convert import convert_hf_to_gguf
    from export.gguf_quantize import quantize_gguf

    f16, q8 = work / "smollm2-135m-f16.gguf", work / "smollm2-135m-q8_0.gguf"
    if not f16.is_file():
        convert_hf_to_gguf(Path(resolve_hf("smollm2-135m")), f16, "f16")
    if not q8.is_file():
        quantize_gguf(f16, q8, "q8_0", threads=2)
    return {"f16": f16, "q8_0": q8, "q4_1": Path(embedded_gguf("smollm2-135m"))}


def measure(path: Path, width: int, threads: int, extra_bufts: str, prompts: list[str], new_tokens: int):
    cfg = BackendConfig(
        name="llama_cpp",
        model=str(path),
        threads=threads,
        batch_size=width,
        n_ctx=512,
        extra_bufts=extra_bufts,
    )
    backend = load_backend(cfg)
    params = SamplingParams(max_new_tokens=new_tokens)
    try:
        backend.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up: allocates the context
        started = time.perf_counter()
        out = backend.generate(prompts, params)
        seconds = time.perf_counter() - started
    finally:
        backend.close()
    return sum(g.completion_tokens for g in out) / seconds, [g.text for g in out]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="1,2,4,8,16")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--types", default="f16,q8_0,q4_1")
    p.add_argument("--extra_bufts", default="on,off")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--work", type=Path, default=None, help="where the converted GGUFs go (default: temp)")
    args = p.parse_args()
    host = describe_host()
    print(f"host: {host['cpu_model']}, {host['logical_cores']} cores, flags {' '.join(host['isa_flags'])}")
    print(f"llama.cpp: {llama_cpp_system_info()}")
    prompts, rows = scoring_prompts(args.prompts), []
    with tempfile.TemporaryDirectory() as tmp:
        files = ggufs(args.work or Path(tmp))
        for qtype in args.types.split(","):
            for threads in map(int, args.threads.split(",")):
                for eb in args.extra_bufts.split(","):
                    base_texts = None
                    for width in map(int, args.widths.split(",")):
                        tps, texts = measure(files[qtype], width, threads, eb, prompts, args.new_tokens)
                        base_texts = base_texts or texts
                        same = sum(a == b for a, b in zip(texts, base_texts)) / len(texts)
                        rows.append(
                            dict(
                                type=qtype,
                                threads=threads,
                                extra_bufts=eb,
                                width=width,
                                tokens_per_s=round(tps, 1),
                                same_as_width1=round(same, 3),
                            )
                        )  # noqa: E501
                        print(
                            f"{qtype:<5} threads {threads} extra_bufts {eb:<3} width {width:>2}: "
                            f"{tps:7.1f} tok/s, text same as width 1: {same:.0%}",
                            flush=True,
                        )
    print(json.dumps({"benchmark": "batched_decode", "host": host, "rows": rows}))


if __name__ == "__main__":
    main()
