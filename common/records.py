"""Files that survive a kill: append-only JSONL records, atomic JSON and JSONL files, file hashes.

Crash safety: a record is one line, written and flushed with fsync before the next begins. A kill
or a full disk can leave at most one partial last line. Only the writer that resumes the log may
drop it (`RecordLog(path, resume=True)`: the stage being run continues from the record before
it); every reader refuses it with the file, the line and what to do, so a damaged file of a
finished stage is never silently cut. JSON files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from common.errors import UserError

log = logging.getLogger(__name__)

DAMAGED_HINT = "re-run the stage that wrote it, or delete the file to redo that stage"
"""What to do about a damaged record file, when the caller knows nothing better."""


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


def jsonl_damage(path: Path) -> tuple[int, str] | None:
    """(line number, what is wrong) for the first damaged line of a JSONL file: a last line without
    its newline (half a record) or a line that is not JSON; None when every line is a record."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if lineno == len(lines):  # text after the last newline
            return lineno, "the last line is half a record (it has no newline at its end)"
        try:
            json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return lineno, f"not a JSON record ({getattr(e, 'msg', e)})"
    return None


class RecordLog:
    """An append-only JSONL file of records, safe to resume after a kill.

    `resume=True` is for the one writer that continues this log (the stage being run): a partial
    last line, left by a kill in the middle of a write, is cut off on open (`dropped_partial`).
    Without it (every reader), a partial last line is an error naming the file and the line."""

    def __init__(self, path: Path, *, resume: bool = False, hint: str = DAMAGED_HINT):
        self.path = Path(path)
        self.hint = hint
        self.dropped_partial = False
        if resume:
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
        log.info("%s: dropped a partial last line (a write cut short); resuming after it", self.path)
        return True

    def __iter__(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if not line.endswith("\n"):
                    raise UserError(
                        f"{self.path}:{lineno}: damaged: the last line is half a record (it has no newline "
                        f"at its end); {self.hint}"
                    )
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
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
