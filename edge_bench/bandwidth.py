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
import math
import struct
import threading
import time
from pathlib import Path

import numpy as np

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
                "threads": t, "size_bytes": results[0]["size_bytes"], "repeats": self.repeats,
                "measurements": len(results), "best_gb_per_s": round(max(samples), 3),
                "median_gb_per_s": round(float(np.median(samples)), 3),
                "min_gb_per_s": round(min(samples), 3), "samples_gb_per_s": samples,
            }  # fmt: skip
        return {"by_threads": by_threads, "best_gb_per_s": max(r["best_gb_per_s"] for r in by_threads.values()),
                "method": results[0]["method"] + "; measured before and after every variant x threads "
                "block, on the block's CPUs; a block's efficiency uses the higher of its two bests"}  # fmt: skip

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
    return {"weight_bytes": total, "embedding_bytes": embedding, "embedding_row_bytes": row,
            "tied_embeddings": tied, "bytes_per_token": per_token}  # fmt: skip


_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_tensors(path: Path) -> list[tuple[str, str, list[int], int]]:
    """(name, GGML type, shape, bytes) of every tensor in a GGUF v2/v3 file, from its header only."""
    import gguf

    with open(path, "rb") as f:
        head = f.read(24)
        magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", head)
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"{path} is not a GGUF v2/v3 file (magic {magic!r}, version {version})")

        def read(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def skip_value(vtype: int) -> None:
            if vtype == 8:
                f.seek(read("<Q"), 1)
            elif vtype == 9:
                item, n = read("<I"), read("<Q")
                if item in _GGUF_SCALARS:
                    f.seek(n * _GGUF_SCALARS[item], 1)
                else:
                    for _ in range(n):
                        skip_value(item)
            else:
                f.seek(_GGUF_SCALARS[vtype], 1)

        for _ in range(n_kv):
            f.seek(read("<Q"), 1)  # key
            skip_value(read("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = f.read(read("<Q")).decode()
            shape = [read("<Q") for _ in range(read("<I"))]
            qtype = gguf.GGMLQuantizationType(read("<I"))
            read("<Q")  # data offset
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            tensors.append((name, qtype.name, shape, math.prod(shape) // block * type_size))
    return tensors


def gguf_bytes_per_token(path: Path) -> dict:
    """Weight bytes llama.cpp reads per decoded token from a GGUF (see the module docstring)."""
    tensors = {name: (shape, nbytes) for name, _, shape, nbytes in gguf_tensors(Path(path))}
    shape, embedding = tensors.get("token_embd.weight", ([0, 0], 0))
    return _per_token(
        sum(b for _, b in tensors.values()),
        embedding,
        shape[-1] if len(shape) > 1 else 0,
        tied="output.weight" not in tensors,
    )  # fmt: skip  (GGUF shapes are [cols, rows])


def _onnx_tensor_bytes(t) -> int:
    from onnx import TensorProto, helper

    if t.raw_data:
        return len(t.raw_data)
    length = [int(e.value) for e in t.external_data if e.key == "length"]
    if length:
        return length[0]
    n = math.prod(t.dims) if t.dims else 1
    if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (n + 1) // 2
    return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


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
        nbytes = _onnx_tensor_bytes(t)
        total += nbytes
        uses = consumers.get(t.name, [])
        if t.dims and uses and all(op in ("Gather", "GatherBlockQuantized") and i == 0 for op, i in uses):
            if nbytes > embedding:
                embedding, rows, tied = nbytes, int(t.dims[0]), False
    if not embedding:  # the embedding is also read in full elsewhere (tied LM head): nothing to discount
        return _per_token(total, 0, 0, tied=True)
    return _per_token(total, embedding, rows, tied)


_SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                            "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip


def torch_bytes_per_token(hf_dir: Path, dtype_bytes: int = 4) -> dict:
    """Parameter bytes the fp32 PyTorch runtime reads per token, from the safetensors headers (no
    weights loaded): every tensor at `dtype_bytes` per element (the runtime loads in float32)."""
    numel: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for file in sorted(Path(hf_dir).glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for name, info in header.items():
            if name != "__metadata__" and info["dtype"] in _SAFETENSORS_DTYPE_BYTES:
                numel[name], shapes[name] = math.prod(info["shape"]), info["shape"]
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
        return {"weight_bytes": n, "embedding_bytes": 0, "embedding_row_bytes": 0, "tied_embeddings": False,
                "bytes_per_token": n}  # fmt: skip
    raise ValueError(f"bytes_per_token: unknown runtime {runtime!r}")
