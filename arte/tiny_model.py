"""A tiny random Llama with the real SmolLM2 tokenizer: 2 layers of width 32, built in memory in a
second. It backs the built-in model name `tiny-random-llama` (configs/smoke.yaml) and the tests:
realistic tokenization and special tokens, a network small enough that DPO and SFT steps take
a fraction of a second. Its outputs are noise; it exists to exercise code paths, not to answer.
"""

from __future__ import annotations

from pathlib import Path

TINY_LLAMA = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    initializer_range=0.2,  # larger than usual: peaked logits, so greedy argmax has no near-ties
)
"""LlamaConfig fields of the tiny model (vocab size comes from the tokenizer)."""


def build_tiny_llama(tokenizer, seed: int = 0):
    """A randomly initialised LlamaForCausalLM (fp32, eval mode) sized for `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save_hf(model, tokenizer, out_dir: Path) -> Path:
    """Save weights + the fast tokenizer files only (the GGUF-derived tokenizer would otherwise
    write a `tokenizer.model` that is really the whole source GGUF)."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tokenizer.model").unlink(missing_ok=True)
    return out_dir
