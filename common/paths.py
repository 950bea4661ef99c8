"""Output directories that can be written, checked before any work: one clear line naming the path
and the reason (a file in the way, no permission, a read-only file system), never a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError

WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
"""OSError numbers that mean "this path cannot be written here", not a bug in the program."""


def _reason(e: OSError, path: Path) -> str:
    if isinstance(e, (FileExistsError, NotADirectoryError)) or e.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a directory"
    return e.strerror or str(e)


def writable_dir(path: str | Path, flag: str) -> Path:
    """Create directory `path` (and its parents) if needed and check that a file can be written in
    it; a UserError "FLAG PATH: cannot write there: REASON" otherwise. Returns the path."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write there: {_reason(e, path)}") from None
    return path


def describe_write_error(e: OSError) -> str | None:
    """One line for an OSError that says a path cannot be written (WRITE_ERRNOS), else None."""
    if e.errno not in WRITE_ERRNOS:
        return None
    where = f"{e.filename}: " if e.filename else ""
    return f"cannot write {where}{_reason(e, Path(e.filename)) if e.filename else e.strerror}"


@contextlib.contextmanager
def removed_if_refused(path: str | Path) -> Iterator[None]:
    """Around a command that makes output directory `path`: when it is refused (UserError) and the
    directory was new, remove it again if it holds no file (empty sub-directories only)."""
    path = Path(path).expanduser()
    fresh = not path.exists()
    try:
        yield
    except UserError:
        if fresh and path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
            shutil.rmtree(path, ignore_errors=True)
        raise
