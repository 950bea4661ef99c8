"""`arte bench` on fakes that answer a task with known accuracies (edge_bench.runtimes.fake,
`accuracy`): the paired figures recomputed from answers.jsonl by question, the export verification
carried over from manifest.json beside the bench's own fidelity, and --n_questions auto extending
the questions until the decision is made, or stopping at the time budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_fakes import ANSWERING, run_cli, write_bracket_task, write_fakes

from edge_bench.report import check_report

QUICK_FLAGS = [
    "--threads",
    "1",
    "--prompt_lengths",
    "16",
    "--n_decode",
    "4",
    "--min_repeats",
    "1",
    "--min_seconds",
    "0",
    "--max_new_tokens",
    "16",
    "--bandwidth_mb",
    "0",
    "--memory",
    "false",
    "--busy_sample_s",
    "0",
    "--pin",
    "false",
    "--n_validation",
    "10",
]
VERIFICATION = {  # what `arte export` records per variant in manifest.json (the fields the bench reads)
    "same": {"top1_agreement": 0.98, "mean_kl": 0.0044, "max_kl": 0.05, "positions": 102, "flagged": False},
    "worse": {"top1_agreement": 0.77, "mean_kl": 0.166, "max_kl": 1.2, "positions": 102, "flagged": True},
}


def _answering_fakes(root: Path, n_task: int) -> tuple[list[Path], Path]:
    paths = write_fakes(root / "variants", ANSWERING)
    records = [
        {"format": "gguf", "quant": name, "path": f"{name}.json", "verification": {**ver, "reason": None}}
        for name, ver in VERIFICATION.items()
    ]
    (root / "variants" / "manifest.json").write_text(json.dumps({"variants": records}))
    return paths, write_bracket_task(root / "bracket.jsonl", n_task)


@pytest.fixture(scope="module")
def answering_bench(module_tmp):
    """`arte bench` on fakes that answer 60% (fp32 and "same") and 45% ("worse", nested) of a task
    whose answers they can read: (report, answers by variant)."""
    root = module_tmp.mktemp("bench-answers")
    paths, task = _answering_fakes(root, 120)
    out = root / "out"
    argv = ["bench", *map(str, paths), "--task", str(task), *QUICK_FLAGS, "--n_questions", "60"]
    rc, stdout = run_cli([*argv, "--out", str(out)])
    assert rc == 0, stdout
    answers: dict[str, dict[int, dict]] = {}
    for line in (out / "answers.jsonl").read_text().splitlines():
        a = json.loads(line)
        answers.setdefault(a["variant"], {})[a["index"]] = a
    return json.loads((out / "report.json").read_text()), answers


def test_paired_figures_are_recomputed_from_the_answers_of_the_same_questions(answering_bench):
    report, answers = answering_bench
    check_report(report)
    assert set(answers) == {"fp32", "same", "worse"}
    ref = answers["fp32"]
    for name in ("same", "worse"):
        got = answers[name]
        assert sorted(got) == sorted(ref) == list(range(60))  # the same questions, by index
        assert all(got[i]["target"] == ref[i]["target"] for i in ref)
        b = sum(ref[i]["correct"] and not got[i]["correct"] for i in ref)
        c = sum(got[i]["correct"] and not ref[i]["correct"] for i in ref)
        p = next(v for v in report["variants"] if v["name"] == name)["paired"]
        assert (p["n"], p["reference_only"], p["variant_only"]) == (60, b, c)
        assert p["drop"] == pytest.approx((b - c) / 60)
        assert p["answers_differ"] == sum(got[i]["answer"] != ref[i]["answer"] for i in ref)
    by = {v["name"]: v for v in report["variants"]}
    # the fakes' known rates: "same" answers exactly like fp32, "worse" is nested below it (c = 0)
    assert by["same"]["paired"]["reference_only"] == by["same"]["paired"]["variant_only"] == 0
    assert by["worse"]["paired"]["variant_only"] == 0 and by["worse"]["paired"]["reference_only"] > 0
    assert 0.4 <= by["fp32"]["accuracy"] <= 0.8 and by["fp32"]["accuracy_ci"][0] < by["fp32"]["accuracy"]
    assert by["same"]["paired"]["verdict"] == "undecided"  # 60 questions: +-6 points at 0 discordant
    assert report["recommendation"]["status"] == "undecided" and report["task"]["available_questions"] == 107


def test_export_verification_is_reported_beside_the_benchs_own_fidelity(answering_bench):
    report, _ = answering_bench
    by = {v["name"]: v for v in report["variants"]}
    for name, ver in VERIFICATION.items():
        manifest = by[name]["fidelity"]["manifest"]
        assert {k: manifest[k] for k in ver} == ver
        bench = by[name]["fidelity"]["bench"]
        assert bench["top1_positions"] > 0 and bench["kl_positions"] > 0
    assert by["fp32"]["fidelity"] == {"bench": None, "manifest": None}
    assert by["same"]["fidelity"]["bench"]["mean_kl"] < by["worse"]["fidelity"]["bench"]["mean_kl"]
    assert by["same"]["fidelity"]["bench"]["top1_agreement"] == 1.0  # noise never flips the answer byte
    assert report["rankings"]["fidelity"] == ["same", "worse"]
    assert report["rankings"]["accuracy"][-1] == "worse"


def test_n_questions_auto_extends_until_the_decision_is_made(tmp_path):
    paths, task = _answering_fakes(tmp_path, 330)
    out = tmp_path / "out"
    argv = [
        "bench",
        *map(str, paths),
        "--task",
        str(task),
        *QUICK_FLAGS,
        "--n_questions",
        "auto",
        "--n_test",
        "1000",
    ]
    rc, stdout = run_cli([*argv, "--accuracy_budget_s", "600", "--out", str(out)])
    assert rc == 0, stdout
    report = json.loads((out / "report.json").read_text())
    plan = report["task"]["auto"]
    assert plan["pilot"] == 20 and plan["available"] == 317  # 330 - 3 seeds - 10 validation
    # the fakes are deterministic: "worse" misses 6 of fp32's right answers in the first 20 questions
    assert plan["pilot_verdicts"] == {"same": "undecided", "worse": "beyond"}
    assert plan["needed"]["same"] == 385  # no disagreement at the pilot
    assert plan["chosen"] == 317 and plan["limited_by"] == "task"  # the task has fewer than 385
    by = {v["name"]: v for v in report["variants"]}
    assert by["fp32"]["n_questions"] == by["same"]["n_questions"] == 317
    p = by["same"]["paired"]
    assert p["reference_only"] == p["variant_only"] == 0 and p["drop_ci"][1] < 0.02
    assert p["verdict"] == "within" and report["recommendation"]["variant"] == "same"
    assert by["worse"]["n_questions"] == 20 and plan["extended"] == ["fp32", "same"]  # worse: no point
    assert "--n_questions auto: 317 questions" in stdout
    # a budget too small for more questions keeps the pilot, and says it was the budget
    rc, stdout = run_cli([*argv, "--accuracy_budget_s", "0.001", "--out", str(tmp_path / "tight")])
    plan = json.loads((tmp_path / "tight" / "report.json").read_text())["task"]["auto"]
    assert rc == 0 and plan["chosen"] == 20 and plan["limited_by"] == "budget"
