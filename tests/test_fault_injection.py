"""Fault injection on the smoke setup (configs/smoke.yaml: fake generation engine, tiny real models):
each way a run directory used to be corrupted, or hours wasted, is done for real here, and the test
checks the message, the exit code (2 for every user error, never a traceback) and that no record was
lost or duplicated.

1. two writers on one run directory (the lock; a killed holder's lock is taken over);
2. a changed config on a finished run (stop with the stages and fields; redo what is affected);
3. a damaged file of a finished stage (an error naming file and line; re-running the stage fixes it);
4. bad options of late stages (refused before the first stage, no run directory left behind);
5. output paths that cannot be written (run_dir, bench --out, export --out);
6. pickle-only, truncated and corrupt model files (safetensors only; an explicit opt-in for pickles).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
from smoke_runs import SMOKE, TASKS, arte, arte_bg, assert_records_complete, one_clear_line, smoke, snapshot

from arte.cli import main
from arte.stages import STAGE_NAMES
from common.errors import UserError
from common.records import RecordLog


@pytest.fixture(scope="module")
def finished(module_tmp) -> Path:
    """One uninterrupted smoke run, the reference every test compares with (copy it to change it)."""
    run = module_tmp.mktemp("finished") / "run"
    done = arte("run", *smoke(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_records_complete(run)
    return run


def copy_run(finished: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


# ---------------------------------------------------------------- 1. two writers, one run directory


def test_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(finished, tmp_path):
    run = tmp_path / "run"
    holder = arte_bg("run", *smoke(run), env={"ARTE_FAKE_DELAY_S": "0.3"})  # slow teacher: still in elicit
    lock = run / "run.lock"
    deadline = time.time() + 60
    while not (lock.is_file() and lock.read_text().strip()):
        assert time.time() < deadline and holder.poll() is None
        time.sleep(0.05)
    for command in ("run", "elicit", "evaluate"):
        started = time.time()
        refused = arte(command, *smoke(run))
        assert refused.returncode == 2 and time.time() - started < 30  # at once, not after a stage
        one_clear_line(
            refused.stderr,
            f"{run} is in use by another arte process: pid {holder.pid} on {socket.gethostname()}",
        )
        assert "started 20" in refused.stderr  # the holder's start time
    os.kill(holder.pid, signal.SIGKILL)  # a crash: the lock file still names the dead holder
    holder.wait()
    assert json.loads(lock.read_text())["pid"] == holder.pid

    again = arte("elicit", *smoke(run))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"took over the lock of {run} from pid {holder.pid}" in again.stderr
    assert lock.read_text() == ""  # released on exit
    for task in TASKS:  # the killed run's calls are resumed, none is made twice
        calls = [r["call"] for r in RecordLog(run / "elicit" / f"{task}.questions.jsonl")]
        assert calls == list(range(len(calls)))
    assert (run / "elicit" / "drafts.jsonl").read_bytes() == (
        finished / "elicit" / "drafts.jsonl"
    ).read_bytes()


def test_two_runs_started_together_one_writes_and_the_result_is_whole(finished, tmp_path):
    """The issue's reproduction: `for i in 1 2; do arte run ... & done; wait; arte run ...`."""
    run = tmp_path / "run"
    procs = [arte_bg("elicit", *smoke(run), env={"ARTE_FAKE_DELAY_S": "0.1"}) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    errors = [p.stderr.read() for p in procs]
    assert codes == [0, 2], errors
    one_clear_line(next(e for e in errors if "error:" in e), "is in use by another arte process: pid")
    for task in TASKS:
        calls = [r["call"] for r in RecordLog(run / "elicit" / f"{task}.questions.jsonl")]
        assert calls == list(range(len(calls)))
    assert (run / "elicit" / "drafts.jsonl").read_bytes() == (
        finished / "elicit" / "drafts.jsonl"
    ).read_bytes()


def test_a_run_directory_written_twice_before_the_lock_says_what_to_delete(finished, tmp_path, capsys):
    """What two unlocked writers left behind (every evaluation record twice) is named, with the fix."""
    run = copy_run(finished, tmp_path)
    records = run / "evaluate" / "original.jsonl"
    records.write_text(records.read_text() * 2)
    assert main(["evaluate", *smoke(run)]) == 2
    one_clear_line(
        capsys.readouterr().err,
        f"{records}:33: a second record for boolean_expressions 0-shot question 0",
        f"delete {run / 'evaluate'} and re-run `arte evaluate`",
    )
    shutil.rmtree(run / "evaluate")
    assert main(["evaluate", *smoke(run)]) == 0
    assert_records_complete(run)


def test_evaluate_killed_while_writing_a_task_redoes_that_task_only(finished, tmp_path, capsys):
    """A kill part-way through one task's records (5 of its 16 written, evaluate not done): the re-run
    evaluates that task again, keeps the other records, and ends with every record once, the same as
    the uninterrupted run's."""
    run = copy_run(finished, tmp_path)
    records = run / "evaluate" / "arte.jsonl"
    whole = records.read_text().splitlines(keepends=True)
    records.write_text("".join(whole[:5]))  # the first task's first 5 of 16 (2 shots x 8 questions)
    (run / "evaluate" / "done.json").unlink()
    assert main(["evaluate", *smoke(run)]) == 0
    assert_records_complete(run)
    assert sorted(records.read_text().splitlines()) == sorted(line.rstrip("\n") for line in whole)
    capsys.readouterr()


# ---------------------------------------------------------------- 2. a changed config


def test_changed_config_stops_names_stages_and_fields_and_touches_nothing(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    assert main(["run", *smoke(run, "--elicit.m", "4")]) == 2
    line = one_clear_line(capsys.readouterr().err, "elicit (elicit.m: 8 -> 4)", "--on_config_change redo")
    assert (
        "made from them: score, prefcheck, pairs, align, generate, gain, train, rounds, evaluate" in line
    )  # prefset does not read elicit
    assert main(["pairs", *smoke(run, "--pairs.quantile", "0.5")]) == 2
    one_clear_line(capsys.readouterr().err, "pairs (pairs.quantile: 0.25 -> 0.5)")
    assert main(["run", *smoke(run, "--n_test", "6", "--evaluate.n_test", "6")]) == 2
    line = one_clear_line(
        capsys.readouterr().err, "elicit (task data of boolean_expressions, multistep_arithmetic"
    )
    assert "made from them: score, prefcheck, pairs, align, generate, gain, train, rounds, evaluate" in line
    assert snapshot(run) == before  # manifest.json included: it never claims m = 4
    # What only changes speed is not a change of what the files are made from.
    assert main(["run", *smoke(run, "--teacher.threads", "1", "--train.logging_steps", "2")]) == 0
    assert out_skipped(capsys) == len(STAGE_NAMES)


def out_skipped(capsys) -> int:
    return capsys.readouterr().out.count("done earlier, skipped")


def test_changed_input_of_a_finished_stage_is_reported(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    pairs = run / "pairs" / "dpo.jsonl"
    pairs.write_text("".join(pairs.read_text().splitlines(keepends=True)[1:]))  # as if pairs were redone
    assert main(["run", *smoke(run)]) == 2
    one_clear_line(capsys.readouterr().err, "align (its input pairs/dpo.jsonl changed since it ran)")


def test_redo_from_the_first_affected_stage_keeps_the_rest(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    kept = {n: (run / n / "done.json").read_bytes() for n in STAGE_NAMES if n != "evaluate"}
    (run / "evaluate" / "important.txt").write_text("not arte's")  # issue 29 (5): a redo keeps it
    assert main(["run", *smoke(run, "--evaluate.max_new_tokens", "6", "--on_config_change", "redo")]) == 0
    assert (run / "evaluate" / "important.txt").read_text() == "not arte's"
    out = capsys.readouterr().out
    assert (
        "[evaluate] config or input changed: evaluate (evaluate.max_new_tokens: 12 -> 6); redoing evaluate"
        in out
    )
    assert {n: (run / n / "done.json").read_bytes() for n in kept} == kept
    assert_records_complete(run)
    done = json.loads((run / "evaluate" / "done.json").read_text())
    assert done["provenance"]["config"]["evaluate"]["max_new_tokens"] == 6
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["evaluate"]["max_new_tokens"] == 6
    assert list(manifest["stages"]) == list(STAGE_NAMES)
    assert main(["run", *smoke(run, "--evaluate.max_new_tokens", "6")]) == 0  # now it matches
    assert out_skipped(capsys) == len(STAGE_NAMES)


def test_redo_of_an_early_stage_is_refused_by_a_later_stage_command(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    config = tmp_path / "changed.yaml"  # elicit's m is not a flag of `arte pairs`: a changed config file
    config.write_text(SMOKE.read_text().replace("elicit: {m: 8,", "elicit: {m: 4,"))
    assert main(["pairs", "--config", str(config), "--run_dir", str(run), "--on_config_change", "redo"]) == 2
    one_clear_line(capsys.readouterr().err, "affects elicit, score", "arte run --on_config_change redo")
    assert snapshot(run) == before


# ---------------------------------------------------------------- 3. a damaged file of a finished stage


def test_damaged_file_of_a_finished_stage_is_an_error_and_rerunning_the_stage_fixes_it(
    finished, tmp_path, capsys
):
    run = copy_run(finished, tmp_path)
    scores = run / "score" / "scores.jsonl"
    n = len(scores.read_text().splitlines())
    with open(scores, "a") as f:
        f.write('{"task": "boolean_expressions", "qid": "boolean_expressions-q0000", "str')
    for command in ("pairs", "run"):
        assert main([command, *smoke(run)]) == 2
        one_clear_line(
            capsys.readouterr().err,
            f"{scores}:{n + 1}: damaged: the last line is half a record",
            "stage score finished. Re-run that stage (`arte score`",
        )
    assert main(["score", *smoke(run)]) == 0
    assert scores.read_bytes() == (finished / "score" / "scores.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["run", *smoke(run)]) == 0  # the same scores again: nothing after score is redone
    assert out_skipped(capsys) == len(STAGE_NAMES)
    assert_records_complete(run)


def test_the_stage_being_resumed_drops_its_own_partial_last_line(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    shutil.rmtree(run / "score")
    (run / "score").mkdir()
    cache = run / "score" / "cache.jsonl"
    lines = (finished / "score" / "cache.jsonl").read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:10]) + lines[10][:30])  # killed in the middle of record 11
    assert main(["score", *smoke(run)]) == 0
    got = [r["key"] for r in RecordLog(cache)]
    assert len(got) == len(set(got)) == len(lines)  # the cut record was scored again, once
    assert (run / "score" / "scores.jsonl").read_bytes() == (finished / "score" / "scores.jsonl").read_bytes()


# ---------------------------------------------------------------- 4. bad options, before the first stage


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n_test", "-5"], "--n_test must be >= 1, got -5"),
        (["--evaluate.shots", "9"], "--evaluate.shots must be distinct counts within 0..3"),
        (["--evaluate.n_boot", "0"], "--evaluate.n_boot must be >= 1"),
        (["--evaluate.n_test", "-1"], "--evaluate.n_test must be >= 1, got -1"),
        (["--evaluate.n_test", "9"], "--evaluate.n_test (9) is more than --n_test (8)"),
        (["--train.batch_size", "0"], "--train.batch_size must be >= 1"),
        (["--align.beta", "0"], "--align.beta must be > 0"),
        (["--generate.questions.m", "0"], "--generate.questions.m must be >= 1"),
        (["--elicit.m", "true"], "config key 'elicit.m': expected int, got 'true'"),
        (["--tasks", "no_such_task"], "unknown task 'no_such_task'"),
    ],
)
def test_bad_option_fails_before_anything_is_written(tmp_path, capsys, flags, message):
    run = tmp_path / "run"
    started = time.time()
    assert main(["run", *smoke(run, *flags)]) == 2
    one_clear_line(capsys.readouterr().err, message)
    assert not run.exists() and time.time() - started < 30


# ---------------------------------------------------------------- 5. paths that cannot be written


def test_unwritable_output_paths_get_one_line_naming_path_and_reason(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = [
        (
            ["run", *smoke(blocker / "run")],
            f"--run_dir {blocker}/run: cannot write there: {blocker} is a file",
        ),
        (["run", *smoke(Path("/sys/arte-run"))], "--run_dir /sys/arte-run: cannot write there: "),
        (
            ["bench", str(tmp_path), "--hugepages", "false", "--out", str(blocker / "bench")],
            f"bench: --out {blocker}/bench: cannot write there: {blocker} is a file",
        ),
        (
            ["export", "gguf", str(tmp_path), "--quant", "f16", "--out", str(blocker / "x")],
            f"--out {blocker}/x: cannot write there: {blocker} is a file",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        one_clear_line(capsys.readouterr().err, message)


# ---------------------------------------------------------------- 6. pickles, truncated and corrupt files


@pytest.fixture(scope="module")
def pickle_only(module_tmp, finished) -> Path:
    """The smoke run's tiny student saved as a PyTorch pickle only (pytorch_model.bin)."""
    from transformers import AutoModelForCausalLM

    out = module_tmp.mktemp("pickle") / "student"
    src = finished / "train" / "arte"
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(out, safe_serialization=False)
    for p in src.iterdir():
        if p.name.startswith("tokenizer") or p.name in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy2(p, out / p.name)
    assert not list(out.glob("*.safetensors")) and (out / "pytorch_model.bin").is_file()
    return out


def test_pickle_only_model_is_refused_everywhere_with_how_to_convert(pickle_only, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", *smoke(run, "--student.model", str(pickle_only))]) == 2
    one_clear_line(
        capsys.readouterr().err,
        f"--student.model {pickle_only}: {pickle_only} holds only PyTorch pickle weights (pytorch_model.bin)",
        f"arte models --to_safetensors {pickle_only}",
        "--student.allow_pickle true",
    )
    assert not run.exists()
    assert main(["export", "gguf", str(pickle_only), "--quant", "f16", "--out", str(tmp_path / "x")]) == 2
    one_clear_line(capsys.readouterr().err, "holds only PyTorch pickle weights", "--allow_pickle true")
    assert main(["bench", str(pickle_only), "--hugepages", "false", "--out", str(tmp_path / "b")]) == 2
    one_clear_line(
        capsys.readouterr().err, "holds only PyTorch pickle weights", "arte models --to_safetensors"
    )
    from arte.backends import BackendConfig, load_backend

    with pytest.raises(UserError, match="holds only PyTorch pickle weights"):
        load_backend(BackendConfig(name="hf", model=str(pickle_only)))


def test_pickles_load_only_with_the_opt_in_and_it_is_recorded(pickle_only, tmp_path, capsys):
    from arte.backends import BackendConfig, SamplingParams, load_backend

    backend = load_backend(BackendConfig(name="hf", model=str(pickle_only), allow_pickle=True))
    assert backend.generate(["Question: 1 + 1 ="], SamplingParams(max_new_tokens=3))[0].completion_tokens > 0
    out = tmp_path / "export"
    argv = ["export", "gguf", str(pickle_only), "--quant", "f16", "--verify", "false", "--out", str(out)]
    assert main([*argv, "--allow_pickle", "true"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == {"allow_pickle": True, "converted_from_pickle": str(pickle_only.resolve())}
    assert (out / "gguf" / f"{pickle_only.name}-f16.gguf").is_file()
    converted = tmp_path / "converted"
    assert main(["models", "--to_safetensors", str(pickle_only), "--out", str(converted)]) == 0
    assert (converted / "model.safetensors").is_file() and not list(converted.glob("*.bin"))
    load_backend(BackendConfig(name="hf", model=str(converted)))  # no opt-in needed any more


class Payload:
    """Pickled as a call to `print`: something a weights file must never contain."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_pickle_that_is_not_just_tensors_is_refused_even_with_the_opt_in(pickle_only, tmp_path):
    import torch

    from common.hf_models import load_hf_model

    bad = tmp_path / "bad"
    shutil.copytree(pickle_only, bad)
    torch.save({"model.embed_tokens.weight": Payload()}, bad / "pytorch_model.bin")
    with pytest.raises(UserError, match="torch refused to unpickle the weights") as e:
        load_hf_model(str(bad), allow_pickle=True)
    assert "from_tf" not in str(e.value) and "weights_only=False" not in str(e.value).split("(")[0]


def test_truncated_safetensors_and_gguf_files_are_named(finished, tmp_path, capsys):
    from arte.backends import BackendConfig, load_backend
    from export.gguf_convert import convert_hf_to_gguf

    student = tmp_path / "student"
    shutil.copytree(finished / "train" / "arte", student)
    weights = student / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    run = tmp_path / "run"
    assert main(["run", *smoke(run, "--student.model", str(student))]) == 2
    one_clear_line(capsys.readouterr().err, f"{weights}: truncated safetensors file")
    assert main(["bench", str(student), "--hugepages", "false", "--out", str(tmp_path / "b")]) == 2
    one_clear_line(capsys.readouterr().err, f"{weights}: truncated safetensors file")

    gguf = convert_hf_to_gguf(finished / "train" / "arte", tmp_path / "student-f16.gguf", "f16")
    gguf.write_bytes(gguf.read_bytes()[: gguf.stat().st_size - 4096])
    for name in ("hf", "llama_cpp"):
        with pytest.raises(UserError, match=rf"{gguf}: truncated GGUF file: its tensors need \d+ bytes"):
            load_backend(BackendConfig(name=name, model=str(gguf), threads=1))
    assert main(["bench", str(gguf), "--hugepages", "false", "--out", str(tmp_path / "b")]) == 2
    one_clear_line(capsys.readouterr().err, f"{gguf}: truncated GGUF file")


# ---------------------------------------------------------------- smaller items


def test_base_of_an_adapter_may_be_an_embedded_name(finished, tmp_path, capsys):
    adapter = finished / "align" / "teacher-adapter"
    out = tmp_path / "x"
    argv = [
        "export",
        "gguf",
        str(adapter),
        "--base",
        "tiny-random-llama",
        "--quant",
        "f16",
        "--verify",
        "false",
    ]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "gguf" / "merged-source-f16.gguf").is_file()
