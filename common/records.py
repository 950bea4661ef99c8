"""Files that survive a kill: append-only JSONL records, atomic JSON and JSONL files, file hashes.

Crash safety: a record is one line, written and flushed with fsync before the next begins. A kill
or a full disk can leave at most one partial last line; `RecordLog` cuts it off on open, so a resume
never reads half a record as data. JSON files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from common.errors import UserError


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing: run the stage that writes it first") from None
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}:{e.lineno}: not valid JSON ({e.msg}); delete it to redo that stage"
        ) from None


class RecordLog:
    """An append-only JSONL file of records, safe to resume after a kill."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped_partial = self._cut_partial_tail()

    def _cut_partial_tail(self) -> bool:
        """Truncate a last line that has no newline (a write interrupted by a kill or a full disk)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return False
            f.truncate(data.rfind(b"\n") + 1)
            return True

    def __iter__(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(
                        f"{self.path}:{lineno}: corrupt record ({e.msg}); "
                        "delete the line or the file to redo it"
                    ) from None

    def read(self) -> list[dict]:
        return list(self)

    def append(self, record: dict) -> None:
        self.extend([record])

    def extend(self, records: Iterable[dict]) -> None:
        """Append records; each is complete on disk (fsync) before this returns."""
        lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        if not lines:
            return
        with open(self.path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    """Write a whole JSONL file so that readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    RecordLog(tmp).extend(rows)
    tmp.touch()
    tmp.replace(path)
