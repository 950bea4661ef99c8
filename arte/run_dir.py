"""A run directory: one sub-directory per pipeline stage, each finished stage marked by `done.json`.
Stages talk through the files in it (common.records: append-only JSONL records, atomic JSON)."""

from __future__ import annotations

import time
from pathlib import Path

from common.records import read_json, write_json_atomic


class RunDir:
    """A run directory: one sub-directory per stage, a `done.json` marker when a stage finishes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def is_done(self, name: str) -> bool:
        return (self.path / name / "done.json").is_file()

    def mark_done(self, name: str, info: dict) -> None:
        write_json_atomic(self.stage(name) / "done.json", {"finished_at": time.time(), **info})

    def done_info(self, name: str) -> dict:
        return read_json(self.path / name / "done.json")
