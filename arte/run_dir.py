"""A run directory: one sub-directory per pipeline stage, each finished stage marked by `done.json`.
Stages talk through the files in it (common.records: append-only JSONL records, atomic JSON).

A stage that has started holds `started.json` (what it is being made from: `arte.provenance`);
when it finishes, `done.json` holds the same record with its time and counts. The writing process
holds `run.lock` (`arte.run_lock`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from common.paths import writable_dir
from common.records import read_json, write_json_atomic


class RunDir:
    """A run directory: one sub-directory per stage, a `done.json` marker when a stage finishes.
    Nothing is created on disk until `create()` or `stage()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def create(self) -> RunDir:
        """Create the directory, or say in one line why it cannot be written (UserError)."""
        writable_dir(self.path, "--run_dir")
        return self

    def stage(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, name: str) -> bool:
        return (self.path / name / "done.json").is_file()

    def mark_started(self, name: str, provenance: dict) -> None:
        write_json_atomic(
            self.stage(name) / "started.json", {"started_at": time.time(), "provenance": provenance}
        )

    def mark_done(self, name: str, info: dict) -> None:
        write_json_atomic(self.stage(name) / "done.json", {"finished_at": time.time(), **info})
        (self.path / name / "started.json").unlink(missing_ok=True)

    def done_info(self, name: str) -> dict:
        return read_json(self.path / name / "done.json")

    def provenance(self, name: str) -> dict | None:
        """What the stage's files were made from: done.json's record, else started.json's (a stage
        cut short); {} for a stage finished by an arte that recorded none; None if never started."""
        for marker in ("done.json", "started.json"):
            path = self.path / name / marker
            if path.is_file():
                return read_json(path).get("provenance", {})
        return None

    def has_files(self, name: str) -> bool:
        d = self.path / name
        return d.is_dir() and any(d.iterdir())

    def clear_stage(self, name: str, keep: tuple[str, ...] = ()) -> None:
        """Delete everything the stage wrote (its directory), except the file names in `keep`."""
        d = self.path / name
        if not d.is_dir():
            return
        for p in d.iterdir():
            if p.name in keep:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
