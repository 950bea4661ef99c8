"""onnxruntime runtime for the exported ONNX variants (fp32, int8, int4): a plain `InferenceSession`
on `model.onnx` (text-generation-with-past graph), fed one token at a time through the KV cache by
`common.onnx_decode.KVCacheDecoder`: the `present.*` outputs of one call go back in as
`past_key_values.*` of the next."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.onnx_decode import ONNX_FILE, KVCacheDecoder, model_file, open_session


class OnnxRuntime:
    """`InferenceSession` on CPU, intra-op threads = `threads`, inter-op 1, sequential execution."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ImportError("runtime onnxruntime needs onnxruntime: pip install onnxruntime==1.31.1") from e
        path = Path(path)
        if not model_file(path).is_file():
            raise FileNotFoundError(f"runtime onnxruntime: no {ONNX_FILE} at {path}")
        self.threads = threads
        self.session = open_session(path, threads)
        self._decoder = KVCacheDecoder(self.session)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if not ids:
            raise ValueError("prefill needs at least one token id")
        self._decoder.reset()
        return self._decoder.step(ids)

    def decode(self, token: int) -> np.ndarray:
        if self._decoder.n_past == 0 and self._decoder.past_inputs:
            raise RuntimeError("decode before prefill")
        return self._decoder.step([int(token)])

    def close(self) -> None:
        self._decoder.reset()
        self.session = self._decoder.session = None
