"""Crash-safe records and the run directory: a partial last line is cut only by the writer that
resumes the log, a reader refuses it; stage markers; the run directory's lock."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from arte.run_dir import RunDir
from arte.run_lock import LOCK_FILE, RunLock
from common.errors import UserError
from common.paths import writable_dir
from common.records import RecordLog, jsonl_damage, read_json, write_json_atomic


def test_resuming_writer_cuts_partial_tail(tmp_path):
    log = RecordLog(tmp_path / "r.jsonl")
    log.extend([{"i": 0}, {"i": 1}])
    with open(log.path, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"i": 2, "text": "half a rec')
    resumed = RecordLog(log.path, resume=True)
    assert resumed.dropped_partial
    assert [r["i"] for r in resumed] == [0, 1]
    resumed.append({"i": 2})
    assert [r["i"] for r in RecordLog(log.path)] == [0, 1, 2]


def test_reader_refuses_a_partial_tail_and_leaves_the_file_alone(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"i": 0}\n{"i": 1}\n{"i": 2, "te')
    before = p.read_bytes()
    reader = RecordLog(p)
    assert not reader.dropped_partial
    with pytest.raises(UserError, match=r"r\.jsonl:3: damaged: the last line is half a record"):
        reader.read()
    assert p.read_bytes() == before  # nothing cut
    assert jsonl_damage(p) == (3, "the last line is half a record (it has no newline at its end)")


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(UserError, match=r"r\.jsonl:2: corrupt record"):
        RecordLog(p).read()
    assert jsonl_damage(p)[0] == 2
    p.write_text('{"i": 0}\n\n{"i": 2}\n')
    assert jsonl_damage(p) is None


def test_json_atomic_and_stage_markers(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.path.exists()  # nothing is created before it is needed
    assert not run.is_done("elicit") and run.provenance("elicit") is None
    run.mark_started("elicit", {"config": {"seed": 0}})
    assert run.provenance("elicit") == {"config": {"seed": 0}}
    run.mark_done("elicit", {"count": 3, "provenance": {"config": {"seed": 1}}})
    assert run.is_done("elicit") and run.done_info("elicit")["count"] == 3
    assert run.provenance("elicit") == {"config": {"seed": 1}}
    assert not (run.path / "elicit" / "started.json").exists()
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".x.json.tmp*"))
    with pytest.raises(UserError, match="missing"):
        read_json(tmp_path / "nope.json")


def test_clear_stage_deletes_only_its_own_files_and_not_what_it_is_told_to_keep(tmp_path):
    """Issue 29 (5): a redo deleted the whole stage directory, a user's train/important.txt too."""
    run = RunDir(tmp_path / "run")
    d = run.stage("score")
    (d / "before.txt").write_text("the user's, there before the stage")
    run.mark_started("score", {})
    (d / "cache.jsonl").write_text("{}\n")
    (d / "scores.jsonl").write_text("{}\n")
    (d / "sub").mkdir()
    (d / "sub" / "part.jsonl").write_text("{}\n")
    run.mark_done("score", {})
    assert run.done_info("score")["files"] == ["cache.jsonl", "scores.jsonl", "sub/part.jsonl"]
    (d / "after.txt").write_text("the user's, added after it finished")
    run.clear_stage("score", keep=("cache.jsonl",))
    assert sorted(p.name for p in d.iterdir()) == ["after.txt", "before.txt", "cache.jsonl"]


def test_clear_stage_of_a_stage_cut_short_or_unrecorded(tmp_path):
    """Cut short (started.json only): all but the files there before it started; no record (an
    older arte): what the stage's declared `writes` match."""
    run = RunDir(tmp_path / "run")
    d = run.stage("train")
    (d / "important.txt").write_text("mine")
    run.mark_started("train", {})
    (d / "arte").mkdir()
    (d / "arte" / "model.safetensors").write_text("half")
    run.clear_stage("train")
    assert sorted(p.name for p in d.iterdir()) == ["important.txt"]
    (d / "arte").mkdir()
    (d / "arte" / "config.json").write_text("{}")
    run.clear_stage("train", writes=("train/VARIANT/",))
    assert sorted(p.name for p in d.iterdir()) == ["important.txt"]


def test_a_foreign_non_empty_directory_is_refused_as_a_run_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("a project's own files")
    with pytest.raises(
        UserError, match=rf"--run_dir {tmp_path} is a non-empty directory that is not an arte"
    ):
        RunDir(tmp_path).create()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    RunDir(tmp_path / "new").create()  # new, empty, or a run directory: fine
    (tmp_path / "new" / "manifest.json").write_text("{}")
    RunDir(tmp_path / "new").create()


def test_writable_dir_names_path_and_reason(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=rf"--run_dir {blocker}/run: cannot write there: {blocker} is a file"):
        writable_dir(blocker / "run", "--run_dir")
    with pytest.raises(UserError, match=r"--out /sys/arte-test: cannot write there: "):
        writable_dir("/sys/arte-test", "--out")
    assert writable_dir(tmp_path / "new" / "dir", "--out").is_dir()


def test_second_lock_is_refused_with_the_holder_and_freed_on_release(tmp_path):
    with RunLock.acquire(tmp_path) as lock:
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(UserError, match=rf"in use by another arte process: pid {os.getpid()} on "):
            RunLock.acquire(tmp_path)
        assert lock.took_over is None
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly: not stale
    RunLock.acquire(tmp_path).release()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path, capsys):
    code = (
        f"from arte.run_lock import RunLock; RunLock.acquire({str(tmp_path)!r}); "
        "print('held', flush=True); input()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=rf"pid {proc.pid} on "):
        RunLock.acquire(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while True:  # the kernel drops the dead process's flock
        try:
            lock = RunLock.acquire(tmp_path)
            break
        except UserError:
            assert time.time() < deadline
            time.sleep(0.05)
    assert lock.took_over["pid"] == proc.pid
    assert f"took over the lock of {tmp_path} from pid {proc.pid}" in capsys.readouterr().err
    lock.release()


def test_provenance_leaves_out_runtime_only_fields_and_follows_what_stages_read():
    from arte.provenance import config_part, differences, made_from
    from arte.run_config import RunConfig

    part = config_part(RunConfig(), ("teacher", "align"))
    assert {"name", "model", "chat", "dtype"} <= part["teacher"].keys()
    assert not {"threads", "batch_size", "timeout_s", "base_url", "allow_pickle"} & part["teacher"].keys()
    assert {"learning_rate", "batch_size"} <= part["align"].keys()  # a training batch changes the model
    assert not {"threads", "logging_steps", "checkpoint_steps"} & part["align"].keys()
    later = {"score", "prefcheck", "pairs", "align", "generate", "gain", "train", "rounds", "evaluate"}
    assert made_from({"elicit"}) == {"elicit"} | later
    assert made_from({"prefset"}) == {"prefset"} | later
    assert made_from({"train"}) == {"train", "evaluate"} and made_from({"evaluate"}) == {"evaluate"}
    old = {
        "config": {"elicit": {"m": 8, "temperature": 1.0}},
        "tasks": {"t": "a"},
        "inputs": {"x.jsonl": "1"},
    }
    new = {
        "config": {"elicit": {"m": 4, "temperature": 1.0}},
        "tasks": {"t": "b"},
        "inputs": {"x.jsonl": "2"},
    }
    assert differences(old, new) == [
        "elicit.m: 8 -> 4",
        "task data of t (task files, --seed, --n_validation or --n_test)",
        "its input x.jsonl changed since it ran",
    ]
    assert differences(old, new, skip_inputs={"x.jsonl"})[-1].startswith("task data")


def test_a_field_added_since_a_stage_ran_counts_only_when_it_is_not_its_default():
    from arte.provenance import differences

    old = {"config": {"elicit": {"m": 8}}, "tasks": {}, "inputs": {}}
    new = {"config": {"elicit": {"m": 8, "new_knob": 1}}, "tasks": {}, "inputs": {}}
    assert differences(old, new, defaults={"elicit": {"m": 250, "new_knob": 1}}) == []
    assert differences(old, new, defaults={"elicit": {"m": 250, "new_knob": 0}}) == [
        'elicit.new_knob: "(unset)" -> 1'
    ]
