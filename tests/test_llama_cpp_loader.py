"""The extra-buffer-type decision (common/llama_cpp_loader.py): parsing llama.cpp's system info, the
override order, and that every caller that opens a llama.cpp model applies it. llama.cpp's CPU report
is faked, so the AMX branch runs on any CPU; the models opened are real (tiny GGUF files)."""

from __future__ import annotations

import json
import sys

import pytest

from common import llama_cpp_loader as loader
from common.llama_cpp_loader import (
    ENV_VAR,
    LlamaCppSettingError,
    amx_features,
    decide_extra_bufts,
    normalize_setting,
    parse_system_info,
)

# What llama-cpp-python 0.3.36 printed on the two CPUs these machines had.
ZEN4 = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
SAPPHIRE_RAPIDS = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 | "
)


def test_parse_system_info():
    zen4 = parse_system_info(ZEN4)
    assert zen4["SSE3"] == "1" and zen4["AVX512_BF16"] == "1" and zen4["REPACK"] == "1"
    assert "CPU : SSE3" not in zen4 and amx_features(zen4) == []
    spr = parse_system_info(SAPPHIRE_RAPIDS)
    assert amx_features(spr) == ["AMX_INT8"]
    assert amx_features(parse_system_info("CPU : AMX_INT8 = 0 | AMX_BF16 = 1 |")) == ["AMX_BF16"]
    assert parse_system_info("") == {} and parse_system_info("no features here") == {}
    two = parse_system_info("CPU : AVX2 = 1 | Metal : EMBED_LIBRARY = 1 |")
    assert two == {"AVX2": "1", "EMBED_LIBRARY": "1"}


def test_auto_follows_the_cpu_report():
    amx = decide_extra_bufts("auto", env={}, system_info=SAPPHIRE_RAPIDS)
    assert amx.use_extra_bufts is False and amx.source == "auto" and amx.amx == ("AMX_INT8",)
    assert "AMX_INT8 = 1" in amx.reason and "#20824" in amx.reason
    other = decide_extra_bufts("auto", env={}, system_info=ZEN4)
    assert other.use_extra_bufts is True and other.source == "auto" and other.amx == ()


def test_override_order():
    """setting (config field / flag / argument) > environment variable > auto."""
    env_on, env_off = {ENV_VAR: "on"}, {ENV_VAR: "0"}
    assert decide_extra_bufts("on", env=env_off, system_info=SAPPHIRE_RAPIDS).use_extra_bufts is True
    assert decide_extra_bufts("on", env=env_off, system_info=SAPPHIRE_RAPIDS).source == "setting"
    assert decide_extra_bufts("off", env=env_on, system_info=ZEN4).use_extra_bufts is False
    from_env = decide_extra_bufts("auto", env=env_on, system_info=SAPPHIRE_RAPIDS)
    assert from_env.use_extra_bufts is True and from_env.source == f"env {ENV_VAR}"
    assert decide_extra_bufts("auto", env=env_off, system_info=ZEN4).use_extra_bufts is False
    assert decide_extra_bufts("auto", env={ENV_VAR: "auto"}, system_info=SAPPHIRE_RAPIDS).source == "auto"
    # Neither a setting nor the environment needs llama.cpp's report.
    assert decide_extra_bufts("off", env={}, system_info="never read").amx == ()


def test_bad_settings_name_their_source():
    assert normalize_setting(True, "x") == "on" and normalize_setting(False, "x") == "off"
    assert normalize_setting(None, "x") == "auto" and normalize_setting(" OFF ", "x") == "off"
    with pytest.raises(LlamaCppSettingError, match=f"environment variable {ENV_VAR}.*'maybe'"):
        decide_extra_bufts("auto", env={ENV_VAR: "maybe"}, system_info=ZEN4)
    with pytest.raises(LlamaCppSettingError, match="extra_bufts: expected auto, on or off"):
        decide_extra_bufts("sometimes", env={}, system_info=ZEN4)


def test_config_field_reads_yaml_on_off(tmp_path):
    from arte.run_config import RunConfig
    from common.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("student: {name: llama_cpp, extra_bufts: off}\nteacher: {extra_bufts: on}\n")
    cfg = load_config(
        RunConfig, path, {"aligned_teacher.name": "llama_cpp", "aligned_teacher.extra_bufts": "off"}
    )
    assert (cfg.student.extra_bufts, cfg.teacher.extra_bufts, cfg.aligned_teacher.extra_bufts) == (
        "off",
        "on",
        "off",
    )
    from common.errors import UserError

    with pytest.raises(UserError, match="student.extra_bufts"):
        load_config(RunConfig, None, {"student.extra_bufts": "perhaps"})


# ---- every caller that opens a model -----------------------------------------------------------


@pytest.fixture
def opened(monkeypatch):
    """llama_cpp.Llama replaced by a subclass that records use_extra_bufts of every model it loads."""
    llama_cpp = pytest.importorskip("llama_cpp")
    record: list[bool] = []

    class RecordingLlama(llama_cpp.Llama):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            record.append(bool(self.model_params.use_extra_bufts))

    monkeypatch.setattr(llama_cpp, "Llama", RecordingLlama)
    monkeypatch.delenv(ENV_VAR, raising=False)
    return record


def fake_report(monkeypatch, text: str) -> None:
    monkeypatch.setattr(loader, "llama_system_info", lambda: text)


@pytest.mark.parametrize("report,expected", [(SAPPHIRE_RAPIDS, False), (ZEN4, True)])
def test_backend_applies_the_decision(tiny_model, opened, monkeypatch, report, expected):
    from arte.backends import BackendConfig, load_backend

    fake_report(monkeypatch, report)
    backend = load_backend(BackendConfig(name="llama_cpp", model=str(tiny_model.gguf_path), n_ctx=256))
    try:
        backend.loglikelihood([("Question: 2+3?", " 5")])  # opens the second (scoring) instance
        assert backend.llm.model_params.use_extra_bufts is expected
    finally:
        backend.close()
    assert opened == [expected, expected]


def test_backend_setting_beats_the_report(tiny_model, opened, monkeypatch):
    from arte.backends import BackendConfig, load_backend

    fake_report(monkeypatch, SAPPHIRE_RAPIDS)
    monkeypatch.setenv(ENV_VAR, "off")
    cfg = BackendConfig(name="llama_cpp", model=str(tiny_model.gguf_path), n_ctx=256, extra_bufts="on")
    load_backend(cfg).close()
    assert opened == [True]


def test_backend_bad_env_is_a_user_error(tiny_model, opened, monkeypatch):
    from arte.backends import BackendConfig, load_backend
    from common.errors import UserError

    monkeypatch.setenv(ENV_VAR, "yes please")
    with pytest.raises(UserError, match=ENV_VAR):
        load_backend(BackendConfig(name="llama_cpp", model=str(tiny_model.gguf_path), n_ctx=256))
    assert opened == []


def test_bench_runtime_applies_and_records_the_decision(tiny_model, opened, monkeypatch):
    from edge_bench.runtimes.llama_cpp import LlamaCppRuntime

    fake_report(monkeypatch, SAPPHIRE_RAPIDS)
    rt = LlamaCppRuntime(tiny_model.gguf_path, threads=1, n_ctx=128)
    try:
        rt.decode(int(rt.prefill([1, 2, 3]).argmax()))
        assert rt.settings["use_extra_bufts"] is False and rt.settings["extra_bufts_source"] == "auto"
    finally:
        rt.close()
    rt = LlamaCppRuntime(tiny_model.gguf_path, threads=1, n_ctx=128, extra_bufts="on")
    rt.close()
    assert opened == [False, True]


def test_arte_bench_records_the_decision_in_host_and_rows(tiny_model, opened, monkeypatch, tmp_path):
    import contextlib
    import io

    from arte.cli import main

    fake_report(monkeypatch, SAPPHIRE_RAPIDS)
    out = tmp_path / "bench"
    argv = [
        "bench",
        str(tiny_model.gguf_path),
        "--threads",
        "1",
        "--prompt_lengths",
        "8",
        "--n_decode",
        "2",
        "--min_repeats",
        "1",
        "--min_seconds",
        "0",
        "--memory",
        "false",
        "--bandwidth_mb",
        "0",
        "--hugepages",
        "false",
        "--out",
        str(out),
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["host"]["llama_cpp_extra_bufts"]["use_extra_bufts"] is False
    assert report["host"]["llama_cpp_extra_bufts"]["amx"] == ["AMX_INT8"]
    (row,) = report["results"]
    assert row["runtime_settings"]["use_extra_bufts"] is False
    assert opened and set(opened) == {False}
    assert "llama_cpp_extra_bufts" in (out / "report.md").read_text()


def test_compare_warns_when_the_setting_differs():
    from edge_bench.recommend import _extra_bufts_differ

    def rep(on):
        return {"host": {"llama_cpp_extra_bufts": {"use_extra_bufts": on}}}

    assert _extra_bufts_differ(rep(True), rep(True)) == []
    assert _extra_bufts_differ(rep(True), {"host": {}}) == []
    (line,) = _extra_bufts_differ(rep(False), rep(True))
    assert "on (old) and off (new)" in line


def test_export_verification_applies_and_records_the_decision(tiny_model, opened, monkeypatch, tmp_path):
    from export.run import export_model

    fake_report(monkeypatch, SAPPHIRE_RAPIDS)
    manifest = export_model(tiny_model.hf_dir, tmp_path / "out", gguf=["q8_0"])
    assert opened and set(opened) == {False}  # logits, greedy and tokenizer checks: every load
    (record,) = manifest["variants"]
    assert record["verification"]["passed"] in (True, False)
    assert record["llama_cpp_runtime"]["extra_bufts"]["use_extra_bufts"] is False
    assert manifest["runtime"]["llama_cpp"]["extra_bufts"]["amx"] == ["AMX_INT8"]
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["runtime"]["llama_cpp"]["system_info"] == SAPPHIRE_RAPIDS


def test_server_launcher_applies_the_decision(tiny_model, opened, monkeypatch):
    """`python -m common.llama_cpp_server` runs llama_cpp.server's main under the override: here that
    main is replaced by one that loads the model with the server's own loader."""
    pytest.importorskip("llama_cpp.server.model")
    import llama_cpp.server.__main__ as server_main_module
    from llama_cpp.server.model import LlamaProxy
    from llama_cpp.server.settings import ModelSettings

    from common import llama_cpp_server

    fake_report(monkeypatch, SAPPHIRE_RAPIDS)
    argv_seen = []

    def fake_server_main():
        argv_seen.append(list(sys.argv[1:]))
        settings = ModelSettings(model=str(tiny_model.gguf_path), n_ctx=128, verbose=False)
        LlamaProxy.load_llama_from_model_settings(settings).close()

    monkeypatch.setattr(server_main_module, "main", fake_server_main)
    monkeypatch.setattr(sys, "argv", ["llama_cpp_server"])
    llama_cpp_server.main(["--model", "m.gguf", "--port", "8000"])
    llama_cpp_server.main(["--extra_bufts=on", "--model", "m.gguf"])
    assert opened == [False, True]
    assert argv_seen == [["--model", "m.gguf", "--port", "8000"], ["--model", "m.gguf"]]
    with pytest.raises(SystemExit, match="auto, on or off"):
        llama_cpp_server.main(["--extra_bufts", "sometimes"])
    # The override ends with the server: a plain Llama(...) afterwards has llama.cpp's default.
    import llama_cpp

    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True


def test_split_extra_bufts():
    from common.llama_cpp_server import split_extra_bufts

    assert split_extra_bufts(["--model", "a"]) == ("auto", ["--model", "a"])
    assert split_extra_bufts(["--extra_bufts", "off", "--port", "1"]) == ("off", ["--port", "1"])
    with pytest.raises(SystemExit):
        split_extra_bufts(["--extra_bufts"])


def test_pipeline_manifest_records_the_decision(monkeypatch):
    from arte.backends import BackendConfig
    from arte.run_config import RunConfig
    from arte.stage_loop import llama_cpp_runtime

    fake_report(monkeypatch, SAPPHIRE_RAPIDS)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert (
        llama_cpp_runtime(RunConfig(teacher=BackendConfig(name="fake"), student=BackendConfig(name="fake")))
        is None
    )
    got = llama_cpp_runtime(
        RunConfig(teacher=BackendConfig(name="fake"), student=BackendConfig(extra_bufts="on"))
    )
    assert got["system_info"] == SAPPHIRE_RAPIDS
    assert got["extra_bufts"] == {"student": decide_extra_bufts("on").as_record()}
    got = llama_cpp_runtime(RunConfig(student=BackendConfig(), teacher=BackendConfig()))
    assert {r["use_extra_bufts"] for r in got["extra_bufts"].values()} == {False}
