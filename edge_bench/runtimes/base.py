"""The one interface every benchmarked runtime implements. The harness owns tokenization: every
runtime receives the same token ids, so speed and accuracy differences are the runtime's own.

A runtime holds one loaded model and one sequence (KV cache):
    rt = SomeRuntime(path, threads=1)      # load (timed by the harness)
    logits = rt.prefill(ids)               # reset the cache, run the prompt, next-token logits
    logits = rt.decode(token_id)           # one step on top of the cache, next-token logits
    rt.close()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Runtime(Protocol):
    name: str
    """"pytorch", "onnxruntime" or "llama_cpp" (or "fake" in tests)."""

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Start a new sequence with `ids`; return the logits of the next token (1-D, float32)."""
        ...

    def decode(self, token: int) -> np.ndarray:
        """Append `token` to the current sequence; return the logits of the next token."""
        ...

    def close(self) -> None: ...
