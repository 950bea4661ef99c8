"""The pipeline at several batch widths, same commit, same config, same seeds: what batched decoding
saves on identical work, stage by stage.

    .venv/bin/python benchmarks/pipeline_widths.py [--config configs/demo.yaml] [--widths 1,16]
        [--work /tmp/pipeline_widths] [-- ARTE RUN OPTIONS ...]

Each width is one `arte run` in a fresh process with every llama_cpp backend (teacher, student,
aligned teacher, evaluation) at that `batch_size`, into WORK/wN. Width 1 decodes one sequence at a
time (with prefix reuse): it runs the scorer as fast as the backend before batched decoding did
(`benchmarks/score_throughput.py --batch_size 1`: 1.03x its `sequential` row, docs/measurements.md).
Sampling seeds are per prompt, so the widths draw the same texts apart from float differences of
other batch shapes: the script reports how many drafts and training examples are identical to the
first width's, so a difference in work is visible next to the times.

Prints seconds per stage, the sums of the decoding stages and of the torch stages (align, train and
rounds; the batch width does not touch them), each width's ratio to the first, then one JSON line.
Options after `--` go to every `arte run` (e.g. `-- --tasks boolean_expressions --variants
original,arte`). Run it on an idle machine: a busy core makes every figure slower.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("teacher", "student", "aligned_teacher", "evaluate.backend")
TORCH_STAGES = ("align", "train", "rounds")
"""Stages that train with torch (batch width does not touch them); every other stage's time counts
as decoding (with its model loads, conversions and bookkeeping)."""


def run_at(width: int, config: str, run_dir: Path, extra: list[str]) -> float:
    """One `arte run` at `width`; returns its wall time in seconds."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "arte.cli", "run", "--config", config, "--run_dir", str(run_dir)]
    for b in BACKENDS:
        cmd += [f"--{b}.batch_size", str(width)]
    started = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        rc = subprocess.run([*cmd, *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"arte run at width {width} failed (rc {rc}); see {run_dir.with_suffix('.log')}")
    return time.perf_counter() - started


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds of each stage (its done.json), in the order the stages finished."""
    done = [json.loads(p.read_text()) | {"stage": p.parent.name} for p in run_dir.glob("*/done.json")]
    return {d["stage"]: d["seconds"] for d in sorted(done, key=lambda d: d["finished_at"])}


def jsonl_lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()) if path.is_file() else []


def same_work(a: Path, b: Path) -> dict[str, str]:
    """Share of identical records between two run directories: drafts, and each training set."""
    out = {}
    for rel in ["elicit/drafts.jsonl", *sorted(str(p.relative_to(a)) for p in a.glob("generate/*.jsonl"))]:
        x, y = jsonl_lines(a / rel), jsonl_lines(b / rel)
        out[rel] = f"{len(set(x) & set(y))} of {max(len(x), len(y))}"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--widths", default="1,16", help="batch widths, the first is the reference")
    p.add_argument("--work", default="/tmp/pipeline_widths", help="run directories go here")
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    widths = [int(w) for w in args.widths.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    walls, stages = {}, {}
    for w in widths:
        walls[w] = run_at(w, args.config, work / f"w{w}", extra)
        stages[w] = stage_seconds(work / f"w{w}")
        print(f"width {w}: {walls[w]:.0f} s", flush=True)

    ref = widths[0]
    names = [n for n in stages[ref] if stages[ref][n] >= 0.5]
    print(
        f"\n{'stage':<12}"
        + "".join(f"{'w' + str(w):>9}" for w in widths)
        + "".join(f"{'w' + str(w) + '/w' + str(ref):>11}" for w in widths[1:])
    )
    torch = {w: round(sum(stages[w].get(n, 0.0) for n in TORCH_STAGES), 1) for w in widths}
    rows = {n: {w: stages[w].get(n, 0.0) for w in widths} for n in names}
    rows["decoding"] = {w: round(sum(stages[w].values()) - torch[w], 1) for w in widths}
    rows["torch"] = torch
    rows["wall"] = walls
    for n, got in rows.items():
        ratios = "".join(f"{got[w] / got[ref]:>11.2f}" if got[ref] else f"{'-':>11}" for w in widths[1:])
        print(f"{n:<12}" + "".join(f"{got[w]:>9.1f}" for w in widths) + ratios)
    identical = {w: same_work(work / f"w{ref}", work / f"w{w}") for w in widths[1:]}
    for w, shares in identical.items():
        print(f"identical to width {ref} at width {w}: " + "; ".join(f"{k} {v}" for k, v in shares.items()))
    summary = {"widths": widths, "wall_s": walls, "stage_s": stages, "decoding_s": rows["decoding"]}
    print(json.dumps(summary | {"torch_s": torch, "identical": identical}))


if __name__ == "__main__":
    main()
