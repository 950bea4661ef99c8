"""D_pref selection: respondent settings, the IRT path, and the random fallback with its reason."""

import logging

import pytest

from arte.backends import BackendConfig
from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages import prefset
from arte.stages.prefset import PrefsetConfig, check_task_sizes, fallback_summary_lines, respondent_settings
from common.errors import UserError
from common.records import RecordLog, read_json
from common.tasks import load_task


def run_prefset(tmp_path, tasks, student=None, **prefset_kw):
    """The prefset stage on `tasks` with a fake student; returns the run directory's path."""
    cfg = RunConfig(
        run_dir=str(tmp_path),
        student=student or BackendConfig(name="fake", model="s"),
        prefset=PrefsetConfig(**prefset_kw),
    )
    prefset.run(cfg, RunDir(tmp_path), tasks)
    return tmp_path


def test_settings_rotate_seeds_except_zero_shot():
    assert respondent_settings([0, 1, 2, 3], 1) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert len(respondent_settings([0, 1, 2, 3], 3)) == 10
    with pytest.raises(ValueError, match="demo_sets"):
        PrefsetConfig(demo_sets=4)


def test_one_student_falls_back_loudly(tmp_path, caplog):
    """4 rows (one student x 0..3 shots): random k, a warning naming why and what to add, the
    reason and advice in TASK.json, and summary.md's caveat line."""
    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    with caplog.at_level(logging.WARNING, logger="arte.stages.prefset"):
        run_prefset(tmp_path, [task], k=6)
    rec = read_json(tmp_path / "prefset" / "boolean_expressions.json")
    assert rec["method"] == "random" and "only 4 respondents" in rec["reason"] and len(rec["indices"]) == 6
    assert len(rec["responses"]) == 4 and "prefset.respondents" in rec["advice"]
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "RANDOM 6 questions" in warning[0] and "only 4 respondents" in warning[0]
    assert "prefset.respondents" in warning[0] and "= 4 rows" in warning[0]
    lines = fallback_summary_lines(tmp_path, [task])
    assert len(lines) == 1 and "D_pref is a random sample" in lines[0]
    assert "boolean_expressions: IRT fit skipped: only 4 respondents" in lines[0]
    assert "prefset.respondents" in lines[0]


def test_summary_line_is_empty_when_irt_was_fitted(tmp_path):
    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    run_prefset(tmp_path, [task], k=6, demo_sets=3)
    assert read_json(tmp_path / "prefset" / "boolean_expressions.json")["method"] == "irt"
    assert fallback_summary_lines(tmp_path, [task]) == []
    assert fallback_summary_lines(tmp_path / "nothing-here", [task]) == []  # no prefset stage


def test_rotated_demonstrations_give_enough_rows_for_irt(tmp_path):
    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    run_prefset(tmp_path, [task], k=6, demo_sets=3)
    rec = read_json(tmp_path / "prefset" / "boolean_expressions.json")
    assert len(rec["responses"]) == 10 and rec["method"] == "irt" and rec["reason"] == rec["advice"] == ""
    assert len(set(rec["indices"])) == 6 and all(0 <= i < 20 for i in rec["indices"])
    assert rec["respondents"][0] == "fake:s@0shot/r0" and rec["respondents"][-1] == "fake:s@3shot/r2"


def test_too_few_validation_questions_is_refused():
    task = load_task("boolean_expressions", n_validation=5, n_test=5)
    with pytest.raises(UserError, match="5 validation questions but --prefset.k is 8"):
        check_task_sizes(task, 8)


def test_answers_go_to_the_engine_in_calls_of_call_size(tmp_path, monkeypatch):
    """A respondent's prompts go `call_size` (4 x batch_size) at a time, across settings and tasks,
    and each call's answers are in answers.jsonl, one record per cell."""
    from tracking_backends import TrackingFactory

    from arte.stages.prefset import respondents

    factory = TrackingFactory()
    monkeypatch.setattr(respondents, "load_backend", factory)
    tasks = [load_task(n, n_validation=20, n_test=5) for n in ("boolean_expressions", "multistep_arithmetic")]
    run_prefset(
        tmp_path, tasks, student=BackendConfig(name="fake", model="s", batch_size=16), k=6, demo_sets=3
    )
    assert factory.loads == factory.closed == ["s"]
    assert factory.engines[0].calls == [64] * 6 + [16]  # 2 tasks x 10 settings x 20 questions
    records = RecordLog(tmp_path / "prefset" / "answers.jsonl").read()
    keys = {(r["respondent"], r["task"], r["shots"], r["demo_set"], r["question"]) for r in records}
    assert len(records) == len(keys) == 400
    assert {r["task"] for r in records} == {"boolean_expressions", "multistep_arithmetic"}


def test_summary_md_carries_the_random_d_pref_caveat(tmp_path):
    """write_summary (evaluate) puts fallback_summary_lines under "Read these numbers with care"."""
    from arte.stages.evaluate.summary import write_summary
    from common.records import write_json_atomic

    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    run_prefset(tmp_path, [task], k=6)
    write_json_atomic(tmp_path / "manifest.json", {"stages": {}})
    records = {
        v: [
            {"task": task.name, "shots": 0, "index": i, "correct": (i + j) % 2, "missing_tag": 0, "target": t}
            for i, t in enumerate(["True", "False"] * 5)
        ]
        for j, v in enumerate(("vanilla", "original", "arte"))
    }
    cfg = RunConfig(run_dir=str(tmp_path), tasks=[task.name])
    write_summary(cfg, RunDir(tmp_path), [task], records)
    text = (tmp_path / "summary.md").read_text()
    care = text.split("### Read these numbers with care")[1].split("##")[0]
    assert "- **D_pref is a random sample, not IRT-selected** (boolean_expressions: IRT fit skipped" in care
