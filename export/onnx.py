"""ONNX export of a Llama- or Qwen2-family causal LM for onnxruntime: fp32, int8 and int4, each loaded
back in two runtimes and verified against the fp32 PyTorch model (rules and reference: export/verify.py).

- fp32: optimum-onnx `main_export`, task text-generation-with-past: one `model.onnx` that takes
  `past_key_values.*` and returns `present.*`; tokenizer and generation files copied from the source.
- int8: dynamic (activations quantized per tensor at run time), per-channel int8 weights, through
  optimum's `ORTQuantizer` with the `AutoQuantizationConfig` preset for this CPU (avx512_vnni, avx512,
  avx2 or arm64; recorded). Only MatMuls with a weight operand are quantized: the attention-score and
  rotary-angle MatMuls multiply two activations and stay fp32 (quantizing them garbles positions).
- int4: weight-only, symmetric blocks along K, onnxruntime's `MatMulNBitsQuantizer` (MatMulNBits ops).

Tied embeddings (one matrix for the input embedding and the LM head) are stored once in every file:
- fp32: optimum already ties them (the Gather reads `model.embed_tokens.weight`, the LM head MatMul a
  `Transpose` of it); `_share_duplicate_weights` rewires any exact or transposed copy that an export
  still holds to the one kept.
- int8: onnxruntime quantizes that initializer once (uint8, per tensor, as the Gather's data); the
  Transpose and the LM head's MatMulInteger then read the quantized tensor.
- int4: MatMulNBits needs a constant weight, so the LM head gets the transposed matrix and is
  quantized; the embedding Gather becomes a `GatherBlockQuantized` that reads the same 4-bit blocks
  and scales (a [V, H/2] uint8 view of MatMulNBits' [V, H/block, block/2], zero point 8), and the
  fp32 matrix is dropped. Tested equal to letting onnxruntime quantize two separate copies.

Running and verifying the exported files lives in `export.onnx_runtime`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arte.errors import UserError, missing_dependency, unknown_name
from arte.run_dir import sha256_file, write_json_atomic
from export.onnx_runtime import (
    EXTERNAL_DATA_FILE,
    ONNX_FILE,
    load_checks,
    verify_onnx,
)
from export.verify import (
    load_reference,
    reference_logits,
)

SUPPORTED_ARCHITECTURES = {"llama": "Llama", "qwen2": "Qwen2"}


"""config.json model_type -> the causal-LM family this exporter supports."""


QUANTS = ("fp32", "int8", "int4")


EXTERNAL_DATA_MIN_BYTES = 1 << 30


"""Weights above this go to `model.onnx_data` (a protobuf file cannot exceed 2 GB)."""


SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json",
)  # fmt: skip


"""Copied verbatim from the source model, so tokenizer and generation settings cannot drift."""


def check_model_dir(model_dir: Path) -> dict:
    """config.json of a supported HF causal-LM directory; UserError (listing what is supported) else."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise UserError(f"export onnx: model directory {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        if (model_dir / "adapter_config.json").is_file():
            raise UserError(f"export onnx: {model_dir} is a LoRA adapter without its base; merge it first")
        raise UserError(f"export onnx: {model_dir} has no config.json: not an HF model directory")
    config = json.loads((model_dir / "config.json").read_text())
    model_type, archs = config.get("model_type"), config.get("architectures") or []
    if model_type not in SUPPORTED_ARCHITECTURES or not all(a.endswith("ForCausalLM") for a in archs):
        raise UserError(
            f"export onnx: {model_dir}: unsupported architecture {', '.join(archs) or model_type!r} "
            f"(model_type {model_type!r}). Supported: {', '.join(SUPPORTED_ARCHITECTURES.values())}"
        )
    return config


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fresh_dir(out_dir: Path) -> Path:
    """An empty temporary sibling of `out_dir`; `_publish` renames it into place when complete."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, out_dir: Path) -> Path:
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def _copy_side_files(src: Path, dst: Path, names: Sequence[str] = (*SIDE_FILES, "config.json")) -> None:
    for name in names:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def _load(onnx_dir: Path, external: bool = True):
    import onnx

    return onnx.load(str(Path(onnx_dir) / ONNX_FILE), load_external_data=external)


def _save(model, out_dir: Path, external_data: bool | None = None) -> None:
    """out_dir/model.onnx, with the weights in model.onnx_data if `external_data` (None: if large)."""
    import onnx

    if external_data is None:
        external_data = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_MIN_BYTES
    kw = dict(save_as_external_data=True, all_tensors_to_one_file=True, location=EXTERNAL_DATA_FILE)
    onnx.save_model(model, str(out_dir / ONNX_FILE), **(kw if external_data else {}))


def _replace_initializers(model, keep) -> None:
    kept = [t for t in model.graph.initializer if keep(t)]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def tensor_bytes(t) -> int:
    """Stored bytes of an initializer (raw, external or typed fields; 4-bit types pack two per byte)."""
    from onnx import TensorProto, helper

    if t.raw_data:
        return len(t.raw_data)
    length = [int(e.value) for e in t.external_data if e.key == "length"]
    if length:
        return length[0]
    n = int(np.prod(t.dims)) if t.dims else 1
    if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (n + 1) // 2
    return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def embedding_copies(model, vocab_size: int, hidden_size: int) -> list[dict]:
    """Initializers that hold the vocab x hidden matrix in any layout ([V,H], [H,V], packed 4-bit
    [V, H/block, block/2]): one entry when a tied embedding is stored once."""
    out = []
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 0
        if vocab_size in t.dims and n in (vocab_size * hidden_size, vocab_size * hidden_size // 2):
            out.append({"name": t.name, "dims": list(t.dims), "bytes": tensor_bytes(t)})
    return out


def _share_duplicate_weights(model) -> list[str]:
    """Rewire each large 2-D initializer that equals another one (or its transpose, through a
    Transpose node) to the one kept and drop it; returns the names dropped."""
    from onnx import helper, numpy_helper

    big = [t for t in model.graph.initializer if len(t.dims) == 2 and np.prod(t.dims) >= 4096]
    by_size: dict[tuple, list] = {}
    for t in big:
        by_size.setdefault((t.data_type, int(np.prod(t.dims))), []).append(t)
    dropped: dict[str, str] = {}
    for group in (g for g in by_size.values() if len(g) > 1):
        arrays = [numpy_helper.to_array(t) for t in group]
        for i, j in [(a, b) for a in range(len(group)) for b in range(a + 1, len(group))]:
            keep, dup = group[i], group[j]
            if keep.name in dropped or dup.name in dropped:
                continue
            if arrays[i].shape == arrays[j].shape and np.array_equal(arrays[i], arrays[j]):
                dropped[dup.name] = keep.name
            elif arrays[i].shape == arrays[j].shape[::-1] and np.array_equal(arrays[i].T, arrays[j]):
                dropped[dup.name] = f"{keep.name}_shared_transposed"
                model.graph.node.insert(0, helper.make_node("Transpose", [keep.name], [dropped[dup.name]]))
    for node in model.graph.node:
        node.input[:] = [dropped.get(x, x) for x in node.input]
    _replace_initializers(model, lambda t: t.name not in dropped)
    return list(dropped)


def export_onnx_fp32(model_dir: Path, out_dir: Path, threads: int = 1) -> Path:
    """optimum-onnx export (text-generation-with-past, fp32) of `model_dir` into `out_dir`, the tied
    embedding stored once, the source tokenizer/generation files beside it. Returns `out_dir`."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as e:
        raise missing_dependency("optimum.exporters.onnx", "optimum-onnx==0.1.0", "export onnx") from e
    model_dir, out_dir = Path(model_dir).expanduser(), Path(out_dir)
    check_model_dir(model_dir)
    tmp = _fresh_dir(out_dir)
    with _torch_threads(threads):
        main_export(
            str(model_dir),
            tmp,
            task="text-generation-with-past",
            dtype="fp32",
            device="cpu",
            local_files_only=True,
            do_validation=False,
            library_name="transformers",
        )
    model = _load(tmp)
    if _share_duplicate_weights(model):
        (tmp / EXTERNAL_DATA_FILE).unlink(missing_ok=True)
        _save(model, tmp)
    _copy_side_files(model_dir, tmp, SIDE_FILES)
    return _publish(tmp, out_dir)


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
    keep_fp32 = _activation_matmuls(_load(fp32_dir, external=False))
    ops = ["MatMul", "Gather", "Transpose"]  # Gather + Transpose: the tied embedding, quantized once
    config = getattr(AutoQuantizationConfig, preset)(
        is_static=False, per_channel=True, nodes_to_exclude=keep_fp32, operators_to_quantize=ops
    )
    tmp = _fresh_dir(out_dir)
    external = (fp32_dir / EXTERNAL_DATA_FILE).is_file()
    ORTQuantizer.from_pretrained(fp32_dir, file_name=ONNX_FILE).quantize(
        config, tmp, file_suffix=None, use_external_data_format=external
    )
    _copy_side_files(fp32_dir, tmp)
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
    return _publish(tmp, out_dir)


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
    _replace_initializers(model, lambda t: t.name != embed)


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
    model = _load(fp32_dir)
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
    tmp = _fresh_dir(out_dir)
    _save(model, tmp, external_data)
    _copy_side_files(fp32_dir, tmp)
    info = {
        "method": "onnxruntime MatMulNBitsQuantizer (weight-only, round to nearest)",
        "bits": 4,
        "block_size": block_size,
        "symmetric": True,
        "accuracy_level": accuracy_level,
        "tied_embedding": "shared MatMulNBits/GatherBlockQuantized" if tied else "not tied",
    }
    write_json_atomic(tmp / "quantize_config.json", info)
    return _publish(tmp, out_dir)


def tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("optimum", "optimum-onnx", "onnx", "onnxruntime", "onnx-ir", "torch", "transformers"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def file_record(onnx_dir: Path, n_params: int) -> dict:
    """Files, size (incl. external data), sha256 per model file, weight bytes, bits per weight
    (all initializer bytes * 8 / the PyTorch model's parameter count) and embedding copies."""
    model = _load(onnx_dir, external=False)
    files = [p for p in (onnx_dir / ONNX_FILE, onnx_dir / EXTERNAL_DATA_FILE) if p.is_file()]
    weight_bytes = sum(tensor_bytes(t) for t in model.graph.initializer)
    config = json.loads((onnx_dir / "config.json").read_text())
    return {
        "files": [p.name for p in files],
        "size_bytes": sum(p.stat().st_size for p in files),
        "sha256": {p.name: sha256_file(p) for p in files},
        "weight_bytes": weight_bytes,
        "n_params": n_params,
        "bits_per_weight": round(weight_bytes * 8 / n_params, 3),
        "embedding_copies": embedding_copies(model, config["vocab_size"], config["hidden_size"]),
    }


def export_onnx(
    model_dir: Path, out_dir: Path, quants: Sequence[str] = QUANTS, threads: int = 1
) -> list[dict]:
    """Export `model_dir` to out_dir/<quant>/ for each of `quants`, load-check and verify each against
    PyTorch (one shared reference run); returns one record per variant, also written to
    out_dir/onnx_export.json. int8/int4 are made from the fp32 export (kept only if asked for)."""
    model_dir, out_dir = Path(model_dir).expanduser(), Path(out_dir).expanduser()
    quants = list(dict.fromkeys(q.strip().lower() for q in quants))
    for q in quants or ["(none)"]:
        if q not in QUANTS:
            raise unknown_name("ONNX quant type", q, QUANTS, where="export onnx")
    config = check_model_dir(model_dir)
    fp32_dir = out_dir / ("fp32" if "fp32" in quants else ".fp32-intermediate")
    started = time.time()
    export_onnx_fp32(model_dir, fp32_dir, threads)
    seconds = {"fp32": time.time() - started}
    for quant, build in (("int8", quantize_onnx_int8), ("int4", quantize_onnx_int4)):
        if quant in quants:
            started = time.time()
            build(fp32_dir, out_dir / quant)
            seconds[quant] = time.time() - started
    reference_model = load_reference(model_dir, threads)
    n_params = sum(p.numel() for p in reference_model.model.parameters())  # a tied matrix counts once
    reference = reference_logits(reference_model)
    records = []
    for quant in [q for q in QUANTS if q in quants]:
        onnx_dir = out_dir / quant
        qconfig = onnx_dir / "quantize_config.json"
        loads = load_checks(onnx_dir)
        verification = verify_onnx(model_dir, onnx_dir, quant, reference=reference, threads=threads)
        records.append(
            {
                "format": "onnx",
                "quant": quant,
                "path": str(onnx_dir),
                "architecture": config["model_type"],
                "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
                **file_record(onnx_dir, n_params),
                "quantization": json.loads(qconfig.read_text()) if qconfig.is_file() else None,
                "export_seconds": round(seconds[quant], 2),
                "tool_versions": tool_versions(),
                "load": loads,
                "verification": verification,
                "flagged": verification["flagged"],
            }
        )
    if "fp32" not in quants:
        shutil.rmtree(fp32_dir, ignore_errors=True)
    write_json_atomic(out_dir / "onnx_export.json", records)
    return records
