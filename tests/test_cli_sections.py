"""Each command shows and takes the flags that concern it: a stage command its own sections and the
shared fields, `arte run` every field (the stage sections and engine-specific fields summarised in
its help), and an engine-specific field on another engine is an error naming the engine."""

from __future__ import annotations

import re

import pytest

from arte.cli import build_parser, main, parse
from arte.stages import PIPELINE
from common.errors import UserError

FLAG_LINE = re.compile(r"^\s+--[a-z]")


def flag_lines(command: str) -> int:
    """`arte COMMAND --help | grep -cE '^\\s+--[a-z]'`."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return sum(1 for line in sub.format_help().splitlines() if FLAG_LINE.match(line))


def test_help_flag_counts_stay_small():
    assert flag_lines("run") <= 90
    assert flag_lines("score") <= 40
    for stage in PIPELINE:  # a stage command never lists every field of the run config
        assert flag_lines(stage.name) < flag_lines("run") + 60, stage.name


def test_run_help_summarises_sections_and_engine_fields():
    parser = build_parser()
    text = next(a for a in parser._actions if a.dest == "command").choices["run"].format_help()
    assert "  align: --align.FIELD (25 options)" in text
    assert "  llama_cpp: n_ctx, extra_bufts, flash_attn" in text
    assert "--teacher.model" in text and "--teacher.n_ctx" not in text
    _, cfg = parse(["run", "--align.beta", "0.3", "--teacher.n_ctx", "4096"])  # still flags of run
    assert cfg.align.beta == 0.3 and cfg.teacher.n_ctx == 4096


def test_a_stage_command_takes_its_sections_only(capsys):
    _, cfg = parse(["score", "--student.model", "x", "--score_max_new_tokens", "64", "--seed", "3"])
    assert (cfg.student.model, cfg.score_max_new_tokens, cfg.seed) == ("x", 64, 3)
    with pytest.raises(UserError, match=r"arte score: --align.beta is not an option of this stage"):
        parse(["score", "--align.beta", "0.3"])
    with pytest.raises(UserError, match=r"unknown option '--align.bta'"):
        parse(["align", "--align.bta", "0.3"])
    assert main(["score", "--train.epochs", "2"]) == 2
    assert "set it in the --config YAML, or use arte run" in capsys.readouterr().err


def test_engine_specific_fields_name_the_engine(tmp_path):
    with pytest.raises(
        UserError, match=r"--teacher.n_ctx is an option of llama_cpp only, but this engine is openai"
    ):
        parse(["run", "--teacher.name", "openai", "--teacher.n_ctx", "4096"])
    config = tmp_path / "c.yaml"
    config.write_text("student: {name: llama_cpp, base_url: http://127.0.0.1:1/v1}\n")
    with pytest.raises(
        UserError, match=r"--student.base_url is an option of openai only, but this engine is llama_cpp"
    ):
        parse(["run", "--config", str(config)])
    _, cfg = parse(["run", "--teacher.name", "openai", "--teacher.base_url", "http://127.0.0.1:1/v1"])
    assert cfg.teacher.base_url.endswith("/v1")
    _, cfg = parse(["run", "--teacher.name", "fake", "--teacher.n_ctx", "64"])  # the simulator takes any
    assert cfg.teacher.n_ctx == 64
