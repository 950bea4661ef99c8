"""Student preferences (ARTE step 2): how much each teacher draft helps the student.

A draft is (question q, rationale r). It is used as the single in-context demonstration before each
of the k preference questions D_pref; the fraction the student then answers correctly is the
rationale's score, and a question's score is the mean over its rationales.

Cost is m * n * k student generations, the pipeline's hot loop. What makes it fast: the k prompts of
one draft share the demonstration as a prefix, so they go to the backend as one batch (hf reuses the
prefix KV cache; llama_cpp reuses it across consecutive prompts), and decoding stops at `</ans>`.
Every score is cached by a content hash of (student, prompt format, draft, D_pref), so a re-run or a
resumed run never recomputes one.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from arte.backends.base import Backend, SamplingParams
from arte.prompts import STUDENT_STOP, icl_prompt
from arte.run_dir import RecordLog
from arte.tasks.base import Example, Task

PROMPT_VERSION = "icl-v1"
"""Bump when `icl_prompt` or answer extraction changes, so cached scores are not reused."""


@dataclass(frozen=True)
class Draft:
    """A teacher draft: question `qid` of `task`, with one rationale written under `strategy`."""

    task: str
    qid: str
    question: str
    target: str
    strategy: str
    rationale: str


def draft_key(student_id: str, draft: Draft, pref_set: Sequence[Example], max_new_tokens: int) -> str:
    """Content hash of everything that determines a draft's score."""
    payload = json.dumps(
        [PROMPT_VERSION, student_id, max_new_tokens, draft.task, draft.question, draft.rationale,
         [(ex.input, ex.target) for ex in pref_set]],
        ensure_ascii=False,
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def score_drafts(
    task: Task,
    drafts: Sequence[Draft],
    pref_set: Sequence[Example],
    student: Backend,
    *,
    student_id: str,
    cache: RecordLog,
    max_new_tokens: int = 128,
    progress: bool = True,
) -> list[float]:
    """Score every draft (accuracy on `pref_set` with the draft as the one-shot demonstration).

    Returns one score per draft, in order (identical drafts are scored once and share it). Scores already in `cache` are reused; new ones are appended to it as
    each draft finishes, so a killed run resumes where it stopped.
    """
    from tqdm import tqdm

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=STUDENT_STOP)
    cached = {rec["key"]: rec["score"] for rec in cache}
    keys = [draft_key(student_id, d, pref_set, max_new_tokens) for d in drafts]
    todo = list({k: d for k, d in zip(keys, drafts) if k not in cached}.items())  # identical drafts: once
    for key, draft in tqdm(todo, desc=f"score {task.name}", unit="draft", disable=not progress or not todo):
        demo = [(draft.question, draft.rationale)]
        prompts = [icl_prompt(task.description, demo, ex.input) for ex in pref_set]
        gens = student.generate(prompts, params)
        correct = [int(task.is_correct(g.text, ex.target)) for g, ex in zip(gens, pref_set)]
        score = sum(correct) / len(correct)
        cache.append({"key": key, "task": task.name, "qid": draft.qid, "strategy": draft.strategy,
                      "correct": correct, "score": score})  # fmt: skip
        cached[key] = score
    return [cached[k] for k in keys]


def question_scores(drafts: Sequence[Draft], rationale_scores: Sequence[float]) -> dict[str, float]:
    """Question score = mean score of its rationales (ARTE step 2)."""
    per_q: dict[str, list[float]] = defaultdict(list)
    for d, s in zip(drafts, rationale_scores):
        per_q[d.qid].append(s)
    return {qid: sum(v) / len(v) for qid, v in per_q.items()}
