"""fp32 PyTorch reference runtime: an HF causal-LM directory loaded with transformers, one sequence
held in a `DynamicCache`. It is the yardstick the exported variants are compared against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

TRAIN_EXTRA_HINT = "pip install 'arte-edge[train]'"


class PyTorchRuntime:
    """`AutoModelForCausalLM` in float32 on CPU with `threads` intra-op threads (and 1 inter-op)."""

    name = "pytorch"

    def __init__(self, path: Path, threads: int = 1):
        try:
            import torch
            from transformers import AutoModelForCausalLM, DynamicCache
        except ImportError as e:
            raise ImportError(
                f"runtime pytorch (the fp32 reference) needs torch and transformers ({e}): {TRAIN_EXTRA_HINT}"
            ) from e
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"runtime pytorch: {path} is not an HF model directory (no config.json)")
        self._torch, self._cache_cls = torch, DynamicCache
        self.threads = threads
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before the first parallel op of the process
            pass
        from common.hf_models import attention_kwargs
        from common.weights import check_model_weights

        check_model_weights(path)  # safetensors only: a pickle-only or truncated model is refused
        self.model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, use_safetensors=True, **attention_kwargs(path)
        ).eval()
        self._cache = None

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        torch = self._torch
        if torch.get_num_threads() != self.threads:  # another library may have changed it
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([list(ids)], dtype=torch.long),
                past_key_values=self._cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[0, -1].float().numpy().copy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if not ids:
            raise ValueError("prefill needs at least one token id")
        self._cache = self._cache_cls(config=self.model.config)
        return self._forward(ids)

    def decode(self, token: int) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("decode before prefill")
        return self._forward([int(token)])

    def close(self) -> None:
        self._cache = None
        self.model = None
