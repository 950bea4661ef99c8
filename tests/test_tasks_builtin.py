"""Built-in procedural tasks: reproducible disjoint splits, and exact verifiers that agree with the
generators (and, where a trusted reference exists, with Python itself on our own generated text)."""

from __future__ import annotations

import builtins

import pytest

from common.errors import UserError
from common.tasks import list_builtin_tasks, load_task
from common.tasks.builtin import BUILTIN_TASKS, make_builtin_task
from common.tasks.builtin import boolean_expressions as boolexpr
from common.tasks.builtin import multistep_arithmetic as arith
from common.tasks.builtin import object_counting as counting
from common.tasks.builtin import word_sorting as sorting

NAMES = ["boolean_expressions", "multistep_arithmetic", "navigate", "object_counting", "word_sorting"]
KINDS = {
    "boolean_expressions": "bool",
    "multistep_arithmetic": "number",
    "navigate": "text",
    "object_counting": "number",
    "word_sorting": "text",
}


@pytest.fixture(scope="module")
def big_tasks():
    """503+ generated questions per task: 3 seeds + 100 validation + 400 test."""
    return {name: make_builtin_task(name, n_validation=100, n_test=400, seed=1) for name in NAMES}


def _questions(task):
    return task.seeds + task.validation + task.test


def _wrong(name: str, target: str) -> str:
    if name == "boolean_expressions":
        return "False" if target == "True" else "True"
    if name == "word_sorting":
        return " ".join(reversed(target.split()))
    if name == "navigate":
        return "No" if target == "Yes" else "Yes"
    return str(int(target) + 1)


def test_list_builtin_tasks():
    tasks = list_builtin_tasks()
    assert sorted(tasks) == NAMES
    assert all(isinstance(d, str) and d for d in tasks.values())


@pytest.mark.parametrize("name", NAMES)
def test_load_builtin_task_sizes_and_kind(name):
    task = load_task(name, n_validation=7, n_test=11, seed=3)
    assert (len(task.seeds), len(task.validation), len(task.test)) == (3, 7, 11)
    assert task.answer_kind == KINDS[name]
    assert task.verifier is not None and task.source == "builtin"
    assert task.description == list_builtin_tasks()[name]


@pytest.mark.parametrize("name", NAMES)
def test_splits_reproducible_and_disjoint(name, big_tasks):
    again = make_builtin_task(name, n_validation=100, n_test=400, seed=1)
    assert _questions(again) == _questions(big_tasks[name])
    other = make_builtin_task(name, n_validation=100, n_test=400, seed=2)
    assert [e.input for e in other.test] != [e.input for e in big_tasks[name].test]
    inputs = [e.input for e in _questions(big_tasks[name])]
    assert len(inputs) == len(set(inputs)) == 503


@pytest.mark.parametrize("name", NAMES)
def test_verifier_agrees_with_generator_and_rejects_wrong(name, big_tasks):
    task = big_tasks[name]
    for ex in _questions(task):
        assert task.verifier(ex.input, ex.target) is True, ex
        assert task.verifier(ex.input, _wrong(name, ex.target)) is False, ex


def test_boolean_expressions_match_python_on_generated_text(big_tasks):
    # A trusted reference: Python has the same precedence (not > and > or). Our own text only.
    for ex in _questions(big_tasks["boolean_expressions"]):
        assert str(eval(ex.input.removesuffix(" is"))) == ex.target


def test_arithmetic_matches_python_on_generated_text(big_tasks):
    for ex in _questions(big_tasks["multistep_arithmetic"]):
        assert str(eval(ex.input.removesuffix(" ="))) == ex.target


def test_word_sorting_targets_are_sorted(big_tasks):
    for ex in _questions(big_tasks["word_sorting"]):
        words = ex.input.split("List:")[1].split()
        assert ex.target == " ".join(sorted(words))


def test_boolean_verifier_variations():
    v = boolexpr.verify
    assert v("not ( True ) and ( False or True ) is", "False") is True
    assert v("not (True) and (False or True) is", "false") is True
    assert v("not(True)and(False or True)", "False") is True
    assert v("  True   or\nFalse  is ?", "True") is True
    assert v("Evaluate the expression: not not not False is", "TRUE") is True
    assert v("True and not False = ", "True") is True
    assert v("((((True))))", "True") is True
    assert v("True or False and False is", "True") is True  # and binds tighter
    assert v("not True or True is", "True") is True  # not binds tightest
    assert v("True is", "yes") is False
    assert v("What is not True and False?", "False") is True


def test_arithmetic_verifier_variations():
    v = arith.verify
    assert v("((-1 + 2) * (3 - -4)) =", "7") is True
    assert v("((-1+2)*(3--4))=", "7") is True
    assert v("What is (2 + 3) * 4?", "twenty") is True
    assert v("(-9 \u2212 1) \u00d7 2 =", "-20") is True
    assert v("2 + 3 * 4 =", "14") is True
    assert v("2 - 3 - 4 =", "-5") is True
    assert v("7 / 2 =", "3.5") is True
    assert v("7 / 2 =", "3") is False
    assert v("(1 + 2) =", "three") is True
    assert v("(1 + 2) =", "unknown") is False


def test_object_counting_verifier_variations():
    v = counting.verify
    q = "I have a flute, two pianos, a carrot and a violin. How many musical instruments do I have?"
    assert v(q, "4") is True and v(q, "four") is True and v(q, "5") is False
    assert v("I have 3 cats, a dog, and twelve mice. How many animals do I have?", "16") is True
    assert v("i have two heads of broccoli and an apple.  how many vegetables do i have", "2") is True
    assert v("Question: I have a peach. How many fruit do I have?", "1") is True
    assert v("I have a chair and two tables. How many objects do I have?", "3") is True
    assert v("I have a piano. How many fruits do I have?", "0") is True
    # things in no category count 0 (drafts of the 135M teacher name them)
    assert v(
        "I have a fire, a house, a bottle, a lion, a wolf, and a balloon. How many animals do I have?", "2"
    )


@pytest.mark.parametrize(
    "question",
    [
        "I have a unicorn and a dog. How many animals do I have?",  # unknown item
        "I have a dog. How many planets do I have?",  # unknown category
        "I have a dog and a chair. How many objects do I have?",  # ambiguous
        "I have a tree and a chair. How many objects do I have?",  # is a tree an object?
        "I have some dogs. How many animals do I have?",  # no quantity
        "How many animals do I have?",
    ],
)
def test_object_counting_unverifiable(question):
    assert counting.verify(question, "1") is None


def test_word_sorting_verifier_variations():
    v = sorting.verify
    q = "Sort the following words alphabetically: List: oven costume counterpart"
    assert v(q, "costume counterpart oven") is True
    assert v(q, "Costume  Counterpart Oven.") is True
    assert v(q, "oven costume counterpart") is False
    assert (
        v("Sort the following words alphabetically: List:\n Zebra apple mango", "apple mango zebra") is True
    )
    assert v("Sort these words alphabetically: pear apple", "apple pear") is True


GARBAGE = [
    "",
    "   ",
    "hello world",
    "__import__('os').system('echo hacked')",
    "Sort the following words alphabetically: List: __import__('os')",
    "((1 + 2) =",
    "1 + * 2 =",
    "(1 / 0) =",
    "True and",
    "not ( True",
    "True False is",
    "I have a dog",
    "Sort the following words alphabetically: List: 123 456",
    "Sort the following words alphabetically: List:",
    "(" * 5000 + "True" + ")" * 5000,
    "(" * 5000 + "1" + ")" * 5000 + " =",
    "-" * 5000 + "1 =",
    "not " * 5000 + "True is",
]


@pytest.mark.parametrize("name", NAMES)
def test_verifiers_return_none_on_garbage(name):
    verify = make_builtin_task(name, n_validation=1, n_test=1).verifier
    for question in GARBAGE:
        assert verify(question, "1") is None, question


def test_verifiers_never_eval(monkeypatch, big_tasks):
    def forbidden(*args, **kwargs):
        raise AssertionError("a verifier called eval/exec/compile")

    for fn in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, fn, forbidden)
    for task in big_tasks.values():
        for ex in task.test[:50]:
            assert task.verifier(ex.input, ex.target) is True
        for question in GARBAGE:
            assert task.verifier(question, "1") is None


def test_unknown_builtin_name():
    with pytest.raises(UserError, match="word_sorting"):
        make_builtin_task("word_sortin")


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_solve_agrees_with_generator_targets(name):
    import random

    from common.tasks.builtin import draw_builtin_questions, solve_builtin

    task = make_builtin_task(name, n_validation=50, n_test=50, seed=3)
    for ex in task.validation + draw_builtin_questions(name, random.Random(1), 50):
        assert task.normalize(solve_builtin(name, ex.input)) == task.normalize(ex.target)
    assert solve_builtin(name, "__import__('os')") is None


def test_navigate_solver_walks_both_forms():
    from common.tasks.builtin import navigate

    head = navigate.HEAD
    assert (
        navigate.solve(f"{head} Take 3 steps. Turn around. Take three steps.\nOptions:\n- Yes\n- No") == "Yes"
    )
    assert navigate.solve(f"{head} Take 3 steps. Turn left. Take 3 steps.") == "No"
    assert navigate.solve(f"{head} Always face forward. Take 2 steps left. Take 2 steps right.") == "Yes"
    assert navigate.solve(f"{head} Always face forward. Turn left. Take 2 steps.") is None  # no turns there
    assert navigate.solve(f"{head} Take 3 steps. Jump twice.") is None
    assert navigate.solve(f"{head} Take 3 steps. Take") is None  # a fragment after the last full stop
    explained = navigate.explain(f"{head} Take 3 steps. Turn around. Take 3 steps.")
    assert explained.startswith("Moves: 3 steps north, 3 steps south. They add up to (0, 0), the starting")
    assert explained.endswith("<ans>Yes</ans>")
    explained = navigate.explain(f"{head} Take 3 steps. Turn left. Take 2 steps. Turn right.")
    assert "3 steps north, 2 steps west. They add up to (-2, 3), not the starting point" in explained
    assert explained.endswith("<ans>No</ans>") and navigate.explain(f"{head} Jump.") is None
