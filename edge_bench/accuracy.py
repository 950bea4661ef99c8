"""Task accuracy of one runtime, and its top-1 agreement with the fp32 reference, on the same prompts.

Prompts and answer checking are the pipeline's evaluation protocol (arte/evaluate.py `shot_prompts`):
the task description, the first `shots` seeds as `<ans>target</ans>` demonstrations, the test
question; greedy decoding until `</ans>` (or "\\nQuestion:", `STUDENT_STOP`), EOS or `max_new_tokens`;
correct when the first `<ans>` matches the target (`Task.is_correct`). The harness tokenizes, so
every runtime sees the same token ids.

Top-1 agreement is teacher-forced along the reference's greedy path: at every step the variant is fed
the reference's tokens and we count how often its next-token argmax equals the reference's choice.
When it agrees at every step of a question, its own greedy answer *is* the reference's, so that
answer is reused instead of decoding it again (the common case for F16 / Q8 files).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.prompts import STUDENT_STOP, answer_only_rationale, icl_prompt
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
            raise ImportError("edge_bench accuracy needs transformers: pip install transformers") from e
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


def load_tokenizer(runtime: str, path: Path | None) -> Tokenizer:
    """The harness tokenizer of a variant: bytes for the fake runtime, else transformers from `path`
    (an HF/ONNX directory with tokenizer files, or a .gguf file)."""
    if runtime == "fake":
        return ByteTokenizer()
    if path is None:
        raise ValueError(f"runtime {runtime}: no tokenizer path")
    return HFTokenizer(path)


def task_prompts(task, shots: int, n_questions: int | None = None) -> list[tuple[str, str]]:
    """(prompt, target) per test question: the same prompts as arte/evaluate.py `shot_prompts`."""
    if not 0 <= shots <= len(task.seeds):
        raise ValueError(f"task {task.name!r} has {len(task.seeds)} seeds; cannot build {shots}-shot prompts")
    demos = [(ex.input, answer_only_rationale(ex.target)) for ex in task.seeds[:shots]]
    return [(icl_prompt(task.description, demos, ex.input), ex.target) for ex in task.test[:n_questions]]


@dataclass
class Completion:
    """A greedy answer: the chosen tokens (a final EOS included), the text cut after the stop string."""

    tokens: list[int]
    text: str
    finish: str
    """"stop" (stop string), "eos" or "length"."""


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    ends = [i + len(s) for s in stops if s and (i := text.find(s)) >= 0]
    return min(ends) if ends else None


def greedy_complete(
    runtime,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop: Sequence[str] = STUDENT_STOP,
) -> Completion:
    """Greedy decoding with the pipeline's stopping rules (arte/backends/hf.py): EOS stops and is not
    in the text; the text is cut right after the first stop string that completes."""
    logits = runtime.prefill(list(prompt_ids))
    tokens: list[int] = []
    while True:
        token = int(np.argmax(logits))
        tokens.append(token)
        if token in tokenizer.eos_ids:
            return Completion(tokens, tokenizer.decode(tokens[:-1]), "eos")
        text = tokenizer.decode(tokens)
        cut = _find_stop(text, stop)
        if cut is not None:
            return Completion(tokens, text[:cut], "stop")
        if len(tokens) >= max_new_tokens:
            return Completion(tokens, text, "length")
        logits = runtime.decode(token)


def top1_matches(runtime, prompt_ids: Sequence[int], path: Sequence[int]) -> int:
    """How many of the reference's greedy choices `path` the runtime's argmax reproduces when fed the
    reference's tokens (teacher forcing)."""
    logits = runtime.prefill(list(prompt_ids))
    matches = 0
    for i, token in enumerate(path):
        matches += int(np.argmax(logits)) == token
        if i + 1 < len(path):
            logits = runtime.decode(token)
    return matches


def evaluate_runtime(
    runtime,
    tokenizer: Tokenizer,
    task,
    items: Sequence[tuple[str, str]],
    max_new_tokens: int,
    reference: Sequence[Completion] | None = None,
) -> tuple[dict[str, Any], list[Completion]]:
    """Accuracy on `items` (prompt, target) and, given the reference's completions of the same prompts,
    top-1 agreement. Returns (summary, completions); the summary holds per-question `records`."""
    completions, records, matches, steps = [], [], 0, 0
    for i, (prompt, target) in enumerate(items):
        ids = tokenizer.encode(prompt)
        comp = None
        if reference is not None:
            path = reference[i].tokens
            agree = top1_matches(runtime, ids, path)
            matches, steps = matches + agree, steps + len(path)
            if agree == len(path):  # same greedy path: same answer, no need to decode it again
                comp = reference[i]
        comp = comp or greedy_complete(runtime, tokenizer, ids, max_new_tokens)
        completions.append(comp)
        correct = task.is_correct(comp.text, target)
        records.append(
            {
                "index": i,
                "target": target,
                "completion": comp.text,
                "finish": comp.finish,
                "correct": int(correct),
                "prompt_tokens": len(ids),
            }
        )
    n = len(records)
    summary = {
        "n": n,
        "accuracy": sum(r["correct"] for r in records) / n if n else None,
        "missing_tag": sum(extract_answer(r["completion"]) is None for r in records),
        "top1_agreement": matches / steps if steps else None,
        "top1_steps": steps,
        "records": records,
    }
    return summary, completions
