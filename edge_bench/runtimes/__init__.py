"""Benchmarked runtimes behind one interface (`edge_bench.runtimes.base.Runtime`), by name, imported
lazily: {"pytorch": fp32 reference, "onnxruntime": ONNX variants, "llama_cpp": GGUF variants}."""

from __future__ import annotations

import importlib
from pathlib import Path

RUNTIMES: dict[str, str] = {
    "pytorch": "edge_bench.runtimes.pytorch:PyTorchRuntime",
    "onnxruntime": "edge_bench.runtimes.onnxruntime:OnnxRuntime",
    "llama_cpp": "edge_bench.runtimes.llama_cpp:LlamaCppRuntime",
    "fake": "edge_bench.runtimes.fake:FakeRuntime",
}


def open_runtime(name: str, path: Path, threads: int, **options):
    """Import the runtime's module and load `path` with `threads` CPU threads and the runtime's own
    keyword `options` (llama_cpp: use_mmap, flash_attn)."""
    module, cls = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module), cls)(Path(path), threads=threads, **options)
