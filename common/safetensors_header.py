"""The JSON header of safetensors files, read without loading any weights: tensor names, dtypes,
shapes and data offsets, for one file or for every `*.safetensors` shard of an HF model directory.

A safetensors file starts with an 8-byte little-endian header length, then that many bytes of JSON:
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`; the offsets are
relative to the end of the header. Used by export's pre-export checks and by edge_bench (parameter
counts, weight bytes read per token) and by every model loader, which refuses a truncated file
(one whose tensors reach past its end) with a message naming it, before any weights are read.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
"""Bytes per element of the safetensors dtypes whose element size is known here."""

_MAX_HEADER_BYTES = 100 << 20
"""The safetensors format caps its JSON header at 100 MB; a larger length means not a safetensors file."""
_REDO = "copy or save the model again (an interrupted copy or download leaves a short file)"


@dataclass(frozen=True)
class SafetensorsTensor:
    """One tensor's entry in a safetensors header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]
    """[begin, end) in bytes, relative to the end of the header."""
    file: Path

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the tensor takes in the file (from its data offsets)."""
        return self.data_offsets[1] - self.data_offsets[0]


def read_safetensors_header(path: Path) -> dict:
    """The raw JSON header of one safetensors file (including "__metadata__" when present);
    UserError naming the file when it is not a safetensors file."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER_BYTES:
            raise UserError(f"{path} is not a safetensors file (header length {length})")
        raw = f.read(length)
        size = f.seek(0, 2)
    if len(raw) < length:
        raise UserError(f"{path}: truncated safetensors file (its header is cut short); {_REDO}")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is not a safetensors file (its header is not a JSON object)")
    ends = [info.get("data_offsets", [0, 0])[1] for k, info in header.items() if k != "__metadata__"]
    needed = 8 + length + max((e for e in ends if isinstance(e, int)), default=0)
    if size < needed:
        raise UserError(
            f"{path}: truncated safetensors file: its tensors need {needed} bytes, the file has {size}; "
            f"{_REDO}"
        )
    return header


def safetensors_files(model_dir: Path) -> list[Path]:
    """The `*.safetensors` files of a directory, sorted by name."""
    return sorted(Path(model_dir).glob("*.safetensors"))


def safetensors_tensors(path: Path) -> list[SafetensorsTensor]:
    """Every tensor of a safetensors file, or of all the `*.safetensors` files of a directory (files
    sorted by name, tensors in header order; none for a directory without any); "__metadata__" is
    not a tensor."""
    path = Path(path)
    files = [path] if path.is_file() else safetensors_files(path)
    return [
        SafetensorsTensor(name, info["dtype"], tuple(info["shape"]), tuple(info["data_offsets"]), file)
        for file in files
        for name, info in read_safetensors_header(file).items()
        if name != "__metadata__"
    ]
