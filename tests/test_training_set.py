"""The generate stage's training-set rules (arte/stages/training_set/): question checks, tag repair,
answer spaces, majority labels, label caps, the selection walk and the stop rule."""

from __future__ import annotations

import json
import random

import pytest

from arte.backends.base import Generation
from arte.stages.generate import GenerateConfig, baseline_from_drafts
from arte.stages.generate.balance import LabelCaps, balance_report
from arte.stages.generate.collect import collect_training_set, select
from arte.stages.generate.labels import majority
from arte.stages.generate.question_checks import QuestionChecks
from arte.stages.generate.tag_repair import read_rationale
from arte.stages.score import ScoredDraft
from common.tasks.answer_space import learn_answer_space
from common.tasks.answers import extract_answer
from common.tasks.base import Example, Task
from common.tasks.builtin import draw_builtin_questions, make_builtin_task
from common.tasks.loaders import build_task, record_to_example

BOOL = learn_answer_space("bool", ["True", "False"] * 4)
NUMBER = learn_answer_space("number", ["3", "5", "12", "7"])
PLAUSIBLE = learn_answer_space("text", ["plausible"] * 5 + ["implausible"] * 3)
OPEN = learn_answer_space("text", ["a b", "c d e", "f g"])


# ---------------------------------------------------------------- answer spaces


def test_answer_spaces_learnt_from_targets():
    assert BOOL.values == {"true", "false"} and BOOL.canonical("True.") == "true"
    assert BOOL.canonical("yes") is None
    assert PLAUSIBLE.closed and PLAUSIBLE.canonical("Implausible") == "implausible"
    assert PLAUSIBLE.canonical("maybe") is None
    assert NUMBER.integer and NUMBER.canonical("twelve") == "12" and NUMBER.canonical("2.5") is None
    assert not OPEN.closed and OPEN.canonical("anything at all") == "anything at all"
    choice = learn_answer_space("choice", ["(A)", "(C)", "(B)"])
    assert choice.canonical("(c)") == "c" and choice.canonical("(E)") is None
    assert PLAUSIBLE.distribution() == {"implausible": 3 / 8, "plausible": 5 / 8}


# ---------------------------------------------------------------- question checks


def _checks() -> QuestionChecks:
    return QuestionChecks.learn(
        [
            "not ( True ) and ( False or True ) is",
            "True is",
            "not not ( False ) is",
            "True or False is",
        ]
    )


@pytest.mark.parametrize(
    ("question", "problem"),
    [
        ("( True and False ) is", None),
        ("not True is", None),
        ("The bat", "fragment"),  # the BBH fragment of the issue: ends unlike every reference
        ("is", "too_short"),
        ("True and " * 20 + "False is", "too_long"),
        ("not ( not () ) is", "template"),  # empty parentheses: a slot left unfilled
        ("( ... ) and True is", "template"),
        ("<input>True and False is", "template"),
        ("True and ___ is", "template"),
        ("True and False or True are", "fragment"),
    ],
)
def test_question_checks(question, problem):
    assert _checks().problem(question) == problem


def test_a_sign_the_references_show_is_not_a_template():
    checks = QuestionChecks.learn(
        ["Complete the rest: [ ( [", "Complete the rest: { [ (", "Complete the rest: ( ["]
    )
    assert checks.problem("Complete the rest: [ { ( [") is None  # brackets are this task's content
    assert checks.problem("Complete the rest: ... [") == "template"


def test_short_reference_questions_allow_short_questions():
    checks = QuestionChecks.learn(["True is", "not False is", "True and False is"])
    assert checks.problem("False is") is None


# ---------------------------------------------------------------- tag repair


@pytest.mark.parametrize(
    ("raw", "space", "answer", "repaired", "text"),
    [
        ("Step. <ans>True</ans>", BOOL, "true", False, "Step. <ans>True</ans>"),
        ("The answer is True.", BOOL, "true", True, "The answer is True. <ans>True</ans>"),
        ("The answer is True.\nQuestion: x is Answer: The answer is False.", BOOL, "true", True, None),
        (
            "2 + 3 = 5. So the answer is five.",
            NUMBER,
            "5",
            True,
            "2 + 3 = 5. So the answer is five. <ans>five</ans>",
        ),
        ("It is odd. The answer is implausible.", PLAUSIBLE, "implausible", True, None),
        ("so <ans>False", BOOL, "false", True, "so <ans>False</ans>"),
        ("<ans>False</ans> and then more text", BOOL, "false", False, "<ans>False</ans>"),
    ],
)
def test_tag_repair_accepts(raw, space, answer, repaired, text):
    got = read_rationale(raw, space)
    assert (got.answer, got.repaired) == (answer, repaired)
    assert extract_answer(got.text) is not None and "Question:" not in got.text
    if text is not None:
        assert got.text == text


@pytest.mark.parametrize(
    ("raw", "space", "reason"),
    [
        ("The answer is a b.", OPEN, "no_tag"),  # open space: where the answer ends is a guess
        ("The answer is True or False.", BOOL, "no_tag"),  # two answers
        ("The answer is True. Then the answer is False.", BOOL, "no_tag"),  # an earlier one disagrees
        ("The answer is maybe.", BOOL, "outside_space"),
        ("The answer is 2.5.", NUMBER, "outside_space"),  # integers only
        ("True and False is False.", BOOL, "no_tag"),  # states no answer
        ("<ans>yes</ans>", BOOL, "outside_space"),
        ("", BOOL, "no_tag"),
    ],
)
def test_tag_repair_refuses(raw, space, reason):
    got = read_rationale(raw, space)
    assert got.answer is None and not got.repaired and got.reason == reason


# ---------------------------------------------------------------- majority and caps


def test_majority_vote():
    assert majority(["true", "true", "false"], 2).label == "true"
    assert majority(["true", "false"], 1).label is None  # a tie
    assert majority(["true", None, None], 2).label is None  # too few votes
    assert majority([None, "5", "5", "4", "4", "5"], 2).label == "5"


def test_label_caps_follow_the_reference_shares():
    caps = LabelCaps(PLAUSIBLE, n=40, tolerance=0.05)
    assert caps.cap("plausible") == 27 and caps.cap("implausible") == 17  # floor(40 * (share + 0.05))
    assert caps.cap("never seen") == 2
    for _ in range(17):
        caps.take("implausible")
    assert caps.is_full("implausible") and not caps.is_full("plausible")
    report = balance_report(["plausible"] * 6 + ["implausible"] * 4, PLAUSIBLE)
    assert report["max_gap_points"] == pytest.approx(2.5)


# ---------------------------------------------------------------- selection


def _bool_task(n_validation: int = 40) -> Task:
    return make_builtin_task("boolean_expressions", n_validation=n_validation, n_test=5)


def _questions(task: Task, n: int, wrong_target: bool = False) -> list[dict]:
    out = []
    for i, ex in enumerate(draw_builtin_questions(task.name, random.Random(7), n)):
        target = ("False" if ex.target == "True" else "True") if wrong_target else ex.target
        out.append({"qid": f"q{i}", "input": ex.input, "target": target})
    return out


def test_solver_labels_and_the_teacher_target_is_only_checked():
    task = _bool_task()
    qs = _questions(task, 6, wrong_target=True)
    rationales = {(q["qid"], 0): f"So <ans>{task.solver(q['input'])}</ans>" for q in qs}
    cfg = GenerateConfig(n_examples=6, balance_tolerance=1.0)
    sel = select(task, qs, rationales, cfg, "arte")
    assert [r["target"] for r in sel.rows] == [task.solver(q["input"]) for q in qs]
    assert sel.counts["teacher_target_agrees"] == 0 and all(r["label_from"] == "solver" for r in sel.rows)


def test_more_rationales_only_where_the_greedy_one_misses():
    task = _bool_task()
    qs = _questions(task, 4)
    rationales = {}
    for j, q in enumerate(qs):
        truth = task.solver(q["input"])
        rationales[(q["qid"], 0)] = f"<ans>{truth if j % 2 == 0 else 'maybe'}</ans>"
    sel = select(task, qs, rationales, GenerateConfig(n_examples=4, samples=3, balance_tolerance=1.0), "arte")
    assert len(sel.rows) == 2
    assert sel.needs == [(qs[1], 1), (qs[1], 2), (qs[3], 1), (qs[3], 2)]
    final = select(task, qs, rationales, GenerateConfig(n_examples=4, samples=3), "arte", can_sample=False)
    assert final.counts["no_agreeing_rationale"] == 2 and not final.needs


def test_vote_labels_without_a_solver_and_keep_an_agreeing_rationale():
    task = _bool_task()
    qs = _questions(task, 3)
    texts = {
        0: ["<ans>True</ans>", "The answer is True.", "<ans>False</ans>"],
        1: ["<ans>True</ans>", "x", "y"],
    }
    texts[2] = ["<ans>False</ans>", "<ans>True</ans>", "no"]
    rationales = {(q["qid"], i): t for j, q in enumerate(qs) for i, t in enumerate(texts[j])}
    cfg = GenerateConfig(n_examples=3, samples=3, min_votes=2, verify=False, balance_tolerance=1.0)
    sel = select(task, qs, rationales, cfg, "arte")
    assert [r["label"] for r in sel.rows] == ["true"] and sel.rows[0]["label_from"] == "vote"
    assert sel.counts["no_majority"] == 2 and sel.counts["voted"] == 3


def test_a_full_label_is_skipped_not_relabelled():
    task = _bool_task()
    qs = _questions(task, 30)
    rationales = {(q["qid"], 0): f"<ans>{task.solver(q['input'])}</ans>" for q in qs}
    sel = select(task, qs, rationales, GenerateConfig(n_examples=10, balance_tolerance=0.0), "arte")
    shares = task_shares(task)
    counts = {lab: sum(r["label"] == lab for r in sel.rows) for lab in ("true", "false")}
    assert all(counts[lab] <= int(10 * shares[lab]) for lab in counts) and sel.counts["over_cap"] > 0
    assert all(r["target"].casefold() == r["label"] for r in sel.rows)


def task_shares(task: Task) -> dict[str, float]:
    targets = [e.target.casefold() for e in task.seeds + task.validation]
    return {lab: targets.count(lab) / len(targets) for lab in ("true", "false")}


def test_drafts_baseline_keeps_the_best_scoring_agreeing_rationale():
    task = _bool_task()
    q = _questions(task, 1)[0]
    truth = task.solver(q["input"])
    wrong = "False" if truth == "True" else "True"
    drafts = [
        ScoredDraft(task.name, q["qid"], q["input"], q["target"], s, r, score)
        for s, r, score in [
            ("expert", f"A. <ans>{truth}</ans>", 0.2),
            ("rules", f"B. <ans>{wrong}</ans>", 0.9),  # the best score, but a wrong answer
            ("plain", f"C. <ans>{truth}</ans>", 0.5),
        ]
    ]
    rows, counts = baseline_from_drafts(task, drafts, GenerateConfig(n_examples=5))
    assert [r["completion"] for r in rows] == [f" C. <ans>{truth}</ans>"] and counts["stop"] == "drafts"


# ---------------------------------------------------------------- the loop and its stop rule


class ScriptedTeacher:
    """Brainstorm calls return `per_call` new valid questions (then nothing once `questions` run out);
    rationales answer right when `right(question)`; counts every prompt."""

    def __init__(self, task: Task, questions: int, right=lambda q: True):
        self.task, self.right, self.prompts = task, right, 0
        self.pool = [e.input for e in draw_builtin_questions(task.name, random.Random(3), questions)]

    def generate(self, prompts, params):
        self.prompts += len(prompts)
        out = []
        for p in prompts:
            if p.startswith(self.task.name):  # the brainstorm prompt
                batch, self.pool = self.pool[:2], self.pool[2:]
                blocks = [
                    f"<Question_{i}><input>{q}</input><target>True</target>" for i, q in enumerate(batch, 4)
                ]
                text = "\n".join(blocks).removeprefix("<Question_4><input>")
            else:
                q = p.rsplit("Question: ", 1)[1].removesuffix(" Answer: Let's think step by step.")
                truth = self.task.solver(q)
                text = f" The answer is {truth if self.right(q) else 'unknown'}."
            out.append(Generation(text, "stop", 1, 1))
        return out

    def close(self):
        pass


def _collect(task, teacher, tmp_path, **cfg):
    from arte.stages.elicit import QuestionConfig

    gen = GenerateConfig(questions=QuestionConfig(m=4, spare_calls=0), samples=2, min_votes=1, **cfg)
    return collect_training_set(task, teacher, gen, tmp_path, source="arte", seed=0, call_size=8, example="")


def test_collect_stops_when_enough_and_resumes_without_calls(tmp_path):
    task = _bool_task()
    teacher = ScriptedTeacher(task, 200)
    rows, report = _collect(task, teacher, tmp_path, n_examples=10, max_calls=500, balance_tolerance=1.0)
    assert report["stop"] == "enough" and len(rows) == 10 and report["selection"]["repaired"] == 10
    made = teacher.prompts
    again = ScriptedTeacher(task, 200)
    rows2, _ = _collect(task, again, tmp_path, n_examples=10, max_calls=500, balance_tolerance=1.0)
    assert rows2 == rows and again.prompts == 0 and made == report["teacher_calls"]


def test_collect_stops_on_the_budget(tmp_path):
    task = _bool_task()
    teacher = ScriptedTeacher(task, 400, right=lambda q: len(q) % 3 == 0)
    rows, report = _collect(task, teacher, tmp_path, n_examples=50, max_calls=40, balance_tolerance=1.0)
    assert report["stop"] == "budget" and len(rows) < 50
    assert teacher.prompts <= 40 + 8  # one brainstorm call of spares at most beyond the budget


def test_collect_stops_when_the_teacher_gives_up(tmp_path):
    task = _bool_task()
    teacher = ScriptedTeacher(task, 6)  # 6 questions in all, then empty brainstorm calls
    rows, report = _collect(task, teacher, tmp_path, n_examples=20, max_calls=5000, balance_tolerance=1.0)
    assert report["stop"] == "teacher_gave_up" and 0 < len(rows) <= 6


# ---------------------------------------------------------------- worked examples


@pytest.mark.parametrize(
    "name", ["boolean_expressions", "multistep_arithmetic", "object_counting", "word_sorting"]
)
def test_builtin_explanations_reason_and_end_in_the_answer(name):
    task = make_builtin_task(name, n_validation=5, n_test=5)
    with_steps = 0
    for ex in draw_builtin_questions(name, random.Random(11), 100):
        text = task.explainer(ex.input)
        assert task.normalize(extract_answer(text)) == task.normalize(ex.target)
        with_steps += not text.startswith("So the answer is")  # a step before the answer
    assert with_steps >= 80  # only one-operand questions ("True is") have no step to show


def test_seed_rationale_field_is_the_worked_example(tmp_path):
    from arte.stages.elicit import teacher_example

    ex = record_to_example(
        {"input": "Is 2 even?", "target": "yes", "rationale": "2 = 2 * 1. <ans>yes</ans>"}, "x"
    )
    assert ex.rationale == "2 = 2 * 1. <ans>yes</ans>"
    with pytest.raises(Exception, match='"rationale" must be a string'):
        record_to_example({"input": "q", "target": "t", "rationale": 3}, "f.jsonl:4")
    examples = [ex] + [Example(f"Is {i} even?", "yes" if i % 2 == 0 else "no") for i in range(3, 12)]
    task = build_task("even", "Parity.", examples, source="t", n_validation=4, n_test=4, seed=0)
    seed = task.seeds[0]
    expected = seed.rationale or f"The answer is {seed.target}. <ans>{seed.target}</ans>"
    assert expected in teacher_example(task, True)
    assert json.dumps(teacher_example(task, False)) == '""'
