"""Multi-process training on CPU: the smoke config's align (DPO) and train (SFT) stages launched by
`accelerate launch --multi_gpu --num_processes 2` (on a machine without GPUs accelerate starts the
processes with torchrun and they talk over gloo). Checks that the data is sharded (half the
optimizer steps of one process at the same per-process batch), that only the main process writes
(one done.json, one model, no leftovers), that the merged models load and differ from the input,
and that a second launch skips the finished stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("trl")

from arte.stages import STAGE_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _launch(stage: str, run: Path) -> subprocess.CompletedProcess:
    return _run(
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "arte.training.launch",
        stage,
        "--config",
        str(SMOKE),
        "--run_dir",
        str(run),
    )


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.slow
def test_align_and_train_on_two_processes_with_gloo(tmp_path):
    from transformers import AutoModelForCausalLM

    from arte.models import resolve_hf

    run = tmp_path / "run"
    before_align = list(STAGE_NAMES[: STAGE_NAMES.index("align")])
    for stage in before_align:
        done = _run(sys.executable, "-m", "arte.cli", stage, "--config", str(SMOKE), "--run_dir", str(run))
        assert done.returncode == 0, done.stderr[-2000:]

    done = _launch("align", run)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("[align] running on 2 process(es) (DistributedType.MULTI_CPU)") == 1
    info = json.loads((run / "align" / "done.json").read_text())
    pairs = sum(1 for _ in open(run / "pairs" / "dpo.jsonl"))
    # Each process sees half the pairs: steps = ceil(pairs / (2 processes x batch 4)).
    assert info["counts"]["processes"] == 2 and info["counts"]["steps"] == -(-pairs // 8)
    teacher = run / "align" / "teacher"
    assert sorted(p.name for p in teacher.iterdir() if p.name.startswith(".")) == []  # no partial saves
    assert not (teacher / "checkpoints").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["stages"]) == [*before_align, "align"]
    model = AutoModelForCausalLM.from_pretrained(teacher)  # loadable, merged (no adapter files)
    assert not (teacher / "adapter_config.json").exists() and model.config.num_hidden_layers == 2
    base = _weights(Path(resolve_hf("tiny-random-llama")))
    aligned = _weights(teacher)
    assert base.keys() == aligned.keys()
    assert any(not (base[k] == aligned[k]).all() for k in base)  # DPO moved the weights

    again = _launch("align", run)
    assert again.returncode == 0 and "[align] done earlier, skipped" in again.stdout

    for stage in ("generate", "gain"):
        done = _run(sys.executable, "-m", "arte.cli", stage, "--config", str(SMOKE), "--run_dir", str(run))
        assert done.returncode == 0, done.stderr[-2000:]
    done = _launch("train", run)
    assert done.returncode == 0, done.stderr[-4000:]
    counts = json.loads((run / "train" / "done.json").read_text())["counts"]
    for variant in ("original", "arte"):
        rows = sum(1 for _ in open(run / "generate" / f"{variant}.jsonl"))
        assert counts[variant]["steps"] == -(-rows // 8)
        AutoModelForCausalLM.from_pretrained(run / "train" / variant)
    done = _run(sys.executable, "-m", "arte.cli", "evaluate", "--config", str(SMOKE), "--run_dir", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "summary.md").is_file()


@pytest.mark.slow
def test_a_launch_on_a_locked_run_dir_stops_every_rank_with_one_message(tmp_path):
    """The main rank finds the run directory's lock taken and tells the others (one holder per job,
    not per rank): all of them stop at once, none hangs at a barrier, the error is printed once."""
    from arte.run_lock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock.acquire(run):
        done = _launch("align", run)
    assert done.returncode != 0
    message = f"arte.training.launch: error: {run} is in use by another arte process: pid {os.getpid()} on "
    assert done.stderr.count(message) == 1, done.stderr[-4000:]
    assert not (run / "align").exists()


def test_train_launch_refuses_a_stage_before_its_inputs(tmp_path, capsys):
    from arte.training.launch import main

    assert main(["align", "--config", str(SMOKE), "--run_dir", str(tmp_path / "r")]) == 2
    before = [s for s in STAGE_NAMES[: STAGE_NAMES.index("align")] if s != "prefcheck"]  # off in smoke.yaml
    assert f"needs {', '.join(before)} first" in capsys.readouterr().err
