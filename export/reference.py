"""The fp32 PyTorch reference every exported file (GGUF or ONNX) is verified against, and the rules
of that comparison. The runtimes themselves live in `export.gguf_verify` and `export.onnx_verify`.

- `reference_logits`: the fp32 PyTorch model, greedy, with its KV cache: for each fixed prompt the
  next-token distribution at the end of the prompt and after each of `decode_steps` greedy tokens.
  Those greedy tokens are then fed (teacher-forced) to every runtime, so all see the same token ids
  and their distributions are compared position by position. Feeding them one at a time exercises
  the runtime's KV cache; a single forward pass over the whole sequence would hide cache bugs.
- `compare_distributions`: top-1 agreement and mean KL(reference || exported) in nats (float64).
- `greedy_text_match`: the runtime's own free-running greedy generations vs the reference's.
- `behaviour_problems`: the thresholds. An F16/F32 (fp32) export must reach top-1 >= FLOAT_TOP1_MIN
  with identical greedy text, else the verifier raises ExportVerificationError; a quantization below
  QUANT_TOP1_FLAG (or with mean KL above QUANT_KL_FLAG) is flagged, not rejected.
A runtime plug-in needs only a function that returns logits for the reference's `token_ids`, like
`export.gguf_verify.gguf_logits` or `export.onnx_verify.onnx_logits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village by the sea,",
    "Question: What is 17 + 25?\nAnswer:",
    "Les chats et les chiens sont",
    "Here is a list of three fruits:\n1.",
)
"""Fixed verification prompts (plain text, tokenized as the HF tokenizer does by default)."""

DECODE_STEPS = 16
"""Greedy decode steps per prompt: 6 prompts x 17 positions = 102 compared distributions."""

MULTILINGUAL_TEXT = (
    "Hello, world! The quick brown fox jumps over 13 lazy dogs.\n"
    "Ça va? Déjà vu, naïve café, Straße, ñandú, Ærøskøbing.\n"
    "日本語のテキスト、中文句子，한국어 문장.\n"
    "Emoji: 🚀🦙👍🏽 ✅ — “quotes” and ‘apostrophes’.\n"
    "Numbers: 0 7 42 1234567 3.14159 -2e10 1,000,000.\n"
    "def square(x):\n    return x ** 2  # tabs\tand  double  spaces\n"
)
"""Fixed tokenizer-parity string: English, accents, CJK, Korean, emoji, digits, code, whitespace."""

FLOAT_TYPES = ("f32", "f16")
"""GGUF exports that must match PyTorch (everything else is a quantization and is only flagged)."""
FLOAT_TOP1_MIN = 0.99
QUANT_TOP1_FLAG = 0.90
QUANT_KL_FLAG = 0.1
"""Flag a quantization whose mean KL (nats) is above this (the model's behaviour has changed)."""


class ExportVerificationError(UserError):
    """An F16/F32 export disagrees with the PyTorch model beyond tolerance: the export is broken."""


@dataclass
class Reference:
    """The fp32 PyTorch model's greedy runs on the verification prompts."""

    prompts: list[str]
    token_ids: list[list[int]]
    """Per prompt: its ids followed by the `decode_steps` greedy tokens (what runtimes are fed)."""
    prompt_lengths: list[int]
    logits: list[np.ndarray]
    """Per prompt: (decode_steps + 1, vocab) float32 next-token logits."""
    decode_steps: int
    eos_ids: set[int]
    tokenizer: Any = field(repr=False, default=None)

    def greedy_ids(self) -> list[list[int]]:
        return [ids[n:] for ids, n in zip(self.token_ids, self.prompt_lengths)]

    def prompt_ids(self) -> list[list[int]]:
        """Per prompt: its own ids, without the greedy tokens."""
        return [ids[:n] for ids, n in zip(self.token_ids, self.prompt_lengths)]


@dataclass
class ReferenceModel:
    tokenizer: Any
    model: Any


def load_reference(model_dir: Path | str, threads: int = 1) -> ReferenceModel:
    """The HF model in fp32 (eval) and its tokenizer (repaired when it came from a GGUF)."""
    from common.hf_models import load_hf_model
    from common.threads import configure_torch_threads

    configure_torch_threads(threads)
    tokenizer, model = load_hf_model(str(model_dir), "float32")
    return ReferenceModel(tokenizer, model)


def reference_logits(
    model_dir: Path | str | ReferenceModel,
    prompts: Sequence[str] = PROMPTS,
    decode_steps: int = DECODE_STEPS,
) -> Reference:
    """Greedy fp32 PyTorch runs with the KV cache; see the module docstring."""
    import torch
    from transformers import DynamicCache

    ref = model_dir if isinstance(model_dir, ReferenceModel) else load_reference(model_dir)
    tok, model = ref.tokenizer, ref.model
    token_ids, lengths, logits = [], [], []
    with torch.inference_mode():
        for prompt in prompts:
            ids = list(tok(prompt)["input_ids"])
            cache = DynamicCache(config=model.config)
            out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
            rows = [out.logits[0, -1].float().numpy().copy()]
            seq = list(ids)
            for _ in range(decode_steps):
                seq.append(int(rows[-1].argmax()))
                out = model(input_ids=torch.tensor([seq[-1:]]), past_key_values=cache, use_cache=True)
                rows.append(out.logits[0, -1].float().numpy().copy())
            token_ids.append(seq)
            lengths.append(len(ids))
            logits.append(np.stack(rows))
    eos = model.generation_config.eos_token_id
    eos_ids = {i for i in [*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id] if i is not None}
    return Reference(list(prompts), token_ids, lengths, logits, decode_steps, eos_ids, tok)


def compare_distributions(ref_logits, got_logits) -> dict:
    """Top-1 agreement and mean / max KL(ref || got) in nats over all positions (rows) of the two
    logit sets (arrays or per-prompt lists of arrays, same shapes), softmax in float64."""
    ref, got = _rows(ref_logits), _rows(got_logits)
    if ref.shape != got.shape:
        raise ValueError(f"logit shapes differ: reference {ref.shape}, exported {got.shape}")
    log_p, log_q = _log_softmax(ref), _log_softmax(got)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    return {
        "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "positions": int(ref.shape[0]),
    }


def _rows(logits) -> np.ndarray:
    """(positions, vocab) float64 from an array or a per-prompt list of arrays."""
    parts = list(logits) if isinstance(logits, (list, tuple)) else [logits]
    return np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1]) for x in parts])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def greedy_text_match(
    tokenizer, ref_ids: Sequence[Sequence[int]], got_ids: Sequence[Sequence[int]], eos_ids=()
) -> dict:
    """Greedy continuations compared as text (both decoded by the HF tokenizer, cut at the first
    EOS, special tokens skipped) and as ids."""
    eos = set(eos_ids)

    def cut(ids):
        ids = list(ids)
        return ids[: next((i for i, t in enumerate(ids) if t in eos), len(ids))]

    def text(ids):
        return tokenizer.decode(cut(ids), skip_special_tokens=True)

    mismatches = [
        {"prompt": i, "reference": text(r), "exported": text(g)}
        for i, (r, g) in enumerate(zip(ref_ids, got_ids))
        if text(r) != text(g)
    ]
    return {
        "identical": not mismatches,
        "ids_identical": all(cut(r) == cut(g) for r, g in zip(ref_ids, got_ids)),
        "prompts": len(ref_ids),
        "mismatches": mismatches,
    }


def behaviour_problems(result: dict, float_export: bool) -> list[str]:
    """What is wrong with a verification result's top-1 / KL / greedy figures, by the rules for a
    float export (`float_export`: must match PyTorch) or for a quantization (flagged when weak)."""
    problems = []
    top1, kl = result["top1_agreement"], result["mean_kl"]
    if float_export:
        if top1 < FLOAT_TOP1_MIN:
            problems.append(f"top-1 agreement {top1:.3f} < {FLOAT_TOP1_MIN} (mean KL {kl:.4f} nats)")
        if not result["greedy"]["identical"]:
            first = result["greedy"]["mismatches"][0]
            problems.append(
                f"greedy text differs (prompt {first['prompt']}: "
                f"{first['reference']!r} vs {first['exported']!r})"
            )
    else:
        if top1 < QUANT_TOP1_FLAG:
            problems.append(f"top-1 agreement {top1:.3f} < {QUANT_TOP1_FLAG}")
        if kl > QUANT_KL_FLAG:
            problems.append(f"mean KL {kl:.3f} nats > {QUANT_KL_FLAG}")
    return problems
