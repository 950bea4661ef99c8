"""Like-for-like training sets (arte/stages/training_set/size_match.py): every set cut to the same
size per task, by a seeded sample drawn within each label, by its first rows, or not at all."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest

from arte.run_config import RunConfig
from arte.stages.generate.size_match import match_sizes, size_match_lines, stratified_sample
from common.config import load_config
from common.errors import UserError

TASKS = [SimpleNamespace(name="t"), SimpleNamespace(name="u")]


def _rows(task: str, labels: str, tag: str) -> list[dict]:
    return [{"task": task, "label": lab, "i": f"{tag}{i}"} for i, lab in enumerate(labels)]


def _sets() -> dict:
    """arte: 20 t rows (10 True / 10 False) and 6 u rows; original: 12 t rows, 9 u rows."""
    arte = _rows("t", "TF" * 10, "a") + _rows("u", "xyzxyz", "a")
    original = _rows("u", "xyzxyzxyz", "o") + _rows("t", "TTTFFF" * 2, "o")
    return {"arte": (arte, {"t": {}, "u": {}}), "original": (original, {"t": {}, "u": {}})}


def _task_ids(rows: list[dict], task: str) -> list[str]:
    return [r["i"] for r in rows if r["task"] == task]


def test_sample_gives_every_set_the_smallest_size_per_task():
    sets = _sets()
    assert match_sizes(sets, TASKS, "sample", seed=0) == {"t": 12, "u": 6}
    for name, (rows, _) in sets.items():
        assert Counter(r["task"] for r in rows) == {"t": 12, "u": 6}, name
    assert sets["arte"][1]["t"]["size_match"] == {"mode": "sample", "before": 20, "after": 12}
    assert sets["original"][1]["u"]["size_match"] == {"mode": "sample", "before": 9, "after": 6}
    assert sets["original"][1]["t"]["size_match"] == {"mode": "sample", "before": 12, "after": 12}


def test_sample_is_the_seeds_same_seed_same_rows_other_seed_other_rows():
    def drawn(seed: int) -> list[str]:
        sets = _sets()
        match_sizes(sets, TASKS, "sample", seed=seed)
        return _task_ids(sets["arte"][0], "t")

    first = drawn(0)
    assert drawn(0) == first
    assert drawn(1) != first
    assert first != [f"a{i}" for i in range(12)]  # not the first rows
    ids = [int(i[1:]) for i in first]
    assert ids == sorted(ids)  # the set's own order kept


def test_sample_keeps_a_balanced_set_balanced():
    sets = _sets()
    match_sizes(sets, TASKS, "sample", seed=3)
    labels = Counter(r["label"] for r in sets["arte"][0] if r["task"] == "t")
    assert labels == {"T": 6, "F": 6}  # 10/10 down to 12: 6/6, whatever the seed draws
    for seed in range(20):  # a 3:1 set sampled to 8 stays 6:2, never drifts
        rows = _rows("t", "TTTF" * 4, "r")
        got = Counter(r["label"] for r in stratified_sample(rows, 8, random.Random(seed)))
        assert got == {"T": 6, "F": 2}


def test_stratified_sample_allocates_the_remainder_by_share():
    rows = _rows("t", "AAAAABBBC", "r")  # shares 5/9, 3/9, 1/9 of 4 = 2.22, 1.33, 0.44
    got = Counter(r["label"] for r in stratified_sample(rows, 4, random.Random(0)))
    assert got == {"A": 2, "B": 1, "C": 1}
    assert stratified_sample(rows, 20, random.Random(0)) == rows


def test_a_fixed_size_below_the_smallest_and_report_leaves_sets_alone():
    sets = _sets()
    assert match_sizes(sets, TASKS, "sample", seed=0, wanted=4) == {"t": 4, "u": 4}
    assert all(Counter(r["task"] for r in rows) == {"t": 4, "u": 4} for rows, _ in sets.values())
    sets = _sets()
    assert match_sizes(sets, TASKS, "sample", seed=0, wanted=100) == {"t": 12, "u": 6}  # capped
    sets, before = _sets(), _sets()
    match_sizes(sets, TASKS, "report", seed=0)
    assert [rows for rows, _ in sets.values()] == [rows for rows, _ in before.values()]
    assert sets["arte"][1]["t"]["size_match"] == {"mode": "report", "before": 20, "after": 20}


def test_summary_lines_show_before_and_after():
    sets = _sets()
    match_sizes(sets, TASKS, "sample", seed=0)
    counts = {t.name: {name: c[t.name] for name, (_, c) in sets.items()} for t in TASKS}
    assert size_match_lines(counts) == [
        "- t (sample): arte 20 -> 12, original 12 -> 12",
        "- u (sample): arte 6 -> 6, original 9 -> 6",
    ]
    assert size_match_lines({"t": {"arte": {"kept": 3}}}) == []  # an older run's counts


@pytest.mark.parametrize(
    "generate, message",
    [({"size_match": "first"}, "size_match"), ({"size_match_n": -1}, "--generate.size_match_n must be >= 0")],
)
def test_bad_size_match_settings_are_refused(generate, message):
    with pytest.raises(UserError, match=message):
        load_config(RunConfig, None, {"generate": generate})
