"""edge_bench measurement core: latency statistics, the stopping rule, the fake runtime, the three real
runtimes on the tiny model (same ids -> same greedy tokens), peak RSS in a fresh process, memory
bandwidth, bytes read per token and the host description. Threads stay at 1 except in the thread
tests (the box has 2 cores shared with other work)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from edge_bench.bandwidth import (
    efficiency,
    gguf_bytes_per_token,
    measure_read_bandwidth,
    onnx_bytes_per_token,
    torch_bytes_per_token,
)
from edge_bench.host import describe_host, machine_busy, pinned
from edge_bench.latency import LatencyStats, benchmark_generation, measure_generation, repeat_until
from edge_bench.memory import measure_peak_rss
from edge_bench.runtimes import open_runtime
from edge_bench.runtimes.fake import FakeRuntime

PROMPT = [1, 17, 42, 99, 123, 7, 250, 3, 64, 200]


# ---- latency statistics and the stopping rule ------------------------------------------------------


def test_latency_stats_on_known_inputs():
    s = LatencyStats.from_samples(range(1, 101))
    assert (s.n, s.min, s.max, s.mean) == (100, 1, 100, 50.5)
    # linear interpolation: rank = q * (n - 1); 1..100 -> 1 + 0.9 * 99 = 90.1, 1 + 0.99 * 99 = 99.01
    assert s.p50 == pytest.approx(50.5) and s.p90 == pytest.approx(90.1) and s.p99 == pytest.approx(99.01)
    s4 = LatencyStats.from_samples([0.004, 0.001, 0.003, 0.002])  # order does not matter
    assert s4.p50 == pytest.approx(0.0025) and s4.p90 == pytest.approx(0.0037)
    assert LatencyStats.from_samples([0.2]).p99 == 0.2
    assert s4.ms()["p50"] == 2.5 and s4.to_dict()["n"] == 4
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


class FakeClock:
    """Time advances only when the measured function runs: `step` seconds per call."""

    def __init__(self, step: float):
        self.now, self.step, self.calls = 0.0, step, 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> int:
        self.now += self.step
        self.calls += 1
        return self.calls


def test_repeat_until_min_count_wins_when_calls_are_slow():
    clock = FakeClock(step=1.0)
    rep = repeat_until(clock.work, min_count=5, min_seconds=0.5, max_count=100, warmup=2, clock=clock)
    assert len(rep.seconds) == 5 and rep.seconds == [1.0] * 5
    assert rep.results == [3, 4, 5, 6, 7]  # the 2 warm-up calls ran first and are not counted
    assert not rep.capped and rep.total_seconds == 5.0


def test_repeat_until_min_duration_wins_when_calls_are_fast():
    clock = FakeClock(step=0.01)
    rep = repeat_until(clock.work, min_count=3, min_seconds=1.0, max_count=1000, warmup=1, clock=clock)
    assert len(rep.seconds) in (100, 101)  # 1.0 s of 0.01 s calls (float rounding may need one more)
    assert rep.total_seconds >= 1.0 and not rep.capped


def test_repeat_until_is_capped_by_max_count():
    clock = FakeClock(step=0.01)
    rep = repeat_until(clock.work, min_count=3, min_seconds=10.0, max_count=20, warmup=0, clock=clock)
    assert len(rep.seconds) == 20 and rep.capped
    with pytest.raises(ValueError):
        repeat_until(clock.work, min_count=5, max_count=4)


def test_repeat_until_with_real_sleeps():
    rt = FakeRuntime(decode_s=0.005)
    rep = repeat_until(
        lambda: rt.decode(1) if rt._digest else rt.prefill([1]),
        min_count=4,
        min_seconds=0.05,
        max_count=1000,
        warmup=1,
    )
    assert len(rep.seconds) >= 4 and rep.total_seconds >= 0.05
    assert min(rep.seconds) >= 0.005 * 0.9 and len(rep.seconds) < 20


# ---- fake runtime and the generation timing --------------------------------------------------------


def test_fake_runtime_is_deterministic_and_consistent_with_its_cache(tmp_path):
    a, b = FakeRuntime(), FakeRuntime("anything")
    np.testing.assert_array_equal(a.prefill(PROMPT), b.prefill(PROMPT))
    whole = FakeRuntime().prefill(PROMPT + [5, 6])
    a.decode(5)
    np.testing.assert_array_equal(a.decode(6), whole)  # prefill(x + y) == prefill(x), decode(y...)
    assert not np.array_equal(FakeRuntime(seed=1).prefill(PROMPT), b.prefill(PROMPT))
    spec = tmp_path / "int4.json"
    spec.write_text(json.dumps({"vocab_size": 64, "noise": 0.5, "variant_seed": 3, "size_bytes": 10}))
    noisy = open_runtime("fake", spec, threads=1)
    assert noisy.vocab_size == 64 and noisy.spec["size_bytes"] == 10
    ref = FakeRuntime(vocab_size=64)
    agree = [int(noisy.prefill([i, i + 1]).argmax() == ref.prefill([i, i + 1]).argmax()) for i in range(60)]
    assert 0.3 < np.mean(agree) < 1.0  # a "quantized" fake mostly, not always, agrees with its reference
    with pytest.raises(RuntimeError):
        FakeRuntime().decode(1)
    with pytest.raises(ValueError):
        FakeRuntime(vocab_size=8).prefill([9])


def test_measure_generation_times_prefill_and_each_decode_step():
    rt = FakeRuntime(prefill_s_per_token=0.002, decode_s=0.004)
    t = measure_generation(rt, PROMPT, n_decode=6)
    assert t.ttft_s >= 0.002 * len(PROMPT) * 0.9
    assert t.prefill_tokens_per_s == pytest.approx(len(PROMPT) / t.ttft_s)
    assert t.per_token_latency.n == 6 and t.per_token_latency.min >= 0.004 * 0.9
    assert t.decode_tokens_per_s == pytest.approx(6 / t.decode_s) and t.decode_tokens_per_s < 1 / 0.004 * 1.1
    assert rt.calls == {"prefill": 1, "decode": 6} and t.internal is None
    ref, expected = FakeRuntime(), []  # greedy: argmax fed back
    logits = ref.prefill(PROMPT)
    for _ in range(7):
        expected.append(int(logits.argmax()))
        logits = ref.decode(expected[-1])
    assert t.tokens == expected
    assert "step_seconds" not in t.to_dict() and t.to_dict()["per_token_latency"]["n"] == 6


def test_benchmark_generation_warms_up_repeats_and_pools():
    rt = FakeRuntime(decode_s=0.002)
    b = benchmark_generation(rt, PROMPT, n_decode=5, min_count=3, min_seconds=0.05, max_count=50, warmup=1)
    assert b.runs >= 3 and rt.calls["prefill"] == b.runs + 1  # + the warm-up run
    assert b.per_token_latency.n == 5 * b.runs and b.ttft.n == b.runs
    assert b.deterministic and len(b.tokens) == 6 and not b.capped
    assert json.loads(json.dumps(b.to_dict()))["per_token_latency"]["n"] == 5 * b.runs


# ---- the three real runtimes on the tiny model -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, module_tmp):
    pytest.importorskip("onnxruntime")
    from export.onnx_export import export_onnx_fp32

    return export_onnx_fp32(tiny_model.hf_dir, module_tmp.mktemp("tiny-onnx") / "fp32")


def _greedy(runtime, ids, steps):
    logits = runtime.prefill(ids)
    rows, tokens = [logits], [int(logits.argmax())]
    for _ in range(steps):
        logits = runtime.decode(tokens[-1])
        rows.append(logits)
        tokens.append(int(logits.argmax()))
    return tokens, np.stack(rows)


def test_pytorch_onnx_and_llama_cpp_give_the_same_greedy_tokens(tiny_model, tiny_onnx):
    """llama.cpp twice: with its library defaults, and as `arte bench` runs it (read into memory,
    flash attention), which must not change what the model computes."""
    gguf = tiny_model.gguf_path
    variants = {
        "pytorch": (tiny_model.hf_dir, {}),
        "onnxruntime": (tiny_onnx, {}),
        "llama_cpp": (gguf, {}),
        "llama_cpp_bench": (gguf, {"use_mmap": False, "flash_attn": True}),
    }
    out = {}
    for name, (path, options) in variants.items():
        rt = open_runtime(name.removesuffix("_bench"), path, threads=1, **options)
        if options:
            assert rt.settings["use_mmap"] is False and rt.settings["flash_attn"] is True
        try:
            if name == "onnxruntime":
                with pytest.raises(RuntimeError, match="decode before prefill"):
                    rt.decode(PROMPT[0])
            out[name] = _greedy(rt, PROMPT, 8)
            assert _greedy(rt, PROMPT, 8)[0] == out[name][0]  # prefill resets the sequence
        finally:
            rt.close()
    ref_tokens, ref_logits = out["pytorch"]
    assert len(ref_tokens) == 9
    # llama.cpp keeps its KV cache in F16 (its default) even for an F32 file: a looser tolerance
    for name, atol in (("onnxruntime", 1e-4), ("llama_cpp", 2e-2), ("llama_cpp_bench", 2e-2)):
        tokens, logits = out[name]
        assert tokens == ref_tokens, name
        np.testing.assert_allclose(logits, ref_logits, atol=atol, err_msg=name)


def test_llama_cpp_reports_its_internal_timing(tiny_model):
    rt = open_runtime("llama_cpp", tiny_model.gguf_path, threads=1)
    try:
        t = measure_generation(rt, PROMPT, n_decode=8)
    finally:
        rt.close()
    assert t.internal["decode_tokens"] == 8 and t.internal["prefill_tokens"] == len(PROMPT)
    assert 0 < t.internal["decode_ms"] / 1000 <= t.decode_s  # llama.cpp's time is inside ours


def test_bytes_per_token_agree_across_formats_of_one_model(tiny_model, tiny_onnx):
    torch_b = torch_bytes_per_token(tiny_model.hf_dir)
    gguf_b = gguf_bytes_per_token(tiny_model.gguf_path)  # F32: the same tensors at the same width
    onnx_b = onnx_bytes_per_token(tiny_onnx)
    config = json.loads((tiny_model.hf_dir / "config.json").read_text())
    row = config["hidden_size"] * 4
    assert torch_b["embedding_row_bytes"] == row and torch_b["tied_embeddings"]
    assert gguf_b["bytes_per_token"] == torch_b["bytes_per_token"] == torch_b["weight_bytes"] + row
    assert gguf_b["embedding_bytes"] == config["vocab_size"] * row
    # ONNX also holds small constants (rotary tables ...); the tied matrix is stored and read once
    assert onnx_b["bytes_per_token"] == pytest.approx(torch_b["weight_bytes"], rel=0.05)


# ---- memory, bandwidth, host ----------------------------------------------------------------------


def test_peak_rss_is_measured_in_a_fresh_process(tiny_model):
    fake = measure_peak_rss("fake", "fake", threads=1, prompt_len=8, n_decode=4)
    assert fake["peak_rss_bytes"] > 5e6 and fake["mmap"] is None
    gguf = measure_peak_rss(
        "llama_cpp",
        tiny_model.gguf_path,
        threads=1,
        prompt_len=8,
        n_decode=4,
        options={"use_mmap": False, "flash_attn": True},
    )
    assert gguf["mmap"] is False and gguf["options"] == {"use_mmap": False, "flash_attn": True}
    assert gguf["peak_rss_bytes"] >= gguf["after_load_rss_bytes"] > 0
    assert gguf["model_rss_bytes"] > 0 and gguf["decode_steps"] == 4
    assert gguf["peak_rss_bytes"] > fake["peak_rss_bytes"]  # llama.cpp + model vs a bare interpreter
    with pytest.raises(RuntimeError, match="memory probe failed"):
        measure_peak_rss(
            "llama_cpp", tiny_model.gguf_path.with_name("missing.gguf"), prompt_len=4, n_decode=1
        )


def test_peak_rss_probe_runs_every_real_runtime(tiny_model, tiny_onnx):
    paths = {"pytorch": tiny_model.hf_dir, "onnxruntime": tiny_onnx, "llama_cpp": tiny_model.gguf_path}
    for name, path in paths.items():
        report = measure_peak_rss(name, path, threads=1, prompt_len=8, n_decode=2)
        assert report["peak_rss_bytes"] >= report["after_load_rss_bytes"] > report["baseline_rss_bytes"] > 0
        assert report["mmap"] is (True if name == "llama_cpp" else None), name
        assert report["final_rss_file_bytes"] > 0 and report["final_rss_anon_bytes"] > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_read_bandwidth_is_positive_and_plausible(threads):
    bw = measure_read_bandwidth(size_bytes=64 << 20, threads=threads, repeats=3)
    assert 0.1 < bw["median_gb_per_s"] <= bw["best_gb_per_s"] < 2000 and len(bw["samples_gb_per_s"]) == 3


def test_efficiency_is_tokens_times_bytes_over_bandwidth():
    assert efficiency(100, 270e6, 30) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        efficiency(100, 1e6, 0)


def test_host_description_and_busy_warning():
    host = describe_host()
    assert host["cpu_model"] and host["logical_cores"] >= 1 and host["affinity"]
    assert isinstance(host["isa_flags"], list) and host["runtime_versions"]["numpy"]
    if host["machine"] in ("x86_64", "AMD64"):
        assert "avx" in host["isa_flags"] or "sse4_2" in host["isa_flags"]
    busy = machine_busy(threads=host["logical_cores"] + 1, sample_seconds=0.1)
    assert busy["free_cores"] == 0 and isinstance(busy["busy"], bool)
    if busy["busy"]:
        assert "machine busy" in busy["warning"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinned_restores_the_affinity():
    before = os.sched_getaffinity(0)
    with pinned([min(before)]):
        assert os.sched_getaffinity(0) == {min(before)}
    assert os.sched_getaffinity(0) == before


# ---- slow: harness overhead on the real model -----------------------------------------------------


@pytest.mark.slow
def test_harness_decode_speed_is_within_10_percent_of_llama_cpp_internal_timing(smollm2_gguf):
    rt = open_runtime("llama_cpp", smollm2_gguf, threads=1)
    try:
        b = benchmark_generation(rt, PROMPT * 3, n_decode=32, min_count=3, min_seconds=1.0, max_count=20)
    finally:
        rt.close()
    internal = b.internal["decode_tokens_per_s"]
    assert b.internal["decode_tokens"] == 32 * b.runs
    assert abs(b.decode_tokens_per_s - internal) / internal < 0.10, (b.decode_tokens_per_s, internal)


def test_another_process_spinning_is_reported_busy():
    import subprocess
    import sys

    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"]
    )
    try:
        time.sleep(0.5)
        busy = machine_busy(threads=len(os.sched_getaffinity(0)), sample_seconds=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy["busy"] and busy["other_processes_cores"] > 0.5 and "other processes" in busy["warning"]
