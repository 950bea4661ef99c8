"""Brainstorm calls grouped into one teacher call (`parallel`, `spare_calls`): the questions, the
call log and the counts are those of one call at a time, and spare calls save rounds."""

from __future__ import annotations

import dataclasses

import pytest
from counting_backend import CountingBackend

from arte.stages.elicit import QuestionConfig, elicit_questions
from common.records import RecordLog
from common.tasks import load_task


@pytest.mark.parametrize("task_name", ["boolean_expressions", "object_counting"])
def test_grouped_and_spare_calls_change_nothing_but_the_rounds(tmp_path, task_name):
    task = load_task(task_name, n_validation=10, n_test=10)
    cfg = QuestionConfig(m=23, temperature=1.0, question_max_new_tokens=200, spare_calls=0)
    runs = {}
    for name, parallel, spare in [("one", 1, 0), ("grouped", 8, 0), ("spare", 16, 3)]:
        teacher, log = CountingBackend("teacher"), RecordLog(tmp_path / f"{name}.jsonl")
        got = elicit_questions(
            task, teacher, dataclasses.replace(cfg, spare_calls=spare), log, seed=5, parallel=parallel
        )
        runs[name] = (got, log.read(), teacher.calls)
    want, want_log, one_calls = runs["one"]
    assert set(one_calls) == {1} and want["stats"]["kept"] == 23
    for name in ("grouped", "spare"):
        got, got_log, calls = runs[name]
        assert got == want and got_log == want_log, name
        assert len(calls) < len(one_calls), (name, calls)
    assert len(runs["spare"][2]) <= len(runs["grouped"][2])


def test_spare_calls_must_not_be_negative():
    with pytest.raises(ValueError, match="spare_calls"):
        QuestionConfig(spare_calls=-1)
