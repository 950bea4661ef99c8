"""Quantized ONNX variants made from the fp32 export (`export.onnx_export`):

- int8: dynamic (activations quantized per tensor at run time), per-channel int8 weights, through
  optimum's `ORTQuantizer` with the `AutoQuantizationConfig` preset for this CPU (avx512_vnni, avx512,
  avx2 or arm64; recorded). Only MatMuls with a weight operand are quantized: the attention-score and
  rotary-angle MatMuls multiply two activations and stay fp32 (quantizing them garbles positions).
  A tied embedding is quantized once (uint8, per tensor, as the Gather's data); the Transpose and the
  LM head's MatMulInteger then read the quantized tensor.
- int4: weight-only, symmetric blocks along K, onnxruntime's `MatMulNBitsQuantizer` (MatMulNBits ops).
  MatMulNBits needs a constant weight, so a tied LM head gets the transposed matrix and is quantized;
  the embedding Gather becomes a `GatherBlockQuantized` that reads the same 4-bit blocks and scales
  (a [V, H/2] uint8 view of MatMulNBits' [V, H/block, block/2], zero point 8), and the fp32 matrix
  is dropped.
Each writes its settings to `quantize_config.json` beside the model.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import numpy as np

from common.errors import UserError, missing_dependency
from common.onnx_decode import EXTERNAL_DATA_FILE, ONNX_FILE
from common.records import write_json_atomic
from export.onnx_export import (
    copy_side_files,
    fresh_dir,
    load_model,
    publish,
    replace_initializers,
    save_model,
)


def int8_preset() -> str:
    """The optimum `AutoQuantizationConfig` preset for this CPU's instruction set."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"


def _activation_matmuls(model) -> list[str]:
    """MatMul nodes whose second operand is not a weight (attention scores, rotary angles)."""
    inits = {t.name for t in model.graph.initializer}
    weights = inits | {
        n.output[0] for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in inits
    }
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]


def quantize_onnx_int8(fp32_dir: Path, out_dir: Path) -> Path:
    """Dynamic int8, per-channel weights, with optimum's ORTQuantizer (module docstring); the preset
    and settings are written to out_dir/quantize_config.json. Returns `out_dir`."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    preset = int8_preset()
    keep_fp32 = _activation_matmuls(load_model(fp32_dir, external=False))
    ops = ["MatMul", "Gather", "Transpose"]  # Gather + Transpose: the tied embedding, quantized once
    config = getattr(AutoQuantizationConfig, preset)(
        is_static=False, per_channel=True, nodes_to_exclude=keep_fp32, operators_to_quantize=ops
    )
    tmp = fresh_dir(out_dir)
    external = (fp32_dir / EXTERNAL_DATA_FILE).is_file()
    ORTQuantizer.from_pretrained(fp32_dir, file_name=ONNX_FILE).quantize(
        config, tmp, file_suffix=None, use_external_data_format=external
    )
    copy_side_files(fp32_dir, tmp)
    info = {
        "method": "onnxruntime dynamic quantization (optimum ORTQuantizer)",
        "preset": preset,
        "per_channel": True,
        "weights": config.weights_dtype.name,
        "activations": "QUInt8 per tensor, dynamic",
        "operators": ops,
        "fp32_activation_matmuls": len(keep_fp32),
    }
    write_json_atomic(tmp / "quantize_config.json", info)
    return publish(tmp, out_dir)


def _untie_lm_head(model, vocab_size: int) -> tuple[str, str] | None:
    """Point MatMuls that read Transpose(embedding) at a constant transposed copy (MatMulNBits needs
    a constant weight). Returns (embedding, lm-head initializer names), or None if not tied."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    embed = next((n.input[0] for n in gathers if inits[n.input[0]].dims[0] == vocab_size), None)
    transposes = [n for n in model.graph.node if n.op_type == "Transpose" and n.input[0] == embed]
    if embed is None or not transposes:
        return None
    head = "lm_head.weight" if "lm_head.weight" not in inits else f"{embed}_lm_head"
    weight_t = np.ascontiguousarray(numpy_helper.to_array(inits[embed]).T)
    model.graph.initializer.append(numpy_helper.from_array(weight_t, head))
    outputs = {t.output[0] for t in transposes}
    for node in model.graph.node:
        node.input[:] = [head if x in outputs else x for x in node.input]
    for t in transposes:
        model.graph.node.remove(t)
    return embed, head


def _gather_from_lm_head(model, embed: str, head: str, block_size: int) -> None:
    """Gather(embed) -> GatherBlockQuantized over the LM head's MatMulNBits blocks; drop `embed`."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    packed, scales = inits[f"{head}_Q4"], inits[f"{head}_scales"]
    vocab, n_blocks, blob = packed.dims
    shape = numpy_helper.from_array(
        np.array([vocab, n_blocks * blob], dtype=np.int64), f"{head}_Q4_rows_shape"
    )
    rows = helper.make_node("Reshape", [packed.name, shape.name], [f"{head}_Q4_rows"], name=f"{head}_Q4_rows")

    def quantized(gather):
        inputs = [rows.output[0], gather.input[1], scales.name]
        attrs = dict(gather_axis=0, quantize_axis=1, block_size=block_size, bits=4)
        name = f"{gather.name}_Q4"
        return helper.make_node(
            "GatherBlockQuantized", inputs, list(gather.output), name, domain="com.microsoft", **attrs
        )

    nodes = [quantized(n) if n.op_type == "Gather" and n.input[0] == embed else n for n in model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend([rows, *nodes])
    model.graph.initializer.append(shape)
    replace_initializers(model, lambda t: t.name != embed)


def quantize_onnx_int4(
    fp32_dir: Path,
    out_dir: Path,
    block_size: int = 32,
    accuracy_level: int = 4,
    external_data: bool | None = None,
) -> Path:
    """Weight-only int4 (symmetric, blocks of `block_size` along K) with onnxruntime's
    MatMulNBitsQuantizer. `accuracy_level`: MatMulNBits compute type (4: int8 activations, the fast
    CPU path; 0: fp32). `external_data`: weights in model.onnx_data (None: only when large)."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as e:  # onnxruntime 1.31's quantizer imports onnx_ir, which it does not require
        raise missing_dependency(e.name or "onnx_ir", "onnx-ir==1.1.0", "export onnx int4") from e
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    config = json.loads((fp32_dir / "config.json").read_text())
    if block_size < 16 or block_size & (block_size - 1) or config["hidden_size"] % block_size:
        hidden = config["hidden_size"]
        raise UserError(
            f"export onnx int4: block size {block_size} must be a power of 2 >= 16 dividing {hidden}"
        )
    model = load_model(fp32_dir)
    tied = _untie_lm_head(model, config["vocab_size"])
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=accuracy_level,
        op_types_to_quantize=("MatMul",) if tied else ("MatMul", "Gather"),
    )
    quantizer.process()
    model = quantizer.model.model
    if tied:
        _gather_from_lm_head(model, *tied, block_size=block_size)
    tmp = fresh_dir(out_dir)
    save_model(model, tmp, external_data)
    copy_side_files(fp32_dir, tmp)
    info = {
        "method": "onnxruntime MatMulNBitsQuantizer (weight-only, round to nearest)",
        "bits": 4,
        "block_size": block_size,
        "symmetric": True,
        "accuracy_level": accuracy_level,
        "tied_embedding": "shared MatMulNBits/GatherBlockQuantized" if tied else "not tied",
    }
    write_json_atomic(tmp / "quantize_config.json", info)
    return publish(tmp, out_dir)
