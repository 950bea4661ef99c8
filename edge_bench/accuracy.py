"""Task accuracy of one runtime, and how closely it follows the fp32 reference, on the same prompts.

Prompts and answer checking are the pipeline's evaluation protocol (arte/evaluate.py `shot_prompts`):
the task description, the first `shots` seeds as `<ans>target</ans>` demonstrations, the test
question; greedy decoding until `</ans>` (or "\\nQuestion:", `STUDENT_STOP`), EOS or `max_new_tokens`;
correct when the first `<ans>` matches the target (`Task.is_correct`). The harness tokenizes, so
every runtime sees the same token ids. Each question's record keeps its index and target, so that
two variants' answers are paired by question (`edge_bench.paired`), and its normalised answer.

Fidelity on the task's own prompts, teacher-forced along the reference's greedy answer: at every step
the variant is fed the reference's tokens through its KV cache, and we count how often its next-token
argmax equals the reference's choice (top-1 agreement) and, where the reference kept its
distribution (`kl_positions`, the first steps of each answer, a memory cap), KL(reference || variant)
in nats. When the variant agrees at every step of a question, its own greedy answer *is* the
reference's, so that answer is reused instead of decoding it again (the common case for F16 / Q8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.prompts import STUDENT_STOP, icl_prompt
from common.tasks import extract_answer


class Tokenizer(Protocol):
    """What the harness needs from a tokenizer."""

    eos_ids: set[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class HFTokenizer:
    """A transformers tokenizer, encoding like the pipeline's hf backend (special tokens added, no chat
    template) and decoding without special tokens."""

    def __init__(self, path: Path):
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError(
                f"the harness tokenizer of {path} needs transformers (a .gguf file's own vocabulary "
                "does not): pip install 'arte-edge[train]'"
            ) from e
        path = Path(path)
        if path.is_file():  # a .gguf file: transformers builds the tokenizer from its metadata
            self.tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        eos = [self.tok.eos_token_id]
        gen_config = path / "generation_config.json" if path.is_dir() else None
        if gen_config is not None and gen_config.is_file():
            import json

            extra = json.loads(gen_config.read_text()).get("eos_token_id")
            eos += extra if isinstance(extra, list) else [extra]
        self.eos_ids = {int(i) for i in eos if i is not None}

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


class ByteTokenizer:
    """UTF-8 bytes as token ids 0-255: the tokenizer of the fake runtime's 256-token vocabulary."""

    eos_ids: set[int] = set()

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class LlamaCppTokenizer:
    """A GGUF's own vocabulary through llama.cpp (no transformers needed): special tokens parsed, BOS
    added as the GGUF says, decoded without special tokens."""

    def __init__(self, path: Path):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.eos_ids = {int(self.llm.token_eos())}
        self._special = {int(self.llm.token_bos()), *self.eos_ids}

    def encode(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def decode(self, ids: Sequence[int]) -> str:
        kept = [i for i in ids if i not in self._special]
        return self.llm.detokenize(kept).decode("utf-8", errors="replace")


class TokenizerJson:
    """A directory's tokenizer.json through the `tokenizers` library (no transformers needed): its
    post-processor adds the special tokens, as transformers' fast tokenizer does; EOS from
    tokenizer_config.json and generation_config.json."""

    def __init__(self, path: Path):
        import json

        from tokenizers import Tokenizer as Backend

        self.tok = Backend.from_file(str(path / "tokenizer.json"))
        eos: list = []
        for name, key in (("tokenizer_config.json", "eos_token"), ("generation_config.json", "eos_token_id")):
            value = json.loads((path / name).read_text()).get(key) if (path / name).is_file() else None
            value = value.get("content") if isinstance(value, dict) else value
            for x in value if isinstance(value, list) else [value]:
                eos.append(self.tok.token_to_id(x) if isinstance(x, str) else x)
        self.eos_ids = {int(i) for i in eos if i is not None}

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


def _have_transformers() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def load_tokenizer(runtime: str, path: Path | None) -> Tokenizer:
    """The harness tokenizer of a variant: bytes for the fake runtime, else transformers from `path`
    (an HF/ONNX directory with tokenizer files, or a .gguf file). Without transformers (`pip install
    'arte-edge[bench]'`): a .gguf file's own vocabulary through llama.cpp, a directory's
    tokenizer.json through `tokenizers`."""
    if runtime == "fake":
        return ByteTokenizer()
    if path is None:
        raise ValueError(f"runtime {runtime}: no tokenizer path")
    if not _have_transformers():
        path = Path(path)
        if path.suffix == ".gguf":
            return LlamaCppTokenizer(path)
        if (path / "tokenizer.json").is_file():
            return TokenizerJson(path)
    return HFTokenizer(path)


def task_prompts(task, shots: int, n_questions: int | None = None) -> list[tuple[str, str]]:
    """(prompt, target) per test question: the same prompts as arte/evaluate.py `shot_prompts`."""
    if not 0 <= shots <= len(task.seeds):
        raise ValueError(f"task {task.name!r} has {len(task.seeds)} seeds; cannot build {shots}-shot prompts")
    demos = task.demonstrations(shots)  # the seeds' written reasoning where they have it
    return [(icl_prompt(task.description, demos, ex.input), ex.target) for ex in task.test[:n_questions]]


KL_STEPS_PER_QUESTION = 32
"""At most this many steps of each reference answer keep their distribution for the KL."""


@dataclass
class Completion:
    """A greedy answer: the chosen tokens (a final EOS included), the text cut after the stop string."""

    tokens: list[int]
    text: str
    finish: str
    """"stop" (stop string), "eos" or "length"."""
    logprobs: list[np.ndarray] | None = field(default=None, compare=False, repr=False)
    """The reference's next-token log-probabilities at its first steps (float32), for the KL."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-probabilities of one logit vector, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def kl_divergence(ref_logprobs: np.ndarray, logits: np.ndarray) -> float:
    """KL(reference || variant) in nats, from the reference's log-probabilities and the variant's logits."""
    lp = np.asarray(ref_logprobs, dtype=np.float64)
    return float((np.exp(lp) * (lp - log_softmax(logits))).sum())


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    ends = [i + len(s) for s in stops if s and (i := text.find(s)) >= 0]
    return min(ends) if ends else None


def greedy_complete(
    runtime,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop: Sequence[str] = STUDENT_STOP,
    keep_logprobs: int = 0,
) -> Completion:
    """Greedy decoding with the pipeline's stopping rules (arte/backends/hf.py): EOS stops and is not
    in the text; the text is cut right after the first stop string that completes. The first
    `keep_logprobs` steps keep their log-probabilities (`Completion.logprobs`)."""
    logits = runtime.prefill(list(prompt_ids))
    tokens: list[int] = []
    kept: list[np.ndarray] = []

    def done(text: str, finish: str) -> Completion:
        return Completion(tokens, text, finish, kept if keep_logprobs else None)

    while True:
        if len(kept) < keep_logprobs:
            kept.append(log_softmax(logits).astype(np.float32))
        token = int(np.argmax(logits))
        tokens.append(token)
        if token in tokenizer.eos_ids:
            return done(tokenizer.decode(tokens[:-1]), "eos")
        text = tokenizer.decode(tokens)
        cut = _find_stop(text, stop)
        if cut is not None:
            return done(text[:cut], "stop")
        if len(tokens) >= max_new_tokens:
            return done(text, "length")
        logits = runtime.decode(token)


def teacher_forced(
    runtime, prompt_ids: Sequence[int], path: Sequence[int], ref_logprobs: Sequence[np.ndarray] = ()
) -> tuple[int, list[float]]:
    """(how many of the reference's greedy choices `path` the runtime's argmax reproduces when fed the
    reference's tokens, the KL at each step where the reference kept its log-probabilities)."""
    logits = runtime.prefill(list(prompt_ids))
    matches, kls = 0, []
    for i, token in enumerate(path):
        matches += int(np.argmax(logits)) == token
        if i < len(ref_logprobs):
            kls.append(kl_divergence(ref_logprobs[i], logits))
        if i + 1 < len(path):
            logits = runtime.decode(token)
    return matches, kls


def _record(task, index: int, target: str, comp: Completion, prompt_tokens: int) -> dict:
    got = extract_answer(comp.text)
    return {
        "index": index,
        "target": target,
        "completion": comp.text,
        "answer": None if got is None else task.normalize(got),
        "finish": comp.finish,
        "correct": int(task.is_correct(comp.text, target)),
        "prompt_tokens": prompt_tokens,
    }


def evaluate_runtime(
    runtime,
    tokenizer: Tokenizer,
    task,
    items: Sequence[tuple[str, str]],
    max_new_tokens: int,
    reference: Sequence[Completion] | None = None,
    *,
    first_index: int = 0,
    kl_positions: int = 0,
) -> tuple[dict[str, Any], list[Completion]]:
    """Accuracy on `items` (prompt, target), the questions numbered from `first_index`, and, given the
    reference's completions of the same prompts, top-1 agreement and KL along them. A reference run
    (`reference` None) keeps the log-probabilities of up to `kl_positions` steps in all, at most
    KL_STEPS_PER_QUESTION per question. Returns (summary, completions); the summary holds the
    per-question `records`."""
    completions, records, matches, steps, kls = [], [], 0, 0, []
    for i, (prompt, target) in enumerate(items):
        ids = tokenizer.encode(prompt)
        comp = None
        if reference is not None:
            ref = reference[i]
            agree, step_kls = teacher_forced(runtime, ids, ref.tokens, ref.logprobs or ())
            matches, steps, kls = matches + agree, steps + len(ref.tokens), kls + step_kls
            if agree == len(ref.tokens):  # same greedy path: same answer, no need to decode it again
                comp = Completion(ref.tokens, ref.text, ref.finish)
        if comp is None:
            keep = 0 if reference is not None else min(KL_STEPS_PER_QUESTION, kl_positions)
            comp = greedy_complete(runtime, tokenizer, ids, max_new_tokens, keep_logprobs=keep)
            kl_positions -= len(comp.logprobs or ())
        completions.append(comp)
        records.append(_record(task, first_index + i, target, comp, len(ids)))
    n = len(records)
    summary = {
        "n": n,
        "accuracy": sum(r["correct"] for r in records) / n if n else None,
        "missing_tag": sum(r["answer"] is None for r in records),
        "top1_agreement": matches / steps if steps else None,
        "top1_matches": matches,
        "top1_steps": steps,
        "kl_sum": float(sum(kls)),
        "kl_max": max(kls) if kls else None,
        "kl_positions": len(kls),
        "records": records,
    }
    return summary, completions
