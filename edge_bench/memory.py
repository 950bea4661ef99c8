"""Peak memory of a variant, measured in a fresh process per configuration (`edge_bench.memory_probe`):
the parent's own allocations, imports and earlier variants cannot leak into the figure.

Peak RSS is the child's VmHWM on Linux (its `ru_maxrss` inherits the parent's high-water mark across
fork + exec, so it is recorded but not used), `ru_maxrss` elsewhere. Whether the weights were memory-mapped is
recorded: llama.cpp maps the GGUF by default, and then RSS counts the file pages the run touched
(page cache, shared with other processes and dropped under pressure) rather than a private copy;
`final_rss_file_bytes` vs `final_rss_anon_bytes` shows the split for every runtime (transformers
may map safetensors too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def measure_peak_rss(
    runtime: str,
    path: Path,
    threads: int = 1,
    prompt_len: int = 64,
    n_decode: int = 16,
    *,
    options: dict | None = None,
    timeout_s: float = 900,
) -> dict:
    """Run `python -m edge_bench.memory_probe` in a new process: load `path` with `runtime` and its
    keyword `options` (llama_cpp: use_mmap, flash_attn), prefill `prompt_len` tokens, decode
    `n_decode`; return its JSON report (peak_rss_bytes, baseline_rss_bytes after imports,
    after_load_rss_bytes, mmap, final RssAnon/RssFile/AnonHugePages, load_s) plus `model_rss_bytes`
    = peak - baseline. The child inherits the environment (GLIBC_TUNABLES included), so its memory
    is laid out as the parent's. Raises RuntimeError with the child's stderr if it fails."""
    cmd = [
        sys.executable,
        "-m",
        "edge_bench.memory_probe",
        runtime,
        str(path),
        str(threads),
        str(prompt_len),
        str(n_decode),
        "--options",
        json.dumps(options or {}),
    ]
    env = dict(os.environ)
    env.update({k: str(threads) for k in THREAD_ENV})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"memory probe failed ({runtime} {path}, rc {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    report = json.loads(lines[-1])
    if report.get("baseline_rss_bytes"):
        report["model_rss_bytes"] = report["peak_rss_bytes"] - report["baseline_rss_bytes"]
    return report
