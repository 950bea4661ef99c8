"""Who runs the pipeline's stages: this one process (the default), or every process a launcher started.

The stage loop (`arte.stage_loop.run_stages`) and the training stages (align, train) ask the current
group, `current()`, instead of assuming they are alone:
- `is_main`: only the main process writes the run directory (done.json, manifest.json, the model);
- `barrier()`: everyone waits for everyone at the start and end of a stage;
- `share(value)`: the main process's decision (the run directory's lock, its provenance checks)
  handed to every process, so that all of them stop, or none;
- `threads(n)`, `prepare_model(...)`, `train_and_save(...)`: how a trainer is set up and run.

`SingleProcess` does what a plain `arte run` needs. `arte.training.launch` swaps in its accelerate-based
group with `use(...)` for the processes that `accelerate launch` / `torchrun` start, and then runs
the very same stage code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from arte.models import resolve_hf


class SingleProcess:
    """The default group: this process trains, writes and never waits."""

    is_main = True
    num_processes = 1

    def describe(self) -> str:
        """Appended to the stage's "running" line ("" for one process)."""
        return ""

    def barrier(self) -> None:
        """Wait until every process of the group is here (nothing to wait for)."""

    def share(self, value: Any) -> Any:
        """The main process's `value`, handed to every process of the group (a collective: all of
        them must call it). Here, `value` itself."""
        return value

    def threads(self, requested: int) -> int:
        """CPU threads for one trainer process (0 = auto is resolved by the trainer itself)."""
        return requested

    def prepare_model(self, kind: str, model_spec: str, data: Path, out_dir: Path, cfg: Any) -> str:
        """The local HF directory of `model_spec` (embedded or tiny names are materialised once)."""

        return resolve_hf(model_spec)

    def train_and_save(
        self, run: Any, out_dir: Path, stats_name: str, metrics: tuple[str, ...], model_dir: str
    ) -> dict | None:
        """Train `run` (an `arte.training.finetune.TrainingRun`), save the model and its stats; the stats."""
        from arte.training.finetune import run_training

        return run_training(run, out_dir, stats_name, metrics)

    def annotate(self, counts: dict) -> dict:
        """The counts recorded for a finished stage."""
        return counts


_SINGLE = SingleProcess()
_CURRENT: ContextVar[SingleProcess | None] = ContextVar("arte_processes", default=None)


def current() -> SingleProcess:
    """The group the stages run in now."""
    return _CURRENT.get() or _SINGLE


@contextlib.contextmanager
def use(group: SingleProcess) -> Iterator[SingleProcess]:
    """Run the stages inside this block in `group` (e.g. the processes of `accelerate launch`)."""
    token = _CURRENT.set(group)
    try:
        yield group
    finally:
        _CURRENT.reset(token)
