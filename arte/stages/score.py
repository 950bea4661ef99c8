"""Student preferences (ARTE step 2): how much each teacher draft helps the student.

A draft is (question q, rationale r). It is used as the single in-context demonstration before each
of the k preference questions D_pref; the fraction the student then answers correctly is the
rationale's score, and a question's score is the mean over its rationales.

Cost is m * n * k student generations, the pipeline's hot loop. What makes it fast: the k prompts of
one draft share the demonstration as a prefix, so they go to the backend as one batch (hf reuses the
prefix KV cache; llama_cpp reuses it across consecutive prompts), and decoding stops at `</ans>`.
Every score is cached by a content hash of (student, every rendered prompt: task description,
draft, D_pref question; the D_pref targets and decode settings), so a re-run or a
resumed run never recomputes one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from arte.backends import BackendConfig, load_backend
from arte.backends.base import Backend, SamplingParams
from arte.backends.streaming import stream_groups
from arte.models import EMBEDDED, resolve_gguf
from arte.run_dir import RunDir
from arte.stages.elicit import Draft
from arte.stages.stage import PlanCount, Stage, TaskSize, student_if_local
from common.prompts import STUDENT_STOP, icl_prompt
from common.records import RecordLog, read_json, write_jsonl_atomic
from common.tasks.base import Example, Task

if TYPE_CHECKING:
    from arte.run_config import RunConfig


PROMPT_VERSION = "icl-v2"
"""Bump when `icl_prompt` or answer extraction changes, so cached scores are not reused."""


@dataclass(frozen=True)
class ScoredDraft(Draft):
    """A draft with its score: the student's accuracy on D_pref with the draft as its one-shot
    demonstration. One line of score/scores.jsonl, read by pairs and generate as it is."""

    score: float


def draft_key(
    student_id: str, description: str, draft: Draft, pref_set: Sequence[Example], max_new_tokens: int
) -> str:
    """Content hash of everything that determines a draft's score: every prompt the student sees
    (task description, answer hint, demonstration, D_pref question: the rendered `icl_prompt`), the
    D_pref targets, the student, its decode budget and stop strings, and PROMPT_VERSION (answer
    extraction). Editing any prompt component gives new keys, so a redo never reuses a stale score."""
    prompts = [icl_prompt(description, [(draft.question, draft.rationale)], ex.input) for ex in pref_set]
    payload = json.dumps(
        [
            PROMPT_VERSION,
            student_id,
            max_new_tokens,
            list(STUDENT_STOP),
            draft.task,
            prompts,
            [ex.target for ex in pref_set],
        ],
        ensure_ascii=False,
    )
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
    prompts_per_call: int = 1,
    positions: Sequence[int] | None = None,
) -> list[float]:
    """Score every draft (accuracy on `pref_set` with the draft as the one-shot demonstration).

    Returns one score per draft, in order (identical drafts are scored once and share it). Scores
    already in `cache` are reused; each new one is appended to it as soon as its draft's last answer
    is done, so a killed run resumes where it stopped and loses only the drafts in flight. All
    prompts go to the student as one stream (`arte.backends.streaming`): llama_cpp decodes them as
    one continuous batch; other backends get calls of `prompts_per_call` prompts. `positions`: the
    score is the accuracy on those questions of `pref_set` only (all are still answered and cached;
    `arte.stages.gain.pref_halves`).
    """
    from tqdm import tqdm

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=STUDENT_STOP)
    cached = {rec["key"]: rec for rec in cache}
    keys = [draft_key(student_id, task.description, d, pref_set, max_new_tokens) for d in drafts]
    todo = list({k: d for k, d in zip(keys, drafts) if k not in cached}.items())  # identical drafts: once
    groups = [
        [icl_prompt(task.description, [(draft.question, draft.rationale)], ex.input) for ex in pref_set]
        for _, draft in todo
    ]
    bar = tqdm(total=len(todo), desc=f"score {task.name}", unit="draft", disable=not progress or not todo)
    for g, gens in stream_groups(student, groups, params, prompts_per_call):
        key, draft = todo[g]
        correct = [int(task.is_correct(gen.text, ex.target)) for gen, ex in zip(gens, pref_set)]
        score = sum(correct) / len(correct) if correct else 0.0
        record = {
            "key": key,
            "task": task.name,
            "qid": draft.qid,
            "strategy": draft.strategy,
            "correct": correct,
            "score": score,
        }
        cache.append(record)
        cached[key] = record
        bar.update(1)
    bar.close()
    return [cached_score(cached[k], positions) for k in keys]


def cached_score(record: dict, positions: Sequence[int] | None = None) -> float:
    """A score-cache record's score: on every D_pref question, or on `positions` only."""
    if positions is None:
        return record["score"]
    return sum(record["correct"][i] for i in positions) / len(positions) if positions else 0.0


def question_scores(scored: Sequence[ScoredDraft]) -> dict[str, float]:
    """Question score = mean score of its rationales (ARTE step 2)."""
    per_q: dict[str, list[float]] = defaultdict(list)
    for d in scored:
        per_q[d.qid].append(d.score)
    return {qid: sum(v) / len(v) for qid, v in per_q.items()}


def read_scored_drafts(run_dir: RunDir) -> list[ScoredDraft]:
    """score/scores.jsonl of a run, as written by this stage."""
    return [ScoredDraft(**r) for r in RecordLog(run_dir.path / "score" / "scores.jsonl")]


def student_id(student: BackendConfig) -> str:
    """What identifies the student's answers for the score cache: engine and model file contents."""

    model = str(resolve_gguf(student.model)) if student.name == "llama_cpp" else student.model
    path = Path(model)
    stamp = f"{path.stat().st_size}:{int(path.stat().st_mtime)}" if path.is_file() else ""
    name = student.model if student.model in EMBEDDED else model
    extra = f":dtype={student.dtype}" if student.dtype != "float32" else ""
    extra += f":extra_body={json.dumps(student.extra_body, sort_keys=True)}" if student.extra_body else ""
    return f"{student.name}:{name}:{stamp}:chat={student.chat}{extra}"


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """Score every draft of elicit/drafts.jsonl on its task's D_pref (prefset/TASK.json); write
    score/scores.jsonl (one ScoredDraft per draft) and keep score/cache.jsonl for resumes."""
    from arte.stages.elicit import read_drafts
    from arte.stages.gain import score_positions

    out, drafts, scored, counts = run_dir.stage("score"), read_drafts(run_dir), [], {}
    cache = RecordLog(out / "cache.jsonl", resume=True)
    student = load_backend(cfg.student)
    try:
        for task in tasks:
            indices = read_json(run_dir.path / "prefset" / f"{task.name}.json")["indices"]
            pref = [task.validation[i] for i in indices]
            mine = [d for d in drafts if d.task == task.name]
            positions = score_positions(cfg, task.name, len(pref))  # the fit half with --gain.held_out
            values = score_drafts(
                task,
                mine,
                pref,
                student,
                student_id=student_id(cfg.student),
                cache=cache,
                max_new_tokens=cfg.score_max_new_tokens,
                prompts_per_call=cfg.student.call_size,
                positions=positions,
            )
            scored += [
                ScoredDraft(**dataclasses.asdict(d), score=v) for d, v in zip(mine, values, strict=True)
            ]
            counts[task.name] = {
                "drafts": len(mine),
                "mean_score": round(sum(values) / max(len(values), 1), 3),
                "distinct_scores": len(set(values)),
            }
    finally:
        student.close()
    write_jsonl_atomic(out / "scores.jsonl", [dataclasses.asdict(d) for d in scored])
    return counts


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """Every draft (m x n) is a one-shot demonstration on each of D_pref's k questions."""
    m, n, k = cfg.elicit.m, len(cfg.elicit.strategies), cfg.prefset.k
    return [PlanCount.exact("student generations", m * n * k, f"m {m} x n {n} x k {k}")]


STAGE = Stage(
    name="score",
    help="Step 2b: score every draft by the student's one-shot accuracy on D_pref.",
    run=run,
    depends_on=("student", "score_max_new_tokens", "gain.held_out"),
    reads=("elicit/drafts.jsonl", "prefset"),
    writes=("score/scores.jsonl", "score/cache.jsonl"),
    sections=("student", "score_max_new_tokens"),
    models=student_if_local,
    skipped_with_reused_teacher=True,
    in_rounds=True,
    keep_on_redo=("cache.jsonl",),
    plan_counts=plan_counts,
)
