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
