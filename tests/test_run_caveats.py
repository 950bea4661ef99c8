"""The summary's run-level caveats (arte/stages/evaluate/run_caveats.py, write_summary): a reused
teacher's caveats and origin, a teacher mismatch with the other run, test sets smaller than asked,
training sets of another size, and the contamination guard's drop counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from arte.backends import BackendConfig
from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages.align.teacher_reuse import reuse_aligned_teacher
from arte.stages.evaluate.out_of_domain import drop_ood_overlap
from arte.stages.evaluate.run_caveats import (
    SMALL_PAIRS,
    contamination_counts,
    contamination_lines,
    evaluated_test_sizes,
    ood_overlap_lines,
    short_test_lines,
    teacher_lines,
)
from common.errors import UserError
from common.records import RecordLog, write_json_atomic, write_jsonl_atomic
from common.tasks import load_task


def _donor(path, *, method="random", pairs=3, teacher="teacher-a", student="student-a", tasks=("t",)):
    """A finished run directory whose align stage another run reuses."""
    (path / "align" / "teacher").mkdir(parents=True)
    (path / "align" / "teacher" / "config.json").write_text("{}")
    write_json_atomic(path / "align" / "done.json", {})
    config = {"teacher": {"model": teacher}, "student": {"model": student}, "tasks": list(tasks), "seed": 0}
    write_json_atomic(path / "manifest.json", {"config": config})
    for t in tasks:
        rec = {"task": t, "indices": [0], "method": method, "reason": "IRT fit skipped: only 4 respondents"}
        write_json_atomic(path / "prefset" / f"{t}.json", rec | {"advice": "add respondents"})
    log = RecordLog(path / "pairs" / "dpo.jsonl")
    for _ in range(pairs):
        log.append({"task": tasks[0], "prompt": "p", "chosen": "c", "rejected": "r"})
    return path


def _cfg(run, donor, **kw):
    return RunConfig(
        run_dir=str(run),
        tasks=["u"],
        aligned_teacher_from=str(donor),
        teacher=BackendConfig(name="fake", model=kw.pop("teacher", "teacher-a")),
        student=BackendConfig(name="fake", model="student-b"),
        **kw,
    )


def test_a_reused_teacher_carries_the_other_runs_caveats_and_origin(tmp_path):
    donor, run = _donor(tmp_path / "donor"), tmp_path / "run"
    cfg = _cfg(run, donor)
    reuse_aligned_teacher(cfg, RunDir(run))
    text = "\n".join(teacher_lines(run, cfg, [SimpleNamespace(name="u")]))
    assert "**the aligned teacher comes from another run**" in text
    assert "aligned to student student-a, not this run's student-b" in text  # Table 4: another student
    assert "tasks it never saw: u" in text  # Table 5: unseen tasks
    assert (
        "aligned teacher's run: **D_pref is a random sample, not IRT-selected** (t: IRT fit skipped" in text
    )
    handful = "**the teacher was aligned on a handful of DPO pairs**"
    assert f"aligned teacher's run: {handful} (t 3; under {SMALL_PAIRS}" in text


def test_a_clean_other_run_adds_only_its_origin(tmp_path):
    donor = _donor(tmp_path / "donor", method="irt", pairs=SMALL_PAIRS, student="student-b", tasks=("u",))
    run = tmp_path / "run"
    cfg = _cfg(run, donor)
    reuse_aligned_teacher(cfg, RunDir(run))
    lines = teacher_lines(run, cfg, [SimpleNamespace(name="u")])
    assert len(lines) == 1 and "same teacher, student and tasks" in lines[0]


def test_own_teacher_pairs_and_no_reuse(tmp_path):
    _donor(tmp_path, method="irt", pairs=SMALL_PAIRS, tasks=("t",))
    cfg = SimpleNamespace(teacher=SimpleNamespace(model="x"), student=SimpleNamespace(model="y"))
    assert teacher_lines(tmp_path, cfg, [SimpleNamespace(name="t")]) == []
    write_jsonl_atomic(tmp_path / "pairs" / "dpo.jsonl", [{"task": "t"}] * (SMALL_PAIRS - 1))
    (line,) = teacher_lines(tmp_path, cfg, [SimpleNamespace(name="t")])
    assert line.startswith("**the teacher was aligned on a handful of DPO pairs** (t 49;")


def test_a_teacher_mismatch_with_the_other_run_is_an_error_unless_asked_for(tmp_path):
    donor = _donor(tmp_path / "donor")
    with pytest.raises(UserError, match="its teacher was teacher-a, this run's --teacher.model is teacher-z"):
        reuse_aligned_teacher(_cfg(tmp_path / "run", donor, teacher="teacher-z"), RunDir(tmp_path / "run"))
    cfg = _cfg(tmp_path / "run", donor, teacher="teacher-z", allow_teacher_mismatch=True)
    record = reuse_aligned_teacher(cfg, RunDir(tmp_path / "run"))
    assert record["teacher_mismatch"] == {"aligned_from": "teacher-a", "this_run": "teacher-z"}
    text = "\n".join(teacher_lines(tmp_path / "run", cfg, [SimpleNamespace(name="u")]))
    assert "aligned from teacher teacher-a, while the original baseline uses teacher-z" in text


def test_a_smaller_test_set_than_requested_is_said_and_an_exact_one_is_not():
    records = {"vanilla": [{"task": "a", "index": i, "shots": s} for i in range(47) for s in (0, 3)]}
    records["vanilla"] += [{"task": "b", "index": i, "shots": 0} for i in range(50)]
    sizes = evaluated_test_sizes(records, 50)
    assert sizes == {"a": {"requested": 50, "evaluated": 47}, "b": {"requested": 50, "evaluated": 50}}
    (line,) = short_test_lines(sizes)
    assert "**fewer test questions than requested** (a 47 of 50;" in line and "b " not in line
    assert short_test_lines(evaluated_test_sizes(records, 47)) == []


def test_ood_near_duplicates_of_target_or_training_questions_are_dropped_and_counted():
    target = load_task("boolean_expressions", n_validation=5, n_test=5)
    ood = load_task("navigate", n_validation=0, n_test=6)
    copied = [target.test[0].input.replace(" ", ""), ood.test[1].input]  # a target and a trained question
    ood.test[0] = type(ood.test[0])(input=copied[0], target="True")
    kept, report = drop_ood_overlap([ood], [target], [ood.test[1].input.upper()])
    assert report["navigate"] == {"dropped": 2, "by": {"exact": 1, "normalised": 1, "ngram": 0}, "kept": 4}
    assert len(kept[0].test) == 4 and copied[0] not in [ex.input for ex in kept[0].test]
    _, clean = drop_ood_overlap([load_task("navigate", n_validation=0, n_test=6)], [target], [])
    assert clean["navigate"]["dropped"] == 0


def test_contamination_counts_reach_the_summary_lines(tmp_path):
    stages = {
        "elicit": {"counts": {"t": {"split_overlap": 2}}},
        "generate": {"counts": {"t": {"arte": {"questions": {"split_overlap": 1}}, "original": {}}}},
    }
    write_json_atomic(tmp_path / "evaluate" / "ood_overlap.json", {"o": {"dropped": 1, "by": {}, "kept": 9}})
    counts = contamination_counts(stages, tmp_path)
    assert counts["drafts"] == {"t": 2} and counts["training"] == {"t": {"arte": 1, "original": 0}}
    text = "\n".join(contamination_lines(counts))
    assert "from drafts: t 2" in text and "from training sets: t: arte 1, original 0" in text
    assert "out-of-domain tests: o 1" in text
    assert "o 1 left out, 9 evaluated" in ood_overlap_lines(counts)[0]
    counts["ood"]["o"]["dropped"] = 0
    assert ood_overlap_lines(counts) == []
    assert contamination_lines(contamination_counts({}, tmp_path / "none")) == []


def _summary(tmp_path, n_test: int, n_examples: int):
    from arte.stages.evaluate import EvaluateConfig
    from arte.stages.evaluate.summary import write_summary
    from arte.stages.generate import GenerateConfig
    from common.records import read_json

    task = load_task("boolean_expressions", n_validation=5, n_test=20)
    write_json_atomic(tmp_path / "manifest.json", {"stages": {}})
    for v in ("original", "arte"):
        write_jsonl_atomic(tmp_path / "generate" / f"{v}.jsonl", [{"task": task.name, "question": "q"}] * 3)
    records = {
        v: [
            {"task": task.name, "shots": 0, "index": i, "correct": (i + j) % 2, "missing_tag": 0, "target": t}
            for i, t in enumerate(["True", "False"] * 5)
        ]
        for j, v in enumerate(("vanilla", "original", "arte"))
    }
    cfg = RunConfig(
        run_dir=str(tmp_path),
        tasks=[task.name],
        n_test=20,
        evaluate=EvaluateConfig(n_test=n_test),
        generate=GenerateConfig(n_examples=n_examples),
    )
    write_summary(cfg, RunDir(tmp_path), [task], records)
    return read_json(tmp_path / "summary.json"), (tmp_path / "summary.md").read_text()


def test_write_summary_says_when_test_and_training_sizes_differ_from_the_config(tmp_path):
    summary, md = _summary(tmp_path / "short", n_test=20, n_examples=5)
    notes = "\n".join(summary["caveats"])
    assert "**fewer test questions than requested** (boolean_expressions 10 of 20" in notes
    assert "**training set sizes are not 5 per task**" in notes
    assert summary["data"]["test_questions"] == {"boolean_expressions": {"requested": 20, "evaluated": 10}}
    assert "test questions per task (evaluated / requested): boolean_expressions 10 / 20" in md
    assert "contamination" in summary["data"]
    summary, _ = _summary(tmp_path / "exact", n_test=10, n_examples=3)
    notes = "\n".join(summary["caveats"])
    assert "fewer test questions" not in notes and "training set sizes are not" not in notes
