"""Sizes of ONNX initializers, read from the model proto (no onnxruntime): shared by the export's
quantizers and the bench's bytes-per-token estimate."""

from __future__ import annotations

import math


def tensor_bytes(t) -> int:
    """Stored bytes of an initializer (raw, external or typed fields; 4-bit types pack two per byte)."""
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
