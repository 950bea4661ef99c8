"""The DPO dataset of ARTE step 3 (preference alignment): chosen/rejected pairs built from the
student's scores of the teacher's drafts (arXiv 2406.19227, see docs/method.md).

Two kinds of pair, mixed into one dataset (one aligned teacher for all target tasks):

- question level: prompt = the task's question (brainstorm) prompt; chosen = a draft question from
  the top `quantile` by question score, rejected = one from the bottom `quantile`, paired at random
  (seeded), at most `max_question_pairs_per_task` per task (paper: 25% and 50). The completions are
  rendered as `<Question_x><input>..</input><target>..</target></Question_x>` blocks, the format the
  question prompt asks for, so DPO reinforces that format too.
- rationale level: prompt = the *naive* prompt (prompt erasure: no reasoning-strategy instructions,
  so the teacher learns to choose the strategy itself); chosen = the question's highest-scoring
  rationale, rejected = its lowest; one pair per question; questions whose rationales all score the
  same are skipped (counted in the stats).

Every row is {"prompt", "chosen", "rejected", "level", "task", "chosen_score", "rejected_score",
"chosen_id", "rejected_id"} (ids: the qid, or "qid/strategy" for rationales, to trace a pair back).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arte.run_dir import RunDir
from arte.stages.score import ScoredDraft, question_scores
from arte.stages.stage import PlanCount, Stage, TaskSize
from common.config import opt
from common.errors import UserError
from common.prompts import naive_prompt, render_question_block
from common.records import write_jsonl_atomic
from common.tasks.base import Task

if TYPE_CHECKING:
    from arte.run_config import RunConfig


@dataclass
class PairsConfig:
    """How student scores become DPO pairs (ARTE step 3)."""

    quantile: float = opt(
        0.25, "Question pairs: chosen from the top and rejected from the bottom fraction (paper: 0.25)."
    )
    max_question_pairs_per_task: int = opt(50, "Question-level pairs per task, at most (paper: 50).")
    seed: int = opt(0, "Seed for pairing questions and breaking score ties.")
    min_score_gap: float = opt(
        0.0, "A pair's chosen score must exceed its rejected score by more than this (0 = any difference)."
    )
    question_block_index: int = opt(
        4,
        "x in the <Question_x> tag of question completions; the question prompt shows the 3 seeds as "
        "1-3, so the teacher's first new question is 4.",
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile <= 0.5:
            raise ValueError(f"--quantile must be in (0, 0.5], got {self.quantile}")
        if self.max_question_pairs_per_task < 0:
            raise ValueError(
                f"--max_question_pairs_per_task must be >= 0, got {self.max_question_pairs_per_task}"
            )
        if self.min_score_gap < 0:
            raise ValueError(f"--min_score_gap must be >= 0, got {self.min_score_gap}")
        if self.question_block_index < 1:
            raise ValueError(f"--question_block_index must be >= 1, got {self.question_block_index}")


def _pair_row(
    level: str, task: str, prompt: str, chosen: tuple[str, str, float], rejected: tuple[str, str, float]
) -> dict[str, Any]:
    """A dataset row from (id, completion, score) of the chosen and the rejected side."""
    return {
        "prompt": prompt,
        "chosen": chosen[1],
        "rejected": rejected[1],
        "level": level,
        "task": task,
        "chosen_score": chosen[2],
        "rejected_score": rejected[2],
        "chosen_id": chosen[0],
        "rejected_id": rejected[0],
    }


def _overlap(prompt: str, text: str) -> int:
    """Length of the longest start of `text` that `prompt` ends with (e.g. "<Question_4><input>")."""
    return next((n for n in range(len(text), 0, -1) if prompt.endswith(text[:n])), 0)


def split_quantiles(scores: Mapping[str, float], quantile: float, rng: random.Random) -> tuple[list, list]:
    """(top, bottom): the ids of the best and the worst `quantile` fraction (one each at least, given two
    ids; never overlapping). Ties at a boundary are broken at random, not by id order."""
    ids = list(scores)
    rng.shuffle(ids)
    ids.sort(key=lambda i: scores[i], reverse=True)  # stable: equal scores stay shuffled
    n = min(max(1, int(quantile * len(ids))), len(ids) // 2)
    return ids[:n], (ids[len(ids) - n :] if n else [])


def build_question_pairs(
    task_name: str,
    question_prompt: str,
    drafts_by_qid: Mapping[str, tuple[str, str]],
    q_scores: Mapping[str, float],
    cfg: PairsConfig,
) -> list[dict[str, Any]]:
    """Question-level pairs for one task: chosen from the top quantile, rejected from the bottom.

    `drafts_by_qid`: qid -> (question input, target); `q_scores`: qid -> question score (mean over
    its rationales). Pairs are drawn at random (seeded) among (top, bottom) combinations whose scores
    differ by more than `min_score_gap`; each question is used at most once while unused ones remain,
    then combinations may reuse a question, up to `max_question_pairs_per_task`.
    """
    missing = [qid for qid in q_scores if qid not in drafts_by_qid]
    if missing:
        raise ValueError(f"task {task_name!r}: scored questions without a draft: {missing[:5]}")
    rng = random.Random(f"{cfg.seed}/question/{task_name}")
    top, bottom = split_quantiles(q_scores, cfg.quantile, rng)
    combos = [(c, r) for c in top for r in bottom if q_scores[c] - q_scores[r] > cfg.min_score_gap]
    rng.shuffle(combos)
    picked, used, rest = [], set(), []
    for c, r in combos:
        if c in used or r in used:
            rest.append((c, r))
        else:
            picked.append((c, r))
            used.update((c, r))
    picked = (picked + rest)[: cfg.max_question_pairs_per_task]

    def side(qid: str) -> tuple[str, str, float]:
        text = render_question_block(*drafts_by_qid[qid], cfg.question_block_index)
        text = text[_overlap(question_prompt, text) :]  # the prompt may have opened the block already
        return qid, text, q_scores[qid]

    return [_pair_row("question", task_name, question_prompt, side(c), side(r)) for c, r in picked]


def rationale_choices(
    task_name: str, scored: Sequence[ScoredDraft], seed: int, min_gap: float
) -> dict[str, tuple[ScoredDraft, ScoredDraft] | None]:
    """{qid: (best, worst) rationale on D_pref, or None when best - worst <= min_gap} for one task's
    scored drafts, in their order. Ties are broken by a seeded shuffle per question (one random
    stream per task, "SEED/rationale/TASK"), so no strategy is favoured by its position; prefcheck
    calls this too, so that it checks the very rationales that were paired."""
    by_q: dict[str, list[ScoredDraft]] = defaultdict(list)
    for d in scored:
        by_q[d.qid].append(d)
    rng = random.Random(f"{seed}/rationale/{task_name}")
    out: dict[str, tuple[ScoredDraft, ScoredDraft] | None] = {}
    for qid, drafts in by_q.items():
        rng.shuffle(drafts)
        best = max(drafts, key=lambda d: d.score)
        worst = min(drafts, key=lambda d: d.score)
        out[qid] = None if best.score - worst.score <= min_gap else (best, worst)
    return out


def _rationale_pairs(
    task: Task, scored: Sequence[ScoredDraft], cfg: PairsConfig, example: str = ""
) -> tuple[list[dict[str, Any]], int]:
    """Rationale-level pairs and the number of questions skipped for a tie (or a single rationale)."""
    rows, skipped = [], 0
    for qid, picked in rationale_choices(task.name, scored, cfg.seed, cfg.min_score_gap).items():
        if picked is None:
            skipped += 1
            continue
        best, worst = picked
        prompt = naive_prompt(task.description, best.question, example)
        chosen, rejected = ((f"{qid}/{d.strategy}", d.rationale, d.score) for d in (best, worst))
        rows.append(_pair_row("rationale", task.name, prompt, chosen, rejected))
    return rows, skipped


def build_rationale_pairs(
    task: Task, scored: Sequence[ScoredDraft], cfg: PairsConfig, example: str = ""
) -> list[dict[str, Any]]:
    """Rationale-level pairs for one task: per question, its best rationale (chosen) against its worst
    (rejected), under the naive prompt; questions whose rationale scores tie are skipped."""
    return _rationale_pairs(task, scored, cfg, example)[0]


def build_dpo_pairs(
    tasks: Mapping[str, Task],
    question_prompts: Mapping[str, str],
    scored: Sequence[ScoredDraft],
    cfg: PairsConfig,
    examples: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The mixed DPO dataset over all tasks (question-level rows first, then rationale-level, per
    task), and stats: pairs per level and per task, questions skipped for tied rationale scores.

    `examples` (by task name) is the worked example of the naive prompt, as used in generation.
    `tasks` and `question_prompts` are keyed by task name; every draft's task must be in both.
    Question scores are the mean of each question's rationale scores (as in `question_scores`).
    """
    by_task: dict[str, list[ScoredDraft]] = defaultdict(list)
    for d in scored:
        by_task[d.task].append(d)
    for name in by_task:
        if name not in tasks or name not in question_prompts:
            raise ValueError(f"drafts of task {name!r}, but no task or question prompt of that name given")
    rows: list[dict[str, Any]] = []
    per_task: dict[str, dict[str, int]] = {}
    for name, task_drafts in by_task.items():
        q_scores = question_scores(task_drafts)
        questions = {d.qid: (d.question, d.target) for d in task_drafts}
        q_rows = build_question_pairs(name, question_prompts[name], questions, q_scores, cfg)
        r_rows, ties = _rationale_pairs(tasks[name], task_drafts, cfg, (examples or {}).get(name, ""))
        rows += q_rows + r_rows
        per_task[name] = {
            "questions": len(q_scores),
            "question": len(q_rows),
            "rationale": len(r_rows),
            "rationale_ties_skipped": ties,
        }
    stats = {
        "n_pairs": len(rows),
        "by_level": {lvl: sum(t[lvl] for t in per_task.values()) for lvl in ("question", "rationale")},
        "rationale_ties_skipped": sum(t["rationale_ties_skipped"] for t in per_task.values()),
        "by_task": per_task,
    }
    return rows, stats


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """pairs/dpo.jsonl from score/scores.jsonl: question- and rationale-level pairs of every task."""
    from arte.stages.elicit import question_prompt, teacher_example
    from arte.stages.score import read_scored_drafts

    scored = read_scored_drafts(run_dir)
    by_name = {t.name: t for t in tasks}
    prompts = {t.name: question_prompt(t) for t in tasks}
    examples = {t.name: teacher_example(t, cfg.teacher_worked_example) for t in tasks}
    rows, stats = build_dpo_pairs(by_name, prompts, scored, cfg.pairs, examples)
    if not rows:
        raise UserError(
            "no DPO pair could be built: every draft of a question scored the same and question scores "
            f"did not separate (see {run_dir.path / 'score' / 'scores.jsonl'}). The student may answer "
            "nothing (or everything) correctly on D_pref: use a larger --prefset.k, more drafts, or "
            "another student."
        )
    write_jsonl_atomic(run_dir.stage("pairs") / "dpo.jsonl", rows)
    return stats


def quantile_side(cfg: RunConfig, questions: int) -> int:
    """Questions in the top (and in the bottom) quantile, as `split_quantiles` takes them."""
    return min(max(1, int(cfg.pairs.quantile * questions)), questions // 2)


def question_pairs_at_most(cfg: RunConfig, questions: int) -> int:
    """Question-level pairs of one task at most: every (top, bottom) combination of the quantile split
    (`split_quantiles`: n = min(max(1, int(quantile x questions)), questions // 2) each side), capped
    by --pairs.max_question_pairs_per_task."""
    side = quantile_side(cfg, questions)
    return min(side * side, cfg.pairs.max_question_pairs_per_task)


def rationale_pairs_at_most(cfg: RunConfig, questions: int) -> int:
    """One pair per question (its best against its worst rationale), none with a single strategy."""
    return questions if len(cfg.elicit.strategies) > 1 else 0


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """Question- and rationale-level pairs of one task, at most."""
    m = cfg.elicit.m
    side, cap = quantile_side(cfg, m), cfg.pairs.max_question_pairs_per_task
    return [
        PlanCount.at_most(
            "question-level pairs",
            question_pairs_at_most(cfg, m),
            f"min({side} top x {side} bottom, max_question_pairs_per_task {cap})",
        ),
        PlanCount.at_most("rationale-level pairs", rationale_pairs_at_most(cfg, m), "one per question (m)"),
    ]


STAGE = Stage(
    name="pairs",
    help="Step 3a: build question- and rationale-level DPO pairs from the scores.",
    run=run,
    depends_on=("pairs", "teacher_worked_example"),
    reads=("score/scores.jsonl",),
    writes=("pairs/dpo.jsonl",),
    sections=("pairs",),
    skipped_with_reused_teacher=True,
    in_rounds=True,
    plan_counts=plan_counts,
)
