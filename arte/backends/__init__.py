"""Inference backends behind one interface (`arte.backends.base.Backend`), imported lazily by name.

`load_backend(BackendConfig(name="llama_cpp", model="smollm2-135m"))` returns a ready backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from arte.backends.base import Backend, Generation, SamplingParams
from arte.config import opt
from arte.errors import unknown_name

BACKENDS: dict[str, str] = {
    "hf": "arte.backends.hf:HFBackend",
    "llama_cpp": "arte.backends.llama_cpp:LlamaCppBackend",
    "fake": "arte.backends.fake:FakeBackend",
}
"""Backend name -> "module:Class". The module is imported only when that backend is used."""

BackendName = Literal["hf", "llama_cpp", "fake"]


@dataclass
class BackendConfig:
    """Which engine runs a model, and how."""

    name: BackendName = opt(
        "llama_cpp",
        "Inference engine: hf (transformers), llama_cpp (GGUF), or fake (a deterministic simulator of teacher and student on the built-in tasks, for tests and configs/smoke.yaml).",
    )
    model: str = opt(
        "smollm2-135m",
        "Model: an embedded name (see `arte models`), a local HF directory or .gguf file, or a hub id.",
    )
    threads: int = opt(0, "CPU threads; 0 = the cores not busy right now (see arte.backends.threads).")
    batch_size: int = opt(8, "Prompts per forward batch (hf).")
    n_ctx: int = opt(2048, "Context window in tokens (llama_cpp); prompts longer than this are refused.")
    chat: bool = opt(False, "Wrap each prompt as one user turn with the model's chat template.")
    dtype: Literal["float32", "bfloat16", "float16"] = opt("float32", "Weights dtype (hf).")

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = auto), got {self.threads}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")


def load_backend(cfg: BackendConfig) -> Backend:
    """Import the backend's module and construct it from `cfg`."""
    if cfg.name not in BACKENDS:
        raise unknown_name("backend", cfg.name, BACKENDS)
    module, cls = BACKENDS[cfg.name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


__all__ = ["BACKENDS", "Backend", "BackendConfig", "Generation", "SamplingParams", "load_backend"]
