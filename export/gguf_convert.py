"""Our HF -> GGUF converter for the architectures we support (Llama family, Qwen2): an HF model
directory becomes one F32 or F16 GGUF file (`convert_hf_to_gguf`), which `export.gguf_quantize` then
quantizes.

It is built on the `gguf` package and writes what llama.cpp's own convert_hf_to_gguf.py
(llama-cpp-python 0.3.36, vendor/llama.cpp/conversion/: TextModel, LlamaModel, Qwen2Model) writes
for the architectures we support:
- hyper-parameters as `{arch}.*` keys; Llama's Q/K rows permuted from HF's rotate-half layout to
  GGML's interleaved pairs (Qwen2 is not permuted: llama.cpp runs it with NEOX rope); Qwen2's q/k/v
  biases; F16 output keeps 1-D tensors and norms in F32; tied embeddings are written once, as
  `token_embd` (llama.cpp uses it for the output when `output.weight` is absent).
- the tokenizer from `tokenizer.json` (byte-level BPE: tokenizer.ggml.model "gpt2"): tokens padded to
  the embedding rows with [PADi], token types, merges, special ids, chat template (gguf.SpecialVocab),
  add_bos/add_eos as the HF tokenizer really behaves, and the pre-tokenizer name llama.cpp needs to
  split text like HF: found by the same hash as llama.cpp's converter, else from the pre-tokenizer's
  structure. A model directory without a usable tokenizer.json but with a recorded source GGUF
  (`arte-materialized.json`) gets that GGUF's tokenizer.* metadata copied instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Literal

from common.errors import UserError
from common.hf_models import source_gguf

log = logging.getLogger(__name__)


SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
"""HF architecture -> GGUF architecture. Llama covers the byte-level-BPE Llama family (SmolLM/SmolLM2,
Llama 3.x)."""


_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)


_CHKHSH = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM/SmolLM2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5/2/2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Embedding
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
}


_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


_LLAMA3_SPLIT = _QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


def read_model_config(model_dir: Path) -> tuple[dict, str]:
    """(config.json as a dict, GGUF architecture name) of an HF model directory; UserError if it
    is missing, is a LoRA adapter, or is an architecture we do not convert."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        what = "is a file" if model_dir.exists() else "does not exist"
        raise UserError(
            f"GGUF export needs an HF model directory (config.json + weights): {model_dir} {what}"
        )
    if not (model_dir / "config.json").is_file():
        if (model_dir / "adapter_config.json").is_file():
            raise UserError(f"{model_dir} is a LoRA adapter without its base: merge it into the base first")
        raise UserError(f"{model_dir} has no config.json: not an HF model directory")
    config = json.loads((model_dir / "config.json").read_text())
    model_type = config.get("model_type")
    arch = (config.get("architectures") or [_MODEL_TYPES.get(model_type, f"model_type {model_type!r}")])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"{model_dir}: architecture {arch!r} is not supported by the GGUF exporter. "
            f"Supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return config, SUPPORTED_ARCHITECTURES[arch]


def convert_hf_to_gguf(model_dir: Path, out_path: Path, outtype: Literal["f32", "f16"] = "f16") -> Path:
    """Write the HF model in `model_dir` as a GGUF file (F32, or F16 with norms and 1-D tensors in F32)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in ("f32", "f16"):
        raise UserError(f"convert_hf_to_gguf: outtype must be 'f32' or 'f16', got {outtype!r}")
    config, arch = read_model_config(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, local_files_only=True, use_safetensors=True
    )
    state = model.state_dict()
    n_vocab = int(state["model.embed_tokens.weight"].shape[0])

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch=arch)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(model_dir.name)
        ftype = gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
        _write_hparams(writer, config, arch, n_vocab)
        writer.add_file_type(ftype)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_tokenizer(writer, model_dir, n_vocab)
        for name, data in _gguf_tensors(state, config, arch):
            if outtype == "f16" and data.ndim > 1 and not name.endswith("_norm.weight"):
                if not math.isfinite(float(abs(data).max())) or abs(data).max() > 65504:
                    raise UserError(f"{model_dir}: tensor {name} exceeds the F16 range; export f32 instead")
                data = data.astype("float16")
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    tmp.replace(out_path)
    return out_path


def _write_hparams(writer, config: dict, arch: str, n_vocab: int) -> None:
    """TextModel.set_gguf_parameters (+ LlamaModel's vocab size and rope dimension)."""
    import gguf

    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads", n_head))
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim") is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "llama":
        writer.add_vocab_size(n_vocab)
        writer.add_rope_dimension_count(head_dim)
    if arch == "qwen2" and config.get("use_sliding_window"):
        raise UserError("Qwen2 with use_sliding_window=true is not supported by llama.cpp's qwen2 graph")
    rope = _rope_scaling(config)
    kind = rope.get("rope_type")
    if kind in (None, "default"):
        return
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    elif not (kind == "llama3" and arch == "llama"):  # llama3: a rope_freqs tensor, see _llama3_rope_factors
        raise UserError(
            f"rope scaling {kind!r} is not supported by the GGUF exporter (none, linear, yarn, llama3)"
        )


def _rope_scaling(config: dict) -> dict:
    rope = dict(config.get("rope_scaling") or {})
    if "type" in rope and "rope_type" not in rope:
        rope["rope_type"] = rope["type"]
    return rope


def _gguf_tensors(state: dict, config: dict, arch: str):
    """(GGUF name, float32 numpy array) pairs: LlamaModel.modify_tensors' Q/K permute, the tied
    lm_head dropped, llama3 rope factors added."""
    import gguf

    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])
    tied = config.get("tie_word_embeddings", False)
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and tied:
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        data = tensor.detach().float().numpy().copy()
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute_rotary(data, n_head)
        elif arch == "llama" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute_rotary(data, n_kv)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(
                f"no GGUF tensor name for {hf_name!r} ({arch}): this model variant is not supported"
            )
        yield name, data
    if _rope_scaling(config).get("rope_type") == "llama3":
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_factors(config)


def permute_rotary(w, n_head: int):
    """HF Llama Q/K rows (two halves per head) -> GGML order (adjacent pairs); LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_rope_factors(config: dict):
    """LlamaModel.generate_extra_tensors: per-frequency factors of Llama 3.1+ rope scaling."""
    import numpy as np

    rope = _rope_scaling(config)
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    freqs = 1.0 / (config.get("rope_theta", 10000.0) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = (
        rope.get("factor", 8.0),
        rope.get("low_freq_factor", 1.0),
        rope.get("high_freq_factor", 4.0),
    )
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _write_tokenizer(writer, model_dir: Path, n_vocab: int) -> None:
    spec_path = model_dir / "tokenizer.json"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else None
    if (
        spec
        and spec.get("model", {}).get("type") == "BPE"
        and "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))
    ):
        _write_bpe_tokenizer(writer, model_dir, spec, n_vocab)
        return
    source = source_gguf(model_dir)
    if source is None:
        raise UserError(
            f"{model_dir}: the GGUF exporter needs a byte-level BPE tokenizer.json (GPT-2/Llama-3/Qwen2/"
            "SmolLM style) or a recorded source GGUF; SentencePiece tokenizers are not supported"
        )
    copy_tokenizer_metadata(source, writer)


def _write_bpe_tokenizer(writer, model_dir: Path, spec: dict, n_vocab: int) -> None:
    """convert_hf_to_gguf.py's get_vocab_base + _set_vocab_gpt2, with add_bos/add_eos measured."""
    import gguf
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    vocab = tok.get_vocab()
    if max(vocab.values()) >= n_vocab:
        raise UserError(
            f"{model_dir}: tokenizer ids go up to {max(vocab.values())} but the embedding has {n_vocab} rows"
        )
    reverse = {i: t for t, i in vocab.items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if i in added:
            if not added[i].normalized:  # llama.cpp expects pre-normalized added tokens
                token = tok.decode(tok.encode(token, add_special_tokens=False))
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tok, spec))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    plain, full = tok("a", add_special_tokens=False)["input_ids"], tok("a")["input_ids"]
    special.add_special_token["bos"] = (
        tok.bos_token_id is not None and full[:1] == [tok.bos_token_id] != plain[:1]
    )
    special.add_special_token["eos"] = (
        tok.eos_token_id is not None and full[-1:] == [tok.eos_token_id] != plain[-1:]
    )
    special.add_to_gguf(writer, quiet=True)


def pre_tokenizer_name(tokenizer, spec: dict) -> str:
    """The tokenizer.ggml.pre name that makes llama.cpp split text like this HF tokenizer: llama.cpp's
    hash of the tokenization of a probe text, else the tokenizer.json pre-tokenizer's structure, else
    'default' with a loud warning (export.gguf_verify.tokenizer_parity then shows the damage)."""
    chkhsh = hashlib.sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    if chkhsh in _CHKHSH:
        return _CHKHSH[chkhsh]
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if (
        kinds == ["Digits", "ByteLevel"]
        and steps[0].get("individual_digits")
        and steps[1].get("use_regex", True)
    ):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = steps[0].get("pattern", {}).get("Regex")
        found = {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}.get(regex)
        if found:
            return found
    log.warning(
        "\n%s\nGGUF export: BPE pre-tokenizer not recognised (chkhsh %s, steps %s): writing 'default'.\n"
        "llama.cpp may split text differently from the HF tokenizer; see the tokenizer parity check.\n%s",
        "*" * 100,
        chkhsh,
        kinds,
        "*" * 100,
    )
    return "default"


def copy_tokenizer_metadata(source_gguf: Path, writer) -> int:
    """Copy every `tokenizer.*` key of `source_gguf` into `writer`; returns how many."""
    import gguf

    reader = gguf.GGUFReader(str(source_gguf))
    n = 0
    for name, field in reader.fields.items():
        if name.startswith("tokenizer."):
            main = field.types[0]
            sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), main, sub_type=sub)
            n += 1
    return n
