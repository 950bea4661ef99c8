"""`arte run`: every ARTE stage in order, into one run directory (the method: docs/method.md).

The top floor: nothing in `arte.stages` imports it. Before the first stage, every option has been
validated (the config dataclasses' `__post_init__`, `RunConfig.__post_init__` for the checks across
sections); here the tasks are loaded and what later stages would only find out late is checked
(every task's strategy prompts, the out-of-domain tasks, another run's aligned teacher). Then the
stage loop (`arte.stage_loop.run_stages`) checks the models, takes the run directory's lock, checks
the recorded stages against the config and runs the stages. `summary.md`/`summary.json` (written by
evaluate) hold the accuracy table with confidence intervals.
"""

from __future__ import annotations

from pathlib import Path

from arte.run_config import RunConfig, configure_logging, load_run_tasks
from arte.run_dir import RunDir
from arte.stage_loop import run_stages
from arte.stages import STAGE_NAMES
from arte.stages.align.teacher_reuse import other_align_dir
from arte.stages.evaluate.out_of_domain import load_extra_tasks
from arte.training import processes
from common.errors import UserError


def run_pipeline(cfg: RunConfig, only: list[str] | None = None, *, skip_done: bool | None = None) -> dict:
    """Run (or resume) the stages in order; `only` runs just those, after checking their inputs exist.
    A finished stage is skipped, except when named in `only` (`arte STAGE` redoes it) unless
    `skip_done`. Runs in the current process group (`arte.training.processes`): only its main
    process writes the run directory and holds its lock (`arte.run_lock`); the manifest it returns
    is None elsewhere."""
    if processes.current().is_main:
        configure_logging()
    for name in only or []:
        if name not in STAGE_NAMES:
            raise UserError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    tasks = load_run_tasks(cfg)
    cfg.elicit.check_tasks([t.name for t in tasks])  # strategy prompts of every task: checked now
    load_extra_tasks(cfg, tasks)  # out-of-domain tasks: checked now, read by evaluate
    if cfg.aligned_teacher_from:
        other_align_dir(cfg)  # the other run finished align: checked now, read by align
    skip_done = not only if skip_done is None else skip_done
    return run_stages(cfg, RunDir(cfg.run_dir), tasks, only, skip_done)


def run_pipeline_cli(cfg: RunConfig) -> int:
    run_pipeline(cfg)
    summary = Path(cfg.run_dir) / "summary.md"
    if summary.exists():
        print("\n" + summary.read_text())
    print(f"run directory: {Path(cfg.run_dir).resolve()}")
    return 0


def run_stage_cli(cfg: RunConfig, name: str) -> int:
    """`arte NAME`: run one stage of the pipeline with the run config."""
    run_pipeline(cfg, only=[name])
    return 0
