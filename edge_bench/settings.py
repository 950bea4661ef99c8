"""`BenchSettings`: everything that shapes a benchmark's measurements, validated in one place.

`edge_bench.bench.run_bench` takes one; `arte bench` builds it from its flags (its config class is
BenchSettings plus the command-line-only fields), so a Python caller and the command line get the
same checks and the same messages. Every field is declared with `common.config.opt`, whose help
text is the flag's `--help` text; the messages name the flags (`--threads`, ...) for that reason.
The settings are recorded as the report's `config` (`dataclasses.asdict`, these fields only).
`n_questions` is an int or "auto" (`edge_bench.auto_questions` picks the number).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

from common.config import opt

log = logging.getLogger(__name__)

EXTRA_BUFTS = ("auto", "on", "off")


def _positive_ints(flag: str, value: Any, what: str) -> list[int]:
    """`value` as a list of ints >= 1, or a ValueError naming `--flag`."""
    items = list(value) if isinstance(value, (list, tuple)) else []
    if not items or any(isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1 for x in items):
        shown = value if isinstance(value, (list, tuple)) else repr(value)
        raise ValueError(f"--{flag} must list {what} >= 1, got {shown}")
    return [int(x) for x in items]


def _within_cores(threads: list[int]) -> list[int]:
    """Thread counts above the cores this process may use, lowered to that many (a warning): more
    threads than cores only spin-wait (`common.threads`); 9999 overloaded a 2-core box for minutes."""
    from common.threads import available_cores

    cores = len(available_cores())
    if max(threads) <= cores:
        return threads
    log.warning("--threads %s: more than the %d cores this process may use; using %d", threads, cores, cores)
    return list(dict.fromkeys(min(t, cores) for t in threads))


def _at_least(flag: str, value: Any, low: float, *, integer: bool = True, note: str = "") -> None:
    """A ValueError naming `--flag` unless `value` is a number (an integer if `integer`) >= `low`."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or math.isnan(value):
        raise ValueError(f"--{flag} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < low:
        raise ValueError(f"--{flag} must be >= {low:g}{note}, got {value!r}")


AUTO = "auto"


def _n_questions(value: Any) -> int | str:
    """--n_questions as an int >= 1 or "auto" (the command line passes a string either way)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"--n_questions must be an integer >= 1 or auto, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class BenchSettings:
    """Everything that shapes the measurements; recorded as the report's `config`."""

    threads: list[int] = opt([1, 2], "CPU thread counts to sweep; accuracy runs at the largest.")
    prompt_lengths: list[int] = opt([64, 256], "Prompt lengths to time, in tokens.")
    n_decode: int = opt(64, "Decode steps timed per generation, in tokens.")
    min_repeats: int = opt(3, "Timed generations per configuration, at least (after the --warmup ones).")
    min_seconds: float = opt(1.0, "Seconds of timed generations per configuration, at least.")
    warmup: int = opt(1, "Untimed warm-up generations per configuration, before the timed ones.")
    n_questions: int | str = opt(
        20,
        "Test questions for accuracy and fidelity (a number, or auto: a pilot of 20, then as many as the "
        "--max_accuracy_drop decision needs at the observed disagreement with fp32, within "
        "--accuracy_budget_s and the task's test split).",
    )
    accuracy_budget_s: float = opt(
        900.0,
        "With --n_questions auto: seconds the accuracy questions may take, all variants together "
        "(estimated from the pilot's seconds per question).",
    )
    shots: int = opt(3, "Demonstrations per accuracy prompt, from the task's seeds (0-3).")
    max_new_tokens: int = opt(96, "Decode budget per accuracy answer, in tokens.")
    seed: int = opt(0, "Task split seed: the same as the run's, to get its test questions.")
    n_validation: int = opt(
        100, "Validation questions of the split (the run's value, for the same test split)."
    )
    n_test: int = opt(
        200, "Test questions of the split (the run's value); accuracy uses the first --n_questions."
    )
    max_accuracy_drop: float = opt(
        0.02,
        "Largest accuracy loss vs fp32 the recommendation accepts, as a fraction (0.02 = 2 points), at the "
        "upper end of the 95% paired interval of the loss.",
    )
    pin: bool = opt(True, "Pin each thread count to that many of the quietest CPUs (affinity).")
    memory: bool = opt(True, "Measure peak RSS in a fresh process per configuration.")
    bandwidth_mb: int = opt(1024, "Buffer for the memory read bandwidth measurement, in MiB (0: skip).")
    busy_sample_s: float = opt(
        0.5, "Seconds of CPU use sampled before each configuration, to flag a busy machine (0: load average)."
    )
    plots: bool = opt(True, "Write the PNG plots (accuracy vs latency, size vs accuracy).")
    hugepages: bool = opt(
        True,
        "llama.cpp: read each GGUF into huge-page memory instead of mapping it (faster decode); `arte "
        "bench` restarts itself with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 for that. false: mmap.",
    )
    flash_attn: bool = opt(True, "llama.cpp: flash attention (llama.cpp's own default on CPU).")
    extra_bufts: Literal["auto", "on", "off"] = opt(
        "auto",
        "llama.cpp: extra buffer types (repacked weights). auto: off where llama.cpp reports AMX (its AMX "
        "path segfaults, llama.cpp #20824), on elsewhere, unless env ARTE_LLAMA_EXTRA_BUFTS says otherwise.",
    )
    parallel: list[int] = opt(
        [],
        "llama.cpp: also time N sequences decoded together (server-style batching, distinct prompts), "
        "for each N listed, e.g. 4,8: aggregate tokens/s per configuration. Empty: skip.",
    )

    def __post_init__(self) -> None:
        # frozen: the normalized lists are set through object.__setattr__
        threads = _within_cores(_positive_ints("threads", self.threads, "counts"))
        object.__setattr__(self, "threads", threads)
        object.__setattr__(
            self, "prompt_lengths", _positive_ints("prompt_lengths", self.prompt_lengths, "lengths")
        )
        _at_least("n_decode", self.n_decode, 1)
        _at_least("min_repeats", self.min_repeats, 1)
        _at_least("min_seconds", self.min_seconds, 0, integer=False)
        _at_least("warmup", self.warmup, 0)
        if self.shots not in range(4):
            raise ValueError(f"--shots must be between 0 and 3 (a task has 3 seeds), got {self.shots}")
        object.__setattr__(self, "n_questions", _n_questions(self.n_questions))
        _at_least("accuracy_budget_s", self.accuracy_budget_s, 0, integer=False)
        if self.accuracy_budget_s == 0:
            raise ValueError("--accuracy_budget_s must be > 0 (seconds, for --n_questions auto)")
        _at_least("max_new_tokens", self.max_new_tokens, 1)
        _at_least("n_validation", self.n_validation, 0)
        _at_least("n_test", self.n_test, 1)
        drop = self.max_accuracy_drop
        if isinstance(drop, bool) or not isinstance(drop, numbers.Real) or not 0 <= drop <= 1:
            raise ValueError(f"--max_accuracy_drop is a fraction in [0, 1], got {drop}")
        _at_least("bandwidth_mb", self.bandwidth_mb, 0, note=" (0: skip)")
        _at_least("busy_sample_s", self.busy_sample_s, 0, integer=False, note=" (0: no sample)")
        if self.parallel:
            object.__setattr__(self, "parallel", _positive_ints("parallel", self.parallel, "sequence counts"))
        if self.extra_bufts not in EXTRA_BUFTS:
            raise ValueError(
                f"--extra_bufts must be one of {', '.join(EXTRA_BUFTS)}, got {self.extra_bufts!r}"
            )

    @classmethod
    def of(cls, obj: Any) -> BenchSettings:
        """The BenchSettings fields of `obj` (e.g. `arte bench`'s config, which adds the command-line
        fields) as a plain `cls`, so that the report's `config` holds these fields only."""
        return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)})
