"""The D_pref consistency check (arte/stages/prefcheck.py): best/worst rationale on D_pref against
the whole validation set, as the pairs stage picks them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arte.pipeline import run_pipeline
from arte.run_config import RunConfig
from arte.stages.prefcheck import check_task, consistency_markdown
from arte.stages.score import ScoredDraft
from common.config import load_config
from common.records import RecordLog
from common.tasks import load_task

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _drafts(qid: str, scores: list[float]) -> list[ScoredDraft]:
    return [
        ScoredDraft("t", qid, f"question {qid}", "True", f"s{i}", f"r{qid}{i}", x)
        for i, x in enumerate(scores)
    ]


def test_agreement_counts_follow_the_pairs_stages_choice():
    by_q = {
        "q0": _drafts("q0", [0.9, 0.5, 0.1]),
        "q1": _drafts("q1", [0.9, 0.5, 0.1]),
        "q2": _drafts("q2", [0.5, 0.5, 0.5]),  # a tie on D_pref: no pair, skipped
        "q3": _drafts("q3", [0.2, 0.6, 0.4]),  # D_pref: best s1, worst s0
    }
    full = {
        "q0": [0.8, 0.8, 0.2],  # s0 ties s1 at the top: agrees; worst agrees
        "q1": [0.3, 0.7, 0.1],  # best is s1: disagrees; worst agrees
        "q3": [0.5, 0.9, 0.3],  # best agrees; worst is s2: disagrees
    }
    seen = []

    def score(drafts):
        seen.extend(d.qid for d in drafts)
        return [full[d.qid][int(d.strategy[1])] for d in drafts]

    task = load_task("boolean_expressions", n_validation=20, n_test=10)
    got = check_task(task, by_q, 10, 0, 0.0, score)
    assert got["questions"] == 3 and got["skipped_no_choice"] == 1 and "q2" not in seen
    assert got["best_agree"] == 2 and got["worst_agree"] == 2
    assert got["best_rate"] == pytest.approx(2 / 3) and got["best_ci"][0] < 2 / 3 < got["best_ci"][1]
    sample = check_task(task, by_q, 1, 0, 0.0, score)
    assert sample["questions"] == 1 and sample["skipped_no_choice"] == 1


def test_stage_agrees_fully_when_d_pref_is_the_whole_validation_set(tmp_path):
    """Reference case: with k = n_validation, D_pref holds every validation question, so the full-set
    choice must be the D_pref choice on every question."""
    overrides = {"run_dir": str(tmp_path / "run"), "prefcheck.questions": 3, "prefset.k": 12}
    cfg = load_config(RunConfig, SMOKE, overrides)
    run_pipeline(cfg, only=["elicit", "prefset", "score", "prefcheck"])
    report = json.loads((tmp_path / "run" / "prefcheck" / "consistency.json").read_text())
    assert report["best_rate"] == report["worst_rate"] == 1.0
    assert set(report["tasks"]) == {"boolean_expressions", "multistep_arithmetic"}
    for t in report["tasks"].values():  # 8 questions each; those tied on D_pref are not sampled
        assert t["questions"] == min(3, 8 - t["skipped_no_choice"]) > 0
    n = sum(t["questions"] for t in report["tasks"].values())
    assert (
        report["questions"] == n
        and len(RecordLog(tmp_path / "run" / "prefcheck" / "cache.jsonl").read()) <= n * 3
    )
    text = "\n".join(consistency_markdown(report))
    assert f"| all | {n}/{n} = 100% [" in text and "paper: 93.3% / 86.7%" in text
    assert consistency_markdown({"skipped": "prefcheck.questions is 0"}) == []


def test_prefcheck_checks_the_rationales_that_pairs_paired_under_ties():
    """D_pref ties best with best and worst with worst: pairs breaks them with a seeded shuffle, and
    prefcheck must check those same rationales (fails if prefcheck picks the first of equals)."""
    from arte.stages.pairs import PairsConfig, build_rationale_pairs

    task = load_task("boolean_expressions", n_validation=20, n_test=10)
    scored = [d for i in range(8) for d in _drafts(f"q{i}", [0.9, 0.9, 0.1, 0.1])]
    by_q = {f"q{i}": [d for d in scored if d.qid == f"q{i}"] for i in range(8)}
    for seed in (0, 1, 2):
        pairs = build_rationale_pairs(task, scored, PairsConfig(seed=seed))
        chosen = {r["chosen_id"].split("/")[0]: r["chosen_id"].split("/")[1] for r in pairs}
        rejected = {r["rejected_id"].split("/")[0]: r["rejected_id"].split("/")[1] for r in pairs}
        assert set(chosen.values()) == {"s0", "s1"}  # the shuffle does pick both tied rationales

        def score(drafts, chosen=chosen, rejected=rejected):
            return [
                1.0 if chosen[d.qid] == d.strategy else 0.0 if rejected[d.qid] == d.strategy else 0.5
                for d in drafts
            ]

        got = check_task(task, by_q, 8, 0, 0.0, score, pair_seed=seed)
        assert got["questions"] == 8 and got["best_agree"] == 8 and got["worst_agree"] == 8
