"""`arte run`: every ARTE stage in order, into one run directory (the method: docs/method.md).

Each stage (`arte.stages.PIPELINE`, one module each, in order) is a function of (RunConfig, run
directory, tasks) that reads the files earlier stages wrote and writes its own; a finished stage
leaves `STAGE/done.json` and is skipped on a re-run. Inside a stage, records are appended as they
are made (teacher calls, draft scores, evaluation chunks), so a stage killed half-way resumes from
its last complete record. `manifest.json` records the config, library versions, input hashes and
per-stage timings and counts; `summary.md`/`summary.json` hold the accuracy table with confidence
intervals.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from arte import processes
from arte.backends import BackendConfig
from arte.run_dir import RunDir
from arte.stages.align import AlignConfig
from arte.stages.elicit import ElicitConfig
from arte.stages.evaluate import EvaluateConfig
from arte.stages.generate import GenerateConfig
from arte.stages.pairs import PairsConfig
from arte.stages.prefset import PrefsetConfig
from arte.stages.train import TrainConfig
from common.config import opt, to_dict
from common.errors import UserError
from common.records import read_json, write_json_atomic

log = logging.getLogger(__name__)

BUILTIN_TASKS = ["boolean_expressions", "multistep_arithmetic", "object_counting", "word_sorting"]


@dataclass
class RunConfig:
    """The whole ARTE pipeline: models, tasks, and every stage's settings."""

    run_dir: str = opt("runs/arte", "Run directory: every stage's files, the manifest and the summary.")
    tasks: list[str] = opt(list(BUILTIN_TASKS), "Target tasks; one aligned teacher serves all of them.")
    seed: int = opt(0, "Seed for task splits, sampling and training.")
    n_validation: int = opt(100, "Validation questions per task (the pool D_pref is selected from).")
    n_test: int = opt(200, "Test questions per task available to evaluation.")
    teacher: BackendConfig = opt(BackendConfig(), "The teacher that drafts questions and rationales.")
    student: BackendConfig = opt(BackendConfig(), "The student whose preferences are measured.")
    elicit: ElicitConfig = opt(ElicitConfig(), "Step 1: knowledge elicitation.")
    teacher_worked_example: bool = opt(
        True,
        "Show the task's first seed as a solved example in the teacher's rationale prompts (strategy "
        "prompts, naive prompt). Small teachers need it to keep the <ans> format; the paper had none.",
    )
    prefset: PrefsetConfig = opt(PrefsetConfig(), "Step 2: the preference set D_pref.")
    score_max_new_tokens: int = opt(128, "Decode budget of one student answer while scoring drafts.")
    pairs: PairsConfig = opt(PairsConfig(), "Step 3: DPO pairs.")
    align: AlignConfig = opt(AlignConfig(), "Step 3: DPO on the teacher.")
    aligned_teacher: BackendConfig = opt(
        BackendConfig(name="hf", model=""),
        "Engine for the aligned teacher; its model is the align stage's output (leave model empty). "
        "llama_cpp: the align stage also writes an F16 GGUF of the aligned teacher.",
    )
    generate: GenerateConfig = opt(GenerateConfig(), "Step 4: tailored data from the aligned teacher.")
    train: TrainConfig = opt(TrainConfig(), "Step 4: student SFT.")
    evaluate: EvaluateConfig = opt(EvaluateConfig(), "Evaluation of vanilla / original / ARTE students.")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("arte-edge", "torch", "transformers", "trl", "peft", "llama-cpp-python", "numpy", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def task_hash(task) -> str:
    payload = [task.description] + [
        [(e.input, e.target) for e in split] for split in (task.seeds, task.validation, task.test)
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def load_run_tasks(cfg: RunConfig) -> list:
    from arte.stages.prefset import check_task_sizes
    from common.tasks import load_tasks

    tasks = load_tasks(cfg.tasks, n_validation=cfg.n_validation, n_test=cfg.n_test, seed=cfg.seed)
    for t in tasks:
        check_task_sizes(t, cfg.prefset.k)
    return tasks


def llama_cpp_runtime(cfg: RunConfig) -> dict | None:
    """How llama.cpp runs in this pipeline: its own CPU report and, per role that uses the llama_cpp
    backend, the extra-buffer-type decision (off where AMX is reported; common.llama_cpp_loader).
    None when no role uses llama.cpp."""
    roles = {
        "teacher": cfg.teacher,
        "student": cfg.student,
        "aligned_teacher": cfg.aligned_teacher,
        "evaluate.backend": cfg.evaluate.backend,
    }
    used = {role: b for role, b in roles.items() if b.name == "llama_cpp"}
    if not used:
        return None
    from common.llama_cpp_loader import LlamaCppSettingError, decide_extra_bufts, llama_system_info

    try:
        decisions = {role: decide_extra_bufts(b.extra_bufts).as_record() for role, b in used.items()}
    except LlamaCppSettingError as e:
        raise UserError(str(e)) from None
    return {"system_info": llama_system_info(), "extra_bufts": decisions}


def open_manifest(run: RunDir, cfg: RunConfig, tasks: list) -> dict:
    """Create or re-open manifest.json; refuse to resume on different task data."""
    path = run.path / "manifest.json"
    hashes = {t.name: task_hash(t) for t in tasks}
    manifest = read_json(path) if path.exists() else {"created_at": time.time(), "stages": {}}
    old = manifest.get("input_hashes", {}).get("tasks")
    if old is not None and old != hashes:
        raise UserError(
            f"{run.path} was made with different task data ({old} vs {hashes}); "
            f"use a new --run_dir or delete the old one"
        )
    new_cfg = to_dict(cfg)
    if manifest.get("config") not in (None, new_cfg):
        changed = sorted(k for k in new_cfg if manifest["config"].get(k) != new_cfg[k])
        log.warning("config changed since this run dir was created (%s); finished stages are kept", changed)
    manifest.update(config=new_cfg, versions=library_versions(), input_hashes={"tasks": hashes})
    manifest["llama_cpp"] = llama_cpp_runtime(cfg)
    write_json_atomic(path, manifest)
    return manifest


def run_pipeline(cfg: RunConfig, only: list[str] | None = None, *, skip_done: bool | None = None) -> dict:
    """Run (or resume) the stages in order; `only` runs just those, after checking their inputs exist.
    A finished stage is skipped, except when named in `only` (`arte STAGE` redoes it) unless
    `skip_done`. Runs in the current process group (`arte.processes`): only its main process writes
    the run directory; the manifest it returns is None elsewhere."""
    from arte.stages import PIPELINE, STAGE_NAMES, stage_name

    procs = processes.current()
    if procs.is_main:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run = RunDir(cfg.run_dir)
    tasks = load_run_tasks(cfg)
    for name in only or []:
        if name not in STAGE_NAMES:
            raise UserError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    skip_done = not only if skip_done is None else skip_done
    manifest = open_manifest(run, cfg, tasks) if procs.is_main else None
    for i, stage in enumerate(PIPELINE):
        name = stage_name(stage)
        if only and name not in only:
            continue
        missing = [p for p in STAGE_NAMES[:i] if not run.is_done(p)]
        if only and missing:
            raise UserError(
                f"stage {name!r} needs {', '.join(missing)} first: run `arte run` or those stages"
            )
        if run.is_done(name) and skip_done:
            if procs.is_main:
                print(f"[{name}] done earlier, skipped ({run.path / name})")
            continue
        if procs.is_main:
            print(f"[{name}] running{procs.describe()} ...", flush=True)
        procs.barrier()
        started = time.time()
        counts = stage.run(cfg, run, tasks)
        if procs.is_main:
            seconds = round(time.time() - started, 1)
            counts = procs.annotate(counts)
            run.mark_done(name, {"seconds": seconds, "counts": counts})
            manifest["stages"][name] = {"seconds": seconds, "counts": counts}
            write_json_atomic(run.path / "manifest.json", manifest)
            print(f"[{name}] done in {seconds} s: {json.dumps(counts)[:300]}", flush=True)
        procs.barrier()
    return manifest


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
