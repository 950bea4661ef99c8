"""The paper's Table 2 ablation sets (arte/stages/training_set/ablations.py): question_only and
rationale_only, made by the generate stage from two fake teachers that can be told apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from patching import patch_everywhere

from arte.backends import BackendConfig, SamplingParams
from arte.run_config import RunConfig, load_run_tasks
from arte.run_dir import RunDir
from arte.stages import generate
from arte.stages.evaluate.summary import training_sets
from arte.stages.generate.ablations import size_mismatches
from arte.stages.generate.collect import SEED_OFFSET
from arte.stages.generate.size_match import match_sizes
from common.config import load_config
from common.errors import UserError
from common.records import RecordLog, write_jsonl_atomic
from common.tasks.answer_space import task_answer_space
from common.tasks.answers import extract_answer

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
ALL = ["original", "arte", "question_only", "rationale_only"]


class MarkedTeacher:
    """The fake teacher, told apart by its model: the aligned one (its model is the align stage's
    directory) drafts other questions (shifted seeds) and each one signs its rationales."""

    def __init__(self, cfg, calls: list[str]):
        from arte.backends.fake import FakeBackend

        self.inner, self.calls = FakeBackend(cfg), calls
        self.mark = "aligned" if "align" in Path(cfg.model).parts else "original"

    def generate(self, prompts, params):
        self.calls.append(self.mark)
        if self.mark == "aligned":
            shift = tuple(s + 7919 for s in params.seeds) if params.seeds else params.seeds
            params = dataclasses.replace(params, seed=params.seed + 7919, seeds=shift)
        gens = self.inner.generate(prompts, params)
        mark = f"[{self.mark}] The answer is"
        return [dataclasses.replace(g, text=g.text.replace("The answer is", mark)) for g in gens]

    def close(self) -> None:
        pass


def _generate(run: Path, monkeypatch, variants: list[str], calls: list[str]) -> tuple[dict, list]:
    cfg = load_config(RunConfig, SMOKE, {"run_dir": str(run), "variants": variants})
    (run / "align" / "teacher").mkdir(parents=True, exist_ok=True)  # the fake aligned teacher's "model"
    patch_everywhere(monkeypatch, "arte.backends.load_backend", lambda c: MarkedTeacher(c, calls))
    tasks = load_run_tasks(cfg)
    return generate.run(cfg, RunDir(run), tasks), tasks


def _drafted_by(run: Path, cfg_q, variant: str, source: str, task, mark: str) -> set[str]:
    """The questions of `variant`'s brainstorm log, checked call by call to be `mark`'s teacher's (its
    text for that call's seed), and to start with the `source` set's log."""
    from arte.stages.elicit import question_prompt

    logged = RecordLog(run / "generate" / variant / f"{task.name}.questions.jsonl").read()
    source_log = RecordLog(run / "generate" / source / f"{task.name}.questions.jsonl").read()
    assert logged[: len(source_log)] == source_log
    teacher = MarkedTeacher(
        BackendConfig(name="fake", model=str(run / "align" / "teacher") if mark == "aligned" else "t"), []
    )
    for rec in logged:
        seed = SEED_OFFSET + rec["call"]
        params = SamplingParams(cfg_q.question_max_new_tokens, cfg_q.temperature, seed=seed, seeds=(seed,))
        assert teacher.generate([question_prompt(task)], params)[0].text == rec["text"]
    return {q for r in logged for q, _ in r["questions"]}


def test_ablations_mix_the_two_teachers_size_matched_and_resume_without_calls(tmp_path, monkeypatch):
    run, calls = tmp_path / "run", []
    counts, tasks = _generate(run, monkeypatch, ALL, calls)
    cfg_q = load_config(RunConfig, SMOKE).generate.questions
    for task in tasks:
        aligned_q = _drafted_by(run, cfg_q, "question_only", "arte", task, "aligned")
        original_q = _drafted_by(run, cfg_q, "rationale_only", "original", task, "original")
        assert aligned_q != original_q  # the two teachers drafted different questions (a few coincide)
        for variant, (q_by, r_by, q_pool, r_mark, other) in {
            "question_only": ("arte", "original", aligned_q, "[original]", "[aligned]"),
            "rationale_only": ("original", "arte", original_q, "[aligned]", "[original]"),
        }.items():
            rows = [r for r in RecordLog(run / "generate" / f"{variant}.jsonl") if r["task"] == task.name]
            assert len(rows) == 12 and counts[task.name][variant]["kept"] == 12
            assert counts[task.name][variant]["stop"] == "enough"
            logs = [RecordLog(run / "generate" / d / f"{task.name}.questions.jsonl") for d in (q_by, variant)]
            copied, total = (len(log.read()) for log in logs)
            report = counts[task.name][variant]
            assert (report["questions_copied_calls"], report["questions_new_calls"]) == (
                copied,
                total - copied,
            )
            assert all(r["questions_by"] == q_by and r["rationales_by"] == r_by for r in rows)
            qs = {r["question"] for r in rows}
            other_pool = original_q if q_pool is aligned_q else aligned_q
            assert qs <= q_pool and not qs <= other_pool  # the questions are q_by's teacher's
            assert all(r_mark in r["completion"] and other not in r["completion"] for r in rows)
            # same filters as the others: the solver's label, and the rationale agrees with it
            space = task_answer_space(task)
            assert all(r["label_from"] == "solver" for r in rows)
            assert all(space.canonical(extract_answer(r["completion"])) == r["label"] for r in rows)
    sizes = training_sets(RunDir(run), tasks, ALL)
    assert size_mismatches(sizes, 12) == []

    # The arte and original sets are the same with or without the ablations.
    base = tmp_path / "base"
    _generate(base, monkeypatch, ["original", "arte"], [])
    for name in ("arte", "original"):
        assert (base / "generate" / f"{name}.jsonl").read_bytes() == (
            run / "generate" / f"{name}.jsonl"
        ).read_bytes()
    assert not (base / "generate" / "question_only.jsonl").exists()

    # Re-run: everything comes from the logs, not one teacher call; identical sets.
    before = {v: (run / "generate" / f"{v}.jsonl").read_bytes() for v in ALL}
    calls.clear()
    _generate(run, monkeypatch, ALL, calls)
    assert calls == []
    assert {v: (run / "generate" / f"{v}.jsonl").read_bytes() for v in ALL} == before

    # A set one example short of N is reported, naming the set and the task.
    path = run / "generate" / "question_only.jsonl"
    write_jsonl_atomic(path, RecordLog(path).read()[1:])
    short = size_mismatches(training_sets(RunDir(run), tasks, ALL), 12)
    assert short == [f"{tasks[0].name}: original 12, arte 12, question_only 11, rationale_only 12 of 12"]


def test_size_mismatches_and_trimming_to_the_smallest_set():
    sizes = {"arte": {"t": 5, "u": 3}, "original": {"t": 4, "u": 3}}
    assert size_mismatches(sizes, 5) == ["t: arte 5, original 4 of 5", "u: all 3 of 5"]
    assert size_mismatches({"arte": {"t": 5}, "original": {"t": 5}}, 5) == []
    rows = {
        "arte": [{"task": "t", "i": i} for i in range(5)] + [{"task": "u", "i": i} for i in range(3)],
        "original": [{"task": "u", "i": i} for i in range(6)] + [{"task": "t", "i": i} for i in range(4)],
    }
    sets = {name: (r, {"t": {}, "u": {}}) for name, r in rows.items()}
    tasks = [SimpleNamespace(name="t"), SimpleNamespace(name="u")]
    assert match_sizes(sets, tasks, "trim", seed=0) == {"t": 4, "u": 3}
    for kept, counts in sets.values():
        assert [(r["task"], r["i"]) for r in kept if r["task"] == "t"] == [("t", i) for i in range(4)]
        assert [(r["task"], r["i"]) for r in kept if r["task"] == "u"] == [("u", i) for i in range(3)]
        assert counts["t"]["size_match"]["after"] == 4 and counts["u"]["size_match"]["after"] == 3
    assert sets["original"][1]["u"]["size_match"] == {"mode": "trim", "before": 6, "after": 3}


@pytest.mark.parametrize(
    "variants, message",
    [
        (["original", "arte", "questions_only"], "--variants must name distinct students"),
        (["arte", "question_only"], "--variants must include original and arte"),
        (["original", "arte", "arte"], "--variants must name distinct students"),
    ],
)
def test_bad_variant_lists_are_refused(variants, message):
    with pytest.raises(UserError, match=message):
        load_config(RunConfig, SMOKE, {"variants": variants})


def test_rationale_only_needs_the_original_teachers_own_questions():
    with pytest.raises(UserError, match="rationale_only needs --generate.original teacher"):
        load_config(RunConfig, SMOKE, {"variants": ALL, "generate": {"original": "drafts"}})
    cfg = load_config(RunConfig, SMOKE, {"variants": ALL[:3], "generate": {"original": "drafts"}})
    assert cfg.variants == ALL[:3]


def test_generate_matches_every_set_to_the_smallest_unless_told_not_to(tmp_path, monkeypatch):
    kept: dict[str, dict[str, list]] = {}
    for mode in ("report", "trim", "sample"):
        run = tmp_path / mode
        cfg = load_config(
            RunConfig,
            SMOKE,
            {"run_dir": str(run), "variants": ALL, "generate": {"max_calls": 24, "size_match": mode}},
        )
        (run / "align" / "teacher").mkdir(parents=True)
        patch_everywhere(monkeypatch, "arte.backends.load_backend", lambda c: MarkedTeacher(c, []))
        tasks = load_run_tasks(cfg)
        counts = generate.run(cfg, RunDir(run), tasks)
        sizes = training_sets(RunDir(run), tasks, ALL)
        per_task = {t.name: {sizes[v][t.name] for v in ALL} for t in tasks}
        kept[mode] = {v: RecordLog(run / "generate" / f"{v}.jsonl").read() for v in ALL}
        for t in tasks:
            for v in ALL:
                record = counts[t.name][v]["size_match"]
                assert record == {
                    "mode": mode,
                    "before": counts[t.name][v]["kept"],
                    "after": sizes[v][t.name],
                }
        if mode == "report":  # the budget stops the sets at different sizes ...
            assert any(len(n) > 1 for n in per_task.values()) and size_mismatches(sizes, 12)
        else:  # ... and trim or sample cut each to the smallest surviving set
            smallest = {t.name: min(counts[t.name][v]["kept"] for v in ALL) for t in tasks}
            assert per_task == {t: {n} for t, n in smallest.items()}, per_task
    for v in ALL:  # trim keeps each set's first rows; sample draws from all of them
        raw, trimmed, sampled = (kept[m][v] for m in ("report", "trim", "sample"))
        for t in tasks:
            mine = [r for r in raw if r["task"] == t.name]
            assert [r for r in trimmed if r["task"] == t.name] == mine[
                : len([r for r in trimmed if r["task"] == t.name])
            ]
            drawn = [r for r in sampled if r["task"] == t.name]
            assert all(r in mine for r in drawn)
            assert [r for r in mine if r in drawn] == drawn  # the set's own order
    assert any(kept["sample"][v] != kept["trim"][v] for v in ALL)  # a sample, not the first rows
