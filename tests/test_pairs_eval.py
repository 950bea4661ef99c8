"""DPO pairs (ARTE step 3) and evaluation: quantile pairing on hand-made scores, tie handling, the
paper's prompt texts, bootstrap intervals against simulated data with a known difference, and
`evaluate_student` against a deterministic fake backend (no models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from patching import patch_everywhere

from arte.backends.base import Generation, SamplingParams
from arte.stages.elicit.draft_parsing import parse_question_blocks
from arte.stages.evaluate.stats import (
    MACRO,
    accuracy_table,
    bootstrap_ci,
    evaluate_student,
    format_table_markdown,
    paired_bootstrap,
)
from arte.stages.pairs import (
    PairsConfig,
    build_dpo_pairs,
    build_question_pairs,
    build_rationale_pairs,
    naive_prompt,
    render_question_block,
)
from arte.stages.score import ScoredDraft
from common.prompts import STUDENT_STOP
from common.tasks.base import Example, Task

DESC = "Evaluate the boolean expression."


def make_task(name: str = "toy", n_test: int = 4) -> Task:
    seeds = [Example(f"seed {i} is", t) for i, t in enumerate(["True", "False", "True"])]
    test = [Example(f"test {i} is", "True" if i % 2 else "False") for i in range(n_test)]
    return Task(name=name, description=DESC, seeds=seeds, validation=[], test=test, answer_kind="bool")


# ---------------------------------------------------------------- pairs


def test_naive_prompt_is_the_papers_text_plus_the_output_format():
    """Prompt erasure removes the strategy, not the <ans> instruction (docs/method.md)."""
    assert naive_prompt("Sort the words.", "Sort: b a") == (
        "Task Description: Sort the words. Give your final answer as <ans>...</ans>.\n"
        "Question: Sort: b a Answer: Let's think step by step."
    )
    example = "Question: Sort: d c Answer: Let's think step by step. d > c. <ans>c d</ans>\n"
    assert naive_prompt("Sort the words.", "Sort: b a", example).count("Question:") == 2


def test_question_block_is_what_the_parser_reads():
    block = render_question_block("not True is", "False", 4)
    assert block == "<Question_4><input>not True is</input><target>False</target></Question_4>"
    assert parse_question_blocks(block).questions == [("not True is", "False")]


def test_question_pairs_come_from_top_and_bottom_quantile():
    scores = {f"q{i}": i / 10 for i in range(8)}  # q7 best ... q0 worst
    questions = {qid: (f"question {qid}", f"t{qid}") for qid in scores}
    rows = build_question_pairs("toy", "PROMPT", questions, scores, PairsConfig(quantile=0.25))
    # 25% of 8 = 2 per side: chosen in {q6, q7}, rejected in {q0, q1}; all 4 combinations.
    assert {(r["chosen_id"], r["rejected_id"]) for r in rows} == {
        (c, r) for c in ("q6", "q7") for r in ("q0", "q1")
    }
    for r in rows:
        assert r["prompt"] == "PROMPT" and r["level"] == "question" and r["task"] == "toy"
        assert r["chosen"] == render_question_block(f"question {r['chosen_id']}", f"t{r['chosen_id']}", 4)
        assert r["chosen_score"] == scores[r["chosen_id"]] > r["rejected_score"] == scores[r["rejected_id"]]
    # With a cap, the pairs first use every question once.
    capped = build_question_pairs("toy", "P", questions, scores, PairsConfig(max_question_pairs_per_task=2))
    used = [r["chosen_id"] for r in capped] + [r["rejected_id"] for r in capped]
    assert len(capped) == 2 and sorted(used) == ["q0", "q1", "q6", "q7"]
    # Seeded: the same config gives the same pairs.
    assert capped == build_question_pairs(
        "toy", "P", questions, scores, PairsConfig(max_question_pairs_per_task=2)
    )


def test_question_pairs_never_pair_equal_scores():
    scores = {"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.0}
    questions = {q: (q, "x") for q in scores}
    tops = set()
    for seed in range(20):
        rows = build_question_pairs("toy", "P", questions, scores, PairsConfig(quantile=0.5, seed=seed))
        assert all(r["chosen_score"] > r["rejected_score"] for r in rows)
        assert len(rows) == 3  # (a, d), (a, b|c), (b|c, d); the tied middle pair is dropped
        tops |= {r["chosen_id"] for r in rows}
    assert tops == {"a", "b", "c"}  # the boundary tie is broken at random, not by name
    gap = build_question_pairs("toy", "P", questions, scores, PairsConfig(quantile=0.5, min_score_gap=0.5))
    assert [(r["chosen_id"], r["rejected_id"]) for r in gap] == [("a", "d")]
    flat = {q: 0.3 for q in scores}
    assert build_question_pairs("toy", "P", questions, flat, PairsConfig(quantile=0.5)) == []


def _drafts(task: str = "toy") -> list[ScoredDraft]:
    table = {  # qid -> scores of strategies s0..s3
        "q1": [0.2, 0.9, 0.5, 0.1],  # best s1, worst s3
        "q2": [0.4, 0.4, 0.4, 0.4],  # tie: skipped
        "q3": [0.0, 0.0, 0.0, 0.7],  # best s3, worst tied among s0..s2
    }
    return [
        ScoredDraft(task, qid, f"Q {qid}?", "True", f"s{j}", f"R {qid} s{j} <ans>True</ans>", score=s)
        for qid, row in table.items()
        for j, s in enumerate(row)
    ]


def test_rationale_pairs_best_vs_worst_under_naive_prompt():
    task = make_task()
    drafts = _drafts()
    rows = build_rationale_pairs(task, drafts, PairsConfig())
    assert [r["chosen_id"] for r in rows] == ["q1/s1", "q3/s3"]
    assert rows[0]["rejected_id"] == "q1/s3" and rows[1]["rejected_id"] in {"q3/s0", "q3/s1", "q3/s2"}
    assert rows[0]["prompt"] == naive_prompt(DESC, "Q q1?")
    assert rows[0]["chosen"] == "R q1 s1 <ans>True</ans>" and rows[0]["rejected"] == "R q1 s3 <ans>True</ans>"
    assert (rows[0]["chosen_score"], rows[0]["rejected_score"]) == (0.9, 0.1)
    assert all(r["level"] == "rationale" and r["task"] == "toy" for r in rows)
    assert [r["chosen_id"] for r in build_rationale_pairs(task, drafts, PairsConfig(min_score_gap=0.7))] == [
        "q1/s1"
    ]


def test_build_dpo_pairs_mixes_levels_and_counts():
    drafts, drafts_b = _drafts("toy"), _drafts("other")
    tasks = {"toy": make_task("toy"), "other": make_task("other")}
    prompts = {"toy": "QP toy", "other": "QP other"}
    rows, stats = build_dpo_pairs(tasks, prompts, drafts + drafts_b, PairsConfig(quantile=0.34))
    keys = {"prompt", "chosen", "rejected", "level", "task", "chosen_score", "rejected_score"}
    assert all(keys <= set(r) for r in rows)
    # question scores: q1 0.425, q2 0.4, q3 0.175 -> one top (q1), one bottom (q3): one question pair.
    q_rows = [r for r in rows if r["level"] == "question"]
    assert [(r["task"], r["chosen_id"], r["rejected_id"]) for r in q_rows] == [
        ("toy", "q1", "q3"),
        ("other", "q1", "q3"),
    ]
    assert q_rows[0]["prompt"] == "QP toy" and q_rows[0]["chosen_score"] == pytest.approx(0.425)
    assert stats["n_pairs"] == len(rows) == 6
    assert stats["by_level"] == {"question": 2, "rationale": 4}
    assert stats["rationale_ties_skipped"] == 2
    assert stats["by_task"]["toy"] == {
        "questions": 3,
        "question": 1,
        "rationale": 2,
        "rationale_ties_skipped": 1,
    }
    with pytest.raises(ValueError, match="other"):
        build_dpo_pairs({"toy": tasks["toy"]}, prompts, drafts + drafts_b, PairsConfig())


def test_pairs_config_validation_names_the_flag():
    with pytest.raises(ValueError, match="--quantile"):
        PairsConfig(quantile=0.7)
    with pytest.raises(ValueError, match="--min_score_gap"):
        PairsConfig(min_score_gap=-1)


# ---------------------------------------------------------------- bootstrap


def test_paired_bootstrap_coverage_on_simulated_data():
    """Students a and b answer the same questions; per-question difficulty makes them correlated.
    True accuracies are known exactly, so the 95% interval should cover b - a about 95% of the time."""
    rng = np.random.default_rng(123)
    n, reps = 150, 200
    p_easy = rng.uniform(0.1, 0.9, size=100_000)  # question population (difficulty)
    pa, pb = p_easy * 0.8, np.minimum(1.0, p_easy * 0.8 + 0.1)
    true = pb.mean() - pa.mean()
    covered = 0
    for rep in range(reps):
        q = rng.integers(0, len(p_easy), n)
        u = rng.random(n)  # shared noise: the two students tend to fail the same questions
        a, b = (u < pa[q]).astype(float), (u < pb[q]).astype(float)
        res = paired_bootstrap(a, b, n_boot=1000, seed=rep)
        covered += res["low"] <= true <= res["high"]
        assert res["diff"] == pytest.approx(b.mean() - a.mean())
    assert 0.9 <= covered / reps <= 0.99


def test_paired_bootstrap_identical_and_large_difference():
    a = np.array([1, 0, 1, 1, 0, 0, 1, 0] * 10)
    res = paired_bootstrap(a, a.copy())
    assert (res["diff"], res["low"], res["high"], res["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    rng = np.random.default_rng(0)
    a = (rng.random(300) < 0.3).astype(int)
    b = (rng.random(300) < 0.7).astype(int)
    res = paired_bootstrap(a, b)
    assert res["low"] > 0.2 and res["p_value"] == 0.0
    neg = paired_bootstrap(b, a)
    assert neg["high"] < 0 and neg["diff"] == pytest.approx(-res["diff"])


def test_bootstrap_width_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    a = (rng.random(2000) < 0.4).astype(float)
    b = np.where(rng.random(2000) < 0.8, a, 1 - a)  # b mostly agrees with a
    d = b - a
    se = d.std(ddof=1) / np.sqrt(len(d))
    res = paired_bootstrap(a, b, n_boot=4000)
    assert (res["high"] - res["low"]) == pytest.approx(2 * 1.96 * se, rel=0.1)
    acc = bootstrap_ci(a, n_boot=4000)
    se_a = np.sqrt(a.mean() * (1 - a.mean()) / len(a))
    assert acc["mean"] == a.mean() and (acc["high"] - acc["low"]) == pytest.approx(2 * 1.96 * se_a, rel=0.1)


# ---------------------------------------------------------------- evaluation


class LookupBackend:
    """Answers the last question of each prompt from a lookup; records what it was asked."""

    name = "lookup"

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        out = []
        for p in prompts:
            question = p.rsplit("\nQuestion: ", 1)[-1].split(" Answer:")[0]
            ans = self.answers.get(question)
            text = f"It is so. <ans>{ans}</ans>" if ans is not None else "I am not sure."
            out.append(Generation(text, "stop" if ans else "length", len(p), len(text)))
        return out

    def close(self):
        pass


def test_evaluate_student_prompts_and_records():
    task = make_task(n_test=4)  # targets: False, True, False, True
    backend = LookupBackend({"test 0 is": "false", "test 1 is": "False", "test 2 is": "False."})
    records = evaluate_student(backend, [task], shots=[0, 3], n_test=3, max_new_tokens=32)

    assert len(backend.calls) == 1  # every (task, shots) prompt in one stream: 6 < the call size
    ((prompts, params),) = backend.calls
    zero, three = prompts[:3], prompts[3:]
    assert params.temperature == 0.0 and params.stop == STUDENT_STOP and params.max_new_tokens == 32
    hint = "Remember you should include your final answer with the tag <ans> and </ans>."
    assert (
        zero[0] == f"Task Description: {DESC} {hint}\nQuestion: test 0 is Answer: Let's think step by step."
    )
    assert three[2] == "\n".join(
        [
            f"Task Description: {DESC} {hint}",
            "Question: seed 0 is Answer: Let's think step by step. <ans>True</ans>",
            "Question: seed 1 is Answer: Let's think step by step. <ans>False</ans>",
            "Question: seed 2 is Answer: Let's think step by step. <ans>True</ans>",
            "Question: test 2 is Answer: Let's think step by step.",
        ]
    )
    assert len(zero) == len(three) == 3

    assert [(r["shots"], r["index"]) for r in records] == [(s, i) for s in (0, 3) for i in range(3)]
    first = records[:3]
    assert [r["correct"] for r in first] == [1, 0, 1]
    assert [r["answer"] for r in first] == ["false", "False", "False."]
    assert [r["missing_tag"] for r in first] == [0, 0, 0]
    missing = evaluate_student(LookupBackend({}), [task], shots=[0])
    assert len(missing) == 4 and all(
        r["missing_tag"] == 1 and r["correct"] == 0 and r["answer"] is None for r in missing
    )


def _records(correct_by_task: dict[str, list[int]], shots: int = 3) -> list[dict]:
    return [
        {"task": t, "shots": shots, "index": i, "correct": c, "missing_tag": 0}
        for t, cs in correct_by_task.items()
        for i, c in enumerate(cs)
    ]


def test_accuracy_table_and_markdown():
    variants = {
        "vanilla": _records({"t1": [0, 0, 1, 0], "t2": [1, 0, 0, 0, 0, 0]}),
        "original": _records({"t1": [1, 0, 1, 0], "t2": [1, 1, 0, 0, 0, 0]}),
        "arte": _records({"t1": [1, 1, 1, 0], "t2": [1, 1, 1, 1, 0, 0]}),
    }
    table = accuracy_table(variants, n_boot=500)
    acc = {(r["variant"], r["task"]): r for r in table["accuracy"]}
    assert acc[("arte", "t1")]["acc"] == 0.75 and acc[("arte", "t2")]["acc"] == pytest.approx(4 / 6)
    assert acc[("arte", MACRO)]["acc"] == pytest.approx((0.75 + 4 / 6) / 2)  # unweighted over tasks
    for r in table["accuracy"]:
        assert r["low"] <= r["acc"] <= r["high"]
    diffs = {(r["comparison"], r["task"]): r for r in table["differences"]}
    assert set(c for c, _ in diffs) == {"original - vanilla", "arte - vanilla", "arte - original"}
    assert diffs[("arte - vanilla", "t1")]["diff"] == pytest.approx(0.5)
    assert diffs[("arte - original", MACRO)]["diff"] == pytest.approx((0.25 + 2 / 6) / 2)
    assert diffs[("arte - vanilla", MACRO)]["n"] == 10

    text = format_table_markdown(table)
    assert "| variant | t1 | t2 | macro |" in text
    assert "| arte | 75.0 ± " in text
    assert "| arte - vanilla | +50.0 [" in text


def test_accuracy_table_pairs_by_question_index():
    ref = _records({"t1": [0, 0, 0, 0]})
    var = [r for r in _records({"t1": [1, 1, 1, 1]}) if r["index"] != 2]  # one question missing
    table = accuracy_table({"vanilla": ref, "arte": var}, n_boot=200)
    (row, macro) = table["differences"]
    assert row["n"] == 3 and row["diff"] == 1.0 and macro["task"] == MACRO
    with pytest.raises(ValueError, match="two records"):
        accuracy_table({"vanilla": ref + ref[:1]})


@pytest.mark.parametrize(
    ("variant", "student", "converted"),
    [
        ("vanilla", "smollm2-135m-f16", False),
        ("vanilla", "smollm2-135m", False),
        ("vanilla", "tiny-random-llama", True),
        ("arte", "smollm2-135m-f16", True),
    ],
)
def test_evaluate_converts_only_students_without_a_cached_f16_gguf(
    tmp_path, monkeypatch, variant, student, converted
):
    """llama_cpp evaluation: a vanilla embedded student is the model cache's F16 GGUF (no conversion
    per run); a trained or non-embedded one is converted into evaluate/; an existing file is reused."""
    import export.gguf_convert
    from arte.backends import BackendConfig
    from arte.stages.evaluate import _engine_model

    calls = []

    def convert(hf, out, outtype):
        calls.append((hf, out.name, outtype))
        out.write_text("gguf")
        return out

    monkeypatch.setattr(export.gguf_convert, "convert_hf_to_gguf", convert)
    patch_everywhere(
        monkeypatch, "arte.models.resolve_hf", lambda spec: spec if spec.startswith("/") else f"/hf/{spec}"
    )
    patch_everywhere(monkeypatch, "arte.models.resolve_gguf", lambda spec: tmp_path / f"cache-{spec}.gguf")
    backend = BackendConfig(name="llama_cpp", model="")
    got = _engine_model(backend, f"/hf/{student}", tmp_path, variant, student)
    if converted:
        assert calls == [(Path(f"/hf/{student}"), f"{variant}-f16.gguf", "f16")]
        assert got == str(tmp_path / f"{variant}-f16.gguf")
        assert _engine_model(backend, f"/hf/{student}", tmp_path, variant, student) == got
        assert len(calls) == 1  # the run's own file is reused
    else:
        assert calls == []
        assert got == str(tmp_path / "cache-smollm2-135m-f16.gguf")
    hf = BackendConfig(name="hf", model="")
    assert _engine_model(hf, f"/hf/{student}", tmp_path, variant, student) == f"/hf/{student}"
