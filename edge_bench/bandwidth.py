"""Memory read bandwidth of this machine, measured in the same run, and how close a variant's decode
gets to it: `efficiency = decode tokens/s x bytes read per token / bandwidth`.

Bandwidth: numpy streams through a float64 buffer much larger than the last-level cache (1 GiB by
default) with `np.add.reduce`, which is SIMD and releases the GIL, so `threads` Python threads each
reducing their own contiguous slice read in parallel. Several repeats; best and median in GB/s
(1 GB = 1e9 bytes). The buffer is written once before timing so its pages are resident, and numpy
asks for transparent huge pages for it: that is the machine's best case, so runtimes are measured
with their weights in huge pages too (`edge_bench.hugepages`). `BandwidthMeter` measures next to
every timed block, since a shared host's bandwidth drifts.

Bytes read per token (decode, batch 1): every weight matrix is read once per token, except the
input embedding, of which only the token's row is read; with tied embeddings the same matrix is read
in full as the LM head. The KV cache read per token (2 x layers x kv_heads x head_dim x context x
dtype bytes, ~2 MB at 100 tokens for a 135M model against ~270 MB of F16 weights) is left out.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from common.gguf_header import read_gguf_header
from common.onnx_tensors import tensor_bytes
from common.safetensors_header import DTYPE_BYTES, safetensors_tensors

GB = 1e9


def _timed_parallel_reduce(parts: list[np.ndarray]) -> float:
    """Seconds from the first thread starting to the last one finishing, for len(parts) threads that
    each `np.add.reduce` their part. Every thread reads the clock itself: the calling thread may not
    run for a while after it releases them (with as many workers as cores it has no core of its
    own), so its own clock would start late and make the bandwidth look up to twice as high."""
    barrier = threading.Barrier(len(parts) + 1)
    spans: list[tuple[float, float]] = []

    def work(part: np.ndarray) -> None:
        barrier.wait()
        start = time.perf_counter()
        np.add.reduce(part)
        spans.append((start, time.perf_counter()))  # list.append is atomic under the GIL

    workers = [threading.Thread(target=work, args=(p,), daemon=True) for p in parts]
    for w in workers:
        w.start()
    barrier.wait()
    for w in workers:
        w.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def measure_read_bandwidth(
    size_bytes: int = 1 << 30, threads: int = 1, repeats: int = 5, buffer: np.ndarray | None = None
) -> dict:
    """Read bandwidth with `threads` threads over a `size_bytes` buffer (or `buffer`, float64, reused
    across calls): {"threads", "size_bytes", "repeats", "best_gb_per_s", "median_gb_per_s",
    "samples_gb_per_s", "method"}. One untimed pass first."""
    if buffer is None:
        buffer = np.ones(max(1, size_bytes // 8), dtype=np.float64)
    parts = np.array_split(buffer, threads)
    _timed_parallel_reduce(parts)
    samples = [buffer.nbytes / _timed_parallel_reduce(parts) / GB for _ in range(repeats)]
    return {
        "threads": threads,
        "size_bytes": int(buffer.nbytes),
        "repeats": repeats,
        "best_gb_per_s": round(max(samples), 3),
        "median_gb_per_s": round(float(np.median(samples)), 3),
        "samples_gb_per_s": [round(s, 3) for s in samples],
        "method": "numpy add.reduce over a float64 buffer, one contiguous slice per thread",
    }


class BandwidthMeter:
    """Read bandwidth measured next to each timed block, with the block's CPUs and thread count. On a
    shared host (a VM, a laptop on battery) the bandwidth drifts by tens of percent within minutes,
    so a figure taken at the start of a long run would make later efficiencies drift with it. One
    buffer serves every measurement; `summary()` pools them per thread count for the report."""

    def __init__(self, size_bytes: int = 1 << 30, repeats: int = 5):
        self.buffer: np.ndarray | None = np.ones(max(1, size_bytes // 8), dtype=np.float64)
        self.repeats = repeats
        self.measurements: dict[int, list[dict]] = {}

    def measure(self, threads: int) -> dict:
        """`measure_read_bandwidth` with this meter's buffer; recorded for `summary()`."""
        if self.buffer is None:
            raise RuntimeError("BandwidthMeter is closed")
        result = measure_read_bandwidth(threads=threads, repeats=self.repeats, buffer=self.buffer)
        self.measurements.setdefault(threads, []).append(result)
        return result

    def summary(self) -> dict | None:
        """{"by_threads": {"T": {best/median over every sample, repeats, measurements, samples}},
        "best_gb_per_s", "method"}, or None before any measurement."""
        if not self.measurements:
            return None
        by_threads = {}
        for t, results in sorted(self.measurements.items()):
            samples = [x for r in results for x in r["samples_gb_per_s"]]
            by_threads[str(t)] = {
                "threads": t,
                "size_bytes": results[0]["size_bytes"],
                "repeats": self.repeats,
                "measurements": len(results),
                "best_gb_per_s": round(max(samples), 3),
                "median_gb_per_s": round(float(np.median(samples)), 3),
                "min_gb_per_s": round(min(samples), 3),
                "samples_gb_per_s": samples,
            }
        return {
            "by_threads": by_threads,
            "best_gb_per_s": max(r["best_gb_per_s"] for r in by_threads.values()),
            "method": results[0]["method"] + "; measured before and after every variant x threads "
            "block, on the block's CPUs; a block's efficiency uses the higher of its two bests",
        }

    def close(self) -> None:
        self.buffer = None


def efficiency(decode_tokens_per_s: float, bytes_read_per_token: float, bandwidth_gb_per_s: float) -> float:
    """Share of the measured read bandwidth the decode loop uses: tok/s x bytes/token / bandwidth."""
    if bandwidth_gb_per_s <= 0:
        raise ValueError("bandwidth must be positive")
    return decode_tokens_per_s * bytes_read_per_token / (bandwidth_gb_per_s * GB)


# ---- bytes read per token --------------------------------------------------------------------------


def _per_token(total: int, embedding: int, embedding_rows: int, tied: bool) -> dict:
    row = embedding // embedding_rows if embedding_rows else 0
    per_token = total - embedding + row + (embedding if tied else 0)
    return {
        "weight_bytes": total,
        "embedding_bytes": embedding,
        "embedding_row_bytes": row,
        "tied_embeddings": tied,
        "bytes_per_token": per_token,
    }


def gguf_bytes_per_token(path: Path) -> dict:
    """Weight bytes llama.cpp reads per decoded token from a GGUF (see the module docstring)."""
    tensors = {t["name"]: (t["shape"], t["bytes"]) for t in read_gguf_header(Path(path), metadata=False)[1]}
    shape, embedding = tensors.get("token_embd.weight", ([0, 0], 0))
    return _per_token(
        sum(b for _, b in tensors.values()),
        embedding,
        shape[-1] if len(shape) > 1 else 0,
        tied="output.weight" not in tensors,
    )  # GGUF shapes are [cols, rows]


def onnx_bytes_per_token(path: Path) -> dict:
    """Initializer bytes an ONNX decode step reads: all of them, except that an initializer used
    only as the data of Gather / GatherBlockQuantized (an untied embedding) counts one row."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path / "model.onnx" if path.is_dir() else path), load_external_data=False)
    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, i))
    total = embedding = rows = 0
    tied = True
    for t in model.graph.initializer:
        nbytes = tensor_bytes(t)
        total += nbytes
        uses = consumers.get(t.name, [])
        if t.dims and uses and all(op in ("Gather", "GatherBlockQuantized") and i == 0 for op, i in uses):
            if nbytes > embedding:
                embedding, rows, tied = nbytes, int(t.dims[0]), False
    if not embedding:  # the embedding is also read in full elsewhere (tied LM head): nothing to discount
        return _per_token(total, 0, 0, tied=True)
    return _per_token(total, embedding, rows, tied)


def torch_bytes_per_token(hf_dir: Path, dtype_bytes: int = 4) -> dict:
    """Parameter bytes the fp32 PyTorch runtime reads per token, from the safetensors headers (no
    weights loaded): every tensor at `dtype_bytes` per element (the runtime loads in float32)."""
    numel: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for t in safetensors_tensors(Path(hf_dir)):
        if t.dtype in DTYPE_BYTES:
            numel[t.name], shapes[t.name] = t.numel, list(t.shape)
    embed = next((n for n in numel if n.endswith(("embed_tokens.weight", "wte.weight"))), None)
    tied = not any(n.endswith("lm_head.weight") for n in numel)
    total = sum(numel.values()) * dtype_bytes
    if embed is None:
        return _per_token(total, 0, 0, tied)
    return _per_token(total, numel[embed] * dtype_bytes, shapes[embed][0], tied)


def bytes_per_token(runtime: str, path: Path) -> dict:
    """`*_bytes_per_token` for the file a runtime loads ("fake": the JSON's "bytes_per_token")."""
    if runtime == "llama_cpp":
        return gguf_bytes_per_token(path)
    if runtime == "onnxruntime":
        return onnx_bytes_per_token(path)
    if runtime == "pytorch":
        return torch_bytes_per_token(path)
    if runtime == "fake":
        spec = (
            json.loads(Path(path).read_text()) if str(path).endswith(".json") and Path(path).is_file() else {}
        )
        n = int(spec.get("bytes_per_token", 0))
        return {
            "weight_bytes": n,
            "embedding_bytes": 0,
            "embedding_row_bytes": 0,
            "tied_embeddings": False,
            "bytes_per_token": n,
        }
    raise ValueError(f"bytes_per_token: unknown runtime {runtime!r}")
