"""BenchSettings (edge_bench/settings.py): validated once, with the same messages for Python callers
and `arte bench`; `run_bench` takes the settings object as it is."""

from __future__ import annotations

import pytest
from bench_fakes import CONFIG_KEYS, write_fakes

from arte.cli import main
from edge_bench.report import check_report
from edge_bench.settings import BenchSettings

QUICK = dict(
    threads=[1],
    prompt_lengths=[8],
    n_decode=2,
    min_repeats=1,
    min_seconds=0.0,
    pin=False,
    memory=False,
    bandwidth_mb=0,
    busy_sample_s=0.0,
    plots=False,
)


def test_python_callers_pass_settings_to_run_bench(tmp_path):
    from arte.commands.bench import BenchConfig
    from edge_bench.bench import run_bench

    paths = write_fakes(tmp_path / "variants")
    report = run_bench(paths, None, tmp_path / "out", BenchSettings(**QUICK, warmup=0))
    check_report(report)
    assert list(report["config"]) == CONFIG_KEYS and report["config"]["warmup"] == 0
    assert [r["runs"] for r in report["results"]] == [1, 1, 1]
    assert not (tmp_path / "out" / "accuracy_vs_latency.png").exists()  # plots=False
    # `arte bench`'s config is a BenchSettings too; only the settings fields are recorded
    cli_cfg = BenchConfig(**QUICK, dirs=list(map(str, paths)), out=str(tmp_path / "cli"))
    assert list(run_bench(paths, None, tmp_path / "cli", cli_cfg)["config"]) == CONFIG_KEYS
    with pytest.raises(TypeError, match="BenchSettings"):
        run_bench(paths, None, tmp_path / "out", QUICK)


BAD_SETTINGS = [  # (flags, the same settings in Python, a piece of the message)
    (["--threads", "0"], {"threads": [0]}, "--threads must list counts >= 1, got [0]"),
    (["--prompt_lengths", "16,-1"], {"prompt_lengths": [16, -1]}, "--prompt_lengths must list lengths >= 1"),
    (["--n_decode", "0"], {"n_decode": 0}, "--n_decode must be >= 1, got 0"),
    (["--min_seconds", "-1"], {"min_seconds": -1.0}, "--min_seconds must be >= 0"),
    (["--warmup", "-1"], {"warmup": -1}, "--warmup must be >= 0"),
    (["--shots", "4"], {"shots": 4}, "--shots must be between 0 and 3"),
    (["--n_questions", "0"], {"n_questions": 0}, "--n_questions must be an integer >= 1 or auto, got 0"),
    (["--n_questions", "some"], {"n_questions": "some"}, "--n_questions must be an integer >= 1 or auto"),
    (["--accuracy_budget_s", "0"], {"accuracy_budget_s": 0.0}, "--accuracy_budget_s must be > 0"),
    (["--accuracy_budget_s", "-5"], {"accuracy_budget_s": -5.0}, "--accuracy_budget_s must be >= 0"),
    (["--max_accuracy_drop", "2"], {"max_accuracy_drop": 2.0}, "--max_accuracy_drop is a fraction"),
    (["--bandwidth_mb", "-8"], {"bandwidth_mb": -8}, "--bandwidth_mb must be >= 0"),
]


@pytest.mark.parametrize("flags, kwargs, message", BAD_SETTINGS, ids=lambda x: str(x)[:24])
def test_bad_settings_same_error_from_python_and_cli(flags, kwargs, message, capsys, tmp_path):
    with pytest.raises(ValueError) as e:
        BenchSettings(**kwargs)
    assert message in str(e.value)
    rc = main(["bench", str(tmp_path / "model.gguf"), *flags, "--out", str(tmp_path / "out")])
    assert rc == 2
    out, err = capsys.readouterr()
    assert err == f"arte: error: {e.value}\n" and out == ""  # one line, no traceback
    assert not (tmp_path / "out").exists()  # rejected before anything ran


def test_n_questions_is_a_number_or_auto():
    assert BenchSettings(n_questions="auto").n_questions == "auto"
    assert BenchSettings(n_questions=" AUTO ").n_questions == "auto"
    assert BenchSettings(n_questions="40").n_questions == 40  # the command line passes a string
    assert BenchSettings(n_questions=40).n_questions == 40
    for bad in (True, 2.5, "-3", None):
        with pytest.raises(ValueError, match="--n_questions must be an integer >= 1 or auto"):
            BenchSettings(n_questions=bad)


def test_settings_check_what_only_python_callers_can_pass():
    assert BenchSettings(threads=(2, 1)).threads == [2, 1]  # a tuple is stored as a list
    with pytest.raises(ValueError, match="--threads must list counts >= 1, got '1,2'"):
        BenchSettings(threads="1,2")
    with pytest.raises(ValueError, match="--n_decode must be an integer, got 2.5"):
        BenchSettings(n_decode=2.5)
    with pytest.raises(ValueError, match="--extra_bufts must be one of auto, on, off, got 'sometimes'"):
        BenchSettings(extra_bufts="sometimes")
