"""edge_bench's report side: `arte bench` on fake runtimes (report schema, stdout table + one JSON
line, plots), the Pareto front and label placement, the accuracy harness against the pipeline's
prompts and stopping rules; one slow test benches a tiny GGUF, a tiny ONNX and their PyTorch
reference end to end. Fakes that answer with known accuracies are in test_bench_accuracy.py, the
recommendation in test_bench_recommend.py, the statistics in test_bench_stats.py."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from bench_fakes import CONFIG_KEYS, FAKES, hand_made_report, hand_made_variant, run_cli, write_fakes

from edge_bench import hugepages
from edge_bench.accuracy import ByteTokenizer, evaluate_runtime, greedy_complete, task_prompts
from edge_bench.plots import pareto_front, place_labels, write_plots
from edge_bench.report import COLUMNS, SCHEMA_VERSION, check_report, format_table, table_rows
from edge_bench.runtimes.fake import FakeRuntime
from edge_bench.variants import discover_variants

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fake_bench(module_tmp):
    """`arte bench` on three fake variants: (rc, stdout, output directory)."""
    root = module_tmp.mktemp("bench-fake")
    paths = write_fakes(root / "variants")
    out = root / "out"
    argv = [
        "bench",
        *map(str, paths),
        "--task",
        "boolean_expressions",
        "--threads",
        "1",
        "--prompt_lengths",
        "8,16",
        "--n_decode",
        "6",
        "--min_repeats",
        "2",
        "--min_seconds",
        "0.02",
        "--n_questions",
        "3",
        "--max_new_tokens",
        "12",
        "--bandwidth_mb",
        "8",
        "--out",
        str(out),
    ]
    rc, stdout = run_cli(argv)
    return rc, stdout, out


def test_report_json_follows_the_schema(fake_bench):
    rc, _, out = fake_bench
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert check_report(report).to_dict() == report  # the schema describes every key it writes
    assert report["schema_version"] == SCHEMA_VERSION
    assert [v["name"] for v in report["variants"]] == ["fp32", "q8", "q4"]  # reference first
    assert list(report["config"]) == CONFIG_KEYS
    assert report["config"]["threads"] == [1] and report["config"]["prompt_lengths"] == [8, 16]
    assert len(report["results"]) == 3 * 2  # variants x threads x prompt lengths
    for r in report["results"]:
        assert r["runs"] >= 2 and r["decode_tokens_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["per_token_ms"]["p50"] <= r["per_token_ms"]["p90"] <= r["per_token_ms"]["p99"]
        assert 0 < r["efficiency"] and isinstance(r["busy"], bool)
        # efficiency against the higher of the two bandwidths measured around this variant x threads
        assert r["bandwidth_gb_per_s"] == max(r["bandwidth_before_after"]) > 0
        bpt = FAKES[r["variant"]]["size_bytes"]
        assert r["efficiency"] == pytest.approx(
            r["decode_tokens_per_s"] * bpt / (r["bandwidth_gb_per_s"] * 1e9), abs=1e-4
        )
    assert report["bandwidth"]["by_threads"]["1"]["measurements"] == 2 * 3  # before + after, 3 variants
    for v in report["variants"]:
        assert v["error"] is None and v["n_questions"] == 3
        assert v["best"]["threads"] == 1
    top1 = {v["name"]: v["top1_agreement"] for v in report["variants"]}
    assert top1["fp32"] is None and 1 >= top1["q8"] > top1["q4"] >= 0  # more noise, less agreement
    kl = {v["name"]: (v["fidelity"]["bench"] or {}).get("mean_kl") for v in report["variants"]}
    assert kl["fp32"] is None and 0 < kl["q8"] < kl["q4"]
    assert report["rankings"]["fidelity"] == ["q8", "q4"]
    # 3 questions cannot show a drop within 2 points: no recommendation, and the line says so
    assert report["recommendation"]["variant"] is None and report["recommendation"]["status"] == "undecided"
    assert "cannot decide" in report["recommendation"]["line"]
    assert len((out / "answers.jsonl").read_text().splitlines()) == 3 * 3


def test_stdout_is_the_table_then_one_json_line(fake_bench):
    _, stdout, out = fake_bench
    lines = stdout.rstrip("\n").splitlines()
    assert sum(line.startswith("{") for line in lines) == 1
    last = json.loads(lines[-1])
    assert last["schema_version"] == SCHEMA_VERSION and set(last["variants"]) == {"fp32", "q8", "q4"}
    assert last["report"] == str((out / "report.json").resolve())
    header = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    assert "decode t/s" in lines[header] and "p99 ms" in lines[header] and "acc" in lines[header]
    rows = [line.split()[0] for line in lines[header + 2 : header + 8]]
    assert rows == ["fp32", "fp32", "q8", "q8", "q4", "q4"]
    assert any(line.startswith("recommendation: ") for line in lines)
    assert "accuracy (95% intervals)" in lines and any(
        line.startswith("q4 ") and "[" in line for line in lines
    )
    md = (out / "report.md").read_text()
    assert "## Host" in md and "| q4 |" in md and "accuracy_vs_latency.png" in md
    assert "## Accuracy" in md and "## Fidelity" in md and "drop pts [95% CI]" in md


def test_plots_are_valid_png(fake_bench):
    _, _, out = fake_bench
    for name in ("accuracy_vs_latency.png", "size_vs_accuracy.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 100 and height > 100


@pytest.fixture
def report_a() -> dict:
    answers = [1] * 6 + [0] * 4
    ref = hand_made_variant("ref", 20.0, answers, fmt="pytorch", size=4_000_000)
    return hand_made_report(
        [
            ref,
            hand_made_variant("q8", 100.0, answers, ref),
            hand_made_variant("q5", 150.0, [0] + answers[1:], ref),
            hand_made_variant("q4", 300.0, [0] * 10, ref),
            hand_made_variant("q3", 400.0, None, ref),
            hand_made_variant("broken", None, answers, ref),
        ]
    )


def test_table_lists_variants_that_were_not_benchmarked(report_a):
    report_a["variants"][-1]["error"] = "ImportError: no llama_cpp"
    rows = table_rows(report_a)  # no results at all: one row per variant, with its error
    assert [r[0] for r in rows] == [v["name"] for v in report_a["variants"]]
    assert all(len(r) == len(COLUMNS) for r in rows)
    assert rows[-1][-1] == "ERROR: ImportError: no llama_cpp" and rows[0][-1] == "ERROR: not run"
    assert "broken" in format_table(report_a)


def test_check_report_names_missing_and_mistyped_keys(report_a):
    bad = copy.deepcopy(report_a)
    del bad["host"]
    bad["variants"][0]["size_bytes"] = "big"
    with pytest.raises(ValueError) as e:
        check_report(bad)
    assert "report: host: missing" in str(e.value)
    assert "report: variants[0].size_bytes: expected an integer, got str" in str(e.value)
    with pytest.raises(ValueError, match="schema_version"):
        check_report({**report_a, "schema_version": SCHEMA_VERSION + 1})


def test_pareto_front_on_hand_made_points():
    points = [(1.0, 0.50), (2.0, 0.60), (3.0, 0.55), (0.5, 0.40), (4.0, 0.70), (1.0, 0.45), (2.0, 0.60)]
    # (3, .55) is beaten by (2, .6); (1, .45) by (1, .5); the two (2, .6) tie and both stay
    assert pareto_front(points) == [3, 0, 1, 6, 4]
    assert pareto_front([]) == [] and pareto_front([(1.0, 0.0)]) == [0]


def test_plots_of_a_hand_made_report(report_a, tmp_path):
    paths = write_plots(report_a, tmp_path)
    assert [p.name for p in paths] == ["accuracy_vs_latency.png", "size_vs_accuracy.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)


def test_labels_of_crowded_points_do_not_overlap():
    """Seven points, three of them nearly on top of each other (the issue's fastest variants): every
    label box is free of the others and of every marker, and inside the plot."""
    anchors = [(100, 200), (104, 200), (109, 201), (300, 200), (310, 200), (500, 200), (700, 200)]
    sizes = [(60, 10)] * len(anchors)
    area = (40, 40, 760, 400)
    markers = [(x - 5, y - 5, x + 5, y + 5) for x, y in anchors]
    centres = place_labels(anchors, sizes, area, markers)
    boxes = [(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) for (cx, cy), (w, h) in zip(centres, sizes)]

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    for i, a in enumerate(boxes):
        assert area[0] <= a[0] and a[2] <= area[2] and area[1] <= a[1] and a[3] <= area[3]
        assert not any(overlap(a, b) for b in boxes[i + 1 :]), (i, boxes)
        assert not any(overlap(a, m) for m in markers), (i, a)
    # naive placement (every label at the same offset from its point) would overlap here
    naive = [(x + 4, y + 4, x + 64, y + 14) for x, y in anchors]
    assert overlap(naive[0], naive[1])


def test_prompts_are_the_pipelines_evaluation_prompts():
    from arte.stages.evaluate.stats import shot_prompts
    from common.tasks import load_task

    task = load_task("object_counting", n_test=5)
    for shots in (0, 3):
        assert [p for p, _ in task_prompts(task, shots, 5)] == shot_prompts(task, shots, 5)
    assert [t for _, t in task_prompts(task, 3, 5)] == [ex.target for ex in task.test[:5]]


class ScriptedRuntime:
    """Emits the bytes of `script` one greedy token at a time, whatever it is fed."""

    def __init__(self, script: bytes):
        self.script, self.i = script, 0

    def _logits(self) -> np.ndarray:
        logits = np.zeros(256, dtype=np.float32)
        logits[self.script[min(self.i, len(self.script) - 1)]] = 1.0
        self.i += 1
        return logits

    def prefill(self, ids):
        self.i = 0
        return self._logits()

    def decode(self, token):
        return self._logits()


def test_greedy_stops_like_the_pipeline():
    tok = ByteTokenizer()
    done = greedy_complete(ScriptedRuntime(b"so <ans>7</ans> more"), tok, [1], max_new_tokens=50)
    assert (done.text, done.finish) == ("so <ans>7</ans>", "stop")
    nxt = greedy_complete(ScriptedRuntime(b"x\nQuestion: y"), tok, [1], max_new_tokens=50)
    assert (nxt.text, nxt.finish) == ("x\nQuestion:", "stop")
    tok.eos_ids = {ord("!")}
    eos = greedy_complete(ScriptedRuntime(b"ab!cd"), tok, [1], max_new_tokens=50)
    assert (eos.text, eos.finish, eos.tokens) == ("ab", "eos", list(b"ab!"))
    short = greedy_complete(ScriptedRuntime(b"abcdef"), ByteTokenizer(), [1], max_new_tokens=3)
    assert (short.text, short.finish) == ("abc", "length")


def test_top1_agreement_against_the_reference():
    from common.tasks import load_task

    task = load_task("boolean_expressions", n_test=3)
    items, tok = task_prompts(task, 1, 3), ByteTokenizer()
    ref_summary, ref = evaluate_runtime(FakeRuntime("r"), tok, task, items, 10)
    twin, comps = evaluate_runtime(FakeRuntime("r"), tok, task, items, 10, reference=ref)
    assert twin["top1_agreement"] == 1.0 and twin["top1_steps"] == sum(len(c.tokens) for c in ref)
    assert comps == ref and twin["records"] == ref_summary["records"]
    noisy, _ = evaluate_runtime(
        FakeRuntime("r", noise=2.0, variant_seed=3), tok, task, items, 10, reference=ref
    )
    assert noisy["top1_agreement"] < 1.0 and ref_summary["top1_agreement"] is None


def test_variant_names_get_their_source_as_prefix(tmp_path):
    a, b = write_fakes(tmp_path / "student_a"), write_fakes(tmp_path / "student_b")
    names = {v.name: v.reference for v in discover_variants(a + b)}
    assert names["student_a/q4"] == "student_a/fp32" and names["student_b/q8"] == "student_b/fp32"
    assert [v.name for v in discover_variants(a)] == ["fp32", "q8", "q4"]
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        discover_variants([tmp_path / "nothing-here"])


@pytest.mark.slow
def test_bench_tiny_gguf_and_onnx_end_to_end(tiny_model, tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("optimum.onnxruntime")
    from export.onnx_export import export_onnx_fp32

    export_dir = tmp_path / "export"
    onnx_dir = export_onnx_fp32(tiny_model.hf_dir, export_dir / "onnx" / "fp32")
    gguf = Path(tiny_model.gguf_path)
    manifest = {
        "source": {"path": str(Path(tiny_model.hf_dir).resolve())},
        "variants": [
            {
                "format": "gguf",
                "quant": "f32",
                "path": str(gguf),
                "size_bytes": gguf.stat().st_size,
                "bits_per_weight": 32.0,
            },
            {
                "format": "onnx",
                "quant": "fp32",
                "path": "onnx/fp32",
                "files": ["model.onnx"],
                "size_bytes": (onnx_dir / "model.onnx").stat().st_size,
            },
        ],
    }
    (export_dir / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "bench"
    argv = [
        "bench",
        str(export_dir),
        "--task",
        "boolean_expressions",
        "--threads",
        "1",
        "--prompt_lengths",
        "16",
        "--n_decode",
        "4",
        "--min_repeats",
        "2",
        "--min_seconds",
        "0",
        "--n_questions",
        "2",
        "--max_new_tokens",
        "8",
        "--bandwidth_mb",
        "16",
        "--out",
        str(out),
    ]
    rc, stdout = run_cli(argv)
    assert rc == 0, stdout
    for name in ("report.json", "report.md", "accuracy_vs_latency.png", "size_vs_accuracy.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    check_report(report)
    names = ["pytorch-fp32", "gguf-f32", "onnx-fp32"]
    assert [v["name"] for v in report["variants"]] == names
    table_rows = {line.split()[0] for line in stdout.splitlines() if line and not line.startswith("{")}
    assert set(names) <= table_rows
    json.loads(stdout.rstrip().splitlines()[-1])
    for v in report["variants"]:
        assert v["error"] is None and v["best"]["decode_tokens_per_s"] > 0
        if v["reference"]:  # fp32 files of the same weights: the same greedy choices as PyTorch
            assert v["reference"] == "pytorch-fp32" and v["top1_agreement"] >= 0.95
            assert v["accuracy"] == report["variants"][0]["accuracy"]
    gguf_row = next(r for r in report["results"] if r["variant"] == "gguf-f32")
    assert gguf_row["internal"]["decode_tokens"] > 0
    # in-process (no re-exec), the GGUF is read into memory only if this process already has huge pages
    mapped = not hugepages.hugepages_active()
    assert gguf_row["mmap"] is mapped and gguf_row["runtime_settings"]["use_mmap"] is mapped
    assert gguf_row["runtime_settings"]["flash_attn"] is True
