"""The stage loop: run stages in order into one run directory, holding its lock.

Each stage (`arte.stages.PIPELINE`) is a function of (RunConfig, run directory, tasks) that reads
the files earlier stages wrote and writes its own; a finished stage leaves `STAGE/done.json` and is
skipped on a re-run. Inside a stage, records are appended as they are made (teacher calls, draft
scores, evaluation chunks), so a stage killed half-way resumes from its last complete record.
`manifest.json` records the config, library versions, input hashes and per-stage timings and
counts.

`run_stages` first checks the models the stages about to run need (no weights loaded); only then is
the run directory created. The writing process holds its lock (`arte.run_lock`) and checks each
recorded stage against the config and the files (`arte.provenance`): a changed config stops the
command, or with `--on_config_change redo` deletes what must be redone. `arte.pipeline` calls it
for a whole run; the rounds stage calls it for each round's directory.
"""

from __future__ import annotations

import json
import time

from arte.models import check_model_spec
from arte.provenance import check_run_dir, stage_provenance
from arte.run_config import RunConfig, task_hash
from arte.run_dir import RunDir
from arte.run_lock import RunLock
from arte.stages import PIPELINE, STAGE_NAMES
from arte.training import processes
from common.config import to_dict
from common.errors import UserError
from common.records import read_json, write_json_atomic
from common.redact import redact_urls


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("arte-edge", "torch", "transformers", "trl", "peft", "llama-cpp-python", "numpy", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


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


def check_models(cfg: RunConfig, stages: list[str]) -> None:
    """The models that the `stages` about to run need (each stage's declared `models`), checked
    before the first one runs (no weights loaded): they exist, are not truncated, hold safetensors
    (or pickles with the opt-in flag). Each model is checked once, in pipeline order."""

    seen = set()
    for stage in PIPELINE:
        if stage.name not in stages:
            continue
        for need in stage.models(cfg):
            if (need.spec, need.flag) not in seen:
                seen.add((need.spec, need.flag))
                check_model_spec(need.spec, need.flag, need.allow_pickle, need.pickle_flag)


def open_manifest(run: RunDir, cfg: RunConfig, hashes: dict) -> dict:
    """Create or re-open manifest.json with this command's config. Called after `check_run_dir`, so
    every stage's files agree with this config on every field they depend on."""
    path = run.path / "manifest.json"
    manifest = read_json(path) if path.exists() else {"created_at": time.time(), "stages": {}}
    manifest["stages"] = {k: v for k, v in manifest.get("stages", {}).items() if run.is_done(k)}
    manifest.update(
        config=redact_urls(to_dict(cfg)), versions=library_versions(), input_hashes={"tasks": hashes}
    )
    roles = {"teacher": cfg.teacher, "student": cfg.student, "evaluate.backend": cfg.evaluate.backend}
    manifest["allow_pickle"] = [role for role, b in roles.items() if b.allow_pickle]
    manifest["llama_cpp"] = llama_cpp_runtime(cfg)
    write_json_atomic(path, manifest)
    return manifest


def not_needed(cfg: RunConfig) -> dict[str, str]:
    """Stages this config does not run, with the reason: those declared `skipped_with_reused_teacher`
    when the aligned teacher is another run's."""
    if not cfg.aligned_teacher_from:
        return {}
    why = f"the aligned teacher comes from {cfg.aligned_teacher_from}"
    return {s.name: why for s in PIPELINE if s.skipped_with_reused_teacher}


def switched_off(cfg: RunConfig) -> set[str]:
    """Optional stages whose size is 0 (each stage's declared `switched_off`): they run (and record
    that they skipped), but an `--only` list that leaves them out does not have to wait for them."""
    return {s.name for s in PIPELINE if s.switched_off(cfg)}


def stages_to_run(cfg: RunConfig, run: RunDir, only: list[str] | None, skip_done: bool) -> list[str]:
    """The stages this command runs, as the run directory stands now."""
    skipped = not_needed(cfg)
    return [
        n
        for n in STAGE_NAMES
        if (not only or n in only) and not (skip_done and run.is_done(n)) and n not in skipped
    ]


def prepare_run(cfg: RunConfig, run: RunDir, tasks: list, only: list[str] | None, skip_done: bool) -> dict:
    """The main process's work before the first stage, holding the lock: check the recorded stages
    against `cfg` (stop, or delete what must be redone), then open the manifest."""
    hashes = {t.name: task_hash(t) for t in tasks}
    check_run_dir(cfg, run, hashes, rerun=set(stages_to_run(cfg, run, only, skip_done)), only=only)
    return open_manifest(run, cfg, hashes)


def run_stages(
    cfg: RunConfig, run: RunDir, tasks: list, only: list[str] | None, skip_done: bool
) -> dict | None:
    """Run (or resume) the stages (`only`: just those) of `cfg` into `run`: the models checked, then
    the lock taken, the recorded stages checked and the manifest opened by the main process of the
    current process group (`arte.training.processes`), then the loop. Returns the manifest (None
    outside the main process); a refusal stops every process of the group alike."""
    procs = processes.current()
    check_models(cfg, stages_to_run(cfg, run, only, skip_done))  # nothing is written before these checks
    lock, manifest, error = None, None, None
    fresh, finished = not run.path.exists(), False  # a refused command leaves no new run directory
    try:
        if procs.is_main:
            try:
                lock = RunLock.acquire(run.create().path)
                manifest = prepare_run(cfg, run, tasks, only, skip_done)
            except (UserError, OSError) as e:  # told to every process: all stop, none waits
                error = str(e) if isinstance(e, UserError) else f"{run.path}: {e.strerror or e}"
        error = procs.share(error)
        if error:
            raise UserError(error)
        _loop(cfg, run, tasks, only, skip_done, manifest)
        finished = True
    finally:
        if lock is not None:
            lock.release()
            if fresh and not finished:
                run.discard_if_unused()
    return manifest


def _loop(
    cfg: RunConfig, run: RunDir, tasks: list, only: list[str] | None, skip_done: bool, manifest: dict | None
) -> None:
    """The stage loop; `manifest` (main process only) gets each finished stage's time and counts."""
    procs = processes.current()
    hashes = {t.name: task_hash(t) for t in tasks}
    skipped = not_needed(cfg)
    skippable = skipped.keys() | switched_off(cfg)
    for i, stage in enumerate(PIPELINE):
        name = stage.name
        if only and name not in only:
            continue
        if name in skipped:
            if procs.is_main:
                print(f"[{name}] not needed: {skipped[name]}")
            continue
        missing = [p for p in STAGE_NAMES[:i] if not run.is_done(p) and p not in skippable]
        if only and missing:
            raise UserError(
                f"stage {name!r} needs {', '.join(missing)} first: run `arte run` or those stages"
            )
        if run.is_done(name) and skip_done:
            if procs.is_main:
                print(f"[{name}] done earlier, skipped ({run.path / name})")
            continue
        provenance = None
        if procs.is_main:
            print(f"[{name}] running{procs.describe()} ...", flush=True)
            provenance = stage_provenance(cfg, run, stage, hashes)
            run.mark_started(name, provenance)
        procs.barrier()
        started = time.time()
        counts = stage.run(cfg, run, tasks)
        if procs.is_main:
            seconds = round(time.time() - started, 1)
            counts = procs.annotate(counts)
            run.mark_done(name, {"seconds": seconds, "counts": counts, "provenance": provenance})
            manifest["stages"][name] = {"seconds": seconds, "counts": counts}
            write_json_atomic(run.path / "manifest.json", manifest)
            print(f"[{name}] done in {seconds} s: {json.dumps(counts)[:300]}", flush=True)
        procs.barrier()
