"""Validation questions from a file of their own (common/tasks/validation_file.py): beside the task
file or named in the spec, overlap with the seeds and test set dropped and counted, bad input named
by file and line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.errors import UserError
from common.tasks import load_task, load_tasks


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _main(n: int = 20) -> list[dict]:
    return [{"input": f"Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"} for i in range(n)]


def _validation() -> list[dict]:
    rows = [{"input": f"Is {i} even?", "target": "Yes" if i % 2 == 0 else "No"} for i in range(100, 106)]
    rows.append({"input": "Is   3\neven? ", "target": "No"})  # a test question, other whitespace
    rows.append({"input": "Is 4 even?", "target": "Yes"})  # a seed or test question
    rows.append({"input": "Is 100 even?", "target": "Yes"})  # a duplicate within the file
    return rows


def test_a_file_beside_the_task_gives_its_validation_and_overlap_is_dropped(tmp_path, caplog):
    task_path = _write(tmp_path / "even.jsonl", _main())
    _write(tmp_path / "even.validation.jsonl", _validation())
    with caplog.at_level(logging.WARNING):
        task = load_task(str(task_path), n_validation=100, n_test=200)
    assert task.validation_source == str(tmp_path / "even.validation.jsonl")
    assert task.validation_overlap == 2
    assert sorted(e.input for e in task.validation) == [f"Is {i} even?" for i in range(100, 106)]
    assert len(task.seeds) + len(task.test) == 20  # nothing of the task's own examples cut for validation
    assert "2 validation question(s) of" in caplog.text and "1 duplicate question(s)" in caplog.text
    assert len(load_task(str(task_path), n_validation=4, n_test=200).validation) == 4
    again = load_task(str(task_path), n_validation=4, n_test=200)
    assert again.validation == load_task(str(task_path), n_validation=4, n_test=200).validation
    # without the file, validation is cut from the task's own examples as before
    (tmp_path / "even.validation.jsonl").unlink()
    plain = load_task(str(task_path), n_validation=5, n_test=200)
    assert plain.validation_source == "" and len(plain.validation) == 5
    assert len(plain.seeds) + len(plain.validation) + len(plain.test) == 20


def test_an_explicit_validation_file_wins_and_works_for_builtin_tasks(tmp_path):
    task_path = _write(tmp_path / "even.jsonl", _main())
    _write(tmp_path / "even.validation.jsonl", _validation())
    other = _write(tmp_path / "other.jsonl", [{"input": "Is 1000 even?", "target": "Yes"}])
    task = load_task(f"{task_path}::validation={other}", n_validation=100, n_test=200)
    assert [e.input for e in task.validation] == ["Is 1000 even?"] and task.validation_source == str(other)
    builtin = load_task(f"navigate::validation={other}", n_validation=50, n_test=10)
    assert builtin.name == "navigate" and [e.input for e in builtin.validation] == ["Is 1000 even?"]
    assert len(builtin.test) == 10 and builtin.solver is not None


def test_a_directory_does_not_load_a_validation_file_as_a_task(tmp_path):
    _write(tmp_path / "even.jsonl", _main())
    _write(tmp_path / "even.validation.jsonl", _validation())
    _write(tmp_path / "odd.jsonl", _main(12))
    tasks = load_tasks([str(tmp_path)], n_validation=100, n_test=200)
    assert [t.name for t in tasks] == ["even", "odd"]
    assert tasks[0].validation_overlap == 2 and tasks[1].validation_source == ""
    with pytest.raises(UserError, match=r"holds 2 tasks; ::validation=PATH names one task's validation file"):
        load_tasks([f"{tmp_path}::validation={tmp_path / 'even.validation.jsonl'}"])


def test_a_validation_file_of_only_test_questions_is_refused(tmp_path):
    task_path = _write(tmp_path / "even.jsonl", _main())
    _write(tmp_path / "even.validation.jsonl", [{"input": "Is 5 even?", "target": "No"}])
    with pytest.raises(
        UserError, match=r"even.validation.jsonl: no validation question left .*\(1 are seed or test"
    ):
        load_task(str(task_path), n_validation=10, n_test=200)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '{"input": "Is 100 even?", "target": "Yes"}\n{"input": "Is 101 even?"}\n',
            r"bad.jsonl:2: missing \"target\"",
        ),
        ('{"input": "a", "target": "Yes"}\n\n{"input": "b", "target": \n', r"bad.jsonl:3: invalid JSON"),
        ("", r"bad.jsonl: empty file, no examples"),
    ],
)
def test_a_malformed_validation_file_is_named_with_its_line(tmp_path, text, message):
    task_path = _write(tmp_path / "even.jsonl", _main())
    (tmp_path / "bad.jsonl").write_text(text)
    with pytest.raises(UserError, match=message):
        load_task(f"{task_path}::validation={tmp_path / 'bad.jsonl'}")


def test_missing_files_and_half_specs_are_refused(tmp_path):
    task_path = _write(tmp_path / "even.jsonl", _main())
    with pytest.raises(UserError, match=r"validation file not found: .*nope.jsonl"):
        load_task(f"{task_path}::validation={tmp_path / 'nope.jsonl'}")
    with pytest.raises(UserError, match=r"expected SPEC::validation=PATH with both parts"):
        load_task(f"{task_path}::validation=")
    _write(tmp_path / "even.validation.jsonl", _validation())
    _write(tmp_path / "even.validation.json", _validation())
    with pytest.raises(UserError, match="both even.validation.jsonl and even.validation.json"):
        load_task(str(task_path))
