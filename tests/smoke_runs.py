"""Running `arte` on the smoke setup (configs/smoke.yaml) as a user does, and checking a run
directory's records: helpers of tests/test_fault_injection.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common.records import RecordLog

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
TASKS = ("boolean_expressions", "multistep_arithmetic")


def arte(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`arte ARGS` as a user runs it: a fresh process, its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "arte.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def arte_bg(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "arte.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def smoke(run: Path, *flags: str) -> list[str]:
    return ["--config", str(SMOKE), "--run_dir", str(run), *flags]


def one_clear_line(err: str, *parts: str) -> str:
    """The `arte: error:` line of `err`; no traceback; every part in it."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err[-3000:]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def keys(path: Path, *fields: str) -> list[tuple]:
    return [tuple(r[f] for f in fields) for r in RecordLog(path)]


def assert_records_complete(run: Path, m: int = 8) -> None:
    """Every record of the smoke run once: drafts, scores, SFT rows, evaluation records."""
    drafts = keys(run / "elicit" / "drafts.jsonl", "task", "qid", "strategy")
    assert len(drafts) == len(set(drafts)) == len(TASKS) * m * 3
    assert keys(run / "score" / "scores.jsonl", "task", "qid", "strategy") == drafts
    for variant in ("arte", "original"):
        questions = keys(run / "generate" / f"{variant}.jsonl", "task", "question")
        assert questions and len(questions) == len(set(questions))
    for variant in ("vanilla", "original", "arte"):
        recs = keys(run / "evaluate" / f"{variant}.jsonl", "task", "shots", "index")
        assert len(recs) == len(set(recs)) == len(TASKS) * 2 * 8


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory (but its lock), by relative path."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }
