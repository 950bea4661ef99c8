"""A run directory: one sub-directory per pipeline stage, each finished stage marked by `done.json`.
Stages talk through the files in it (common.records: append-only JSONL records, atomic JSON).

A stage that has started holds `started.json` (what it is being made from: `arte.provenance`);
when it finishes, `done.json` holds the same record with its time and counts. The writing process
holds `run.lock` (`arte.run_lock`).

Each stage records which files of its directory are its own: `started.json` lists the files that
were there before it first started (`foreign`: not arte's), `done.json` the files it wrote
(`files`). A redo (`clear_stage`) deletes only the stage's own files, never a user's file that
happens to lie in the stage's directory. A non-empty directory that is not a run directory is
refused as a new `--run_dir`."""

from __future__ import annotations

import re
import time
from pathlib import Path

from common.errors import UserError
from common.paths import writable_dir
from common.records import read_json, write_json_atomic

RECORDS = ("done.json", "started.json")


class RunDir:
    """A run directory: one sub-directory per stage, a `done.json` marker when a stage finishes.
    Nothing is created on disk until `create()` or `stage()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def create(self) -> RunDir:
        """Create the directory, or say in one line why it cannot be written or why it is not one
        to write a run into (a non-empty directory of other files) (UserError)."""
        if self.path.is_dir() and any(self.path.iterdir()) and not self.is_run_dir():
            raise UserError(
                f"--run_dir {self.path} is a non-empty directory that is not an arte run directory (no "
                "manifest.json, no stage records): give a new or empty directory"
            )
        writable_dir(self.path, "--run_dir")
        return self

    def is_run_dir(self) -> bool:
        """Whether the directory holds an arte run: its manifest, lock or a stage's record."""
        p = self.path
        return (
            (p / "manifest.json").is_file()
            or (p / "run.lock").exists()
            or any(any(p.glob(f"*/{record}")) for record in RECORDS)
        )

    def discard_if_unused(self) -> None:
        """Remove a run directory this command made in which no stage started (a refused command):
        its manifest, its lock and the directory, if nothing else is in it."""
        if any(any(self.path.glob(f"*/{record}")) for record in RECORDS):
            return
        for name in ("manifest.json", "run.lock"):
            (self.path / name).unlink(missing_ok=True)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def stage(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, name: str) -> bool:
        return (self.path / name / "done.json").is_file()

    def files(self, name: str) -> list[str]:
        """The files in a stage's directory (relative paths), its records left out."""
        d = self.path / name
        if not d.is_dir():
            return []
        return sorted(
            p.relative_to(d).as_posix()
            for p in d.rglob("*")
            if (p.is_file() or p.is_symlink()) and not (p.parent == d and p.name in RECORDS)
        )

    def _record(self, name: str) -> dict | None:
        for marker in RECORDS:
            if (self.path / name / marker).is_file():
                return read_json(self.path / name / marker)
        return None

    def mark_started(self, name: str, provenance: dict) -> None:
        """started.json: the provenance and the files that are not the stage's (`foreign`): those
        there before it first started, and those added since it last finished."""
        old, now = self._record(name), self.files(name)
        if old is None:
            foreign = now
        elif "files" in old:
            foreign = sorted(set(old.get("foreign", [])) | (set(now) - set(old["files"])))
        else:
            foreign = old.get("foreign", [])
        record = {"started_at": time.time(), "provenance": provenance, "foreign": foreign}
        write_json_atomic(self.stage(name) / "started.json", record)

    def mark_done(self, name: str, info: dict) -> None:
        """done.json: `info` and the files the stage wrote (`files`: all but the foreign ones)."""
        started = self.path / name / "started.json"
        foreign = read_json(started).get("foreign", []) if started.is_file() else []
        own = [f for f in self.files(name) if f not in set(foreign)]
        record = {"finished_at": time.time(), **info, "files": own, "foreign": foreign}
        write_json_atomic(self.stage(name) / "done.json", record)
        started.unlink(missing_ok=True)

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

    def own_files(self, name: str, writes: tuple[str, ...] = ()) -> list[str]:
        """The stage's own files: done.json's list; for a stage cut short, every file but the
        foreign ones; with no such record (an older arte), those its declared `writes` match."""
        record, now = self._record(name), self.files(name)
        if record is not None and "files" in record:
            return [f for f in record["files"] if f in set(now)]
        if record is not None and "foreign" in record:
            return [f for f in now if f not in set(record["foreign"])]
        return [f for f in now if any(_matches(name, f, w) for w in writes)]

    def clear_stage(self, name: str, keep: tuple[str, ...] = (), writes: tuple[str, ...] = ()) -> None:
        """Delete what the stage wrote (`own_files`) and its records, except the top-level names in
        `keep`; files it did not write stay, and so do the directories holding them."""
        d = self.path / name
        if not d.is_dir():
            return
        emptied = set()
        for rel in self.own_files(name, writes):
            if rel.split("/")[0] in keep:
                continue
            (d / rel).unlink(missing_ok=True)
            emptied.update(p for p in (d / rel).parents if d in p.parents)
        for marker in RECORDS:
            (d / marker).unlink(missing_ok=True)
        for sub in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()


def _matches(stage: str, rel: str, pattern: str) -> bool:
    """Whether `rel` (in the stage's directory) is what a declared `writes` entry names
    ("train/VARIANT/": a directory; VARIANT, TASK, rR and * stand for any name)."""
    head, _, tail = pattern.partition("/")
    if head != stage or not tail:
        return False
    regex = re.escape(tail)
    for word in ("VARIANT", "TASK", "rR", r"\*"):
        regex = regex.replace(word, "[^/]+")
    return re.fullmatch(regex + (".*" if tail.endswith("/") else ""), rel) is not None
