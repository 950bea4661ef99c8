"""What each stage's files were made from, and what happens when the config no longer says so.

Every stage declares (`arte.stages.stage.Stage`) what its files depend on:
- `depends_on`: the RunConfig fields (dotted: "teacher", "align", "student.model") that change its
  output. Fields that only change speed or where things run are left out, by the config section
  itself (`RUNTIME_ONLY` of BackendConfig, AlignConfig, TrainConfig: threads, batch sizes of the
  engines, timeouts, checkpoint frequency, ...);
- `reads`: the files and directories of earlier stages it reads, relative to the run directory.

`stage_provenance` puts those together with the task data's hashes: the config part, its sha256,
the task hashes and a hash of every input (and, for a stage with `extra_task_hashes`, the data
hashes of the tasks only it reads: evaluate's out-of-domain tasks). It is written to
`STAGE/started.json` when a stage starts and into `STAGE/done.json` when it finishes. On the next
command, `check_run_dir` compares each recorded stage with the config and the files as they are now:
- a finished stage's JSONL file that is damaged (half a last line, a line that is not JSON) is an
  error naming the file, the line and the stage to re-run;
- a stage whose config part, task data or inputs differ is *affected*, reported with the fields
  that differ; every stage that reads from an affected one (directly or not) goes with it.
With `--on_config_change stop` (the default) nothing is touched and the command stops with that
report; with `redo` the affected stages and everything made from them are deleted (a stage's
`keep_on_redo` files, content-addressed caches, stay) and run again: files made under two
configs are never mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages import PIPELINE, STAGE_NAMES, get_stage
from arte.stages.stage import Stage
from common.errors import UserError
from common.records import jsonl_damage, sha256_file

log = logging.getLogger(__name__)

HASH_LIMIT = 64 << 20
"""Files above this size (model weights) enter a directory's hash by size only; the small files
beside them (configs, training stats with their timings) tell one training run from another."""
RECORDS = ("done.json", "started.json")


def _plain(value: Any) -> Any:
    """JSON-able form of a config value; a section's RUNTIME_ONLY fields are left out."""
    if dataclasses.is_dataclass(value):
        skip = getattr(type(value), "RUNTIME_ONLY", ())
        return {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in skip
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def config_part(cfg: RunConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """{dotted key: value} of the config fields a stage depends on."""
    out = {}
    for key in keys:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        out[key] = _plain(value)
    return out


def hash_path(path: Path) -> str | None:
    """sha256 of a file, or of a directory's files (names, sizes, contents up to HASH_LIMIT; stage
    records and hidden files left out); None when it does not exist."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if not p.is_file() or p.name in RECORDS or any(s.startswith(".") for s in rel.parts):
            continue
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0{sha256_file(p) if size <= HASH_LIMIT else ''}\n".encode())
    return h.hexdigest()


def stage_provenance(cfg: RunConfig, run: RunDir, stage: Stage, task_hashes: dict) -> dict:
    """The record of what `stage` is made from now: config part (+ sha256), tasks, inputs."""
    part = config_part(cfg, stage.depends_on)
    digest = hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()
    inputs = {rel: hash_path(run.path / rel) for rel in stage.reads}
    if stage.external_inputs:  # outside the run directory: another run's aligned teacher
        inputs.update(stage.external_inputs(cfg))
    record = {"config": part, "config_sha256": digest, "tasks": task_hashes, "inputs": inputs}
    if stage.extra_task_hashes:  # tasks only this stage reads (out-of-domain evaluation)
        record["extra_tasks"] = stage.extra_task_hashes(cfg)
    return record


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def differences(
    old: dict, new: dict, skip_inputs: set[str] = frozenset(), defaults: dict | None = None
) -> list[str]:
    """What differs between two provenance records, one short phrase each. Inputs in `skip_inputs`
    are not compared; a field the old record lacks (added by a later arte) counts as changed only
    when its new value is not its default (`defaults`: a config part of the default config)."""
    out = []
    before, after = _flatten(old.get("config", {})), _flatten(new.get("config", {}))
    known = _flatten(defaults or {})
    for key in sorted(set(before) | set(after)):
        if key not in before and key in known and after.get(key) == known[key]:
            continue
        if before.get(key, "(unset)") != after.get(key, "(unset)"):
            out.append(f"{key}: {_show(before.get(key, '(unset)'))} -> {_show(after.get(key, '(unset)'))}")
    old_tasks, new_tasks = old.get("tasks", {}), new.get("tasks", {})
    if list(old_tasks) != list(new_tasks):
        out.append(f"tasks: {', '.join(old_tasks)} -> {', '.join(new_tasks)}")
    elif any(old_tasks[t] != new_tasks[t] for t in new_tasks):
        changed = ", ".join(t for t in new_tasks if old_tasks[t] != new_tasks[t])
        out.append(f"task data of {changed} (task files, --seed, --n_validation or --n_test)")
    old_extra, new_extra = old.get("extra_tasks", {}), new.get("extra_tasks", {})
    if any(old_extra.get(t) != h for t, h in new_extra.items() if t in old_extra):
        changed = ", ".join(t for t in new_extra if t in old_extra and old_extra[t] != new_extra[t])
        out.append(f"data of the out-of-domain task(s) {changed} (--evaluate.extra_tasks files)")
    for rel, digest in new.get("inputs", {}).items():
        if rel not in skip_inputs and old.get("inputs", {}).get(rel) != digest:
            out.append(f"its input {rel} " + ("is missing" if digest is None else "changed since it ran"))
    return out


def upstream(stage: Stage) -> set[str]:
    """The stages whose files `stage` reads (the first part of each `reads` path)."""
    return {Path(rel).parts[0] for rel in stage.reads}


def made_from(names: set[str]) -> set[str]:
    """`names` and every stage that reads from them, directly or through another stage."""

    out = set(names)
    for stage in PIPELINE:  # in order, so one pass closes the chain
        if upstream(stage) & out:
            out.add(stage.name)
    return out


def check_damage(run: RunDir, name: str) -> None:
    """A finished stage's JSONL files must be whole: UserError naming file, line and the remedy."""
    for path in sorted((run.path / name).glob("*.jsonl")):
        damage = jsonl_damage(path)
        if damage:
            line, what = damage
            raise UserError(
                f"{path}:{line}: damaged: {what}, but stage {name} finished. Re-run that stage "
                f"(`arte {name}` with the same --config and --run_dir) to rewrite it; the stages after it "
                f"are kept if it writes the same records again. Or delete {run.path / name} to redo {name} "
                "and what follows"
            )


def check_run_dir(
    cfg: RunConfig, run: RunDir, task_hashes: dict, *, rerun: set[str], only: list[str] | None
) -> list[str]:
    """Check every recorded stage against `cfg` and the files; stop (UserError) or, with
    `cfg.on_config_change == "redo"`, delete what must be redone. Returns the stages deleted.
    `rerun`: stages this command runs whatever their state (their own files are not checked for
    damage, nor the inputs of later stages that they write: running them rewrites those files)."""

    affected: dict[str, list[str]] = {}
    for stage in PIPELINE:
        name = stage.name
        recorded = run.provenance(name)
        if recorded is None or upstream(stage) & made_from(set(affected)):
            continue
        if run.is_done(name) and name not in rerun:
            check_damage(run, name)
        if "config" not in recorded:
            log.warning(
                "%s: made by an older arte that recorded no provenance; its config is not checked", name
            )
            continue
        # An input written by a stage this command runs again is compared by the next command.
        rewritten = {rel for rel in stage.reads if Path(rel).parts[0] in rerun}
        defaults = config_part(type(cfg)(), stage.depends_on)
        diffs = differences(recorded, stage_provenance(cfg, run, stage, task_hashes), rewritten, defaults)
        if diffs:
            affected[name] = diffs
    if not affected:
        return []
    invalid = [n for n in STAGE_NAMES if n in made_from(set(affected)) and run.has_files(n)]
    report = "; ".join(f"{n} ({', '.join(d)})" for n, d in affected.items())
    followers = [n for n in invalid if n not in affected]
    made = f"; made from them: {', '.join(followers)}" if followers else ""
    first = min(affected, key=STAGE_NAMES.index)
    # A stage command cannot redo stages before its own: they must be run first.
    earlier = [n for n in invalid if only and STAGE_NAMES.index(n) < min(map(STAGE_NAMES.index, only))]
    how = "run `arte run` with --on_config_change redo" if earlier else "add --on_config_change redo"
    if cfg.on_config_change == "stop":
        raise UserError(
            f"{run.path} holds files made with another config or input: {report}{made}. To redo from "
            f"{first} (deleting what {', '.join(invalid)} wrote), {how}; or use another --run_dir"
        )
    if earlier:
        raise UserError(
            f"the config change affects {', '.join(earlier)} ({report}), which this command does not "
            f"run: redo from {first} with `arte run --on_config_change redo` (or `arte {first} ...`)"
        )
    print(f"[{first}] config or input changed: {report}; redoing {', '.join(invalid)}", flush=True)
    for name in invalid:
        run.clear_stage(name, keep=get_stage(name).keep_on_redo, writes=get_stage(name).writes)
        for extra in get_stage(name).run_files:
            (run.path / extra).unlink(missing_ok=True)
    return invalid
