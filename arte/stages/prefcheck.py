"""Is D_pref a faithful stand-in for the validation set? (the paper's Appendix E; off by default)

The rationale-level DPO pairs take, per question, the rationale that scores best on D_pref (chosen)
and the one that scores worst (rejected). Here, for a sample of questions per task, every rationale
is scored again on the task's whole validation set (the pool D_pref was selected from), and the
check counts how often the D_pref choice is also a best (a worst) one there; a tie on the full set
counts as agreement. The best and worst are picked exactly as pairs picks them, seeded tie-break
included (`arte.stages.pairs.rationale_choices`). Questions the pairs stage skips (best - worst <=
pairs.min_score_gap on D_pref) are skipped here too, and counted. Paper: 93.3% (best) and 86.7% (worst).

Cost: questions x n rationales x |validation| student generations per task, hence off by default
(`prefcheck.questions: 0`). Scores are cached by content hash (prefcheck/cache.jsonl), like score's.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arte.backends import load_backend
from arte.run_dir import RunDir
from arte.stages.stage import PlanCount, Stage, TaskSize, student_if_local
from common.config import opt
from common.records import RecordLog, write_json_atomic

if TYPE_CHECKING:
    from arte.run_config import RunConfig
    from arte.stages.score import ScoredDraft
    from common.tasks import Task


PAPER = {"best": 0.933, "worst": 0.867}
"""The paper's agreement rates (Appendix E)."""


@dataclass
class PrefcheckConfig:
    """The D_pref consistency check (paper, Appendix E). Off by default: it scores on the full set."""

    questions: int = opt(
        0,
        "Questions per task whose rationales are scored on the whole validation set too (each costs "
        "n x n_validation student generations); 0 = off.",
    )

    def __post_init__(self) -> None:
        if self.questions < 0:
            raise ValueError(f"--questions must be >= 0, got {self.questions}")


def agreement(picked: tuple[ScoredDraft, ScoredDraft], on_full: Mapping[str, float]) -> tuple[bool, bool]:
    """Whether the D_pref best (worst) rationale of one question, as the pairs stage picked it
    (`arte.stages.pairs.rationale_choices`), is a best (worst) one on the full set (`on_full`:
    strategy -> score)."""
    best, worst = picked
    top, bottom = max(on_full.values()), min(on_full.values())
    return on_full[best.strategy] == top, on_full[worst.strategy] == bottom


def _rates(best: int, worst: int, n: int) -> dict[str, Any]:
    from arte.stages.evaluate.format_report import wilson

    return {
        "questions": n,
        "best_agree": best,
        "worst_agree": worst,
        "best_rate": best / n if n else None,
        "worst_rate": worst / n if n else None,
        "best_ci": list(wilson(best, n)),
        "worst_ci": list(wilson(worst, n)),
    }


def check_task(
    task: Task,
    by_q: Mapping[str, list[ScoredDraft]],
    n: int,
    seed: int,
    gap: float,
    score,
    pair_seed: int = 0,
) -> dict:
    """Agreement on `n` sampled questions of one task; `by_q`: qid -> its scored drafts (D_pref), in
    score/scores.jsonl's order; `score(drafts)` -> their scores on the full validation set. The best
    and worst rationale are the pairs stage's (`rationale_choices` with `pair_seed`, its tie-break)."""
    from arte.stages.pairs import rationale_choices

    flat = [d for ds in by_q.values() for d in ds]
    picks = rationale_choices(task.name, flat, pair_seed, gap)
    eligible = sorted(q for q, p in picks.items() if p is not None)
    picked = sorted(random.Random(f"prefcheck:{seed}:{task.name}").sample(eligible, min(n, len(eligible))))
    drafts = [d for q in picked for d in by_q[q]]
    full: dict[str, dict[str, float]] = defaultdict(dict)
    for d, v in zip(drafts, score(drafts), strict=True):
        full[d.qid][d.strategy] = v
    agree = [agreement(picks[q], full[q]) for q in picked]
    rates = _rates(sum(a[0] for a in agree), sum(a[1] for a in agree), len(agree))
    return {**rates, "skipped_no_choice": len(by_q) - len(eligible)}


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """Score the sampled questions' rationales on each task's validation set; write
    prefcheck/consistency.json (per task and overall agreement, with Wilson 95% intervals)."""
    from arte.stages.score import read_scored_drafts, score_drafts, student_id

    out, n = run_dir.stage("prefcheck"), cfg.prefcheck.questions
    if n == 0:
        write_json_atomic(out / "consistency.json", {"skipped": "prefcheck.questions is 0"})
        return {"skipped": True}
    by_task: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for d in read_scored_drafts(run_dir):
        by_task[d.task][d.qid].append(d)
    cache = RecordLog(out / "cache.jsonl", resume=True)
    report: dict[str, Any] = {"questions_per_task": n, "paper": PAPER, "tasks": {}}
    student = load_backend(cfg.student)
    try:
        for task in tasks:
            kw = {
                "student_id": student_id(cfg.student),
                "cache": cache,
                "max_new_tokens": cfg.score_max_new_tokens,
            }

            def score(drafts, task=task, kw=kw):
                return score_drafts(
                    task, drafts, task.validation, student, prompts_per_call=cfg.student.call_size, **kw
                )

            got = check_task(
                task, by_task[task.name], n, cfg.seed, cfg.pairs.min_score_gap, score, cfg.pairs.seed
            )
            report["tasks"][task.name] = got
    finally:
        student.close()
    per_task = report["tasks"].values()
    totals = [sum(r[k] for r in per_task) for k in ("best_agree", "worst_agree", "questions")]
    report.update(_rates(*totals), validation=cfg.n_validation)
    write_json_atomic(out / "consistency.json", report)
    return {k: report[k] for k in ("questions", "best_agree", "worst_agree")}


def consistency_markdown(report: Mapping[str, Any] | None) -> list[str]:
    """The summary's lines on the check (none when it did not run)."""
    if not report or report.get("skipped"):
        return []

    def pct(r: Mapping[str, Any], side: str) -> str:
        if r["questions"] == 0:
            return "-"
        low, high = r[f"{side}_ci"]
        share = f"{r[f'{side}_agree']}/{r['questions']} = {100 * r[f'{side}_rate']:.0f}%"
        return f"{share} [{100 * low:.0f}, {100 * high:.0f}]"

    out = [
        "## Is D_pref a faithful stand-in for the validation set?",
        "",
        f"The best and the worst rationale on D_pref against those on all {report['validation']} validation "
        f"questions (Wilson 95% intervals; paper: {100 * PAPER['best']:.1f}% / {100 * PAPER['worst']:.1f}%).",
        "",
        "| task | best agrees | worst agrees | questions without a D_pref choice |",
        "|---|---|---|---|",
    ]
    for task, r in report["tasks"].items():
        out.append(f"| {task} | {pct(r, 'best')} | {pct(r, 'worst')} | {r['skipped_no_choice']} |")
    out += [f"| all | {pct(report, 'best')} | {pct(report, 'worst')} | |", ""]
    return out


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """Each checked question's n rationales, as demonstrations on the whole validation set."""
    checked, n = cfg.prefcheck.questions, len(cfg.elicit.strategies)
    return [
        PlanCount.exact(
            "student generations",
            checked * n * size.validation,
            f"questions {checked} x n {n} x validation {size.validation}",
        )
    ]


STAGE = Stage(
    name="prefcheck",
    help="D_pref consistency (optional): best/worst rationale on D_pref vs on the full validation set.",
    run=run,
    depends_on=("seed", "student", "score_max_new_tokens", "pairs.min_score_gap", "pairs.seed", "prefcheck"),
    reads=("prefset", "score/scores.jsonl"),
    writes=("prefcheck/consistency.json", "prefcheck/cache.jsonl"),
    sections=("student", "prefcheck"),
    models=student_if_local,
    switched_off=lambda cfg: cfg.prefcheck.questions == 0,
    skipped_with_reused_teacher=True,
    in_rounds=True,
    keep_on_redo=("cache.jsonl",),
    plan_counts=plan_counts,
)
