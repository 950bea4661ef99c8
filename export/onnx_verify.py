"""Running and verifying exported ONNX models: plain onnxruntime sessions fed token by token through
the KV cache (`common.onnx_decode`), the load checks (ORTModelForCausalLM and InferenceSession
agree), tokenizer parity of the saved tokenizer, and `verify_onnx` against the fp32 PyTorch
reference (`export.reference` thresholds).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.onnx_decode import KVCacheDecoder, open_session, session_options
from export.reference import (
    MULTILINGUAL_TEXT,
    ExportVerificationError,
    Reference,
    behaviour_problems,
    compare_distributions,
    greedy_text_match,
    load_reference,
    reference_logits,
)


def onnx_logits(
    onnx_dir: Path, token_ids_per_prompt: Sequence[Sequence[int]], decode_steps: int, threads: int = 1
) -> list[np.ndarray]:
    """(decode_steps + 1, vocab) logits per sequence from a plain InferenceSession: the prompt (all
    but the last `decode_steps` ids) in one forward, then one token per forward through the KV cache
    (present.* fed back as past_key_values.*), like `export.gguf_verify.gguf_logits`."""
    decoder = KVCacheDecoder(open_session(onnx_dir, threads))
    out = []
    for ids in token_ids_per_prompt:
        n_prompt = len(ids) - decode_steps
        decoder.reset()
        rows = [decoder.step(ids[:n_prompt])]
        for pos in range(n_prompt, len(ids)):
            rows.append(decoder.step(ids[pos : pos + 1]))
        out.append(np.stack(rows))
    return out


def onnx_greedy(
    onnx_dir: Path, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, threads: int = 1
) -> list[list[int]]:
    """The exported model's own free-running greedy tokens after each prompt (KV cache)."""
    decoder = KVCacheDecoder(open_session(onnx_dir, threads))
    out = []
    for ids in prompt_ids:
        decoder.reset()
        new = [int(decoder.step(ids).argmax())]
        while len(new) < max_new_tokens:
            new.append(int(decoder.step(new[-1:]).argmax()))
        out.append(new)
    return out


ORT_LOADER_CACHE_BUG = {"gemma2", "phi3"}
"""model_types for which optimum-onnx 0.1.0's ORTModelForCausalLM builds its empty KV cache with
num_attention_heads heads and hidden/heads per head (its GQA and head_dim lists omit them), so it
cannot run a grouped-query export that onnxruntime itself runs fine. Recorded, not fatal: our
decoder (common.onnx_decode) reads the cache shapes from the graph."""


def load_checks(onnx_dir: Path) -> dict:
    """Load with ORTModelForCausalLM and with a plain InferenceSession, run one forward in each
    (empty KV cache) and require equal logits; ExportVerificationError otherwise (except the known
    ORTModelForCausalLM cache bug of ORT_LOADER_CACHE_BUG, recorded as `ort_model_for_causal_lm_error`)."""
    import json

    onnx_dir, ids = Path(onnx_dir), [1, 2, 3, 4, 5]
    try:
        session = open_session(onnx_dir)
        plain = KVCacheDecoder(session).step(ids)
    except Exception as e:  # noqa: BLE001 - any load failure means a broken export
        raise ExportVerificationError(
            f"{onnx_dir}: the ONNX export does not load: {type(e).__name__}: {e}"
        ) from e
    inputs = [i.name for i in session.get_inputs()]
    out = {"ort_model_for_causal_lm": True, "inference_session": True, "inputs": inputs}
    try:
        logits = _ort_model_logits(onnx_dir, ids)
    except Exception as e:  # noqa: BLE001 - any load failure means a broken export
        model_type = json.loads((onnx_dir / "config.json").read_text()).get("model_type")
        if model_type not in ORT_LOADER_CACHE_BUG:
            raise ExportVerificationError(
                f"{onnx_dir}: the ONNX export does not load: {type(e).__name__}: {e}"
            ) from e
        msg = f"optimum-onnx's ORTModelForCausalLM cannot run {model_type} exports: {str(e)[:200]}"
        return {**out, "ort_model_for_causal_lm": False, "ort_model_for_causal_lm_error": msg}
    diff = float(np.abs(plain - logits).max())
    if diff > 1e-4 * max(1.0, float(np.abs(plain).max())):
        raise ExportVerificationError(
            f"{onnx_dir}: ORTModelForCausalLM and InferenceSession disagree ({diff:.3g})"
        )
    return {**out, "loader_max_diff": diff}


def _ort_model_logits(onnx_dir: Path, ids: list[int]) -> np.ndarray:
    """Last-position logits of one forward through optimum's ORTModelForCausalLM (empty cache)."""
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    model = ORTModelForCausalLM.from_pretrained(onnx_dir, session_options=session_options(1))
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
        ).logits
    return logits[0, -1].float().numpy()


def tokenizer_parity(hf_tokenizer, onnx_dir: Path, text: str = MULTILINGUAL_TEXT) -> dict:
    """The tokenizer saved with the export vs the HF one: ids of `text` without special tokens
    (`body_match`), whether each adds BOS (`bos_match`), with special tokens, and bos/eos/pad ids."""
    from transformers import AutoTokenizer

    got = AutoTokenizer.from_pretrained(str(onnx_dir), local_files_only=True)
    body = [list(t(text, add_special_tokens=False)["input_ids"]) for t in (hf_tokenizer, got)]
    full = [list(t(text)["input_ids"]) for t in (hf_tokenizer, got)]
    adds_bos = [
        t.bos_token_id is not None and f[:1] == [t.bos_token_id] != b[:1]
        for t, f, b in zip((hf_tokenizer, got), full, body)
    ]
    special = {
        k: (getattr(hf_tokenizer, f"{k}_token_id"), getattr(got, f"{k}_token_id"))
        for k in ("bos", "eos", "pad")
    }
    first = next((i for i, (a, b) in enumerate(zip(*full)) if a != b), None)
    return {
        "match": full[0] == full[1] and all(a == b for a, b in special.values()),
        "body_match": body[0] == body[1],
        "bos_match": adds_bos[0] == adds_bos[1],
        "hf_adds_bos": adds_bos[0],
        "special_ids": special,
        "n_tokens": len(full[0]),
        "first_mismatch": first,
    }


def _problems(result: dict, quant: str) -> list[str]:
    """What is wrong with a verification result: fp32 by the float rules, int8/int4 as quantizations."""
    problems = behaviour_problems(result, quant == "fp32")
    if not result["tokenizer_parity"]["match"]:
        problems.append(f"tokenizer differs from HF: {result['tokenizer_parity']}")
    return problems


def verify_onnx(
    model_dir: Path, onnx_dir: Path, quant: str, *, reference: Reference | None = None, threads: int = 1
) -> dict:
    """Top-1 agreement and mean KL vs the fp32 PyTorch model over prompts x decode steps (KV cache,
    teacher-forced on its greedy tokens), free-running greedy text and tokenizer parity. fp32 must
    pass (else ExportVerificationError); int8/int4 come back "flagged" with a reason when weak."""
    started = time.time()
    ref = reference or reference_logits(load_reference(model_dir, threads))
    got = onnx_logits(onnx_dir, ref.token_ids, ref.decode_steps, threads)
    result: dict = {
        "quant": quant,
        **compare_distributions(ref.logits, got),
        "decode_steps": ref.decode_steps,
    }
    greedy = onnx_greedy(onnx_dir, ref.prompt_ids(), ref.decode_steps, threads)
    result["greedy"] = greedy_text_match(ref.tokenizer, ref.greedy_ids(), greedy, ref.eos_ids)
    result["tokenizer_parity"] = tokenizer_parity(ref.tokenizer, onnx_dir)
    result["seconds"] = round(time.time() - started, 2)
    problems = _problems(result, quant)
    if quant == "fp32" and problems:
        raise ExportVerificationError(
            f"{onnx_dir}: the fp32 ONNX export does not behave like the PyTorch model: "
            f"{'; '.join(problems)}. This is an export bug, not a quantization effect."
        )
    result.update(passed=not problems, flagged=bool(problems), reason="; ".join(problems) or None)
    return result
