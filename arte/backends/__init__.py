"""Inference backends behind one interface (`arte.backends.base.Backend`), imported lazily by name.

`load_backend(BackendConfig(name="llama_cpp", model="smollm2-135m"))` returns a ready backend.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Literal

from arte.backends.base import Backend, Generation, SamplingParams
from common.config import opt
from common.errors import unknown_name

BACKENDS: dict[str, str] = {
    "hf": "arte.backends.hf:HFBackend",
    "llama_cpp": "arte.backends.llama_cpp:LlamaCppBackend",
    "fake": "arte.backends.fake:FakeBackend",
    "openai": "arte.backends.openai:OpenAIBackend",
    "vllm": "arte.backends.vllm:VLLMBackend",
}
"""Backend name -> "module:Class". The module is imported only when that backend is used."""

BackendName = Literal["hf", "llama_cpp", "fake", "openai", "vllm"]


@dataclass
class BackendConfig:
    """Which engine runs a model, and how."""

    name: BackendName = opt(
        "llama_cpp",
        "Inference engine: hf (transformers), llama_cpp (GGUF), openai (any OpenAI-compatible server: "
        "vLLM, llama.cpp, Ollama, a hosted API; set base_url), vllm (in-process vLLM on GPUs), or fake (a "
        "deterministic simulator of teacher and student on the built-in tasks, for tests and "
        "configs/smoke.yaml).",
    )
    model: str = opt(
        "smollm2-135m",
        "Model: an embedded name (see `arte models`), a local HF directory or .gguf file, or a hub id.",
    )
    threads: int = opt(0, "CPU threads; 0 = the cores not busy right now (see common.threads).")
    batch_size: int = opt(
        16,
        "Prompts decoded together: hf's forward batch; llama_cpp's sequences per llama_decode step (16 "
        "was fastest on 2 cores for F16, Q8_0 and Q4_1: benchmarks/batched_decode.py, docs/measurements.md).",
    )
    n_ctx: int = opt(
        2048,
        "Context window in tokens (llama_cpp); prompts longer than this are refused.",
        engines=("llama_cpp",),
    )
    extra_bufts: Literal["auto", "on", "off"] = opt(
        "auto",
        "llama_cpp: llama.cpp's extra buffer types (repacked weights). auto: off where llama.cpp reports "
        "AMX (its AMX path segfaults, llama.cpp #20824), on elsewhere; else env ARTE_LLAMA_EXTRA_BUFTS.",
        engines=("llama_cpp",),
    )
    flash_attn: bool = opt(
        True,
        "llama_cpp: llama.cpp's fused attention (1.1-1.3x faster decoding here, docs/measurements.md). "
        "Off matches llama-cpp-python's server default bit for bit; on, near-tied greedy tokens may differ.",
        engines=("llama_cpp",),
    )
    chat: bool = opt(False, "Wrap each prompt as one user turn with the model's chat template.")
    dtype: Literal["float32", "bfloat16", "float16"] = opt(
        "float32", "Weights dtype (hf, vllm).", engines=("hf", "vllm")
    )
    base_url: str = opt(
        "",
        "openai: the server's API root, ending in /v1 (e.g. http://127.0.0.1:8000/v1). For openai, `model` "
        "is the name the server knows the model by (vLLM: the served model name).",
        engines=("openai",),
    )
    api_key_env: str = opt(
        "OPENAI_API_KEY",
        "openai: NAME of the environment variable holding the API key (the key itself never goes into a "
        "config, a log or the run directory). Unset or empty variable: no key is sent (local servers).",
        engines=("openai",),
    )
    max_concurrency: int = opt(
        8, "openai: requests in flight at once (a bounded pool per generate call).", engines=("openai",)
    )
    timeout_s: float = opt(
        600.0,
        "openai: seconds one HTTP request may take (queueing at the server included).",
        engines=("openai",),
    )
    max_retries: int = opt(
        6,
        "openai: retries of a request after a 429, a 5xx, a timeout or a connection error, with exponential "
        "backoff and jitter; then the stage stops with an error (finished records are kept).",
        engines=("openai",),
    )
    retry_backoff_s: float = opt(
        1.0, "openai: wait before the first retry; doubles each retry (capped at 60 s).", engines=("openai",)
    )
    extra_body: dict = opt(
        {},
        "openai: extra JSON fields sent with every request, for engine-specific knobs (YAML only). "
        "llama-cpp-python's server: {repeat_penalty: 1.0, top_k: 0, min_p: 0.0} for the plain sampling "
        "the other backends use; vLLM: {include_stop_str_in_output: true} saves the stop-string probe.",
        engines=("openai",),
    )
    tensor_parallel_size: int = opt(
        1, "vllm: GPUs one model is split across (tensor parallelism).", engines=("vllm",)
    )
    lora_adapter: str = opt(
        "",
        "vllm: a LoRA adapter directory (peft) served on top of `model` without merging, e.g. the aligned "
        "teacher's adapter.",
        engines=("vllm",),
    )
    allow_pickle: bool = opt(
        False,
        "Load PyTorch pickle weights (pytorch_model.bin) when the model has no safetensors. A pickle can "
        "run code when loaded: only for a model you trust (better: arte models --to_safetensors DIR). "
        "For the teacher and student it also covers their training; recorded in manifest.json.",
    )

    RUNTIME_ONLY = (
        "threads",
        "batch_size",
        "n_ctx",
        "extra_bufts",
        "flash_attn",
        "base_url",
        "api_key_env",
        "max_concurrency",
        "timeout_s",
        "max_retries",
        "retry_backoff_s",
        "tensor_parallel_size",
        "allow_pickle",
    )
    """Fields that change how fast or where a model runs, not what it answers: left out of the
    record of what a stage was made from (`arte.provenance`)."""

    def check_engine_fields(self) -> None:
        """An engine-specific field set away from its default on another engine is an error naming
        the engine (`fake`, the test simulator, takes any)."""
        if self.name == "fake":
            return
        for f in dataclasses.fields(self):
            engines = f.metadata.get("engines")
            if not engines or self.name in engines:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if getattr(self, f.name) != default:
                raise ValueError(
                    f"--{f.name} is an option of {' and '.join(engines)} only, but this engine is "
                    f"{self.name}: remove it, or set --name {engines[0]}"
                )

    @property
    def call_size(self) -> int:
        """Prompts the stages hand to one `generate` call: 4 batch widths, so that a batching engine
        replaces finished sequences while long ones finish. Records are written after each call,
        so a kill loses at most one call's work."""
        return 4 * self.batch_size

    def __post_init__(self) -> None:
        self.check_engine_fields()
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = auto), got {self.threads}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.n_ctx < 1:
            raise ValueError(f"--n_ctx must be >= 1, got {self.n_ctx}")
        if self.max_concurrency < 1:
            raise ValueError(f"--max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.timeout_s <= 0 or self.retry_backoff_s < 0:
            raise ValueError(
                f"--timeout_s must be > 0 and --retry_backoff_s >= 0, "
                f"got {self.timeout_s}, {self.retry_backoff_s}"
            )
        if self.max_retries < 0:
            raise ValueError(f"--max_retries must be >= 0, got {self.max_retries}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"--tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")


def engine_fields() -> dict[str, tuple[str, ...]]:
    """{field: the engines it applies to} for the engine-specific fields of `BackendConfig`."""
    return {
        f.name: f.metadata["engines"] for f in dataclasses.fields(BackendConfig) if f.metadata.get("engines")
    }


def load_backend(cfg: BackendConfig) -> Backend:
    """Import the backend's module and construct it from `cfg`."""
    if cfg.name not in BACKENDS:
        raise unknown_name("backend", cfg.name, BACKENDS)
    module, cls = BACKENDS[cfg.name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


__all__ = ["BACKENDS", "Backend", "BackendConfig", "Generation", "SamplingParams", "load_backend"]
