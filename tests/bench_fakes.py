"""Shared by the bench tests: fake variants (an fp32 reference and two "quantized" twins), fakes that
answer a bracket task with known accuracies, the CLI runner, and the report's config keys."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from arte.cli import main

CONFIG_KEYS = (
    "threads prompt_lengths n_decode min_repeats min_seconds warmup n_questions accuracy_budget_s shots "
    "max_new_tokens seed "
    "n_validation n_test max_accuracy_drop pin memory bandwidth_mb busy_sample_s plots hugepages flash_attn "
    "extra_bufts parallel"
).split()
"""The report's `config`: the BenchSettings fields, in order (not the command line's own fields)."""

FAKES = {  # an fp32 "reference" and two "quantized" twins that disagree with it more and more
    "fp32": dict(format="pytorch", decode_s=0.002, size_bytes=4_000_000, bits_per_weight=32.0),
    "q8": dict(
        format="gguf",
        noise=0.1,
        variant_seed=1,
        decode_s=0.001,
        size_bytes=1_000_000,
        bits_per_weight=8.5,
        reference="fp32",
    ),
    "q4": dict(
        format="gguf",
        noise=1.0,
        variant_seed=2,
        decode_s=0.0005,
        size_bytes=600_000,
        bits_per_weight=4.5,
        reference="fp32",
    ),
}


ANSWERING = {  # answer the bracket task: fp32 right on 60%, "same" identical, "worse" on 45% (nested)
    "fp32": dict(format="pytorch", decode_s=0.002, size_bytes=4_000_000, accuracy=0.6, answer_seed=0),
    "same": dict(
        format="gguf",
        decode_s=0.001,
        size_bytes=1_000_000,
        accuracy=0.6,
        answer_seed=0,
        noise=0.3,
        variant_seed=1,
        reference="fp32",
    ),
    "worse": dict(
        format="gguf",
        decode_s=0.0005,
        size_bytes=600_000,
        accuracy=0.45,
        answer_seed=0,
        noise=1.0,
        variant_seed=2,
        reference="fp32",
    ),
}


def write_bracket_task(path: Path, n: int) -> Path:
    """A JSONL task whose answer is written in the question itself ("[[w17]]"): the answering fakes
    (edge_bench.runtimes.fake, `accuracy`) read it there and answer right with their accuracy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"input": f"Repeat the word in brackets: [[w{i}]]", "target": f"w{i}"}) for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    path.with_name(path.name.removesuffix(".jsonl") + ".description.txt").write_text("Repeat the word.")
    return path


def write_fakes(directory: Path, fakes: dict | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, spec in (fakes or FAKES).items():
        path = directory / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "runtime": "fake",
                    "name": name,
                    "quant": name,
                    "bytes_per_token": spec["size_bytes"],
                    **spec,
                }
            )
        )
        paths.append(path)
    return paths


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return rc, out.getvalue()


def answer_records(correct: list[int]) -> list[dict]:
    """Answer records (edge_bench.accuracy's form) of questions 0..n-1: right where `correct` is 1."""
    return [
        {"index": i, "target": f"t{i}", "answer": f"t{i}" if ok else "x", "correct": int(ok)}
        for i, ok in enumerate(correct)
    ]


def hand_made_variant(
    name: str,
    decode: float | None,
    correct: list[int] | None,
    reference: dict | None = None,
    fmt: str = "gguf",
    size: int = 1_000_000,
    tolerance: float = 0.02,
) -> dict:
    """A report variant entry whose accuracy figures come from per-question answers: `correct` (None:
    not measured), paired with `reference` (a hand_made_variant with "_correct") on the same questions."""
    from edge_bench.paired import accuracy_summary, paired_accuracy

    best = None
    if decode is not None:
        best = {
            "threads": 2,
            "decode_tokens_per_s": decode,
            "p50_ms": 1000 / decode,
            "p90_ms": 1100 / decode,
            "p99_ms": 1300 / decode,
            "efficiency": 0.5,
        }
    v = {
        "name": name,
        "format": fmt,
        "runtime": "llama_cpp",
        "quant": name,
        "size_bytes": size,
        "bits_per_weight": 4.5,
        "reference": reference["name"] if reference else None,
        "accuracy": None,
        "accuracy_ci": None,
        "n_questions": 0,
        "top1_agreement": 0.9,
        "paired": None,
        "fidelity": {"bench": None, "manifest": None},
        "best": best,
        "error": None,
        "_correct": correct,
    }
    if correct is not None:
        acc = accuracy_summary(answer_records(correct))
        v.update(accuracy=acc["accuracy"], accuracy_ci=acc["accuracy_ci"], n_questions=acc["n"])
        if reference is not None and reference["_correct"] is not None:
            v["paired"] = paired_accuracy(
                answer_records(reference["_correct"]), answer_records(correct), tolerance
            )
    return v


def hand_made_report(variants: list[dict], available: int | None = 10_000) -> dict:
    from edge_bench.report import SCHEMA_VERSION, STATISTICS

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "edge_bench",
        "created_at": "2025-01-01T00:00:00+00:00",
        "config": {},
        "task": {"name": "t", "available_questions": available},
        "statistics": STATISTICS,
        "host": {"cpu_model": "test cpu", "logical_cores": 2},
        "bandwidth": None,
        "variants": [{k: x for k, x in v.items() if k != "_correct"} for v in variants],
        "results": [],
        "rankings": {},
        "recommendation": {},
        "warnings": [],
    }
