"""The smoke pipeline with the paper's ablations (--variants) and an out-of-domain task
(--evaluate.extra_tasks): every variant trained and evaluated, the OOD task seen by evaluate only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arte.pipeline import run_pipeline
from arte.run_config import RunConfig
from arte.stages import STAGE_NAMES
from common.config import load_config
from common.errors import UserError
from common.records import RecordLog
from common.tasks.builtin.object_counting import DESCRIPTION as OOD_DESCRIPTION

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
RUN_TASKS = {"boolean_expressions", "multistep_arithmetic"}
OOD = "object_counting"
TRAINED = ["original", "arte", "question_only", "rationale_only"]


def test_ablations_and_an_ood_task_end_to_end(tmp_path, monkeypatch):
    from arte.backends.fake import FakeBackend

    prompts: list[str] = []  # every prompt the fake teacher/student saw (elicit, prefset, score, generate)
    real = FakeBackend.generate
    monkeypatch.setattr(
        FakeBackend, "generate", lambda self, p, params: prompts.extend(p) or real(self, p, params)
    )
    run = tmp_path / "run"
    cfg = load_config(
        RunConfig, SMOKE, {"run_dir": str(run), "variants": TRAINED, "evaluate": {"extra_tasks": [OOD]}}
    )
    manifest = run_pipeline(cfg)
    assert list(manifest["stages"]) == list(STAGE_NAMES)

    # The OOD task played no part before evaluation: no prompt, draft, score, pair or training row.
    assert prompts and not any(OOD_DESCRIPTION in p or OOD in p for p in prompts)
    for rel, field in [("elicit/drafts.jsonl", "task"), ("score/scores.jsonl", "task")]:
        assert {r[field] for r in RecordLog(run / rel)} == RUN_TASKS
    assert OOD not in (run / "pairs" / "dpo.jsonl").read_text()
    for v in TRAINED:
        rows = RecordLog(run / "generate" / f"{v}.jsonl").read()
        assert {r["task"] for r in rows} == RUN_TASKS and len(rows) == 2 * 12
        stats = json.loads((run / "train" / v / "train_stats.json").read_text())
        assert stats["rows"] == len(rows)  # each student trained on its own set, nothing else
        assert {r["task"] for r in RecordLog(run / "evaluate" / f"{v}.jsonl")} == RUN_TASKS
    for stage in STAGE_NAMES:
        provenance = json.loads((run / stage / "done.json").read_text())["provenance"]
        assert set(provenance["tasks"]) == RUN_TASKS
    evaluate = json.loads((run / "evaluate" / "done.json").read_text())["provenance"]
    assert set(evaluate["extra_tasks"]) == {OOD}

    # Every student answered the OOD task, 2 shot settings x 8 questions; its own summary section.
    for v in ["vanilla", *TRAINED]:
        recs = RecordLog(run / "evaluate" / "ood" / f"{v}.jsonl").read()
        assert {r["task"] for r in recs} == {OOD} and len({(r["shots"], r["index"]) for r in recs}) == len(
            recs
        ) == 16
    summary = json.loads((run / "summary.json").read_text())
    assert summary["accuracy"]["variants"] == ["vanilla", *TRAINED]
    assert summary["out_of_domain"]["tasks"] == [OOD]
    ood = summary["out_of_domain"]["accuracy"]
    assert {r["task"] for r in ood["accuracy"]} == {OOD, "macro"}
    assert all(r["low"] <= r["acc"] <= r["high"] for r in ood["accuracy"])
    comparisons = {r["comparison"] for r in summary["accuracy"]["differences"]}
    assert {"question_only - original", "arte - question_only", "rationale_only - original"} <= comparisons
    assert "arte - rationale_only" in {r["comparison"] for r in ood["differences"]}
    assert summary["data"]["sft_examples"] == {v: 24 for v in TRAINED}
    assert not any("training set sizes" in n for n in summary["caveats"])  # all 12 per task
    md = (run / "summary.md").read_text()
    assert "| question_only (24 ex.) |" in md and "| rationale_only (24 ex.) |" in md
    target_part, ood_part = md.split("## Out-of-domain tasks")
    assert OOD not in target_part and f"| {OOD} | macro |" in ood_part
    # Issue 28 (1), (5): the OOD section has the target tasks' format checks; its overlap is counted.
    fmt = summary["out_of_domain"]["format"]
    assert {r["task"] for r in fmt["rows"]} == {OOD, "macro"} and fmt["differences"]
    assert "fmt" in ood_part and "know" in ood_part and "### Out-of-domain answer format" in ood_part
    assert set(summary["out_of_domain"]["caveats"]) <= set(summary["caveats"])
    assert set(summary["data"]["contamination"]["ood"]) == {OOD}

    # Another OOD task changes evaluate only: the stop names evaluate, no stage before it.
    other = load_config(
        RunConfig,
        SMOKE,
        {"run_dir": str(run), "variants": TRAINED, "evaluate": {"extra_tasks": ["word_sorting"]}},
    )
    with pytest.raises(UserError, match=r"evaluate \(evaluate.extra_tasks") as err:
        run_pipeline(other)
    assert "To redo from evaluate" in str(err.value) and "generate (" not in str(err.value)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["boolean_expressions"], "--evaluate.extra_tasks: 'boolean_expressions' is also a target task"),
        (["no_such_task"], "--evaluate.extra_tasks: unknown task"),
        (["missing/ood.jsonl"], "--evaluate.extra_tasks: task file not found"),
    ],
)
def test_bad_ood_tasks_are_refused_before_the_run_dir_exists(tmp_path, capsys, extra, message):
    from arte.cli import main

    run = tmp_path / "r"
    assert main(["run", "--config", str(SMOKE), "--run_dir", str(run), "--evaluate.extra_tasks", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_an_ood_task_file_keeps_every_question_past_the_seeds_for_testing(tmp_path):
    from arte.stages.evaluate.out_of_domain import load_extra_tasks

    path = tmp_path / "parity.jsonl"
    path.write_text(
        "".join(json.dumps({"input": f"Is {i} even?", "target": str(i % 2 == 0)}) + "\n" for i in range(10))
    )
    cfg = load_config(RunConfig, SMOKE, {"evaluate": {"extra_tasks": [str(path)]}})
    (task,) = load_extra_tasks(cfg)
    assert (task.name, len(task.seeds), len(task.validation), len(task.test)) == ("parity", 3, 0, 7)
