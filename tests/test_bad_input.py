"""Bad input as a new user gives it (issue 29): every scenario of the table is one refusal, exit code
2, no traceback, the flag or file:line named in the message, and nothing lost or left behind (the
working directory, holding any files the scenario put there, is byte for byte as before).

Run in-process through `arte.cli.main` on configs/smoke.yaml (fake teacher, tiny random Llama).
Elsewhere: NaN training (tests/test_align_train.py), one source per export folder
(tests/test_export_run.py), what a redo deletes (tests/test_run_dir.py, tests/test_fault_injection.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from arte.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def smoke(*flags: str) -> list[str]:
    return ["--config", SMOKE, "--run_dir", "run", *flags]


def write(path: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        target = tmp / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def long_question_task(tmp: Path) -> None:
    rows = [{"input": f"What is {i} + 1?", "target": str(i + 1)} for i in range(30)]
    rows[20]["input"] = "x" * 5000  # >= 625 tokens; the tiny Llama's context is 512
    (tmp / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def nothing(tmp: Path) -> None:
    pass


# (id, setup, argv, parts of the one error line)
SCENARIOS = [
    (
        "config-not-utf8",
        write("bin.yaml", b"run_dir: x\n\xff\xfe: 1\n"),
        ["run", "--config", "bin.yaml"],
        ["bin.yaml:2: not UTF-8 text", "save the config file as UTF-8"],
    ),
    (
        "config-empty",
        write("empty.yaml", "\n# nothing\n"),
        ["run", "--config", "empty.yaml"],
        ["empty.yaml: the config file is empty"],
    ),
    (
        "config-bad-yaml-names-file-once",
        write("bad.yaml", "run_dir: [x\n"),
        ["run", "--config", "bad.yaml"],
        ["bad.yaml:2: invalid YAML"],
    ),
    ("lr-inf", nothing, ["run", *smoke("--train.learning_rate", "inf")], ["--train.learning_rate", "finite"]),
    ("lr-nan", nothing, ["run", *smoke("--align.learning_rate", "nan")], ["--align.learning_rate", "> 0"]),
    ("lr-zero", nothing, ["train", *smoke("--train.learning_rate", "0")], ["--train.learning_rate", "> 0"]),
    ("run-dir-empty", nothing, ["elicit", "--config", SMOKE, "--run_dir", ""], ["--run_dir is empty"]),
    ("run-dir-blank", nothing, ["elicit", "--config", SMOKE, "--run_dir", " "], ["--run_dir is empty"]),
    (
        "run-dir-foreign",
        write("run/notes.txt", "a project's own file"),
        ["elicit", *smoke()],
        ["--run_dir run is a non-empty directory that is not an arte run directory"],
    ),
    (
        "n-test-huge",
        nothing,
        ["run", *smoke("--n_test", "100000000")],
        ["--n_test 100000000 is more than the 10000 questions"],
    ),
    (
        "n-test-huge-dry-run",
        nothing,
        ["run", *smoke("--n_test", "100000000", "--dry_run")],
        ["the run cannot start", "--n_test 100000000"],
    ),
    (
        "n-validation-huge-plan",
        nothing,
        ["plan", *smoke("--n_validation", "20000", "--json")],
        ["the run cannot start", "--n_validation 20000"],
    ),
    (
        "teacher-model-relative-path",
        write("fx/other.txt", "fx is a local directory"),
        ["run", *smoke("--teacher.model", "fx/nope")],
        ["--teacher.model fx/nope: model 'fx/nope' not found"],
    ),
    (
        "student-gguf-path",
        nothing,
        ["run", *smoke("--student.name", "llama_cpp", "--student.model", "fx/nope.gguf")],
        ["--student.model fx/nope.gguf: model 'fx/nope.gguf' not found"],
    ),
    (
        "question-longer-than-context",
        long_question_task,
        ["run", *smoke("--tasks", "long.jsonl")],
        ["long.jsonl:21: the question is 5,000 characters", "the context is 512 tokens"],
    ),
    (
        "stage-command-on-a-new-run-dir",
        nothing,
        ["train", *smoke()],
        ["stage 'train' needs elicit"],
    ),
    (
        "export-all-unfinished-run",
        write("run/manifest.json", "{}"),
        ["export", "all", "--run_dir", "run"],
        ["--run_dir run: its train stage has not finished (no train/done.json)"],
    ),
    (
        "export-missing-model",
        nothing,
        ["export", "gguf", "no-such-model", "--out", "out"],
        ["no-such-model does not exist"],
    ),
    (
        "bench-missing-variant",
        nothing,
        ["bench", "no-such-dir", "--task", "boolean_expressions", "--out", "out"],
        ["bench: ", "no-such-dir"],
    ),
]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (content) and directory (None) under `root`, by relative path."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("setup, argv, parts", [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_bad_input_is_one_clear_refusal_and_nothing_is_lost(
    setup, argv, parts, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    before = tree(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("arte: error:")]
    assert len(lines) == 1, err[-3000:]
    for part in parts:
        assert part in lines[0], lines[0]
    assert tree(tmp_path) == before  # nothing made, nothing deleted, nothing changed


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_config_says_cannot_read(tmp_path, capsys):
    config = tmp_path / "secret.yaml"
    config.write_text("run_dir: x\n")
    config.chmod(0)
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: cannot read the config file" in err and "cannot write" not in err


def test_the_config_file_is_named_once(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("n_tset: 3\n")
    assert main(["run", "--config", str(config)]) == 2
    assert capsys.readouterr().err.count(str(config)) == 1


def test_an_implausible_learning_rate_warns_and_a_plausible_one_does_not(caplog):
    from arte.stages.train import TrainConfig

    with caplog.at_level(logging.WARNING, logger="arte.training.divergence"):
        TrainConfig(learning_rate=2e-5)
        assert not caplog.records
        TrainConfig(learning_rate=0.75)
    assert "0.75 is unusually high" in caplog.text


def test_bench_threads_above_the_cores_are_lowered_with_a_warning(caplog):
    from common.threads import available_cores
    from edge_bench.settings import BenchSettings

    cores = len(available_cores())
    with caplog.at_level(logging.WARNING, logger="edge_bench.settings"):
        settings = BenchSettings(threads=[1, 9999])
    assert settings.threads == ([1, cores] if cores > 1 else [1])
    assert f"more than the {cores} cores" in caplog.text


def test_credentials_in_a_base_url_are_kept_out_of_the_manifest(tmp_path):
    from arte.run_config import RunConfig
    from arte.run_dir import RunDir
    from arte.stage_loop import open_manifest
    from common.config import load_config
    from common.redact import redact_url

    assert redact_url("http://user:s3cr3t@host:8000/v1") == "http://***@host:8000/v1"
    assert redact_url("http://host:8000/v1") == "http://host:8000/v1"
    cfg = load_config(RunConfig, SMOKE, {"teacher.base_url": "http://user:s3cr3t@host:8000/v1"})
    run = RunDir(tmp_path / "run").create()
    open_manifest(run, cfg, {})
    text = (run.path / "manifest.json").read_text()
    assert "s3cr3t" not in text and "http://***@host:8000/v1" in text


def test_credentials_in_a_base_url_are_kept_out_of_the_retry_warnings_and_the_error(caplog):
    from arte.backends import BackendConfig
    from arte.backends.openai import OpenAIBackend
    from common.errors import UserError

    url = "http://user:s3cr3t@127.0.0.1:9/v1"  # port 9 (discard): the connection is refused at once
    cfg = BackendConfig(name="openai", model="m", base_url=url, max_retries=1, retry_backoff_s=0.01)
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as e:
        OpenAIBackend(cfg).post("/completions", {"prompt": "x"})
    assert "http://***@127.0.0.1:9/v1/completions" in str(e.value) and "***@" in caplog.text
    assert "s3cr3t" not in str(e.value) + caplog.text
