"""The preference gain (arte/stages/gain.py) and the summary's alignment section
(arte/stages/alignment_report.py): same D_pref and student or refused, intervals, DPO rewards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arte.pipeline import run_pipeline
from arte.run_config import RunConfig, load_run_tasks
from arte.run_dir import RunDir
from arte.stages import gain
from arte.stages.align.alignment_report import alignment_markdown, dpo_rewards
from arte.stages.gain import preference_gain
from common.config import load_config
from common.errors import UserError
from common.records import RecordLog, write_jsonl_atomic

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _records(task: str, scores, pref: str = "p", student: str = "s") -> list[dict]:
    return [{"task": task, "score": float(x), "pref": pref, "student": student} for x in scores]


def test_gain_is_paired_by_task_and_its_interval_matches_the_normal_one():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.4, 1.0, 400)  # task "easy": aligned mean 0.70
    b = rng.uniform(0.2, 0.8, 300)  # reference mean 0.50
    hard_a, hard_b = np.full(50, 0.1), np.full(80, 0.1)  # task "hard": no gain, no spread
    res = preference_gain(
        _records("easy", a) + _records("hard", hard_a),
        _records("easy", b) + _records("hard", hard_b),
        n_boot=4000,
    )
    easy = res["tasks"]["easy"]
    assert easy["gain"] == pytest.approx(a.mean() - b.mean()) and easy["n_aligned"] == 400
    half = 1.96 * np.sqrt(a.var() / len(a) + b.var() / len(b))  # normal approximation of the same interval
    assert easy["high"] - easy["low"] == pytest.approx(2 * half, rel=0.1)
    assert easy["low"] < easy["gain"] < easy["high"]
    hard = res["tasks"]["hard"]
    assert [hard["gain"], hard["low"], hard["high"]] == pytest.approx([0, 0, 0], abs=1e-12)
    # macro: the mean of the tasks' gains (a task's difficulty cancels), interval half as wide as easy's
    assert res["gain"] == pytest.approx(easy["gain"] / 2)
    assert res["low"] < res["gain"] < res["high"]
    assert res["high"] - res["low"] == pytest.approx((easy["high"] - easy["low"]) / 2, rel=0.05)


def test_gain_on_different_d_pref_or_students_is_refused():
    with pytest.raises(UserError, match="different D_prefs"):
        preference_gain(_records("t", [1, 0], pref="p1"), _records("t", [0, 0], pref="p2"), n_boot=50)
    with pytest.raises(UserError, match="different students"):
        preference_gain(_records("t", [1, 0]), _records("t", [0, 0], student="other"), n_boot=50)
    with pytest.raises(UserError, match="no task has scored examples on both sides"):
        preference_gain(_records("t", [1]), _records("u", [0]), n_boot=50)


def _scored_run(tmp_path: Path, **overrides) -> tuple[RunConfig, RunDir, list]:
    """elicit, prefset and score of the smoke setup (fake engines), then hand-made training sets:
    the aligned teacher's = the best-scoring drafts, the original's = the worst."""
    overrides = {"run_dir": str(tmp_path / "run"), "gain.n_examples": 4, **overrides}
    cfg = load_config(RunConfig, SMOKE, overrides)
    run_pipeline(cfg, only=["elicit", "prefset", "score"])
    run = RunDir(cfg.run_dir)
    scored = RecordLog(run.path / "score" / "scores.jsonl").read()
    for name, best in (("arte", True), ("original", False)):
        rows = []
        for task in cfg.tasks:
            mine = sorted((d for d in scored if d["task"] == task), key=lambda d: d["score"], reverse=best)
            rows += [
                {
                    "task": task,
                    "question": d["question"],
                    "target": d["target"],
                    "completion": " " + d["rationale"],
                }
                for d in mine[:4]
            ]
        write_jsonl_atomic(run.path / "generate" / f"{name}.jsonl", rows)
    return cfg, run, load_run_tasks(cfg)


def test_gain_stage_scores_both_sets_on_the_drafts_d_pref_and_refuses_another(tmp_path):
    cfg, run, tasks = _scored_run(tmp_path)
    scored = RecordLog(run.path / "score" / "scores.jsonl").read()
    counts = gain.run(cfg, run, tasks)
    report = json.loads((run.path / "gain" / "gain.json").read_text())
    assert counts["vs_original_examples"]["gain"] > 0  # best drafts vs worst drafts, rescored
    for task in cfg.tasks:
        mine = sorted((d["score"] for d in scored if d["task"] == task), reverse=True)
        t = report["vs_original_examples"]["tasks"][task]
        assert t["aligned"] == pytest.approx(np.mean(mine[:4])) and t["reference"] == pytest.approx(
            np.mean(mine[-4:])
        )
        drafts = report["vs_drafts"]["tasks"][task]
        assert drafts["n_reference"] == len(mine) and drafts["reference"] == pytest.approx(np.mean(mine))
    sets = {
        s: {
            (r["question"], r["completion"])
            for r in RecordLog(run.path / "generate" / f"{s}.jsonl")
            if r["task"] == "boolean_expressions"
        }
        for s in ("arte", "original")
    }
    same = report["identical_examples"]["boolean_expressions"]  # best vs worst drafts: none shared
    assert same == {"arte": len(sets["arte"]), "original": len(sets["original"]), "identical": 0}
    rows = RecordLog(run.path / "gain" / "scores.jsonl").read()
    assert {r["set"] for r in rows} == {"arte", "original", "drafts"} and len({r["pref"] for r in rows}) == 2
    cached = len(RecordLog(run.path / "gain" / "cache.jsonl").read())
    gain.run(cfg, run, tasks)  # a re-run scores nothing again
    assert len(RecordLog(run.path / "gain" / "cache.jsonl").read()) == cached

    path = run.path / "prefset" / "boolean_expressions.json"  # D_pref changed after the drafts were scored
    pref = json.loads(path.read_text())
    pref["indices"] = sorted(set(range(cfg.n_validation)) - set(pref["indices"]))[: len(pref["indices"])]
    path.write_text(json.dumps(pref))
    with pytest.raises(UserError, match="was not scored on the current D_pref"):
        gain.run(cfg, run, tasks)


def test_gain_can_be_skipped(tmp_path):
    cfg = load_config(RunConfig, SMOKE, {"run_dir": str(tmp_path / "run"), "gain.n_examples": 0})
    run = RunDir(cfg.run_dir)
    run.create()
    assert gain.run(cfg, run, []) == {"skipped": True}
    lines = alignment_markdown({"preference_gain": json.loads((run.path / "gain" / "gain.json").read_text())})
    assert "- preference gain: not measured (gain.n_examples is 0)" in lines
    with pytest.raises(UserError, match="--gain.n_examples must be >= 0"):
        load_config(RunConfig, SMOKE, {"gain.n_examples": -1})


def test_dpo_reward_statistics_and_their_table():
    log = [
        {"step": i, "rewards/margins": 0.1 * i, "rewards/accuracies": min(1.0, 0.25 * i)} for i in range(1, 9)
    ]
    stats = {
        "steps": 8,
        "pairs": 30,
        "config": {"beta": 0.1},
        "rewards_margins_first": 0.1,
        "rewards_margins_last": 0.8,
        "rewards_margins_mean": 0.45,
        "rewards_accuracies_first": 0.25,
        "rewards_accuracies_last": 1.0,
        "rewards_accuracies_mean": 0.78125,
        "log": log + [{"step": 8, "train_runtime": 3.0}],
    }
    dpo = dpo_rewards(stats)
    assert dpo["margins_late"] == pytest.approx(0.75) and dpo["accuracies_late"] == 1.0  # steps 7 and 8
    assert dpo["pairs"] == 30 and dpo["beta"] == 0.1
    text = "\n".join(alignment_markdown({"dpo": dpo}))
    assert "DPO on the teacher (30 pairs, 8 steps, beta 0.1)" in text
    assert "| accuracy (chosen > rejected) | 0.25 | 1.00 | 0.78 | 1.00 |" in text
    assert "| margin | 0.100 | 0.800 | 0.450 | 0.750 |" in text


def test_identical_examples_of_the_two_teachers_are_counted_per_task():
    from common.tasks import load_task

    def row(task, q, c):
        return {"task": task, "question": q, "completion": c}

    arte = [
        row("boolean_expressions", "q1", " a"),
        row("boolean_expressions", "q2", " b"),
        row("navigate", "q1", " a"),
    ]
    original = [
        row("boolean_expressions", "q1", " a"),
        row("boolean_expressions", "q2", " other"),
        row("navigate", "q9", " a"),
    ]
    tasks = [load_task(n, n_validation=20, n_test=10) for n in ("boolean_expressions", "navigate")]
    got = gain.identical_examples(arte, original, tasks)
    assert got == {
        "boolean_expressions": {
            "arte": 2,
            "original": 2,
            "identical": 1,
        },  # same question, other rationale: not
        "navigate": {"arte": 1, "original": 1, "identical": 0},
    }


def test_the_bootstrap_draws_a_questions_rationales_together():
    """Issue 28 (8): four rationales of one question are not four independent scores. Scores equal
    within each question: the interval must be as wide as with one score per question (drawing the
    rationales independently would make it about half as wide)."""
    rng = np.random.default_rng(3)
    per_q = rng.uniform(0.0, 1.0, 60)
    aligned = _records("t", np.full(40, 0.5))
    one = preference_gain(aligned, _records("t", per_q), n_boot=4000)
    four = [
        {"task": "t", "qid": f"q{i}", "score": float(x), "pref": "p", "student": "s"}
        for i, x in enumerate(per_q)
    ]
    res = preference_gain(aligned, [r for r in four for _ in range(4)], n_boot=4000)
    width = res["tasks"]["t"]["high"] - res["tasks"]["t"]["low"]
    assert width == pytest.approx(one["tasks"]["t"]["high"] - one["tasks"]["t"]["low"], rel=0.1)
    assert res["tasks"]["t"]["gain"] == pytest.approx(one["tasks"]["t"]["gain"])
    assert res["tasks"]["t"]["n_reference"] == 240 and res["tasks"]["t"]["questions_reference"] == 60


def test_pref_halves_are_a_seeded_partition():
    from arte.stages.gain import pref_halves

    fit, held = pref_halves(7, 0, "t")
    assert sorted(fit + held) == list(range(7)) and len(fit) == 4 and len(held) == 3
    assert pref_halves(7, 0, "t") == (fit, held) and pref_halves(40, 1, "t") != pref_halves(40, 2, "t")


def test_a_held_out_gain_scores_pairs_and_gain_on_disjoint_halves(tmp_path):
    """Issue 28 (8): with --gain.held_out, draft scores (hence pairs) use one seeded half of D_pref
    and the gain the other; the summary says which. Fails if either side uses all of D_pref."""
    from arte.stages.elicit import Draft
    from arte.stages.gain import pref_halves
    from arte.stages.score import cached_score, draft_key, read_scored_drafts, student_id

    cfg, run, tasks = _scored_run(tmp_path, **{"gain.held_out": True})
    k, sid = cfg.prefset.k, student_id(cfg.student)
    cache = {r["key"]: r for r in RecordLog(run.path / "score" / "cache.jsonl")}
    on_held = {}  # (qid, strategy) -> the draft's score on the held-out half
    for task in tasks:
        fit, held = pref_halves(k, cfg.seed, task.name)
        indices = json.loads((run.path / "prefset" / f"{task.name}.json").read_text())["indices"]
        pref = [task.validation[i] for i in indices]
        for d in (d for d in read_scored_drafts(run) if d.task == task.name):
            fields = ("task", "qid", "question", "target", "strategy", "rationale")
            draft = Draft(**{f: getattr(d, f) for f in fields})
            record = cache[draft_key(sid, task.description, draft, pref, cfg.score_max_new_tokens)]
            assert d.score == cached_score(record, fit)  # pairs see the fit half only
            on_held[(d.qid, d.strategy)] = cached_score(record, held)
    gain.run(cfg, run, tasks)
    report = json.loads((run.path / "gain" / "gain.json").read_text())
    half = {t: k // 2 for t in cfg.tasks}
    assert report["d_pref"] == {"held_out": True, "questions_per_task": half, "split_seed": 0}
    rows = [r for r in RecordLog(run.path / "gain" / "scores.jsonl") if r["set"] == "drafts"]
    assert rows and all(r["score"] == on_held[(r["qid"], r["strategy"])] for r in rows)
    text = "\n".join(alignment_markdown({"preference_gain": report}))
    assert "Held-out gain: measured on the half of each task's D_pref" in text and "In-sample" not in text
    report["d_pref"] = {"held_out": False, "questions_per_task": {"t": k}}
    assert "In-sample gain" in "\n".join(alignment_markdown({"preference_gain": report}))
