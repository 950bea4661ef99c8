"""The k-shot evaluation's demonstrations (`Task.demonstrations`, evaluate_stats.shot_prompts): the
seeds' written reasoning in the format the student is trained on when they have it, answer-only
otherwise, and the summary saying which per task."""

from __future__ import annotations

import json
from pathlib import Path

from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages.evaluate.stats import shot_prompts
from arte.stages.evaluate.summary import write_summary
from arte.stages.generate.collect import sft_row
from common.config import load_config
from common.prompts import demonstration, icl_prompt
from common.records import write_json_atomic, write_jsonl_atomic
from common.tasks import load_task

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _file_task(tmp_path: Path, name: str, with_rationales: bool):
    rows = []
    for i in range(12):
        row = {"input": f"What is {i} plus one?", "target": str(i + 1)}
        if with_rationales:
            row["rationale"] = f"{i} and one more make {i + 1}. <ans>{i + 1}</ans>"
        rows.append(json.dumps(row))
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return load_task(str(path), n_validation=3, n_test=4)


def test_seed_rationales_are_shown_in_the_trained_format(tmp_path):
    task = _file_task(tmp_path, "plus", with_rationales=True)
    prompts = shot_prompts(task, 3, 2)
    for seed in task.seeds:
        assert seed.rationale and f"{demonstration(seed.input, seed.rationale)}\n" in prompts[0]
    # a demonstration is exactly what a training example's prompt + completion reads after the head
    row = sft_row(task, task.seeds[0].input, task.seeds[0].target, task.seeds[0].rationale, "arte")
    trained = (row["prompt"] + row["completion"]).split("\n", 1)[1]
    assert trained == demonstration(task.seeds[0].input, task.seeds[0].rationale)
    assert prompts[1] == icl_prompt(
        task.description, [(s.input, s.rationale) for s in task.seeds], task.test[1].input
    )
    assert task.demonstration_kind(3) == "with rationales"
    assert task.demonstration_kind(3, rationales=False) == "answer-only"
    assert "make" not in shot_prompts(task, 3, 1, rationales=False)[0]


def test_without_rationales_the_demonstrations_are_answer_only(tmp_path):
    task = _file_task(tmp_path, "bare", with_rationales=False)
    (prompt,) = shot_prompts(task, 3, 1)
    for seed in task.seeds:
        assert (
            f"Question: {seed.input} Answer: Let's think step by step. <ans>{seed.target}</ans>\n" in prompt
        )
    assert task.demonstration_kind(3) == "answer-only"


def test_builtin_tasks_demonstrate_with_their_explainers_rationales():
    task = load_task("navigate", n_validation=3, n_test=3)
    (prompt,) = shot_prompts(task, 2, 1)
    for seed in task.seeds[:2]:
        reasoning = task.explainer(seed.input)
        assert reasoning.endswith(f"<ans>{seed.target}</ans>") and reasoning in prompt
    assert task.seeds[2].input not in prompt
    assert task.demonstration_kind(2) == "with rationales"


def test_the_summary_says_per_task_what_the_demonstrations_showed(tmp_path):
    tasks = [load_task("navigate", n_validation=3, n_test=3), _file_task(tmp_path, "bare", False)]
    run = RunDir(tmp_path / "run")
    cfg = load_config(RunConfig, SMOKE, {"run_dir": str(run.path), "evaluate": {"shots": [0, 3]}})
    matched = {
        t.name: {v: {"kept": n, "size_match": {"mode": "sample", "before": n, "after": 1}} for v, n in sizes}
        for t, sizes in zip(tasks, ([("original", 3), ("arte", 1)], [("original", 2), ("arte", 4)]))
    }
    manifest = {"stages": {"generate": {"counts": matched}}}
    write_json_atomic(run.stage("generate").parent / "manifest.json", manifest)
    for v in ("original", "arte"):
        write_jsonl_atomic(run.path / "generate" / f"{v}.jsonl", [{"task": t.name} for t in tasks])
    records = {
        v: [
            {
                "task": t.name,
                "shots": k,
                "index": i,
                "target": "x",
                "answer": "x",
                "correct": 1,
                "missing_tag": 0,
            }
            for t in tasks
            for k in (0, 3)
            for i in range(3)
        ]
        for v in ("vanilla", "original", "arte")
    }
    write_summary(cfg, run, tasks, records)
    text = (run.path / "summary.md").read_text()
    line = (
        "- k-shot demonstrations (the task's seeds): navigate 3-shot with rationales; bare 3-shot answer-only"
    )
    assert line in text.splitlines()
    at = text.splitlines().index(
        "- training examples per task before -> after size matching (--generate.size_match):"
    )
    assert text.splitlines()[at + 1 : at + 3] == [
        "  - navigate (sample): original 3 -> 1, arte 1 -> 1",
        "  - bare (sample): original 2 -> 1, arte 4 -> 1",
    ]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["demonstrations"] == {"navigate": {"3": "with rationales"}, "bare": {"3": "answer-only"}}
