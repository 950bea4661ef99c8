"""The header of a GGUF v2/v3 file, parsed directly: the metadata key/values and every tensor's info
(name, GGML type name, shape, parameter count, bytes, data offset). No tensor data is read.

It is a small parser of its own because `gguf.GGUFReader` takes seconds on a 50k-token vocabulary
(it builds numpy views of every field); this reads the same values in a fraction of that, and skips
the metadata altogether when only the tensors are wanted. Value and tensor types come from the
`gguf` package's enums (`GGUFValueType`, `GGMLQuantizationType`, `GGML_QUANT_SIZES`). A file that is
not GGUF v2/v3, whose header is cut short, or whose tensor data reaches past the end of the file
(a truncated copy) raises a UserError naming the file.
"""

from __future__ import annotations

import math
import mmap
import struct
from pathlib import Path

from common.errors import UserError


class _Cursor:
    """A read position in the memory-mapped header (little-endian, as GGUF is)."""

    def __init__(self, buf: mmap.mmap, pos: int):
        self.buf, self.pos = buf, pos

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        self.pos += n
        if self.pos > len(self.buf):
            raise ValueError("string runs past the end of the file")
        return self.buf[self.pos - n : self.pos].decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.take("<Q")  # not `self.pos += self.take(...)`: that adds to the position before the take
        self.pos += n


def read_gguf_header(path: Path, metadata: bool = True) -> tuple[dict, list[dict]]:
    """(metadata, tensor infos) of a GGUF v2/v3 file. Metadata: {key: value}, arrays as lists (empty
    when `metadata` is False: the values are skipped, which is faster). Tensor infos, in file order:
    {"name", "type" (GGML type name, e.g. "Q4_K"), "shape" (GGUF order: innermost first), "params",
    "bytes", "offset" (of its data, from the start of the data section)}."""
    import gguf
    import numpy as np

    vt = gguf.GGUFValueType
    scalars = {
        vt.UINT8: "<B",
        vt.INT8: "<b",
        vt.UINT16: "<H",
        vt.INT16: "<h",
        vt.UINT32: "<I",
        vt.INT32: "<i",
        vt.FLOAT32: "<f",
        vt.BOOL: "<?",
        vt.UINT64: "<Q",
        vt.INT64: "<q",
        vt.FLOAT64: "<d",
    }
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        magic, version = head[:4], struct.unpack("<I", head[4:])[0] if len(head) == 8 else None
        if magic != b"GGUF" or version not in (2, 3):
            raise UserError(f"{path} is not a GGUF v2/v3 file (magic {magic!r}, version {version})")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf, 8)

            def value(vtype: int, keep: bool):
                vtype = vt(vtype)
                if vtype == vt.STRING:
                    return cur.string() if keep else cur.skip_string()
                if vtype != vt.ARRAY:
                    return cur.take(scalars[vtype])
                item, n = vt(cur.take("<I")), cur.take("<Q")
                if item in (vt.STRING, vt.ARRAY):
                    items = [value(item, keep) for _ in range(n)]
                    return items if keep else None
                fmt = scalars[item]
                out = None
                if keep:
                    out = np.frombuffer(buf, dtype=np.dtype(fmt), count=n, offset=cur.pos).tolist()
                cur.pos += n * struct.calcsize(fmt)
                return out

            try:
                n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
                meta, alignment = {}, 32  # GGUF's default alignment of the data section
                for _ in range(n_kv):
                    key = cur.string()
                    v = value(cur.take("<I"), metadata)
                    if metadata:
                        meta[key] = v
                    if key == "general.alignment" and isinstance(v, int) and v > 0:
                        alignment = v
                tensors = []
                for _ in range(n_tensors):
                    name = cur.string()
                    shape = [cur.take("<Q") for _ in range(cur.take("<I"))]
                    qtype = gguf.GGMLQuantizationType(cur.take("<I"))
                    offset = cur.take("<Q")
                    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
                    params = math.prod(shape)
                    tensors.append(
                        {
                            "name": name,
                            "type": qtype.name,
                            "shape": shape,
                            "params": params,
                            "bytes": params // block * type_size,
                            "offset": offset,
                        }
                    )
            except (struct.error, ValueError, KeyError) as e:
                raise UserError(
                    f"{path}: truncated or corrupt GGUF header ({type(e).__name__}: {e})"
                ) from None
            data_start = -(-cur.pos // alignment) * alignment
            needed = data_start + max((t["offset"] + t["bytes"] for t in tensors), default=0)
            if len(buf) < needed:
                raise UserError(
                    f"{path}: truncated GGUF file: its tensors need {needed} bytes, the file has {len(buf)}; "
                    "export or copy it again (an interrupted copy or download leaves a short file)"
                )
    return meta, tensors
