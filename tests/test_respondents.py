"""The prefset stage's respondents: several models, one engine at a time, answers cached on disk,
resumed after a crash, and run in a process of their own where asked."""

import os

import pytest
from tracking_backends import EngineCrash, TrackingFactory

from arte.backends import BackendConfig
from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages import prefset
from arte.stages.prefset import PrefsetConfig, respondents
from arte.stages.prefset.respondents import respondent_configs, respondent_id
from common.records import RecordLog, read_json
from common.tasks import load_task

STUDENT = BackendConfig(name="fake", model="student", batch_size=5)  # calls of 20 prompts


def three_models(**kw) -> PrefsetConfig:
    """The student plus two respondents with their own behaviour (the fake engine's skill depends
    on the model name), at 0/1/2/3 shots: 3 x 4 = 12 rows."""
    others = [BackendConfig(name="fake", model=m, batch_size=5) for m in ("resp-a", "resp-b")]
    return PrefsetConfig(k=6, shots=[0, 1, 2, 3], respondents=others, **kw)


def tasks():
    return [load_task(n, n_validation=20, n_test=5) for n in ("boolean_expressions", "multistep_arithmetic")]


def run_stage(path, pcfg, student=STUDENT):
    cfg = RunConfig(run_dir=str(path), student=student, prefset=pcfg)
    return prefset.run(cfg, RunDir(path), tasks())


def answer_keys(path):
    records = RecordLog(path / "prefset" / "answers.jsonl").read()
    return [(r["respondent"], r["task"], r["shots"], r["demo_set"], r["question"]) for r in records]


FORGET = {"student": 0.1, "resp-a": 0.3, "resp-b": 0.5}


def test_three_models_four_shots_fit_irt_one_engine_at_a_time(tmp_path, monkeypatch):
    factory = TrackingFactory(forget=FORGET)
    monkeypatch.setattr(respondents, "load_backend", factory)
    counts = run_stage(tmp_path, three_models())
    assert factory.loads == factory.closed == ["student", "resp-a", "resp-b"]
    assert factory.max_alive == 1  # each engine closed before the next was loaded
    for name in ("boolean_expressions", "multistep_arithmetic"):
        rec = read_json(tmp_path / "prefset" / f"{name}.json")
        assert rec["method"] == "irt" and rec["reason"] == "" and counts[name]["method"] == "irt"
        assert len(rec["responses"]) == 12 and len(rec["responses"][0]) == 20
        assert rec["respondents"][:5] == [f"fake:student@{s}shot/r0" for s in range(4)] + [
            "fake:resp-a@0shot/r0"
        ]
        assert len(set(rec["indices"])) == 6 and all(d is not None and d > 0 for d in rec["discrimination"])
        # The rows differ (enough distinct respondents for the fit), and the weaker models score less.
        assert len({tuple(row) for row in rec["responses"]}) >= 8
        student, a, b = (sum(map(sum, rec["responses"][i : i + 4])) for i in (0, 4, 8))
        assert student > a > b
    assert len(answer_keys(tmp_path)) == 3 * 2 * 4 * 20


def test_a_crash_in_the_second_respondent_resumes_where_it_stopped(tmp_path, monkeypatch):
    """resp-a fails at its 3rd call (2 calls of 20 answers kept). The re-run does not load the
    student again, asks resp-a only what is missing, and the result equals an uninterrupted run's."""
    crashing = TrackingFactory(crash=("resp-a", 3))
    monkeypatch.setattr(respondents, "load_backend", crashing)
    with pytest.raises(EngineCrash):
        run_stage(tmp_path / "run", three_models())
    assert crashing.loads == ["student", "resp-a"] and crashing.closed == ["student", "resp-a"]
    assert not list((tmp_path / "run" / "prefset").glob("boolean_expressions.json"))
    keys = answer_keys(tmp_path / "run")
    assert sum(k[0] == "fake:student" for k in keys) == 160 and sum(k[0] == "fake:resp-a" for k in keys) == 40

    resumed = TrackingFactory()
    monkeypatch.setattr(respondents, "load_backend", resumed)
    run_stage(tmp_path / "run", three_models())
    assert resumed.loads == ["resp-a", "resp-b"]  # the student's answers were all cached
    assert resumed.prompts_asked("resp-a") == 120 and resumed.prompts_asked("resp-b") == 160
    keys = answer_keys(tmp_path / "run")
    assert len(keys) == len(set(keys)) == 480  # nothing asked twice

    monkeypatch.setattr(respondents, "load_backend", TrackingFactory())
    run_stage(tmp_path / "clean", three_models())
    for name in ("boolean_expressions", "multistep_arithmetic"):
        got, want = (read_json(tmp_path / r / "prefset" / f"{name}.json") for r in ("run", "clean"))
        assert got == want


def test_a_half_written_last_answer_is_dropped_and_asked_again(tmp_path, monkeypatch):
    monkeypatch.setattr(respondents, "load_backend", TrackingFactory(crash=("resp-a", 2)))
    with pytest.raises(EngineCrash):
        run_stage(tmp_path, three_models())
    log = tmp_path / "prefset" / "answers.jsonl"
    log.write_text(log.read_text() + '{"respondent": "fake:resp-a", "task": "boolean')  # a kill mid-write
    resumed = TrackingFactory()
    monkeypatch.setattr(respondents, "load_backend", resumed)
    run_stage(tmp_path, three_models())
    assert resumed.prompts_asked("resp-a") == 140 and len(set(answer_keys(tmp_path))) == 480


def test_a_respondent_in_its_own_process_gives_the_same_answers(tmp_path, monkeypatch):
    """respondent_process: subprocess: every respondent answers in a child process (its records carry
    the child's pid), the answers are the in-process ones, and a finished run loads nothing again."""
    pcfg = PrefsetConfig(k=6, shots=[0, 1], respondents=[BackendConfig(name="fake", model="resp-a")])
    run_stage(tmp_path / "child", PrefsetConfig(**{**vars(pcfg), "respondent_process": "subprocess"}))
    run_stage(tmp_path / "here", pcfg)
    child = RecordLog(tmp_path / "child" / "prefset" / "answers.jsonl").read()
    here = RecordLog(tmp_path / "here" / "prefset" / "answers.jsonl").read()
    assert {r["pid"] for r in here} == {os.getpid()} and os.getpid() not in {r["pid"] for r in child}
    assert len({r["pid"] for r in child}) == 2  # one process per respondent
    strip = [{k: v for k, v in r.items() if k != "pid"} for r in child]
    assert (
        strip == [{k: v for k, v in r.items() if k != "pid"} for r in here] and len(child) == 2 * 2 * 2 * 20
    )
    assert sorted(p.name for p in (tmp_path / "child" / "prefset" / "jobs").iterdir()) == ["1.json", "2.json"]

    factory = TrackingFactory()
    monkeypatch.setattr(respondents, "load_backend", factory)
    (tmp_path / "child" / "prefset" / "boolean_expressions.json").unlink()
    run_stage(tmp_path / "child", pcfg)  # the task is redone from the cached answers alone
    assert factory.loads == [] and read_json(tmp_path / "here" / "prefset" / "boolean_expressions.json") == (
        read_json(tmp_path / "child" / "prefset" / "boolean_expressions.json")
    )


def test_a_failing_respondent_process_is_a_user_error_that_keeps_its_answers(tmp_path):
    from common.errors import UserError

    bad = BackendConfig(name="llama_cpp", model=str(tmp_path / "missing.gguf"))
    pcfg = PrefsetConfig(k=6, shots=[0], respondents=[bad], respondent_process="subprocess")
    with pytest.raises(
        UserError, match=r"llama_cpp:.*missing\.gguf's process failed .*re-run the prefset stage"
    ):
        run_stage(tmp_path, pcfg, student=BackendConfig(name="fake", model="student"))
    assert len(answer_keys(tmp_path)) == 2 * 20  # the student's answers, from its own process


def test_respondents_are_the_student_then_extra_then_listed_each_once():
    pcfg = PrefsetConfig(
        extra_respondents=["m1"],
        respondents=[
            BackendConfig(name="fake", model="student"),  # the student again: asked once
            BackendConfig(name="hf", model="m1"),  # another engine: another respondent
        ],
    )
    got = respondent_configs(BackendConfig(name="fake", model="student", batch_size=3), pcfg)
    assert [respondent_id(r) for r in got] == ["fake:student", "fake:m1", "hf:m1"]
    assert got[1].batch_size == 3  # extra_respondents take the student's engine options
    with pytest.raises(ValueError, match="--prefset.respondents entry 0 must be an engine section"):
        PrefsetConfig(respondents=[{"name": "hf", "model": "x"}])


def test_respondent_process_is_not_part_of_the_provenance():
    from arte.provenance import config_part

    a = RunConfig(prefset=three_models())
    b = RunConfig(prefset=three_models(respondent_process="subprocess"))
    assert config_part(a, ("prefset",)) == config_part(b, ("prefset",))
    part = config_part(a, ("prefset",))["prefset"]
    assert [r["model"] for r in part["respondents"]] == ["resp-a", "resp-b"]
    assert "batch_size" not in part["respondents"][0]  # RUNTIME_ONLY of BackendConfig, in a list too


def test_rerunning_a_finished_stage_mends_a_cut_last_answer_and_loads_nothing(tmp_path, monkeypatch):
    """The remedy `check_damage` names for a damaged answers.jsonl (re-run the stage) works."""
    from common.records import jsonl_damage

    monkeypatch.setattr(respondents, "load_backend", TrackingFactory())
    run_stage(tmp_path, three_models())
    log = tmp_path / "prefset" / "answers.jsonl"
    before = read_json(tmp_path / "prefset" / "boolean_expressions.json")
    log.write_text(log.read_text() + '{"respondent": "fake:resp-b", "ta')
    assert jsonl_damage(log) is not None
    factory = TrackingFactory()
    monkeypatch.setattr(respondents, "load_backend", factory)
    run_stage(tmp_path, three_models())
    assert jsonl_damage(log) is None and factory.loads == [] and len(answer_keys(tmp_path)) == 480
    assert read_json(tmp_path / "prefset" / "boolean_expressions.json") == before
