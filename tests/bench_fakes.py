"""Shared by the bench tests: fake variants (an fp32 reference and two "quantized" twins), the CLI
runner, and the report's config keys."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from arte.cli import main

CONFIG_KEYS = (
    "threads prompt_lengths n_decode min_repeats min_seconds warmup n_questions shots max_new_tokens seed "
    "n_validation n_test max_accuracy_drop pin memory bandwidth_mb busy_sample_s plots hugepages flash_attn "
    "extra_bufts"
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


def write_fakes(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, spec in FAKES.items():
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
