"""onnxruntime runtime for the exported ONNX variants (fp32, int8, int4): a plain `InferenceSession`
on `model.onnx` (text-generation-with-past graph), fed one token at a time through the KV cache:
the `present.*` outputs of one call go back in as `past_key_values.*` of the next."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ONNX_FILE = "model.onnx"


class OnnxRuntime:
    """`InferenceSession` on CPU, intra-op threads = `threads`, inter-op 1, sequential execution."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("runtime onnxruntime needs onnxruntime: pip install onnxruntime==1.31.1") from e
        path = Path(path)
        model_file = path / ONNX_FILE if path.is_dir() else path
        if not model_file.is_file():
            raise FileNotFoundError(f"runtime onnxruntime: no {ONNX_FILE} at {path}")
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self.threads = threads
        self.session = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self._input_names = {i.name for i in inputs}
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._past_inputs = [i for i in inputs if i.name.startswith("past_key_values.")]
        self._past: dict[str, np.ndarray] = {}
        self._n_past = 0

    def _empty_past(self) -> dict[str, np.ndarray]:
        """past_key_values.* holding nothing yet: [batch 1, kv_heads, 0, head_dim]."""
        return {
            i.name: np.zeros(
                (1, i.shape[1], 0, i.shape[3]), np.float16 if "float16" in i.type else np.float32
            )
            for i in self._past_inputs
        }

    def _run(self, ids: Sequence[int]) -> np.ndarray:
        n = len(ids)
        feeds = {"input_ids": np.array([list(ids)], dtype=np.int64), **self._past}
        if "attention_mask" in self._input_names:
            feeds["attention_mask"] = np.ones((1, self._n_past + n), dtype=np.int64)
        if "position_ids" in self._input_names:
            feeds["position_ids"] = np.arange(self._n_past, self._n_past + n, dtype=np.int64)[None, :]
        outputs = dict(zip(self._output_names, self.session.run(None, feeds)))
        self._past = {
            k.replace("present.", "past_key_values.", 1): v
            for k, v in outputs.items()
            if k.startswith("present.")
        }
        self._n_past += n
        return np.asarray(outputs["logits"][0, -1], dtype=np.float32)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if not ids:
            raise ValueError("prefill needs at least one token id")
        self._past, self._n_past = self._empty_past(), 0
        return self._run(ids)

    def decode(self, token: int) -> np.ndarray:
        if not self._past and self._past_inputs:
            raise RuntimeError("decode before prefill")
        return self._run([int(token)])

    def close(self) -> None:
        self._past = {}
        self.session = None
