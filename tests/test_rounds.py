"""Iterative ARTE (--rounds, arte/stages/rounds.py): round 2 drafts with round 1's aligned teacher,
scores on round 1's D_pref, aligns from the teacher --round_align_from names, trains arte_r2, and
the summary has one row per round; a killed round resumes on its own."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from patching import patch_everywhere

from arte.pipeline import run_pipeline
from arte.run_config import RunConfig
from arte.run_dir import RunDir
from common.config import load_config
from common.errors import UserError
from common.records import RecordLog

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
SMALL = {"tasks": ["multistep_arithmetic"], "evaluate": {"shots": [0], "n_test": 4}}


def _config(run: Path, **extra) -> RunConfig:
    return load_config(RunConfig, SMOKE, {**SMALL, "run_dir": str(run), "rounds": 2, **extra})


def _rows(path: Path) -> set[tuple]:
    return {(r["task"], r["question"], r["completion"]) for r in RecordLog(path)}


def _provenance(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "done.json").read_text())["provenance"]["config"]


class _CallCounter:
    """A teacher whose generate calls are counted (the rest passes through)."""

    def __init__(self, inner, calls: list):
        self.inner, self.calls = inner, calls

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        return self.inner.generate(prompts, params)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_two_rounds_end_to_end(tmp_path, monkeypatch):
    from arte import backends
    from arte.stages import generate

    run = tmp_path / "run"
    loaded: list[str] = []
    real = backends.load_backend
    patch_everywhere(monkeypatch, "arte.backends.load_backend", lambda c: loaded.append(c.model) or real(c))
    baseline_calls: dict[str, list] = {}
    collect = generate.collect_training_set

    def counted(task, teacher, gcfg, out, **kw):
        calls = baseline_calls.setdefault(str(out.relative_to(run)), [])
        return collect(task, _CallCounter(teacher, calls), gcfg, out, **kw)

    monkeypatch.setattr(generate, "collect_training_set", counted)
    manifest = run_pipeline(_config(run))
    r2 = run / "rounds" / "r2"
    assert list(manifest["stages"])[-2:] == ["rounds", "evaluate"]

    # Round 2 drafted with round 1's aligned teacher and aligned from it (the default, previous).
    aligned_1 = str(run / "align" / "teacher")
    assert _provenance(r2, "elicit")["teacher"]["model"] == aligned_1
    assert _provenance(r2, "align")["align"]["base_model"] == aligned_1
    assert aligned_1 in loaded
    # Same D_pref as round 1, byte for byte, and the round's gain was scored on it.
    for name in ("multistep_arithmetic.json",):
        assert (r2 / "prefset" / name).read_bytes() == (run / "prefset" / name).read_bytes()
    pref_tags = {r["pref"] for r in RecordLog(run / "gain" / "scores.jsonl")}
    assert {r["pref"] for r in RecordLog(r2 / "gain" / "scores.jsonl")} == pref_tags
    # The round's baseline is round 1's tailored set, read back from its logs, not drawn again.
    assert _rows(r2 / "generate" / "original.jsonl") == _rows(run / "generate" / "arte.jsonl")
    assert baseline_calls["rounds/r2/generate/original"] == [] and baseline_calls["rounds/r2/generate/arte"]
    assert baseline_calls["generate/arte"] and baseline_calls["generate/original"]
    assert (r2 / "train" / "arte" / "config.json").is_file()
    assert not (r2 / "train" / "original").exists() and not (r2 / "evaluate").exists()
    # The aligned teacher moved again: round 2's weights differ from round 1's.
    w1, w2 = (next((d / "align" / "teacher").glob("*.safetensors")).read_bytes() for d in (run, r2))
    assert w1 != w2

    # Evaluate tested arte_r2 on the same questions; the summary has a row per round.
    evaluated = {(r["task"], r["shots"], r["index"]) for r in RecordLog(run / "evaluate" / "arte_r2.jsonl")}
    assert evaluated == {
        (r["task"], r["shots"], r["index"]) for r in RecordLog(run / "evaluate" / "arte.jsonl")
    }
    summary = json.loads((run / "summary.json").read_text())
    comparisons = {d["comparison"] for d in summary["accuracy"]["differences"]}
    assert {"arte_r2 - arte", "arte_r2 - original"} <= comparisons and "arte - arte_r2" not in comparisons
    rounds = summary["rounds"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and rounds[1]["drafting_teacher"] == aligned_1
    assert rounds[1]["pairs"] == sum(1 for _ in RecordLog(r2 / "pairs" / "dpo.jsonl"))
    assert rounds[1]["dpo"]["steps"] and rounds[1]["preference_gain"]["vs_drafts"]
    assert summary["data"]["sft_examples_per_task"]["arte_r2"] == rounds[1]["sft_examples_per_task"]
    md = (run / "summary.md").read_text()
    assert "## Iterative rounds" in md and "| 2 | arte_r2 | " + aligned_1 in md


def test_a_round_killed_half_way_resumes_on_its_own(tmp_path, monkeypatch):
    from arte.stages import align

    run = tmp_path / "run"
    cfg = _config(run, evaluate={"shots": [0], "n_test": 2})
    real = align.build_dpo_trainer

    def fail_in_round_2(model_dir, pairs_path, *a, **kw):
        if "rounds" in str(pairs_path):
            raise KeyboardInterrupt("killed")
        return real(model_dir, pairs_path, *a, **kw)

    monkeypatch.setattr(align, "build_dpo_trainer", fail_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg)
    r2 = run / "rounds" / "r2"
    assert RunDir(r2).is_done("pairs") and not RunDir(r2).is_done("align")
    assert not RunDir(run).is_done("rounds")
    drafts = (r2 / "elicit" / "drafts.jsonl").read_bytes()
    elicit_done = (r2 / "elicit" / "done.json").read_bytes()

    monkeypatch.setattr(align, "build_dpo_trainer", real)
    manifest = run_pipeline(cfg)
    assert list(manifest["stages"])[-2:] == ["rounds", "evaluate"]
    assert (r2 / "elicit" / "drafts.jsonl").read_bytes() == drafts  # not drafted again
    assert (r2 / "elicit" / "done.json").read_bytes() == elicit_done
    assert RunDir(r2).is_done("align") and (r2 / "train" / "arte" / "config.json").is_file()


def _fake_align(run: Path) -> None:
    teacher = run / "align" / "teacher"
    teacher.mkdir(parents=True)
    (teacher / "config.json").write_text("{}")


def test_round_configs_name_the_right_teachers(tmp_path):
    from arte.stages.rounds import round_config

    run = tmp_path / "run"
    for d in (run, run / "rounds" / "r2"):
        _fake_align(d)
    cfg = load_config(RunConfig, SMOKE, {"run_dir": str(run), "rounds": 3})
    r2, r3 = (round_config(cfg, RunDir(run), r) for r in (2, 3))
    assert (r2.run_dir, r3.run_dir) == (str(run / "rounds" / "r2"), str(run / "rounds" / "r3"))
    assert r2.teacher.model == str(run / "align" / "teacher")
    assert r3.teacher.model == str(run / "rounds" / "r2" / "align" / "teacher")
    assert r2.teacher.name == cfg.aligned_teacher.name  # the aligned teacher's engine
    assert r3.align.base_model == str(run / "rounds" / "r2" / "align" / "teacher")
    assert r2.rounds == r3.rounds == 1 and r2.prefset == cfg.prefset

    original = load_config(
        RunConfig, SMOKE, {"run_dir": str(run), "rounds": 3, "round_align_from": "original"}
    )
    o3 = round_config(original, RunDir(run), 3)
    assert o3.teacher.model == str(run / "rounds" / "r2" / "align" / "teacher")
    assert o3.align.base_model == cfg.teacher.model == "tiny-random-llama"


def test_a_round_on_another_d_pref_is_refused(tmp_path):
    from arte.stages.rounds import check_same_pref
    from common.tasks import load_tasks

    run, r2 = tmp_path / "run", tmp_path / "run" / "rounds" / "r2"
    for d, indices in ((run, [1, 2, 3]), (r2, [1, 2, 4])):
        (d / "prefset").mkdir(parents=True)
        (d / "prefset" / "boolean_expressions.json").write_text(json.dumps({"indices": indices}))
    tasks = load_tasks(["boolean_expressions"], n_validation=12, n_test=8, seed=0)
    with pytest.raises(UserError, match="D_pref differs from round 1's"):
        check_same_pref(RunDir(run), RunDir(r2), tasks)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rounds": 0}, "--rounds must be >= 1"),
        ({"rounds": 2, "aligned_teacher_from": "runs/x"}, "--rounds > 1 aligns the teacher again"),
    ],
)
def test_round_settings_are_checked(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(RunConfig, SMOKE, overrides)


def test_rounds_draw_only_the_tailored_set_unless_asked(tmp_path):
    """Issue 28 (9): a round inherited --variants and drew unused ablation sets, and size matching
    then cut arte_rR to the smallest of them."""
    from arte.stages.rounds import round_config

    run = tmp_path / "run"
    _fake_align(run)
    ablations = ["original", "arte", "question_only", "rationale_only"]
    cfg = load_config(RunConfig, SMOKE, {"run_dir": str(run), "rounds": 2, "variants": ablations})
    assert round_config(cfg, RunDir(run), 2).variants == ["original", "arte"]
    asked = dataclasses.replace(cfg, round_ablations=True)
    assert round_config(asked, RunDir(run), 2).variants == ablations
