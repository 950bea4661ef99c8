"""The caveats summary.md writes next to the accuracy numbers (arte/stages/summary.py)."""

from __future__ import annotations

from arte.stages.evaluate.stats import accuracy_table
from arte.stages.evaluate.summary import caveats


def _records(variant_correct: dict[str, list[int]], missing: dict[str, float]) -> dict[str, list[dict]]:
    out = {}
    for v, correct in variant_correct.items():
        n_missing = round(missing[v] * len(correct))
        out[v] = [
            {"task": "t", "shots": 0, "index": i, "correct": c, "missing_tag": int(i < n_missing)}
            for i, c in enumerate(correct)
        ]
    return out


def test_caveats_flag_format_gaps_small_and_uneven_sets():
    correct = {"vanilla": [0] * 40, "original": [1, 0] * 20, "arte": [1, 1, 0, 1] * 10}
    table = accuracy_table(_records(correct, {"vanilla": 1.0, "original": 0.05, "arte": 0.0}), n_boot=200)
    notes = caveats(table, {"original": {"t": 12}, "arte": {"t": 60}})
    text = "\n".join(notes)
    assert "original was trained on a handful" in text and "arte was trained" not in text
    assert "different amounts of data** (t arte 60 vs original 12)" in text
    assert "mostly answer format" not in text  # format caveats come from the format report only


def test_no_caveats_for_like_for_like_sets():
    correct = {"vanilla": [0, 1] * 30, "original": [1, 0] * 30, "arte": [1, 1] * 30}
    table = accuracy_table(_records(correct, {"vanilla": 0.1, "original": 0.05, "arte": 0.0}), n_boot=200)
    assert caveats(table, {"original": {"t": 55}, "arte": {"t": 60}}) == []
