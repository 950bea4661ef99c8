"""Config fields that hold a list of sections (`list[BackendConfig]`): YAML, flags, errors, help."""

from dataclasses import dataclass

import pytest

from arte.backends import BackendConfig
from common.config import load_config, opt, to_dict
from common.errors import UserError


@dataclass
class Engines:
    engines: list[BackendConfig] = opt([], "Engines.")
    name: str = opt("x", "Name.")


def test_yaml_mappings_become_sections_on_their_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "engines:\n  - {name: hf, model: gpt2}\n  - name: fake\n    model: m\n    batch_size: 3\n"
    )
    cfg = load_config(Engines, path)
    assert [(e.name, e.model, e.batch_size) for e in cfg.engines] == [("hf", "gpt2", 16), ("fake", "m", 3)]
    assert isinstance(cfg.engines[0], BackendConfig) and cfg.engines[0].dtype == "float32"
    assert to_dict(cfg)["engines"][1]["batch_size"] == 3  # serialisable, round-trips
    assert load_config(Engines, None, {"engines": to_dict(cfg)["engines"]}) == cfg


def test_a_flag_takes_a_yaml_flow_list():
    cfg = load_config(
        Engines, None, {"engines": "[{name: hf, model: a}, {name: vllm, model: b/c, dtype: bfloat16}]"}
    )
    assert [(e.name, e.model, e.dtype) for e in cfg.engines] == [
        ("hf", "a", "float32"),
        ("vllm", "b/c", "bfloat16"),
    ]
    assert load_config(Engines, None, {"engines": ""}).engines == []


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "[{name: hf, modl: a}]",
            r"unknown config key 'engines\[0\]\.modl'.*Did you mean 'engines\[0\]\.model'",
        ),
        ("[{name: hf, model: a}, {name: nope}]", r"engines\[1\]\.name.*'nope'"),
        ("[{name: hf, batch_size: 0}]", r"--engines\[0\]\.batch_size must be >= 1"),
        ("[hf]", r"engines\[0\]: expected a mapping of BackendConfig keys, got 'hf'"),
        ("{name: hf}", r"'engines': expected a list of mappings"),
        ("[{name: hf", r"'engines': not a YAML list of mappings"),
    ],
)
def test_bad_entries_name_the_entry_and_key(value, message):
    with pytest.raises(UserError, match=message):
        load_config(Engines, None, {"engines": value})


def test_the_cli_flag_parses_and_has_help():
    from arte.cli import parse

    _, cfg = parse(["prefset", "--prefset.respondents", "[{name: fake, model: r1}]", "--prefset.k", "4"])
    assert [(r.name, r.model) for r in cfg.prefset.respondents] == [("fake", "r1")] and cfg.prefset.k == 4
