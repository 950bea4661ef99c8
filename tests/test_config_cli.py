"""Typed configs and the generated CLI: precedence, typos, types, help text, lazy imports."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from arte.cli import COMMANDS, _import, build_parser, main, parse
from common.config import load_config, opt
from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    lr: float = opt(1e-4, "Learning rate.")
    kind: str = opt("lora", "Kind.")


@dataclass
class Outer:
    name: str = opt("x", "Name.")
    steps: int = opt(3, "Steps.")
    flag: bool = opt(False, "A flag.")
    tags: list[str] = opt(["a"], "Tags.")
    train: Inner = opt(Inner(), "Training.")


def test_defaults_yaml_then_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 7\ntrain:\n  lr: 0.5\n")
    cfg = load_config(Outer, cfg_file, {"train.lr": "0.25", "flag": "true", "tags": "p,q"})
    assert (cfg.steps, cfg.train.lr, cfg.train.kind, cfg.flag, cfg.tags) == (
        7,
        0.25,
        "lora",
        True,
        ["p", "q"],
    )
    assert Outer().tags == ["a"] and Outer().tags is not Outer().tags  # no shared mutable defaults


def test_typo_in_yaml_names_key_and_valid_ones(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lrr: 0.5\n")
    with pytest.raises(UserError) as e:
        load_config(Outer, cfg_file)
    msg = str(e.value)
    assert str(cfg_file) in msg and "train.lrr" in msg and "train.lr" in msg and "Did you mean" in msg


def test_wrong_type_names_key_and_value():
    with pytest.raises(UserError, match=r"'steps'.*expected int.*'many'"):
        load_config(Outer, None, {"steps": "many"})


@pytest.mark.parametrize("value", [True, "true", "False"])
def test_a_boolean_is_not_an_int(tmp_path, value):
    """`true` used to become 1 (YAML's bare true is a bool, and int(True) == 1)."""
    with pytest.raises(UserError, match=r"'steps': expected int, got"):
        load_config(Outer, None, {"steps": value})
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: true\n")
    with pytest.raises(UserError, match=r"c\.yaml: config key 'steps': expected int, got True"):
        load_config(Outer, cfg_file)


def test_pipeline_logging_leaves_out_http_request_lines():
    import logging

    from arte.run_config import configure_logging

    configure_logging()
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("steps: 3\ntrain: [unclosed\n")
    with pytest.raises(UserError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(Outer, cfg_file)


def test_unknown_cli_option_lists_valid(capsys):
    assert main(["tasks", "--n_validaton", "5"]) == 2
    err = capsys.readouterr().err
    assert "--n_validaton" in err and "--n_validation" in err and "Traceback" not in err


def test_unknown_literal_value_lists_choices(capsys):
    assert main(["compare-backends", "--a.name", "vlm"]) == 2
    err = capsys.readouterr().err
    assert "'vlm'" in err and "hf" in err and "llama_cpp" in err


def test_post_init_validation_is_a_user_error(capsys):
    assert main(["compare-backends", "--shots", "5"]) == 2
    assert "--shots must be between 0 and 3" in capsys.readouterr().err


def test_every_field_has_help_text():
    parser = build_parser()
    for cmd in COMMANDS:
        sub = parser
        for word in cmd.name.split(" "):
            sub = sub._subparsers._group_actions[0].choices[word]
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help", "config"):
                assert action.help and not action.help.startswith(" ["), (
                    f"{cmd.name} {action.dest} has no help"
                )


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    # Each shipped config names the command it is for in its file name or parses for one of them.
    errors = []
    for cmd in COMMANDS:
        try:
            load_config(_import(cmd.config), path)
            return
        except UserError as e:
            errors.append(f"{cmd.name}: {e}")
    pytest.fail(f"{path.name} parses for no command:\n" + "\n".join(errors))


def test_parse_builds_typed_config():
    cmd, cfg = parse(["compare-backends", "--a.threads", "1", "--n_questions", "4"])
    assert (
        cmd.name == "compare-backends"
        and cfg.a.threads == 1
        and cfg.n_questions == 4
        and cfg.b.name == "llama_cpp"
    )


def test_import_is_light():
    code = (
        "import sys, arte, arte.cli, common.config, common.tasks, arte.backends, arte.models, "
        "export, edge_bench; "
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'datasets', 'onnxruntime') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"heavy modules imported at import time: {out}"


def test_help_runs_for_every_command():
    for args in (["--help"], *[[*c.name.split(" "), "--help"] for c in COMMANDS]):
        r = subprocess.run([sys.executable, "-m", "arte.cli", *args], capture_output=True, text=True)
        assert r.returncode == 0 and "usage:" in r.stdout, r.stderr
