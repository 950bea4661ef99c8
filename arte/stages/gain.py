"""Preference gain: did DPO move the teacher towards what the student prefers (the direct check)?

A sample of the aligned teacher's examples (generate/arte.jsonl) is scored exactly as elicit's drafts
were (`arte.stages.score`: each example the single in-context demonstration, the student's accuracy
on the task's D_pref its score), and compared with
- the original teacher's drafts (score/scores.jsonl, all of them: what DPO was trained to improve on);
- the original teacher's examples from the same generate procedure (generate/original.jsonl, a sample
  of the same size): like for like, filters and the naive prompt included.

Same D_pref, same student: every score is keyed by `draft_key` (student, decode budget, every rendered prompt,
D_pref). The drafts' scores are read back from score/cache.jsonl under the key that the current
D_pref and student give; a draft scored on another D_pref (prefset redone after score, another
student) has no such key, and the stage stops instead of comparing across the two.

Interval, paired by task: the gain is the mean over tasks of (mean aligned score - mean reference
score) within each task, so a task's difficulty enters both sides alike. Each bootstrap resample
redraws, within every task, the aligned questions and the reference ones (independently, with
replacement, each set its own size; a draft question's n rationales are drawn together, as one
cluster, since they share the question), and recomputes the per-task gains and their mean; the
percentile interval of those is reported. D_pref is held fixed: the interval is over which examples
the teachers wrote, given this D_pref.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arte.backends import load_backend
from arte.run_dir import RunDir
from arte.stages.elicit import Draft
from arte.stages.stage import PlanCount, Stage, TaskSize, student_if_local
from common.config import opt
from common.errors import UserError
from common.records import RecordLog, read_json, write_json_atomic, write_jsonl_atomic
from common.tasks.base import Example, Task

if TYPE_CHECKING:
    import numpy as np

    from arte.run_config import RunConfig


SETS = ("arte", "original")


@dataclass
class GainConfig:
    """The preference-gain check (not in the paper): the aligned teacher's examples scored as drafts."""

    n_examples: int = opt(
        8,
        "Examples per task and teacher to score on D_pref (each costs k student generations); 0 = skip.",
    )
    n_boot: int = opt(2000, "Bootstrap resamples for the gain's interval.")
    held_out: bool = opt(
        False,
        "Measure the gain on a held-out half of D_pref: each task's D_pref is split in two by a seeded "
        "shuffle (--seed); draft scores, hence the DPO pairs, use the first half only, and the gain the "
        "second. False: pairs and gain both use all of D_pref (the gain is then in-sample).",
    )

    def __post_init__(self) -> None:
        if self.n_examples < 0:
            raise ValueError(f"--n_examples must be >= 0, got {self.n_examples}")
        if self.n_boot < 1:
            raise ValueError(f"--n_boot must be >= 1, got {self.n_boot}")


def pref_sha256(pref: Sequence[Example]) -> str:
    """What identifies a D_pref: its questions and targets, in order."""
    payload = json.dumps([(ex.input, ex.target) for ex in pref], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _cluster_means(strata: Sequence[Sequence[np.ndarray]], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_strata): each stratum's mean score under `n_boot` resamplings of its clusters (a
    question's scores: all of a draft question's rationales) with replacement; the mean is over every
    score of the drawn clusters. With one score per cluster this is `stats._resampled_means`, same
    random stream (seed, i)."""
    import numpy as np

    out = np.empty((n_boot, len(strata)))
    for i, clusters in enumerate(strata):
        sums = np.array([c.sum() for c in clusters], dtype=float)
        sizes = np.array([len(c) for c in clusters], dtype=float)
        rng = np.random.default_rng([seed, i])
        chunk = max(1, 4_000_000 // len(clusters))
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            idx = rng.integers(0, len(clusters), size=(stop - start, len(clusters)))
            out[start:stop, i] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    return out


def _clusters(records: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """The scores of `records` grouped by question ("qid"; a record without one is its own)."""
    import numpy as np

    by_q: dict[Any, list[float]] = {}
    for i, r in enumerate(records):
        by_q.setdefault(r.get("qid", ("record", i)), []).append(float(r["score"]))
    return [np.array(v) for v in by_q.values()]


def pref_halves(k: int, seed: int, task: str) -> tuple[list[int], list[int]]:
    """(fit, held-out) positions in a task's D_pref of k questions: a seeded shuffle, the first
    ceil(k / 2) for draft scores and pairs, the rest for the gain; each half in D_pref order."""
    order = list(range(k))
    random.Random(f"{seed}/pref-halves/{task}").shuffle(order)
    cut = (k + 1) // 2
    return sorted(order[:cut]), sorted(order[cut:])


def gain_positions(cfg: RunConfig, task: str, k: int) -> list[int] | None:
    """The D_pref positions the gain is measured on: the held-out half, or None (all of D_pref)."""
    return pref_halves(k, cfg.seed, task)[1] if cfg.gain.held_out else None


def score_positions(cfg: RunConfig, task: str, k: int) -> list[int] | None:
    """The D_pref positions draft scores (and so pairs) use: the fit half, or None (all)."""
    return pref_halves(k, cfg.seed, task)[0] if cfg.gain.held_out else None


def preference_gain(
    aligned: Sequence[Mapping[str, Any]],
    reference: Sequence[Mapping[str, Any]],
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Mean score of `aligned` minus that of `reference`, paired by task (module doc), with its
    percentile-bootstrap interval. Records: {"task", "score", "pref", "student"}; a task whose
    records were scored on different D_pref or by different students is refused (UserError).
    Returns {"gain", "low", "high", "tasks": {task: {aligned, reference, gain, low, high, n_aligned,
    n_reference, pref}}}; tasks without records on both sides are left out."""
    import numpy as np

    from arte.stages.evaluate.stats import _interval

    tasks = [t for t in dict.fromkeys(r["task"] for r in aligned) if any(r["task"] == t for r in reference)]
    if not tasks:
        raise UserError("no task has scored examples on both sides: nothing to compare")
    a, b, out = [], [], {}
    for t in tasks:
        mine = [r for r in aligned if r["task"] == t] + [r for r in reference if r["task"] == t]
        for field in ("pref", "student"):
            seen = sorted({str(r[field]) for r in mine})
            if len(seen) > 1:
                what = "D_pref" if field == "pref" else "student"
                raise UserError(
                    f"task {t}: the scores compared were made on different {what}s ({', '.join(seen)}): "
                    "a gain is only defined on the same D_pref and student; re-score both sides"
                )
        a.append(_clusters([r for r in aligned if r["task"] == t]))
        b.append(_clusters([r for r in reference if r["task"] == t]))
        n_a, n_b = (sum(len(c) for c in x[-1]) for x in (a, b))
        out[t] = {"pref": mine[0]["pref"], "n_aligned": n_a, "n_reference": n_b}
        out[t] |= {"questions_aligned": len(a[-1]), "questions_reference": len(b[-1])}
    boot = _cluster_means(a, n_boot, seed) - _cluster_means(b, n_boot, seed + 1)
    for j, t in enumerate(tasks):
        low, high = _interval(boot[:, j], ci)
        mean_a, mean_b = (float(np.concatenate(x[j]).mean()) for x in (a, b))
        out[t].update(aligned=mean_a, reference=mean_b, low=low, high=high)
        out[t]["gain"] = out[t]["aligned"] - out[t]["reference"]
    low, high = _interval(boot.mean(axis=1), ci)
    gain = float(np.mean([out[t]["gain"] for t in tasks]))
    return {"gain": gain, "low": low, "high": high, "ci": ci, "n_boot": n_boot, "tasks": out}


def example_draft(row: Mapping[str, Any], index: int) -> Draft:
    """A generate row (question, naive-prompt rationale) as a draft to score."""
    qid = row.get("qid") or f"{row['task']}-gen{index:04d}"
    return Draft(row["task"], qid, row["question"], row["target"], "naive", row["completion"].strip())


def _sample(rows: Sequence[dict], n: int, seed: str) -> list[tuple[int, dict]]:
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [(i, rows[i]) for i in picked]


def draft_records(
    run_dir: RunDir,
    task: Task,
    pref: Sequence[Example],
    sid: str,
    budget: int,
    positions: Sequence[int] | None = None,
) -> list[dict]:
    """The original teacher's drafts of `task` with their scores on this D_pref by this student (on
    its `positions` only, when given), read from score/cache.jsonl (UserError when a draft was scored
    on another D_pref or student)."""
    from arte.stages.score import cached_score, draft_key, read_scored_drafts

    cache_path = run_dir.path / "score" / "cache.jsonl"
    cached = {r["key"]: r for r in RecordLog(cache_path)} if cache_path.exists() else {}
    used = pref if positions is None else [pref[i] for i in positions]
    out, tag = [], pref_sha256(used)
    for d in read_scored_drafts(run_dir):
        if d.task != task.name:
            continue
        draft = Draft(**{f.name: getattr(d, f.name) for f in dataclasses.fields(Draft)})
        key = draft_key(sid, task.description, draft, pref, budget)
        if key not in cached:
            raise UserError(
                f"{cache_path}: draft {d.qid} ({d.strategy}) of {task.name} was not scored on the current "
                f"D_pref (prefset/{task.name}.json) by student {sid}: the drafts were scored on another "
                "D_pref or student, so no gain can be computed; re-run `arte score` (or `arte run "
                "--on_config_change redo`)"
            )
        record = {
            "task": task.name,
            "set": "drafts",
            "qid": d.qid,
            "strategy": d.strategy,
            "score": cached_score(cached[key], positions),
        }
        out.append({**record, "pref": tag, "student": sid})
    return out


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """Score `gain.n_examples` examples per task of each teacher's set on D_pref (gain/cache.jsonl,
    resumable), write gain/scores.jsonl (every compared score) and gain/gain.json (both gains)."""
    from arte.stages.score import score_drafts, student_id

    out, g = run_dir.stage("gain"), cfg.gain
    if g.n_examples == 0:
        write_json_atomic(out / "gain.json", {"skipped": "gain.n_examples is 0"})
        return {"skipped": True}
    sid, budget = student_id(cfg.student), cfg.score_max_new_tokens
    rows = {s: RecordLog(run_dir.path / "generate" / f"{s}.jsonl").read() for s in SETS}
    cache, scores = RecordLog(out / "cache.jsonl", resume=True), []
    student = load_backend(cfg.student)
    try:
        for task in tasks:
            indices = read_json(run_dir.path / "prefset" / f"{task.name}.json")["indices"]
            pref = [task.validation[i] for i in indices]
            positions = gain_positions(cfg, task.name, len(pref))
            scores += draft_records(run_dir, task, pref, sid, budget, positions)
            used = pref if positions is None else [pref[i] for i in positions]
            for s in SETS:
                mine = [r for r in rows[s] if r["task"] == task.name]
                picked = _sample(mine, g.n_examples, f"gain:{cfg.seed}:{task.name}:{s}")
                drafts = [example_draft(r, i) for i, r in picked]
                values = score_drafts(
                    task,
                    drafts,
                    pref,
                    student,
                    student_id=sid,
                    cache=cache,
                    max_new_tokens=budget,
                    prompts_per_call=cfg.student.call_size,
                    positions=positions,
                )
                tag = pref_sha256(used)
                scores += [
                    {"task": task.name, "set": s, "qid": d.qid, "score": v, "pref": tag, "student": sid}
                    for d, v in zip(drafts, values, strict=True)
                ]
    finally:
        student.close()
    write_jsonl_atomic(out / "scores.jsonl", scores)
    report = gain_report(scores, g.n_boot, cfg.seed)
    report["identical_examples"] = identical_examples(rows["arte"], rows["original"], tasks)
    report["d_pref"] = d_pref_statement(cfg, tasks, run_dir)
    write_json_atomic(out / "gain.json", report)
    return {
        name: {key: round(v[key], 4) for key in ("gain", "low", "high")}
        for name, v in report.items()
        if isinstance(v, dict) and "gain" in v
    }


def d_pref_statement(cfg: RunConfig, tasks: list[Task], run_dir: RunDir) -> dict[str, Any]:
    """gain.json's "d_pref": which D_pref questions the gain was measured on, for the summary."""
    k = {t.name: len(read_json(run_dir.path / "prefset" / f"{t.name}.json")["indices"]) for t in tasks}
    if not cfg.gain.held_out:
        return {"held_out": False, "questions_per_task": k}
    held = {t: len(pref_halves(n, cfg.seed, t)[1]) for t, n in k.items()}
    return {"held_out": True, "questions_per_task": held, "split_seed": cfg.seed}


def identical_examples(arte: Sequence[dict], original: Sequence[dict], tasks: list[Task]) -> dict:
    """Per task: the sets' sizes and how many examples (question and rationale) both teachers wrote
    identically; many mean that alignment barely changed what the teacher writes."""
    out = {}
    for task in tasks:
        a, o = (
            {(r["question"], r["completion"]) for r in s if r["task"] == task.name} for s in (arte, original)
        )
        out[task.name] = {"arte": len(a), "original": len(o), "identical": len(a & o)}
    return out


def gain_report(scores: Sequence[Mapping[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """Both gains from gain/scores.jsonl's records: vs the drafts and vs the original teacher's examples."""
    by_set = {s: [r for r in scores if r["set"] == s] for s in ("arte", "original", "drafts")}
    report: dict[str, Any] = {"student": next((r["student"] for r in scores), None)}
    for name, ref in (("vs_drafts", "drafts"), ("vs_original_examples", "original")):
        common = {r["task"] for r in by_set["arte"]} & {r["task"] for r in by_set[ref]}
        if common:  # else (no task with examples in both sets) nothing to compare
            report[name] = preference_gain(by_set["arte"], by_set[ref], n_boot, seed)
    return report


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """A sample of both teachers' examples, each scored on D_pref's k questions."""
    n, k = cfg.gain.n_examples, cfg.prefset.k
    return [PlanCount.exact("student generations", 2 * n * k, f"2 sets x n_examples {n} x k {k}")]


STAGE = Stage(
    name="gain",
    help="Preference gain: the aligned teacher's examples vs the original teacher's, scored on the same "
    "D_pref.",
    run=run,
    depends_on=("seed", "student", "score_max_new_tokens", "gain"),
    reads=("prefset", "score", "generate/arte.jsonl", "generate/original.jsonl"),
    writes=("gain/scores.jsonl", "gain/gain.json", "gain/cache.jsonl"),
    sections=("student", "gain"),
    models=student_if_local,
    switched_off=lambda cfg: cfg.gain.n_examples == 0,
    skipped_with_reused_teacher=True,
    in_rounds=True,
    keep_on_redo=("cache.jsonl",),
    plan_counts=plan_counts,
)
