"""Running and verifying exported ONNX models: plain onnxruntime sessions fed token by token through
the KV cache, the load checks (ORTModelForCausalLM and InferenceSession), tokenizer parity, and
`verify_onnx` against the fp32 PyTorch reference (export/verify.py thresholds).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.verify import (
    FLOAT_TOP1_MIN,
    MULTILINGUAL_TEXT,
    QUANT_KL_FLAG,
    QUANT_TOP1_FLAG,
    ExportVerificationError,
    Reference,
    compare_distributions,
    greedy_text_match,
    load_reference,
    reference_logits,
)

ONNX_FILE, EXTERNAL_DATA_FILE = "model.onnx", "model.onnx_data"


def _session_options(threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def onnx_session(onnx_dir: Path, threads: int = 1):
    """A plain onnxruntime InferenceSession (CPU) on onnx_dir/model.onnx."""
    import onnxruntime as ort

    path = str(Path(onnx_dir) / ONNX_FILE)
    return ort.InferenceSession(path, _session_options(threads), providers=["CPUExecutionProvider"])


def _empty_past(session) -> dict:
    """past_key_values.* inputs holding nothing yet: [batch 1, kv_heads, 0, head_dim]."""
    return {
        i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float16 if "float16" in i.type else np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past_key_values.")
    }


def _step(session, ids: Sequence[int], past: dict, past_len: int) -> tuple[np.ndarray, dict]:
    """Feed `ids` after `past_len` cached tokens using the graph's declared inputs; returns the last
    position's logits and the new cache (present.* renamed past_key_values.*)."""
    names = {i.name for i in session.get_inputs()}
    n = len(ids)
    feeds = {"input_ids": np.array([list(ids)], dtype=np.int64), **past}
    if "attention_mask" in names:
        feeds["attention_mask"] = np.ones((1, past_len + n), dtype=np.int64)
    if "position_ids" in names:
        feeds["position_ids"] = np.arange(past_len, past_len + n, dtype=np.int64)[None, :]
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    present = {
        k.replace("present.", "past_key_values.", 1): v for k, v in out.items() if k.startswith("present.")
    }
    return out["logits"][0, -1].astype(np.float32), present


def onnx_logits(
    onnx_dir: Path, token_ids_per_prompt: Sequence[Sequence[int]], decode_steps: int, threads: int = 1
) -> list[np.ndarray]:
    """(decode_steps + 1, vocab) logits per sequence from a plain InferenceSession: the prompt (all
    but the last `decode_steps` ids) in one forward, then one token per forward through the KV cache
    (present.* fed back as past_key_values.*), like verify.gguf_logits."""
    session = onnx_session(onnx_dir, threads)
    out = []
    for ids in token_ids_per_prompt:
        n_prompt = len(ids) - decode_steps
        logits, past = _step(session, ids[:n_prompt], _empty_past(session), 0)
        rows = [logits]
        for pos in range(n_prompt, len(ids)):
            logits, past = _step(session, ids[pos : pos + 1], past, pos)
            rows.append(logits)
        out.append(np.stack(rows))
    return out


def onnx_greedy(
    onnx_dir: Path, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, threads: int = 1
) -> list[list[int]]:
    """The exported model's own free-running greedy tokens after each prompt (KV cache)."""
    session = onnx_session(onnx_dir, threads)
    out = []
    for ids in prompt_ids:
        logits, past = _step(session, ids, _empty_past(session), 0)
        new = [int(logits.argmax())]
        while len(new) < max_new_tokens:
            logits, past = _step(session, new[-1:], past, len(ids) + len(new) - 1)
            new.append(int(logits.argmax()))
        out.append(new)
    return out


def load_checks(onnx_dir: Path) -> dict:
    """Load with ORTModelForCausalLM and with a plain InferenceSession, run one forward in each
    (empty KV cache) and require equal logits; ExportVerificationError otherwise."""
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    onnx_dir, ids = Path(onnx_dir), [1, 2, 3, 4, 5]
    try:
        session = onnx_session(onnx_dir)
        plain, _ = _step(session, ids, _empty_past(session), 0)
        model = ORTModelForCausalLM.from_pretrained(onnx_dir, session_options=_session_options(1))
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)
            ).logits
    except Exception as e:  # noqa: BLE001 - any load failure means a broken export
        raise ExportVerificationError(
            f"{onnx_dir}: the ONNX export does not load: {type(e).__name__}: {e}"
        ) from e
    diff = float(np.abs(plain - logits[0, -1].float().numpy()).max())
    if diff > 1e-4 * max(1.0, float(np.abs(plain).max())):
        raise ExportVerificationError(
            f"{onnx_dir}: ORTModelForCausalLM and InferenceSession disagree ({diff:.3g})"
        )
    inputs = [i.name for i in session.get_inputs()]
    return {
        "ort_model_for_causal_lm": True,
        "inference_session": True,
        "inputs": inputs,
        "loader_max_diff": diff,
    }


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
    top1, kl = result["top1_agreement"], result["mean_kl"]
    problems = []
    if quant == "fp32":
        if top1 < FLOAT_TOP1_MIN:
            problems.append(f"top-1 agreement {top1:.3f} < {FLOAT_TOP1_MIN} (mean KL {kl:.4f} nats)")
        for m in result["greedy"]["mismatches"][:1]:
            problems.append(
                f"greedy text differs (prompt {m['prompt']}: {m['reference']!r} vs {m['exported']!r})"
            )
    else:
        problems += [f"top-1 agreement {top1:.3f} < {QUANT_TOP1_FLAG}"] if top1 < QUANT_TOP1_FLAG else []
        problems += [f"mean KL {kl:.3f} nats > {QUANT_KL_FLAG}"] if kl > QUANT_KL_FLAG else []
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
    prompts = [ids[:n] for ids, n in zip(ref.token_ids, ref.prompt_lengths)]
    greedy = onnx_greedy(onnx_dir, prompts, ref.decode_steps, threads)
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
