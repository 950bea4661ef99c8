"""Does an exported GGUF file still behave like the PyTorch model? llama.cpp (through
`common.llama_cpp_loader`) against the fp32 reference of `export.reference`:

- `gguf_logits`: llama.cpp's next-token logits on the reference's token ids, the prompt in one batch
  and then one token per eval, so the KV cache carries the state.
- `gguf_greedy`: llama.cpp's own free-running greedy tokens after each prompt.
- `tokenizer_parity`: llama.cpp's ids for a fixed multilingual string vs the HF tokenizer's; BOS is
  compared explicitly (the GGUF's add_bos flag vs what the HF tokenizer adds).
- `verify_gguf`: all of it for one GGUF file. F16/F32 must pass (`export.reference` thresholds, and
  tokenizer parity), else ExportVerificationError; a weak quantization is flagged, not rejected.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.reference import (
    FLOAT_TYPES,
    MULTILINGUAL_TEXT,
    ExportVerificationError,
    Reference,
    behaviour_problems,
    compare_distributions,
    greedy_text_match,
    load_reference,
    reference_logits,
)


def _open_gguf(gguf_path: Path, n_ctx: int, threads: int, extra_bufts: str = "auto", **kw):
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        from common.errors import missing_dependency

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
    greedy = gguf_greedy(gguf_path, ref.prompt_ids(), ref.decode_steps, threads, extra_bufts)
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
    problems = behaviour_problems(result, quant in FLOAT_TYPES)
    parity = result["tokenizer_parity"]
    if not parity["match"]:
        problems.append(
            f"tokenizer differs from HF (bos_match={parity['bos_match']}, "
            f"first mismatch {parity['first_mismatch']})"
        )
    return problems
