"""Running an exported text-generation-with-past ONNX model (optimum-onnx layout: `model.onnx`, its
weights possibly in `model.onnx_data`) one step at a time through its KV cache, on CPU.

`KVCacheDecoder.step(ids)` feeds `input_ids` (and `attention_mask` / `position_ids` when the graph
declares them) after the tokens already cached, with the cache as the `past_key_values.*` inputs,
and keeps the `present.*` outputs as the next step's cache; it returns the last position's logits.
Shared by export's verification (`export.onnx_verify`) and edge_bench's onnxruntime runtime.
onnxruntime is imported only inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ONNX_FILE, EXTERNAL_DATA_FILE = "model.onnx", "model.onnx_data"
"""The graph and (for large models) its external weights, as optimum-onnx writes them."""


def session_options(threads: int = 1):
    """onnxruntime SessionOptions: `threads` intra-op threads, one inter-op, sequential, errors only."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def model_file(path: Path) -> Path:
    """`path/model.onnx` for an export directory, else `path` itself."""
    path = Path(path)
    return path / ONNX_FILE if path.is_dir() else path


def open_session(path: Path, threads: int = 1):
    """A plain onnxruntime InferenceSession (CPUExecutionProvider) on a model directory or file."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(model_file(path)), session_options(threads), providers=["CPUExecutionProvider"]
    )


class KVCacheDecoder:
    """One sequence at a time through an InferenceSession of a text-generation-with-past graph."""

    def __init__(self, session):
        self.session = session
        inputs = session.get_inputs()
        self.input_names = {i.name for i in inputs}
        self.output_names = [o.name for o in session.get_outputs()]
        self.past_inputs = [i for i in inputs if i.name.startswith("past_key_values.")]
        self.reset()

    def reset(self) -> None:
        """Forget the sequence: an empty cache, nothing seen yet."""
        self.past: dict[str, np.ndarray] = self.empty_past()
        self.n_past = 0

    def empty_past(self) -> dict[str, np.ndarray]:
        """past_key_values.* inputs holding nothing yet: [batch 1, kv_heads, 0, head_dim]."""
        return {
            i.name: np.zeros(
                (1, i.shape[1], 0, i.shape[3]), np.float16 if "float16" in i.type else np.float32
            )
            for i in self.past_inputs
        }

    def step(self, ids: Sequence[int]) -> np.ndarray:
        """Feed `ids` after the `n_past` cached tokens; the last position's logits (float32). The
        `present.*` outputs become the cache (renamed `past_key_values.*`)."""
        n = len(ids)
        feeds = {"input_ids": np.array([list(ids)], dtype=np.int64), **self.past}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones((1, self.n_past + n), dtype=np.int64)
        if "position_ids" in self.input_names:
            feeds["position_ids"] = np.arange(self.n_past, self.n_past + n, dtype=np.int64)[None, :]
        outputs = dict(zip(self.output_names, self.session.run(None, feeds)))
        self.past = {
            k.replace("present.", "past_key_values.", 1): v
            for k, v in outputs.items()
            if k.startswith("present.")
        }
        self.n_past += n
        return np.asarray(outputs["logits"][0, -1], dtype=np.float32)
