"""The recommendation (edge_bench/recommend.py) on hand-made reports whose accuracy figures come from
per-question answers: a variant qualifies only when the upper end of its paired 95% drop interval
is within the tolerance, faster variants the intervals cannot judge stop the recommendation, and
the line says how many questions would decide. Also the comparison with a previous report (read at
schema version 1 or 2)."""

from __future__ import annotations

import copy
import json

import pytest
from bench_fakes import hand_made_report, hand_made_variant

from edge_bench.recommend import compare_reports, decide, recommend
from edge_bench.report import SCHEMA_VERSION, check_report, load_report
from edge_bench.stats import questions_needed

N = 1000


def pattern(ref: list[int], ref_only: int, var_only: int) -> list[int]:
    """A variant's answers: the reference's, with `ref_only` of its right answers turned wrong and
    `var_only` of its wrong answers turned right."""
    out = list(ref)
    right = [i for i, ok in enumerate(ref) if ok]
    wrong = [i for i, ok in enumerate(ref) if not ok]
    for i in right[:ref_only]:
        out[i] = 0
    for i in wrong[:var_only]:
        out[i] = 1
    return out


@pytest.fixture
def report_a() -> dict:
    ref_answers = [1] * 600 + [0] * 400
    ref = hand_made_variant("ref", 20.0, ref_answers, fmt="pytorch", size=4_000_000)
    variants = [
        ref,
        hand_made_variant("q8", 100.0, pattern(ref_answers, 3, 2), ref),  # drop 0.1 [-0.46, +0.70]
        hand_made_variant("q5", 150.0, pattern(ref_answers, 12, 2), ref),  # drop 1.0 [+0.31, +1.91]
        hand_made_variant("q4", 300.0, pattern(ref_answers, 120, 20), ref),  # drop 10 [+7.8, +12.3]
        hand_made_variant("q3", 400.0, None, ref),  # accuracy not measured: never recommended
        hand_made_variant("broken", None, ref_answers, ref),  # no speed: never recommended
    ]
    return hand_made_report(variants)


def test_the_hand_made_figures_are_the_designed_ones(report_a):
    check_report(report_a)
    by = {v["name"]: v for v in report_a["variants"]}
    assert by["q5"]["paired"]["reference_only"] == 12 and by["q5"]["paired"]["variant_only"] == 2
    assert by["q5"]["paired"]["drop"] == pytest.approx(0.010)
    lo, hi = by["q5"]["paired"]["drop_ci"]
    assert 0.0025 < lo < 0.004 and 0.018 < hi < 0.020
    assert by["q8"]["paired"]["drop_ci"][0] < 0 < by["q8"]["paired"]["drop_ci"][1] < 0.008


@pytest.mark.parametrize(
    "tolerance, status, variant, safe",
    [
        (0.02, "recommended", "q5", "q5"),  # q4 loses more than 2 points for sure: passed over
        (0.15, "recommended", "q4", "q4"),  # 12.3 < 15: even q4 qualifies
        (0.015, "undecided", None, "q8"),  # q5's drop [0.3, 1.9] straddles 1.5: no recommendation
        (0.002, "undecided", None, "ref"),  # q5 is beyond 0.2 points, q8 [-0.5, 0.7] straddles it
    ],
)
def test_recommendation_respects_the_paired_intervals(report_a, tolerance, status, variant, safe):
    d = decide(report_a, tolerance)
    assert (d["status"], d["variant"], d["safe_choice"]) == (status, variant, safe)
    line = recommend(report_a, tolerance)
    if status == "recommended":
        assert line.startswith(f"recommendation: {variant} - ")
    else:
        assert line.startswith("recommendation: none - at 1000 questions the data cannot decide")
        assert f"Within {tolerance * 100:.1f} points at 95%: {safe}" in line


def test_point_estimates_alone_would_have_recommended_what_the_intervals_refuse(report_a):
    # q5's observed drop (1.0 point) is within 1.5 points: the old rule took it; the interval does not
    q5 = next(v for v in report_a["variants"] if v["name"] == "q5")
    assert q5["paired"]["drop"] <= 0.015
    assert decide(report_a, 0.015)["undecided"] == ["q5"]
    line = recommend(report_a, 0.015)
    assert "q5 (drop +1.0 [+0.3, +1.9] points vs ref)" in line and "questions would decide" in line


def test_recommendation_refuses_when_the_intervals_cannot_decide():
    """The issue's case: 20 questions, every variant answers exactly like fp32 (0.450 each)."""
    ref_answers = [1] * 9 + [0] * 11
    ref = hand_made_variant("pytorch-fp32", 18.6, ref_answers, fmt="pytorch")
    speeds = {
        "onnx-fp32": 45.8,
        "onnx-int8": 86.7,
        "gguf-f16": 106.1,
        "gguf-q8_0": 148.1,
        "gguf-q4_k_m": 153.9,
    }
    report = hand_made_report(
        [ref] + [hand_made_variant(n, s, ref_answers, ref) for n, s in speeds.items()], available=200
    )
    for v in report["variants"][1:]:
        assert v["accuracy"] == 0.45 and v["paired"]["drop"] == 0
        lo, hi = v["paired"]["drop_ci"]
        assert hi == pytest.approx(0.1611, abs=1e-4) and lo == pytest.approx(-hi)  # 0 of 20 discordant
        assert v["paired"]["verdict"] == "undecided"
    d = decide(report, 0.02)
    assert d["status"] == "undecided" and d["variant"] is None and d["safe_choice"] == "pytorch-fp32"
    assert d["undecided"] == sorted(speeds, key=lambda n: -speeds[n])  # fastest first
    assert d["questions_needed"] == 385  # 0 discordant: (z + z_0.8)^2 (1 - t) / t
    line = recommend(report, 0.02)
    assert line.startswith("recommendation: none - at 20 questions the data cannot decide")
    assert "more than the task's 200 test questions: no --n_questions can decide" in line
    report["task"]["available_questions"] = 1000
    assert "about 385 questions would decide gguf-q4_k_m at its observed disagreement (--n_questions 385" in (
        recommend(report, 0.02)
    )
    assert "no number of questions can show" in recommend(report, 0.0)  # tolerance 0, ever undecided
    # a slower variant that disagrees on 2 of the 20 (one each way) needs more to be decided too
    int4 = hand_made_variant("onnx-int4", 95.6, pattern(ref_answers, 1, 1), ref)
    report["variants"].append({k: x for k, x in int4.items() if k != "_correct"})
    d = decide(report, 0.02)
    assert d["questions_needed"] == 385 and d["questions_needed_all"] == questions_needed(0.1, 0.02) == 2023
    assert "decide gguf-q4_k_m at its observed disagreement; 2023 for all of them" in recommend(report, 0.02)
    # with 500 questions and still no disagreement, the same variants are shown within 2 points
    many = [1] * 225 + [0] * 275
    ref500 = hand_made_variant("pytorch-fp32", 18.6, many, fmt="pytorch")
    report500 = hand_made_report(
        [ref500] + [hand_made_variant(n, s, many, ref500) for n, s in speeds.items()]
    )
    assert decide(report500, 0.02)["variant"] == "gguf-q4_k_m"


def test_the_reference_is_recommended_when_every_faster_variant_loses_more():
    ref_answers = [1] * 500 + [0] * 500
    ref = hand_made_variant("ref", 20.0, ref_answers, fmt="pytorch")
    report = hand_made_report([ref, hand_made_variant("q4", 300.0, pattern(ref_answers, 200, 0), ref)])
    assert decide(report, 0.02)["status"] == "recommended"
    assert recommend(report, 0.02).startswith("recommendation: ref - 20.0 decode tok/s")
    assert "every faster variant loses more than that" in recommend(report, 0.02)


def test_recommendation_uses_each_variants_own_reference():
    a_answers, b_answers = [1] * 600 + [0] * 400, [1] * 400 + [0] * 600
    a_ref = hand_made_variant("a/ref", 20.0, a_answers, fmt="pytorch")
    b_ref = hand_made_variant("b/ref", 20.0, b_answers, fmt="pytorch")
    report = hand_made_report(
        [
            a_ref,
            b_ref,
            hand_made_variant("a/q4", 300.0, pattern(a_answers, 100, 0), a_ref),  # 10 points below its own
            hand_made_variant("b/q4", 250.0, pattern(b_answers, 2, 0), b_ref),  # 0.2 points below its own
        ]
    )
    assert recommend(report, 0.02).startswith("recommendation: b/q4")
    no_ref = hand_made_report([hand_made_variant("q4", 300.0, [1, 0, 1])])  # no reference known
    assert recommend(no_ref, 0.02).startswith("recommendation: none - no variant is shown to be within")
    unmeasured = hand_made_report([hand_made_variant("q4", 300.0, None)])
    assert (
        recommend(unmeasured, 0.02) == "recommendation: none - task accuracy was not measured (give --task)"
    )


def test_comparison_with_a_previous_report(report_a, tmp_path):
    old = copy.deepcopy(report_a)
    old["recommendation"] = {"line": "recommendation: q8 - as the old report said"}
    new = copy.deepcopy(report_a)
    new["host"]["cpu_model"] = "other cpu"
    for v in new["variants"]:
        v["name"] = "student2/" + v["name"]  # a second student: names carry a prefix
        v["reference"] = v["reference"] and "student2/" + v["reference"]
    new["variants"][1]["best"]["decode_tokens_per_s"] = 120.0  # q8: 100 -> 120 tok/s
    new["variants"][1]["accuracy"] = 0.61  # q8: 0.599 -> 0.61
    new["variants"] = new["variants"][:-1]  # "broken" only in the old report
    lines = compare_reports(new, old, 0.02)
    assert "test cpu" in lines[0] and "other cpu" in lines[1]
    q8 = next(line for line in lines if line.startswith("student2/q8"))
    assert "100.0 -> 120.0 (+20.0%)" in q8 and "0.599 -> 0.610 (+1.1 pts)" in q8
    broken = next(line for line in lines if line.startswith("broken"))
    assert broken.rstrip().endswith("0.600 -> -")
    assert lines[-2] == "old recommendation: q8 - as the old report said"  # as written, not recomputed
    assert lines[-1].startswith("new recommendation: student2/q5")


def test_a_version_1_report_is_read_for_comparison_only(tmp_path):
    v1 = {
        "schema_version": 1,
        "tool": "edge_bench",
        "created_at": "2025-01-01T00:00:00+00:00",
        "config": {},
        "task": {"name": "t"},
        "host": {},
        "bandwidth": None,
        "variants": [
            {
                "name": "q4",
                "format": "gguf",
                "runtime": "llama_cpp",
                "quant": "q4",
                "size_bytes": 1,
                "bits_per_weight": 4.5,
                "reference": None,
                "accuracy": 0.5,
                "top1_agreement": None,
                "best": None,
            }
        ],
        "results": [],
        "recommendation": {"line": "recommendation: q4 - old"},
        "warnings": [],
    }
    (tmp_path / "report.json").write_text(json.dumps(v1))
    old = load_report(tmp_path)
    assert old.schema_version == 1 and old.variants[0].paired is None and old.rankings.accuracy == []
    with pytest.raises(ValueError, match=f"schema_version: 1, this edge_bench reads {SCHEMA_VERSION}"):
        check_report(v1)  # what is written must be the current version
    v2_without = {**v1, "schema_version": 2}
    with pytest.raises(ValueError) as e:
        check_report(v2_without)
    assert "report: statistics: missing" in str(e.value) and "report: variants[0].paired: missing" in str(
        e.value
    )
