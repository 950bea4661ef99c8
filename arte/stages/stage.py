"""The declared stage interface: what every stage of the pipeline states about itself.

Each stage module ends with one `STAGE = Stage(...)`; `arte.stages.PIPELINE` lists them in order.
Everything the orchestrator, the CLI, `arte plan`, provenance, rounds and teacher reuse know about a
stage is read from here: no other module keeps a list of stage names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arte.run_dir import RunDir

if TYPE_CHECKING:
    from arte.run_config import RunConfig
    from common.tasks import Task

LOCAL_ENGINES = ("hf", "llama_cpp", "vllm")
"""Engines that load the model files themselves (a served model is the server's business)."""


@dataclass(frozen=True)
class ModelNeed:
    """A model a stage loads: its spec and the flags that set it (checked before the first stage)."""

    spec: str
    flag: str
    allow_pickle: bool
    pickle_flag: str


@dataclass(frozen=True)
class TaskSize:
    """A task as the plan counts it: its validation and test questions (the config's sizes when its
    file was not read)."""

    name: str
    validation: int
    test: int


@dataclass(frozen=True)
class PlanCount:
    """One of a stage's `arte plan` lines for one task: `low` to `high` (equal when exact) of `what`,
    and how it is computed. Counts that depend on what the models write are upper bounds (low 0)."""

    what: str
    low: int
    high: int
    formula: str

    @classmethod
    def exact(cls, what: str, n: int, formula: str) -> PlanCount:
        return cls(what, n, n, formula)

    @classmethod
    def at_most(cls, what: str, n: int, formula: str) -> PlanCount:
        return cls(what, 0, n, formula)


def optimizer_steps(items: int, batch_size: int, accumulation: int, epochs: float) -> int:
    """Optimizer steps of a trainer on one process: ceil(epochs x ceil(batches / accumulation))."""
    batches = math.ceil(items / batch_size)
    return math.ceil(epochs * math.ceil(batches / accumulation)) if items else 0


def never(cfg: RunConfig) -> bool:
    return False


def no_models(cfg: RunConfig) -> tuple[ModelNeed, ...]:
    return ()


def teacher_model(cfg: RunConfig) -> ModelNeed:
    t = cfg.teacher
    return ModelNeed(t.model, "--teacher.model", t.allow_pickle, "--teacher.allow_pickle")


def student_model(cfg: RunConfig) -> ModelNeed:
    s = cfg.student
    return ModelNeed(s.model, "--student.model", s.allow_pickle, "--student.allow_pickle")


def student_if_local(cfg: RunConfig) -> tuple[ModelNeed, ...]:
    """The student's model, when this process loads it (not when a server runs it)."""
    return (student_model(cfg),) if cfg.student.name in LOCAL_ENGINES else ()


@dataclass(frozen=True)
class Stage:
    """One pipeline stage. `run(cfg, run_dir, tasks)` reads the files earlier stages wrote (`reads`),
    writes its own (`writes`) and returns the counts recorded in STAGE/done.json."""

    name: str
    help: str
    """Its `arte NAME --help` line."""
    run: Callable[[RunConfig, RunDir, list[Task]], dict | None]
    depends_on: tuple[str, ...]
    """The RunConfig fields (dotted) its files are made from: recorded in done.json and checked on
    every later command (`arte.provenance`)."""
    reads: tuple[str, ...]
    """Files and directories of earlier stages it reads, relative to the run directory."""
    writes: tuple[str, ...]
    """What it writes, relative to the run directory (documentation and `arte plan`)."""
    sections: tuple[str, ...] = ()
    """The RunConfig fields its own command (`arte NAME`) shows beside the shared ones."""
    models: Callable[[RunConfig], tuple[ModelNeed, ...]] = no_models
    """The models it loads for a config, checked (no weights loaded) before the first stage runs."""
    switched_off: Callable[[RunConfig], bool] = never
    """True when a config sets its size to 0: it runs and records that it skipped, and an `--only`
    list that leaves it out does not wait for it."""
    skipped_with_reused_teacher: bool = False
    """Not run when the aligned teacher comes from another run (--aligned_teacher_from)."""
    in_rounds: bool = False
    """Run again inside every iterative round (rounds/rR/)."""
    trains: bool = False
    """A training stage: also runs under `arte.training.launch` (every process of a launcher)."""
    keep_on_redo: tuple[str, ...] = ()
    """Its files that survive a redo (content-addressed caches)."""
    run_files: tuple[str, ...] = ()
    """Files it writes at the top of the run directory (deleted when it is redone)."""
    external_inputs: Callable[[RunConfig], dict[str, str | None]] | None = None
    """Hashes of its inputs outside the run directory (another run's aligned teacher)."""
    extra_task_hashes: Callable[[RunConfig], dict[str, str]] | None = None
    """Data hashes of tasks only it reads (evaluate's out-of-domain tasks)."""
    plan_counts: Callable[[RunConfig, TaskSize], list[PlanCount]] | None = None
    """Its generations and pairs for one task, counted from the config alone (`arte plan`)."""
    plan_training: Callable[[RunConfig, int], list[dict[str, Any]]] | None = None
    """Its training sets over n tasks: examples, tokens and optimizer steps (`arte plan`)."""
    plan_note: Callable[[RunConfig], str] | None = None
    """What this config makes it do, in a few words (`arte plan`'s stage table)."""
