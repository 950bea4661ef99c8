"""Crash-safe records: a partial last line (kill / full disk) is cut, never read as data."""

import json

import pytest

from arte.run_dir import RunDir
from common.errors import UserError
from common.records import RecordLog, read_json, write_json_atomic


def test_append_and_resume_cuts_partial_tail(tmp_path):
    log = RecordLog(tmp_path / "r.jsonl")
    log.extend([{"i": 0}, {"i": 1}])
    with open(log.path, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"i": 2, "text": "half a rec')
    resumed = RecordLog(log.path)
    assert resumed.dropped_partial
    assert [r["i"] for r in resumed] == [0, 1]
    resumed.append({"i": 2})
    assert [r["i"] for r in RecordLog(log.path)] == [0, 1, 2]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(UserError, match=r"r\.jsonl:2: corrupt record"):
        RecordLog(p).read()


def test_json_atomic_and_stage_markers(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_done("elicit")
    run.mark_done("elicit", {"count": 3})
    assert run.is_done("elicit") and run.done_info("elicit")["count"] == 3
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".x.json.tmp*"))
    with pytest.raises(UserError, match="missing"):
        read_json(tmp_path / "nope.json")
