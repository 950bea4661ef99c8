"""`arte bench DIR... --task T --threads 1,2 --out OUT`: benchmark every exported variant on CPU.

Prints the table (one line per variant x threads x prompt length), the recommendation and, with
--compare, the side-by-side comparison with a previous report, then ONE JSON line; writes
OUT/report.json, OUT/report.md, OUT/answers.jsonl and the PNG plots. The work is
`edge_bench.bench.bench_report`; this is the thin command-line layer over it: the flags are the fields
of `edge_bench.settings.BenchSettings` (validated there) plus the positional DIRs, --task, --out and
--compare, and the settings go to run_bench as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import opt
from common.errors import UserError
from edge_bench.settings import BenchSettings


@dataclass(frozen=True)
class BenchConfig(BenchSettings):
    """Benchmark exported variants: speed percentiles, memory, size, task accuracy, a recommendation.

    The measurement settings and their checks are inherited from `BenchSettings`; the fields here
    are the command line's own."""

    dirs: list[str] = opt(
        [],
        "Export directories (with manifest.json), .gguf files, ONNX directories or HF model directories.",
        positional=True,
    )
    task: str = opt("", "Task for accuracy (built-in name, task file, ...); empty: speed only.")
    compare: str = opt("", "A previous report.json (or its directory) to compare with, side by side.")
    out: str = opt("runs/bench", "Output directory for report.json, report.md, answers.jsonl and the plots.")


def prepare_process(cfg: BenchConfig) -> None:
    """Restart `arte bench` with glibc's huge-page tunable when --hugepages needs it (read at start-up)."""
    if cfg.hugepages:
        from edge_bench.hugepages import reexec_with_hugepages

        reexec_with_hugepages()


def run_bench_cli(cfg: BenchConfig) -> int:
    """Run the benchmark and print the table, the recommendation and one JSON line; 1 if a variant failed."""
    from edge_bench.bench import bench_report
    from edge_bench.report import REPORT_JSON, print_report

    if not cfg.dirs:
        raise UserError("bench: give at least one export directory, .gguf file or model directory")
    if cfg.compare and not Path(cfg.compare).exists():
        raise UserError(f"bench: --compare {cfg.compare}: no such report")
    from common.paths import removed_if_refused, writable_dir

    with removed_if_refused(cfg.out):  # a refusal leaves no empty --out behind
        writable_dir(cfg.out, "bench: --out")  # before minutes of measuring, not after
        try:
            report = bench_report(
                cfg.dirs, cfg.task or None, cfg.out, BenchSettings.of(cfg), compare=cfg.compare or None
            )
        except (FileNotFoundError, ValueError) as e:  # bad paths, an unreadable manifest or old report
            raise UserError(f"bench: {e}") from None
    print_report(report, report_path=str(Path(cfg.out).resolve() / REPORT_JSON))
    return 1 if any(v.error for v in report.variants) else 0
