"""The near-duplicate contamination guard (arte/stages/elicit/contamination.py) and split_overlap,
the count of drafts it drops in elicit_questions."""

from __future__ import annotations

from arte.backends import BackendConfig, load_backend
from arte.stages.elicit import QuestionConfig, elicit_questions
from arte.stages.elicit.contamination import NearDuplicateGuard, normalise_question
from common.records import RecordLog
from common.tasks import load_task

TEST_Q = "If you follow these instructions, do you return to the starting point? Take 3 steps. Turn left."


def test_normalisation_folds_case_spaces_punctuation_and_number_words():
    assert normalise_question("Take Three steps,  turn LEFT!") == normalise_question("take 3 steps turn left")
    assert normalise_question("Take THREE steps.") == "take3steps"
    assert normalise_question("2 - 3") != normalise_question("2 3")  # a minus sign is kept
    assert normalise_question("take four steps") != normalise_question("take 3 steps")


def test_the_guard_names_the_rule_and_lets_other_questions_through():
    guard = NearDuplicateGuard([TEST_Q])
    assert guard.match(TEST_Q.upper()) == "exact"
    assert guard.match(TEST_Q.replace(" ", "")) == "normalised"  # the case: spaces removed
    assert guard.match(TEST_Q.replace("3", "three").replace("?", "")) == "normalised"
    assert guard.match(TEST_Q.replace("Turn left.", "Turn left now.")) == "ngram"  # a small edit
    assert guard.match("Is the following sentence plausible? Joao Moutinho caught the screen pass.") is None
    other = "If you follow these instructions, do you return to the starting point? Take 7 steps. Turn right."
    assert guard.match(other) is None  # same template, another question
    assert NearDuplicateGuard([]).match(TEST_Q) is None


def _log_with(tmp_path, task, questions):
    """A brainstorm log replayed by elicit_questions: one call that parsed `questions`."""
    log = RecordLog(tmp_path / "q.jsonl")
    log.append({"questions": [[q, t] for q, t in questions], "unparsable": 0})
    return log


def test_split_overlap_counts_exact_and_near_duplicates_of_test_questions(tmp_path):
    task = load_task("boolean_expressions", n_validation=5, n_test=5)
    test_q, test_t = task.test[0].input, task.test[0].target
    fresh = [("True and not ( False or True and not False ) or False or True", "True")]
    copies = [(test_q, test_t), (test_q.replace(" ", ""), test_t), (test_q.upper() + " .", test_t)]
    log = _log_with(tmp_path, task, fresh + copies)
    teacher = load_backend(BackendConfig(name="fake", model="t"))
    got = elicit_questions(task, teacher, QuestionConfig(m=1), log, seed=0, call_limit=1)
    assert [q["input"] for q in got["questions"]] == [fresh[0][0]]
    assert got["stats"]["split_overlap"] == 3
    assert got["stats"]["split_overlap_by"] == {"exact": 1, "normalised": 2, "ngram": 0}


def test_no_split_overlap_without_a_copy(tmp_path):
    task = load_task("boolean_expressions", n_validation=5, n_test=5)
    fresh = ("True and not ( False or True and not False ) or False or True", "True")
    log = _log_with(tmp_path, task, [fresh])
    teacher = load_backend(BackendConfig(name="fake", model="t"))
    got = elicit_questions(task, teacher, QuestionConfig(m=1), log, seed=0, call_limit=1)
    assert got["stats"]["split_overlap"] == 0 and len(got["questions"]) == 1


def test_brackets_and_operands_keep_formulas_apart():
    guard = NearDuplicateGuard(["not ( True ) and ( False or True )"])
    assert guard.match("not ( True and False ) or True") is None  # the same tokens, other brackets
    assert guard.match("not ( False ) and ( False or True )") is None  # one operand changed
    assert guard.match("not (True) and (False or True)") == "normalised"


def test_distinct_questions_of_a_task_are_rarely_near_duplicates():
    """Calibration: a task's own test questions are distinct questions; the guard must not call them
    near-duplicates of each other (fails with OVERLAP 0.8 or MIN_CHARS 0: about half of them)."""
    for name, at_most in (("boolean_expressions", 0), ("navigate", 3)):
        qs = [ex.input for ex in load_task(name, n_validation=0, n_test=120).test]
        hits = sum(
            NearDuplicateGuard(qs[:i] + qs[i + 1 :]).match(q) is not None for i, q in enumerate(qs[:60])
        )
        assert hits <= at_most, (name, hits)
