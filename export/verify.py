"""Does an exported file still behave like the PyTorch model? Checks shared by the GGUF and ONNX exporters.

- `reference_logits`: the fp32 PyTorch model, greedy, with its KV cache: for each fixed prompt the
  next-token distribution at the end of the prompt and after each of `decode_steps` greedy tokens.
  Those greedy tokens are then fed (teacher-forced) to every runtime, so all see the same token ids
  and their distributions are compared position by position. Feeding them one at a time exercises
  the runtime's KV cache; a single forward pass over the whole sequence would hide cache bugs.
- `compare_distributions`: top-1 agreement and mean KL(reference || exported) in nats (float64).
- `tokenizer_parity`: the exported tokenizer gives the HF tokenizer's ids on a fixed multilingual
  string; BOS is compared explicitly (the GGUF's add_bos flag vs what the HF tokenizer adds).
- `greedy_text_match`: the runtime's own free-running greedy generations vs the reference's.
- `verify_gguf`: all of it for one GGUF file (llama.cpp, 1 thread). F16/F32 must reach top-1 >=
  FLOAT_TOP1_MIN with identical greedy text and tokenizer parity, else ExportVerificationError;
  quantized files below QUANT_TOP1_FLAG (or KL above QUANT_KL_FLAG) are flagged, not rejected.
A runtime plug-in (ONNX) needs only a function that returns logits for `token_ids` like `gguf_logits`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arte.errors import UserError

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
"""Exports that must match PyTorch (everything else is a quantization and is only flagged)."""
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


@dataclass
class ReferenceModel:
    tokenizer: Any
    model: Any


def load_reference(model_dir: Path | str, threads: int = 1) -> ReferenceModel:
    """The HF model in fp32 (eval) and its tokenizer (repaired when it came from a GGUF)."""
    from arte.backends.hf import load_hf_model
    from arte.backends.threads import configure_torch_threads

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


# ---- llama.cpp -------------------------------------------------------------------------------------


def _open_gguf(gguf_path: Path, n_ctx: int, threads: int, extra_bufts: str = "auto", **kw):
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        from arte.errors import missing_dependency

        raise missing_dependency("llama_cpp", "llama-cpp-python==0.3.36", "GGUF verification") from e
    from common.llama_cpp_loader import LlamaCppSettingError, open_llama

    try:
        return open_llama(
            gguf_path,
            extra_bufts=extra_bufts,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
            **kw,
        )
    except LlamaCppSettingError as e:
        raise ExportVerificationError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - llama.cpp reports a bad file as ValueError/RuntimeError
        raise ExportVerificationError(f"llama.cpp cannot load {gguf_path}: {type(e).__name__}: {e}") from e


def gguf_logits(
    gguf_path: Path,
    token_ids_per_prompt: Sequence[Sequence[int]],
    decode_steps: int,
    threads: int = 1,
    extra_bufts: str = "auto",
) -> list[np.ndarray]:
    """llama.cpp's (decode_steps + 1, vocab) logits per prompt: the prompt part (all but the last
    `decode_steps` ids) in one batch, then one token per eval, so the KV cache carries the state."""
    n_ctx = max(len(ids) for ids in token_ids_per_prompt) + 1
    llm = _open_gguf(gguf_path, n_ctx, threads, extra_bufts, logits_all=True)
    try:
        out = []
        for ids in token_ids_per_prompt:
            n_prompt = len(ids) - decode_steps
            llm.reset()
            llm.eval(list(ids[:n_prompt]))
            for tok in ids[n_prompt:]:
                llm.eval([tok])
            out.append(np.array(llm.scores[n_prompt - 1 : len(ids)], dtype=np.float32))
        return out
    finally:
        llm.close()


def gguf_greedy(
    gguf_path: Path,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    threads: int = 1,
    extra_bufts: str = "auto",
) -> list[list[int]]:
    """llama.cpp's own free-running greedy tokens (argmax of its logits) after each prompt."""
    n_ctx = max(len(ids) for ids in prompt_ids) + max_new_tokens + 1
    llm = _open_gguf(gguf_path, n_ctx, threads, extra_bufts, logits_all=True)
    try:
        out = []
        for ids in prompt_ids:
            llm.reset()
            llm.eval(list(ids))
            new: list[int] = []
            while len(new) < max_new_tokens:
                new.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
                llm.eval(new[-1:])
            out.append(new)
        return out
    finally:
        llm.close()


def tokenizer_parity(
    hf_tokenizer, gguf_path: Path, text: str = MULTILINGUAL_TEXT, extra_bufts: str = "auto"
) -> dict:
    """llama.cpp's ids for `text` (special=False, BOS added iff the GGUF says add_bos) vs the HF
    tokenizer's (its own special-token handling). BOS is reported on its own: `bos_match`."""
    import llama_cpp

    llm = _open_gguf(gguf_path, 512, 1, extra_bufts, vocab_only=True)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        gguf_add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        got = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    finally:
        llm.close()
    body = list(hf_tokenizer(text, add_special_tokens=False)["input_ids"])
    full = list(hf_tokenizer(text)["input_ids"])
    hf_adds_bos = (
        hf_tokenizer.bos_token_id is not None and full[:1] == [hf_tokenizer.bos_token_id] != body[:1]
    )
    got_body = got[1:] if gguf_add_bos else got
    first = next((i for i, (a, b) in enumerate(zip(full, got)) if a != b), None)
    if first is None and len(full) != len(got):
        first = min(len(full), len(got))
    mismatch = None
    if first is not None:
        pick = lambda ids: ids[first] if first < len(ids) else None  # noqa: E731
        mismatch = {
            "index": first,
            "hf": pick(full),
            "gguf": pick(got),
            "context": hf_tokenizer.decode(full[:first])[-40:],
        }
    return {
        "match": full == got,
        "body_match": body == got_body,
        "bos_match": gguf_add_bos == hf_adds_bos,
        "gguf_add_bos": gguf_add_bos,
        "hf_adds_bos": hf_adds_bos,
        "n_tokens": len(full),
        "first_mismatch": mismatch,
    }


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


def verify_gguf(
    model_dir: Path | str,
    gguf_path: Path,
    quant: str,
    *,
    reference: Reference | None = None,
    threads: int = 1,
    extra_bufts: str = "auto",
) -> dict:
    """Top-1/KL with the KV cache, greedy text and tokenizer parity of one GGUF vs the PyTorch model
    (`reference` computed once and shared between files). Raises ExportVerificationError for a
    failing F16/F32 file; a weak quantization comes back with "flagged": true and a reason."""
    started = time.time()
    ref = reference or reference_logits(load_reference(model_dir, threads))
    got = gguf_logits(gguf_path, ref.token_ids, ref.decode_steps, threads, extra_bufts)
    result: dict = {"quant": quant, **compare_distributions(ref.logits, got)}
    prompts = [ids[:n] for ids, n in zip(ref.token_ids, ref.prompt_lengths)]
    greedy = gguf_greedy(gguf_path, prompts, ref.decode_steps, threads, extra_bufts)
    result["greedy"] = greedy_text_match(ref.tokenizer, ref.greedy_ids(), greedy, ref.eos_ids)
    result["tokenizer_parity"] = tokenizer_parity(ref.tokenizer, gguf_path, extra_bufts=extra_bufts)
    result["seconds"] = round(time.time() - started, 2)
    problems = _problems(result, quant)
    if quant in FLOAT_TYPES and problems:
        raise ExportVerificationError(
            f"{gguf_path.name}: the {quant.upper()} export does not behave like the PyTorch model: "
            + "; ".join(problems)
            + ". This is an export bug, not a quantization effect."
        )
    result.update(passed=not problems, flagged=bool(problems), reason="; ".join(problems) or None)
    return result


def _problems(result: dict, quant: str) -> list[str]:
    """What is wrong with a verification result, by the rules for float exports or quantizations."""
    problems = []
    top1, kl = result["top1_agreement"], result["mean_kl"]
    if quant in FLOAT_TYPES:
        if top1 < FLOAT_TOP1_MIN:
            problems.append(f"top-1 agreement {top1:.3f} < {FLOAT_TOP1_MIN} (mean KL {kl:.4f} nats)")
        if not result["greedy"]["identical"]:
            first = result["greedy"]["mismatches"][0]
            problems.append(
                f"greedy text differs (prompt {first['prompt']}: {first['reference']!r} vs {first['exported']!r})"
            )
    else:
        if top1 < QUANT_TOP1_FLAG:
            problems.append(f"top-1 agreement {top1:.3f} < {QUANT_TOP1_FLAG}")
        if kl > QUANT_KL_FLAG:
            problems.append(f"mean KL {kl:.3f} nats > {QUANT_KL_FLAG}")
    parity = result["tokenizer_parity"]
    if not parity["match"]:
        problems.append(
            f"tokenizer differs from HF (bos_match={parity['bos_match']}, first mismatch {parity['first_mismatch']})"
        )
    return problems
