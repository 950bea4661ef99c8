"""Score-cache keys (arte/stages/score.py: draft_key) cover every prompt component: a redo after
editing the task description scores again instead of reusing scores made with the old prompt."""

from __future__ import annotations

import dataclasses

from test_scoring import _drafts

from arte.backends import BackendConfig, load_backend
from arte.stages.score import draft_key, score_drafts
from common.records import RecordLog
from common.tasks import load_task


def test_every_prompt_component_changes_the_key():
    task = load_task("boolean_expressions", n_validation=20, n_test=10)
    draft, pref = _drafts(task)[0], task.test[:3]
    base = draft_key("s", task.description, draft, pref, 64)
    assert draft_key("s", task.description, draft, pref, 64) == base  # deterministic
    assert draft_key("s", task.description + " Edited.", draft, pref, 64) != base  # the description
    assert draft_key("s2", task.description, draft, pref, 64) != base
    assert draft_key("s", task.description, draft, pref, 32) != base
    assert draft_key("s", task.description, dataclasses.replace(draft, question="Q?"), pref, 64) != base
    assert draft_key("s", task.description, dataclasses.replace(draft, rationale="R."), pref, 64) != base
    other = [dataclasses.replace(pref[0], input="True or False")] + list(pref[1:])
    assert draft_key("s", task.description, draft, other, 64) != base
    flipped = [dataclasses.replace(pref[0], target="maybe")] + list(pref[1:])
    assert draft_key("s", task.description, draft, flipped, 64) != base


def test_an_edited_description_is_scored_again_and_an_unchanged_one_is_not(tmp_path):
    task = load_task("boolean_expressions", n_validation=20, n_test=10)
    drafts, pref = _drafts(task)[:3], task.test[:4]
    backend = load_backend(BackendConfig(name="fake", model="student"))
    cache = RecordLog(tmp_path / "cache.jsonl")
    score_drafts(task, drafts, pref, backend, student_id="s", cache=cache, progress=False)
    calls = backend.calls
    score_drafts(task, drafts, pref, backend, student_id="s", cache=RecordLog(cache.path), progress=False)
    assert backend.calls == calls  # same prompts: all from the cache
    edited = dataclasses.replace(task, description=task.description + " Answer True or False.")
    score_drafts(edited, drafts, pref, backend, student_id="s", cache=RecordLog(cache.path), progress=False)
    assert backend.calls > calls  # new prompts: scored again
