"""One writer per run directory: `RUN_DIR/run.lock`, held by the process that writes the run.

`arte run`, `arte STAGE` and `arte.training.launch` (its main process only: one holder per job, not
per rank; the other ranks learn the outcome from it, `arte.training.processes`) take the lock before they
touch anything in the run directory and keep it until they end. A second writer is refused at
once, with the holder's pid, host, start time and command.

The lock is an advisory `flock` on the file, so the kernel releases it when its holder dies, however
it dies (SIGKILL included): there is no pid to guess about. The file itself holds the holder's
description as JSON and is emptied on a clean release. A file that still describes a holder when
the lock is free was left by a process that died: the new writer takes it over and says so. Where
the file system has no flock (some network mounts), the description alone decides: a holder on this
host whose pid is gone is stale; one on another host must be removed by hand (the message says how).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

LOCK_FILE = "run.lock"


def _describe(holder: dict) -> str:
    started = holder.get("started_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "at an unknown time"
    command = holder.get("command", "?")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when} ({command})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class RunLock:
    """The held lock of one run directory; `release()` (or leaving the `with` block) frees it."""

    path: Path
    fd: int
    took_over: dict | None
    """The description of a dead holder this lock was taken from, else None."""

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Take the lock of `run_dir` (which must exist) or raise a UserError naming its holder."""
        path = Path(run_dir) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            previous = _read(fd)
            if not _try_flock(fd, path, previous):
                for _ in range(20):  # the holder may be between taking the lock and describing itself
                    if previous.get("pid"):
                        break
                    time.sleep(0.05)
                    previous = _read(fd)
                raise UserError(
                    f"{run_dir} is in use by another arte process: {_describe(previous)}. Wait for it to "
                    "finish, or use another --run_dir"
                )
            previous = _read(fd)  # what the last holder left, read again now that it is ours
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": time.time(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        lock = cls(path, fd, previous or None)
        if lock.took_over:
            print(
                f"arte: took over the lock of {run_dir} from {_describe(previous)}, which is gone; its "
                "finished records are kept and the run resumes",
                file=sys.stderr,
                flush=True,
            )
        return lock

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)  # empty: released cleanly, not stale
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 1 << 16, 0)
        holder = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "command": "unreadable lock file"}
    return holder if isinstance(holder, dict) else {}


def _try_flock(fd: int, path: Path, holder: dict) -> bool:
    """True when the lock is now ours; False when a live holder has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    # No flock on this file system: decide from the holder's description.
    if not holder:
        return True
    if holder.get("host") == socket.gethostname():
        return not (isinstance(holder.get("pid"), int) and _pid_alive(holder["pid"]))
    raise UserError(
        f"{path.parent} may be in use by {_describe(holder)}; this file system cannot lock files, so it "
        f"cannot be checked from here. If that process is gone, delete {path}"
    )
