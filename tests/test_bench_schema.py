"""The report schema in code (edge_bench.schema): a report written before the schema was code loads and
is written back byte for byte; malformed reports are refused with the file and the key path; to_dict
and from_dict are inverses; a version 1 report reads with version 2's fields empty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_bench.report import load_report, summary_json, write_report
from edge_bench.schema import Best, Fidelity, Paired, Report, ReportError, VariantResult

FIXTURE = Path(__file__).parent / "bench_report_v2.json"
"""report.json written by edge_bench before the schema was code (fake variants, a bracket task)."""


@pytest.fixture
def raw() -> dict:
    return json.loads(FIXTURE.read_text())


def test_an_existing_report_loads_typed():
    report = load_report(FIXTURE)
    assert [v.name for v in report.variants] == ["fp32", "same", "worse"]
    same = report.variant("same")
    assert isinstance(same.best, Best) and isinstance(same.paired, Paired)
    assert same.paired.n == 6 and same.paired.verdict == "undecided" and same.reference == "fp32"
    assert report.variant("fp32").paired is None and report.variant("fp32").accuracy_drop == 0.0
    assert report.results[0].ttft_ms.p50 <= report.results[0].ttft_ms.p99
    assert report.recommendation.status == "undecided" and report.recommendation.safe_choice == "fp32"
    assert report.rankings.fidelity == ["same", "worse"]


def test_an_existing_report_is_written_back_byte_for_byte(tmp_path):
    report = load_report(FIXTURE)
    assert json.dumps(report.to_dict(), indent=1) + "\n" == FIXTURE.read_text()
    json_path, _ = write_report(report, tmp_path)
    assert json_path.read_bytes() == FIXTURE.read_bytes()


def test_round_trip(raw):
    report = Report.from_dict(raw)
    assert Report.from_dict(report.to_dict()) == report
    assert report.to_dict() == raw
    report.variants[1].best.decode_tokens_per_s += 1  # equality sees a change deep inside
    assert Report.from_dict(raw) != report


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda r: r["variants"][2]["best"].pop("decode_tokens_per_s"),
            "variants[2].best.decode_tokens_per_s: missing",
        ),
        (
            lambda r: r["results"][1]["ttft_ms"].update(p50="fast"),
            "results[1].ttft_ms.p50: expected a number, got str",
        ),
        (
            lambda r: r["variants"][0].update(size_bytes=1.5),
            "variants[0].size_bytes: expected an integer, got float",
        ),
        (
            lambda r: r["variants"][1]["paired"].update(drop_ci=None),
            "variants[1].paired.drop_ci: expected a list, got null",
        ),
        (lambda r: r["results"][0].update(busy=0), "results[0].busy: expected true or false, got int"),
        (lambda r: r["task"].update(n_questions=True), "task.n_questions: expected an integer, got bool"),
        (lambda r: r.update(variants={}), "variants: expected a list, got dict"),
        (
            lambda r: r["recommendation"].update(undecided=[1]),
            "recommendation.undecided[0]: expected a string",
        ),
        (
            lambda r: r["variants"][1].update(fidelity=[]),
            "variants[1].fidelity: expected an object, got list",
        ),
        (lambda r: r.pop("warnings"), "warnings: missing"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_file_and_the_key(raw, tmp_path, edit, message):
    edit(raw)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ReportError) as e:
        load_report(path)
    assert f"{path}: {message}" in str(e.value)


def test_every_problem_is_named_at_once(raw):
    raw["variants"][0]["name"] = 3
    del raw["results"][0]["threads"]
    with pytest.raises(ValueError) as e:  # a ReportError is a ValueError: `arte bench` reports it
        Report.from_dict(raw, "old.json")
    assert str(e.value).splitlines() == [
        "old.json: variants[0].name: expected a string, got int",
        "old.json: results[0].threads: missing",
    ]


def test_not_json_and_unknown_versions_name_the_file(tmp_path, raw):
    path = tmp_path / "report.json"
    path.write_text("{")
    with pytest.raises(ReportError, match=f"{path}: not JSON"):
        load_report(path)
    path.write_text(json.dumps({**raw, "schema_version": 3}))
    with pytest.raises(ReportError, match=f"{path}: schema_version: 3, this edge_bench reads 1, 2"):
        load_report(path)


def test_optional_keys_take_their_defaults_and_unknown_keys_are_ignored(raw):
    for key in ("tokenizer", "bytes_per_token", "error", "accuracy_threads"):
        del raw["variants"][0][key]
    raw["variants"][0]["added_by_a_later_version"] = 1
    v = Report.from_dict(raw).variants[0]
    assert v.tokenizer is None and v.error is None and v.accuracy_threads is None
    assert "added_by_a_later_version" not in v.to_dict()


def test_host_keys_the_bench_leaves_out_stay_out(raw):
    assert "llama_cpp_extra_bufts" not in raw["host"]  # fake variants only: no llama.cpp keys
    host = Report.from_dict(raw).host
    assert host.llama_cpp_extra_bufts is None and "llama_cpp_extra_bufts" not in host.to_dict()


def test_a_hand_built_variant_reads_by_attribute():
    v = VariantResult(
        name="q4",
        format="gguf",
        runtime="llama_cpp",
        quant="q4_k_m",
        size_bytes=10,
        bits_per_weight=4.5,
        reference=None,
        accuracy=None,
        accuracy_ci=None,
        n_questions=0,
        top1_agreement=None,
        paired=None,
        fidelity=Fidelity(),
        best=None,
    )
    assert VariantResult.from_dict(v.to_dict()) == v


def test_summary_line_reads_the_typed_report():
    line = json.loads(summary_json(load_report(FIXTURE)))
    assert line["recommendation_status"] == "undecided"
    assert line["variants"]["same"]["verdict"] == "undecided" and line["variants"]["fp32"]["drop"] is None
