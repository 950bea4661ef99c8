"""Tiny random models of the architectures students come in, with real tokenizers: 2 layers of width
32, built in memory in a second. `tiny-random-llama` (configs/smoke.yaml) and `tiny-random-gemma3`
are built-in model names; the tests build every architecture of TINY_ARCHITECTURES and check that
its GGUF and ONNX exports behave like torch. Realistic tokenization and special tokens, a network
small enough that DPO and SFT steps take a fraction of a second. Their outputs are noise; they exist
to exercise code paths, not to answer.

The byte-level BPE families (Llama, Qwen2, Qwen3, Mistral, Phi-3) use the SmolLM2 tokenizer; the
Gemma families use Gemma 3's SentencePiece tokenizer (262k tokens). The Gemma models have a
sliding window of 8 tokens, so a verification of ~30 tokens runs through it with the KV cache, and
Gemma 2's logit soft-capping is set low enough to act on these logits.
"""

from __future__ import annotations

import json
from pathlib import Path

_COMMON = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    initializer_range=0.2,  # larger than usual: peaked logits, so greedy argmax has no near-ties
)

TINY_LLAMA = dict(**_COMMON, tie_word_embeddings=True, rope_theta=10000.0)
"""LlamaConfig fields of the tiny Llama (vocab size comes from the tokenizer)."""

_NEAR_TIE_FREE = {"qwen2": 0.5, "mistral": 0.3, "phi3": 0.5}
"""initializer_range per family where 0.2 gives a near-tie: the F16 export's greedy text must equal
torch's word for word, and a random 32-wide model's top-2 logit gap is now and then below F16
rounding (tiny Mistral at 0.2: its 16th greedy token flipped; Phi-3 at 0.3 and Qwen2 at 0.4: one
step of 102). These
values give none; any other change of weights may need a new one (the tests would say so)."""

_GEMMA = dict(_COMMON, head_dim=8, query_pre_attn_scalar=8, sliding_window=8, tie_word_embeddings=True)

TINY_ARCHITECTURES: dict[str, tuple[str, str, dict]] = {
    "llama": ("LlamaConfig", "smollm2-135m", TINY_LLAMA),
    # untied output, random q/k/v biases, an embedding padded beyond the tokenizer (as Qwen2 ships)
    "qwen2": ("Qwen2Config", "smollm2-135m", dict(_COMMON, tie_word_embeddings=False, rope_theta=1e6)),
    "qwen3": ("Qwen3Config", "smollm2-135m", dict(_COMMON, head_dim=8, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "smollm2-135m", dict(_COMMON, sliding_window=None)),
    # Phi-3 with a GPT-2 style tokenizer, as Phi-4-mini ships: fused qkv and gate/up projections.
    # No GQA, as Phi-3-mini: optimum-onnx 0.1.0's ORTModelForCausalLM gives a GQA Phi-3 an empty
    # cache with num_attention_heads heads, which its own exported graph refuses.
    "phi3": (
        "Phi3Config",
        "smollm2-135m",
        dict(
            _COMMON,
            num_key_value_heads=4,
            sliding_window=None,
            original_max_position_embeddings=512,
            tie_word_embeddings=False,
        ),
    ),
    "gemma2": (
        "Gemma2Config",
        "gemma3-270m",
        dict(_GEMMA, attn_logit_softcapping=2.0, final_logit_softcapping=4.0),
    ),
    "gemma3": ("Gemma3TextConfig", "gemma3-270m", dict(_GEMMA, rope_local_base_freq=10000.0)),
}
"""Architecture -> (transformers config class, embedded model whose tokenizer it uses, config fields)."""

_PADDED_VOCAB = {"qwen2": 64}
"""Extra embedding rows beyond the tokenizer."""


def build_tiny_llama(tokenizer, seed: int = 0):
    """A randomly initialised LlamaForCausalLM (fp32, eval mode) sized for `tokenizer`."""
    return build_tiny_model("llama", tokenizer, seed)


def build_tiny_model(arch: str, tokenizer, seed: int = 0):
    """A randomly initialised causal LM of TINY_ARCHITECTURES[arch] (fp32, eval mode) for `tokenizer`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    config_class, _, fields = TINY_ARCHITECTURES[arch]
    fields = dict(fields, initializer_range=_NEAR_TIE_FREE.get(arch, fields["initializer_range"]))
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer) + _PADDED_VOCAB.get(arch, 0),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **fields,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    if arch == "qwen2":
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".bias"):  # zero by default: random, so a mishandled bias shows
                    param.normal_(0.0, 0.2)
    return model


def save_hf(model, tokenizer, out_dir: Path) -> Path:
    """Save weights + the tokenizer. A tokenizer that transformers built from a byte-level GGUF would
    also write a `tokenizer.model` that is really the whole source GGUF: that one is removed; a
    SentencePiece tokenizer's real `tokenizer.model` stays (llama.cpp's converter reads it)."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    spm = out_dir / "tokenizer.model"
    if spm.is_file() and spm.read_bytes()[:4] == b"GGUF":
        spm.unlink()
    if model.config.model_type == "phi3":  # llama.cpp reads Phi-3 as SentencePiece unless told GPT-2
        path = out_dir / "tokenizer_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "GPT2Tokenizer"}))
    return out_dir
