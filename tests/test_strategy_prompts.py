"""Strategy prompts from the run config (arte/stages/strategy_prompts.py, `ElicitConfig`): for every
task or for one, with the standard <ans> sentence appended once; prompt erasure (pairs) unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from arte.backends import BackendConfig, load_backend
from arte.run_config import RunConfig
from arte.stages.elicit import ElicitConfig, elicit_rationales, strategy_prompt
from arte.stages.pairs import PairsConfig, build_rationale_pairs
from arte.stages.score import ScoredDraft
from common.config import load_config
from common.errors import UserError
from common.prompts import ANSWER_FORMAT, naive_prompt
from common.records import RecordLog
from common.tasks import load_task

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
SURVEYOR = "You are a surveyor. Track the position after every move of {task}."
COUNT = "{description} Count every item on its own, then add."


class RecordingTeacher:
    """The fake teacher, keeping every prompt it was sent."""

    def __init__(self):
        self.inner, self.prompts = load_backend(BackendConfig(name="fake", model="t")), []

    def generate(self, prompts, params):
        self.prompts += list(prompts)
        return self.inner.generate(prompts, params)


def _config(**elicit) -> RunConfig:
    return load_config(RunConfig, SMOKE, {"elicit": elicit})


def test_a_tasks_own_prompt_reaches_the_teacher_for_that_task_only(tmp_path):
    cfg = _config(
        strategies=["expert", "count"],
        strategy_prompts={"count": COUNT},
        task_strategy_prompts={"navigate": {"expert": SURVEYOR}},
    ).elicit
    seen = {}
    for name in ("navigate", "boolean_expressions"):
        task = load_task(name, n_validation=5, n_test=5)
        teacher = RecordingTeacher()
        questions = [{"qid": f"{name}-q0", "input": task.test[0].input, "target": task.test[0].target}]
        drafts = elicit_rationales(task, questions, teacher, cfg, RecordLog(tmp_path / f"{name}.jsonl"))
        assert [d.strategy for d in drafts] == ["expert", "count"]
        seen[name] = dict(zip(("expert", "count"), teacher.prompts))
    nav, boolean = seen["navigate"], seen["boolean_expressions"]
    assert nav["expert"].startswith("You are a surveyor. Track the position after every move of navigate.")
    assert "surveyor" not in boolean["expert"]
    assert boolean["expert"].startswith("You are an expert in boolean_expressions.")  # the built-in text
    for name, prompts in seen.items():
        task = load_task(name, n_validation=5, n_test=5)
        assert prompts["count"].startswith(f"{task.description} Count every item on its own, then add.")
        for text in prompts.values():  # the standard sentence once, at the end of the instructions
            head = text.split("\n", 1)[0]
            assert head.endswith(f" {ANSWER_FORMAT}") and text.count("<ans>") == 1


def test_a_text_without_the_tag_gets_the_standard_sentence_and_one_with_it_keeps_one():
    task = load_task("navigate", n_validation=5, n_test=5)
    plain = ElicitConfig(strategy_prompts={"mine": "Think about the moves."}, strategies=["mine"])
    assert plain.prompt_text(task, "mine") == f"Think about the moves. {ANSWER_FORMAT}"
    with_it = ElicitConfig(
        strategy_prompts={"mine": f"Think about the moves. {ANSWER_FORMAT}"}, strategies=["mine"]
    )
    assert with_it.prompt_text(task, "mine") == f"Think about the moves. {ANSWER_FORMAT}"
    braces = ElicitConfig(
        strategy_prompts={"mine": 'Output JSON like {"x": 1} for {task}.'}, strategies=["mine"]
    )
    assert braces.prompt_text(task, "mine").startswith('Output JSON like {"x": 1} for navigate.')
    prompt = strategy_prompt(task, "mine", "Q?", "", plain)
    assert prompt.endswith("Question: Q? Answer: Let's think step by step.")


@pytest.mark.parametrize(
    "elicit, message",
    [
        (
            {"task_strategy_prompts": {"navigate": {"expert": "Answer in <ans></ans> tags."}}},
            r"--elicit.task_strategy_prompts.navigate.expert asks for the <ans> tag in its own words",
        ),
        ({"strategy_prompts": {"rules": ""}}, r"--elicit.strategy_prompts.rules must be a non-empty string"),
        ({"strategy_prompts": {"bad name": "x"}}, r"strategy name 'bad name'"),
        ({"strategies": ["expert", "nope"]}, r"--elicit.strategies: unknown \['nope'\]"),
        (
            {"strategy_prompts": {"only": ANSWER_FORMAT}, "strategies": ["only"]},
            "holds only the format sentence",
        ),
    ],
)
def test_bad_strategy_prompts_are_refused_naming_the_key(elicit, message):
    with pytest.raises(UserError, match=message):
        _config(**elicit)


def test_strategies_must_exist_for_every_task_and_per_task_keys_name_run_tasks():
    cfg = _config(strategies=["expert", "survey"], task_strategy_prompts={"navigate": {"survey": SURVEYOR}})
    cfg.elicit.check_tasks(["navigate"])  # defined where it is used
    with pytest.raises(UserError, match=r"no prompt text for some tasks \(boolean_expressions: survey\)"):
        cfg.elicit.check_tasks(["navigate", "boolean_expressions"])
    cfg = _config(task_strategy_prompts={"navigat": {"expert": SURVEYOR}})
    with pytest.raises(UserError, match=r"names task\(s\) navigat that are not among the run's tasks"):
        cfg.elicit.check_tasks(["navigate"])


def test_prompt_erasure_removes_a_custom_strategy_and_keeps_the_tag_instruction():
    task = load_task("navigate", n_validation=5, n_test=5)
    q = task.test[0]
    drafts = [
        ScoredDraft(task.name, "q0", q.input, q.target, name, f"r {name} <ans>{q.target}</ans>", score)
        for name, score in (("survey", 0.9), ("count", 0.1))
    ]
    (row,) = build_rationale_pairs(task, drafts, PairsConfig())
    assert row["prompt"] == naive_prompt(task.description, q.input)
    assert "surveyor" not in row["prompt"] and ANSWER_FORMAT in row["prompt"]
    assert (row["chosen_id"], row["rejected_id"]) == ("q0/survey", "q0/count")


def test_a_stray_task_prompt_stops_the_run_before_any_file_is_written(tmp_path, capsys):
    import yaml

    from arte.cli import main

    config, run = tmp_path / "run.yaml", tmp_path / "run"
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml").read_text())
    cfg["elicit"]["task_strategy_prompts"] = {"navigat": {"expert": "Think like an expert about {task}."}}
    config.write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(config), "--run_dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "names task(s) navigat" in err and "Traceback" not in err
    assert not run.exists()
