"""`arte bench DIR... --task T --threads 1,2 --out OUT`: benchmark every exported variant on CPU.

Prints the table (one line per variant x threads x prompt length), the recommendation and, with
--compare, the side-by-side comparison with a previous report, then ONE JSON line; writes
OUT/report.json, OUT/report.md, OUT/answers.jsonl and the PNG plots. The work is
`edge_bench.bench.run_bench`; this is the thin command-line layer over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arte.config import opt
from arte.errors import UserError


@dataclass
class BenchConfig:
    """Benchmark exported variants: speed percentiles, memory, size, task accuracy, a recommendation."""

    dirs: list[str] = opt(
        [],
        "Export directories (with manifest.json), .gguf files, ONNX directories or HF model directories.",
        positional=True,
    )
    task: str = opt("", "Task for accuracy (built-in name, task file, ...); empty: speed only.")
    threads: list[int] = opt([1, 2], "CPU thread counts to sweep; accuracy runs at the largest.")
    prompt_lengths: list[int] = opt([64, 256], "Prompt lengths to time, in tokens.")
    n_decode: int = opt(64, "Decode steps timed per generation, in tokens.")
    min_repeats: int = opt(3, "Timed generations per configuration, at least (after one warm-up).")
    min_seconds: float = opt(1.0, "Seconds of timed generations per configuration, at least.")
    n_questions: int = opt(20, "Test questions for accuracy and top-1 agreement.")
    shots: int = opt(3, "Demonstrations per accuracy prompt, from the task's seeds (0-3).")
    max_new_tokens: int = opt(96, "Decode budget per accuracy answer, in tokens.")
    seed: int = opt(0, "Task split seed: the same as the run's, to get its test questions.")
    n_validation: int = opt(
        100, "Validation questions of the split (the run's value, for the same test split)."
    )
    max_accuracy_drop: float = opt(
        0.02, "Largest accuracy loss vs fp32 the recommendation accepts, as a fraction (0.02 = 2 points)."
    )
    compare: str = opt("", "A previous report.json (or its directory) to compare with, side by side.")
    out: str = opt("runs/bench", "Output directory for report.json, report.md, answers.jsonl and the plots.")
    pin: bool = opt(True, "Pin each thread count to that many of the quietest CPUs (affinity).")
    memory: bool = opt(True, "Measure peak RSS in a fresh process per configuration.")
    bandwidth_mb: int = opt(1024, "Buffer for the memory read bandwidth measurement, in MiB (0: skip).")
    hugepages: bool = opt(
        True,
        "llama.cpp: read each GGUF into huge-page memory instead of mapping it (faster decode); the "
        "command restarts itself with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 for that. false: mmap.",
    )
    flash_attn: bool = opt(True, "llama.cpp: flash attention (llama.cpp's own default on CPU).")
    extra_bufts: Literal["auto", "on", "off"] = opt(
        "auto",
        "llama.cpp: extra buffer types (repacked weights). auto: off where llama.cpp reports AMX (its AMX "
        "path segfaults, llama.cpp #20824), on elsewhere, unless env ARTE_LLAMA_EXTRA_BUFTS says otherwise.",
    )

    def __post_init__(self) -> None:
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"--threads must list counts >= 1, got {self.threads}")
        if not self.prompt_lengths or min(self.prompt_lengths) < 1:
            raise ValueError(f"--prompt_lengths must list lengths >= 1, got {self.prompt_lengths}")
        if self.n_decode < 1 or self.min_repeats < 1 or self.min_seconds < 0:
            raise ValueError("--n_decode and --min_repeats must be >= 1 and --min_seconds >= 0")
        if not 0 <= self.shots <= 3:
            raise ValueError(f"--shots must be between 0 and 3 (a task has 3 seeds), got {self.shots}")
        if self.n_questions < 1:
            raise ValueError(f"--n_questions must be >= 1, got {self.n_questions}")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError(f"--max_accuracy_drop is a fraction in [0, 1], got {self.max_accuracy_drop}")


def prepare_process(cfg: BenchConfig) -> None:
    """Restart `arte bench` with glibc's huge-page tunable when --hugepages needs it (read at start-up)."""
    if cfg.hugepages:
        from edge_bench.hugepages import reexec_with_hugepages

        reexec_with_hugepages()


def run_bench_cli(cfg: BenchConfig) -> int:
    """Run the benchmark and print the table, the recommendation and one JSON line; 1 if a variant failed."""
    from edge_bench.bench import run_bench
    from edge_bench.report import REPORT_JSON, print_report

    if not cfg.dirs:
        raise UserError("bench: give at least one export directory, .gguf file or model directory")
    if cfg.compare and not Path(cfg.compare).exists():
        raise UserError(f"bench: --compare {cfg.compare}: no such report")
    try:
        report = run_bench(
            cfg.dirs, cfg.task or None, cfg.threads, cfg.prompt_lengths, cfg.out,
            compare=cfg.compare or None, n_decode=cfg.n_decode, min_repeats=cfg.min_repeats,
            min_seconds=cfg.min_seconds, n_questions=cfg.n_questions, shots=cfg.shots,
            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, n_validation=cfg.n_validation,
            max_accuracy_drop=cfg.max_accuracy_drop, pin=cfg.pin, memory=cfg.memory,
            bandwidth_mb=cfg.bandwidth_mb, hugepages=cfg.hugepages, flash_attn=cfg.flash_attn,
            extra_bufts=cfg.extra_bufts,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as e:  # bad paths, an unreadable manifest or old report
        raise UserError(f"bench: {e}") from None
    print_report(report, report_path=str(Path(cfg.out).resolve() / REPORT_JSON))
    return 1 if any(v["error"] for v in report["variants"]) else 0
