"""Huge pages for llama.cpp's weights (edge_bench.hugepages) and the bandwidth measured around every
timed block (bandwidth.BandwidthMeter): the parsing on known inputs, then the real effect: a GGUF read
into memory under glibc's tunable lands in huge pages, and `arte bench` started as a command restarts
itself with that tunable (and does not with --hugepages false)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_bench import hugepages
from edge_bench.bandwidth import BandwidthMeter
from edge_bench.measure import _set_efficiency, runtime_options
from edge_bench.memory import measure_peak_rss
from edge_bench.settings import BenchSettings
from edge_bench.variants import Variant

REPO = Path(__file__).resolve().parents[1]
CAN_HUGE = hugepages.thp_mode() in ("always", "madvise") and hugepages._is_glibc()
needs_thp = pytest.mark.skipif(not CAN_HUGE, reason="needs Linux, glibc and THP 'madvise' or 'always'")


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
    f = tmp_path / "enabled"
    for text, mode in [
        ("always [madvise] never\n", "madvise"),
        ("[always] madvise never", "always"),
        ("always madvise [never]", "never"),
        ("garbage", None),
    ]:
        f.write_text(text)
        assert hugepages.thp_mode(f) == mode
    assert hugepages.thp_mode(tmp_path / "missing") is None


def test_glibc_tunable_is_detected_and_added_without_losing_others():
    assert not hugepages.glibc_hugetlb({})
    assert not hugepages.glibc_hugetlb({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert hugepages.glibc_hugetlb({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"})
    env = hugepages.hugepages_env(
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0", "X": "1"}
    )
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1" and env["X"] == "1"
    assert hugepages.hugepages_env({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_the_tunable_needs_glibc_2_35():
    if sys.platform == "linux":
        assert hugepages._is_glibc(("glibc", "2.36")) and hugepages._is_glibc(("glibc", "2.35"))
    assert not hugepages._is_glibc(("glibc", "2.31")) and not hugepages._is_glibc(("", ""))
    assert not hugepages._is_glibc(("musl", "1.2"))


def test_active_needs_always_or_madvise_plus_the_tunable():
    on = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert hugepages.hugepages_active({}, mode="always")
    assert not hugepages.hugepages_active({}, mode="never") and not hugepages.hugepages_active(on, "never")
    assert not hugepages.hugepages_active({}, mode="madvise")
    assert hugepages.hugepages_active(on, mode="madvise") == hugepages._is_glibc()


def test_llama_cpp_reads_into_memory_only_where_that_memory_gets_huge_pages(monkeypatch):
    on, off = BenchSettings(), BenchSettings(hugepages=False, flash_attn=False)
    monkeypatch.setattr(hugepages, "hugepages_active", lambda: True)
    auto = {"extra_bufts": "auto"}
    assert runtime_options("llama_cpp", on) == {"use_mmap": False, "flash_attn": True, **auto}
    assert runtime_options("llama_cpp", off) == {"use_mmap": True, "flash_attn": False, **auto}
    assert runtime_options("onnxruntime", on) == {} and runtime_options("fake", on) == {}
    monkeypatch.setattr(hugepages, "hugepages_active", lambda: False)
    assert runtime_options("llama_cpp", on) == {"use_mmap": True, "flash_attn": True, **auto}


@pytest.mark.slow
@needs_thp
def test_gguf_read_under_the_tunable_sits_in_huge_pages(smollm2_gguf, monkeypatch):
    """The fresh-process probe, once with the weights read into memory and once mapped. (A tiny model
    is no use here: glibc serves allocations of a few MB from its heap, not from fresh mappings.)"""
    size = smollm2_gguf.stat().st_size
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    read = measure_peak_rss("llama_cpp", smollm2_gguf, 1, 8, 2, options={"use_mmap": False})
    mapped = measure_peak_rss("llama_cpp", smollm2_gguf, 1, 8, 2, options={"use_mmap": True})
    assert read["final_anon_huge_pages_bytes"] >= 0.8 * size, (read, size)
    assert mapped["final_anon_huge_pages_bytes"] < read["final_anon_huge_pages_bytes"] - size // 2


def test_bandwidth_meter_pools_measurements_and_efficiency_uses_the_higher_best():
    meter = BandwidthMeter(size_bytes=16 << 20, repeats=3)
    first, second = meter.measure(1), meter.measure(1)
    summary = meter.summary()["by_threads"]["1"]
    assert summary["measurements"] == 2 and len(summary["samples_gb_per_s"]) == 6
    assert summary["best_gb_per_s"] == max(first["best_gb_per_s"], second["best_gb_per_s"])
    meter.close()
    with pytest.raises(RuntimeError, match="closed"):
        meter.measure(1)
    v = Variant("v", "gguf", "llama_cpp", Path("v.gguf"), "f16", 1, 16.0, None, bytes_per_token=int(2e8))
    rows = [{"decode_tokens_per_s": 100.0}, {"decode_tokens_per_s": None}]
    _set_efficiency(rows, v, {"best_gb_per_s": 40.0}, {"best_gb_per_s": 25.0})
    assert rows[0]["efficiency"] == pytest.approx(0.5) and rows[0]["bandwidth_gb_per_s"] == 40.0
    assert rows[0]["bandwidth_before_after"] == [40.0, 25.0] and rows[1]["efficiency"] is None
    assert rows[0]["bandwidth_unstable"] is True  # 40 vs 25: the host changed under the block
    _set_efficiency(rows, v, {"best_gb_per_s": 40.0}, {"best_gb_per_s": 36.0})
    assert rows[0]["bandwidth_unstable"] is False and rows[0]["efficiency"] == pytest.approx(0.5)


def _bench_as_a_command(tmp_path: Path, *flags: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = tmp_path / "fake.json"
    spec.write_text(
        json.dumps(
            {
                "runtime": "fake",
                "name": "f",
                "format": "gguf",
                "quant": "f16",
                "size_bytes": 1000,
                "bytes_per_token": 1000,
            }
        )
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = str(REPO)
    cmd = [
        sys.executable,
        "-m",
        "arte.cli",
        "bench",
        str(spec),
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
        "8",
        "--out",
        str(out),
        *flags,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "report.json").read_text())


@needs_thp
def test_arte_bench_restarts_itself_with_the_tunable(tmp_path):
    report = _bench_as_a_command(tmp_path)
    assert report["host"]["hugepages"]["glibc_hugetlb"] is True
    assert report["host"]["hugepages"]["active"] is True and report["config"]["hugepages"] is True
    off = _bench_as_a_command(tmp_path / "off", "--hugepages", "false")
    assert off["host"]["hugepages"]["glibc_hugetlb"] is False and off["config"]["hugepages"] is False
