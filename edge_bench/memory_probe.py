"""Child process of `edge_bench.memory`: load one variant, run one greedy generation, print peak RSS.

    python -m edge_bench.memory_probe RUNTIME PATH THREADS PROMPT_LEN N_DECODE [--options JSON]

Prints one JSON line on stdout. The runtime's libraries are imported before the baseline is read, so
`peak_rss_bytes - baseline_rss_bytes` is what loading and running the model added. The prompt is
synthetic ids below 256 (valid in any byte-level vocabulary): memory does not depend on the text.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from pathlib import Path

HEAVY_IMPORTS = {
    "pytorch": ("torch", "transformers"),
    "onnxruntime": ("onnxruntime",),
    "llama_cpp": ("llama_cpp",),
    "fake": (),
}


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM (peak), RssAnon, RssFile, RssShmem of this process in bytes (Linux; else {})."""
    out = {}
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem") and value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


def max_rss_bytes() -> int:
    """getrusage ru_maxrss in bytes (Linux reports kB, macOS bytes). On Linux it is NOT this program's
    own peak: the kernel carries the high-water mark across fork + exec, so a child of a 600 MB
    parent starts at 600 MB. The peak reported is VmHWM (per address space, reset by exec) where
    /proc exists; ru_maxrss only elsewhere."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def probe(runtime: str, path: str, threads: int, prompt_len: int, n_decode: int, options: dict) -> dict:
    from edge_bench.hugepages import anon_huge_pages_bytes
    from edge_bench.runtimes import RUNTIMES

    for name in ("numpy", *HEAVY_IMPORTS.get(runtime, ())):
        importlib.import_module(name)
    baseline = proc_status().get("VmRSS")
    module, cls = RUNTIMES[runtime].split(":")
    runtime_cls = getattr(importlib.import_module(module), cls)
    t0 = time.perf_counter()
    rt = runtime_cls(Path(path), threads=threads, **options)
    load_s = time.perf_counter() - t0
    after_load = proc_status().get("VmRSS")
    ids = [(7 * i) % 255 + 1 for i in range(prompt_len)]
    token = int(rt.prefill(ids).argmax())
    for _ in range(n_decode):
        token = int(rt.decode(token).argmax())
    final, huge_pages = proc_status(), anon_huge_pages_bytes()
    rt.close()
    return {
        "runtime": runtime,
        "path": str(path),
        "threads": threads,
        "prompt_tokens": prompt_len,
        "decode_steps": n_decode,
        "mmap": options.get("use_mmap", True) if runtime == "llama_cpp" else None,
        "options": options,
        "load_s": round(load_s, 4),
        "baseline_rss_bytes": baseline,
        "after_load_rss_bytes": after_load,
        "peak_rss_bytes": final.get("VmHWM") or max_rss_bytes(),
        "ru_maxrss_bytes": max_rss_bytes(),
        "final_rss_anon_bytes": final.get("RssAnon"),
        "final_rss_file_bytes": final.get("RssFile"),
        "final_anon_huge_pages_bytes": huge_pages,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m edge_bench.memory_probe", description=__doc__.splitlines()[0])
    p.add_argument("runtime")
    p.add_argument("path")
    p.add_argument("threads", type=int)
    p.add_argument("prompt_len", type=int)
    p.add_argument("n_decode", type=int)
    p.add_argument("--options", default="{}", help="the runtime's keyword options, as a JSON object")
    a = p.parse_args(argv)
    result = probe(a.runtime, a.path, a.threads, a.prompt_len, a.n_decode, json.loads(a.options))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
