"""D_pref selection: respondent settings, the IRT path, and the random fallback with its reason."""

import pytest

from arte.backends import BackendConfig
from arte.stages.prefset import PrefsetConfig, check_task_sizes, respondent_settings, select_pref_set
from common.errors import UserError
from common.tasks import load_task


def test_settings_rotate_seeds_except_zero_shot():
    assert respondent_settings([0, 1, 2, 3], 1) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert len(respondent_settings([0, 1, 2, 3], 3)) == 10
    with pytest.raises(ValueError, match="demo_sets"):
        PrefsetConfig(demo_sets=4)


def test_one_student_falls_back_to_random_and_says_why():
    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    rec = select_pref_set(task, BackendConfig(name="fake", model="s"), PrefsetConfig(k=6))
    assert rec["method"] == "random" and "respondents" in rec["reason"] and len(rec["indices"]) == 6
    assert len(rec["responses"]) == 4


def test_rotated_demonstrations_give_enough_rows_for_irt():
    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    rec = select_pref_set(task, BackendConfig(name="fake", model="s"), PrefsetConfig(k=6, demo_sets=3))
    assert len(rec["responses"]) == 10 and rec["method"] == "irt" and rec["reason"] == ""
    assert len(set(rec["indices"])) == 6 and all(0 <= i < 20 for i in rec["indices"])


def test_too_few_validation_questions_is_refused():
    task = load_task("boolean_expressions", n_validation=5, n_test=5)
    with pytest.raises(UserError, match="5 validation questions but --prefset.k is 8"):
        check_task_sizes(task, 8)


def test_settings_grouped_into_calls_give_the_same_rows():
    """respondent_rows hands several settings to one generate call (call_size prompts or more): the
    same rows as one setting per call, in the same order."""
    from counting_backend import CountingBackend

    from arte.stages.prefset import respondent_rows

    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    settings = respondent_settings([0, 1, 2, 3], 3)
    one, grouped = CountingBackend("s"), CountingBackend("s")
    want = respondent_rows(task, one, settings, 48)
    got = respondent_rows(task, grouped, settings, 48, call_size=64)
    assert got == want and len(got) == 10
    assert one.calls == [20] * 10 and grouped.calls == [80, 80, 40]
    assert len({tuple(r) for r in got}) > 1  # the rows differ: a mix-up would show
