"""Seconds per training step of align (DPO, LoRA) and train (SFT, full fine-tuning) by `dtype` and
`optimizer`, on the embedded SmolLM2-135M, through the stages' own trainers (`build_dpo_trainer`,
`build_sft_trainer`): what `dtype: auto` and the default optimizer should be on this CPU.

    .venv/bin/python benchmarks/training_precision.py [--settings float32/adamw,bf16_mixed/adamw_fused]

The data are the demo's shapes: boolean_expressions questions with the task's step-by-step
explanations as SFT completions (the student prompt), and DPO pairs of the naive prompt with that
explanation as chosen and an answer-only wrong one as rejected. Each round runs every dtype once
(alternating, so drift in the machine's speed hits all of them), for `--steps` optimizer steps at
the demo's batch sizes (DPO 4, SFT 2) and `--threads` torch threads, each run in a fresh process
(accelerate keeps process-wide state between trainers). Figures: median seconds per
step over the rounds (the first step of each run is left out: warm-up), the ratio to the first
setting, and
the mean training loss of the timed steps (same data, same seed: how far the numerics move). Then
one JSON line. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.cpu_features import native_bf16  # noqa: E402
from common.prompts import icl_prompt, naive_prompt  # noqa: E402
from common.tasks.builtin import make_builtin_task  # noqa: E402
from edge_bench.host import describe_host  # noqa: E402


def write_rows(work: Path, n: int) -> tuple[Path, Path]:
    """SFT rows and DPO pairs from the first n test questions of boolean_expressions."""
    task = make_builtin_task("boolean_expressions", n_validation=30, n_test=n)
    sft, dpo = [], []
    for ex in task.test[:n]:
        why = task.explainer(ex.input)
        wrong = "False" if ex.target == "True" else "True"
        sft.append({"prompt": icl_prompt(task.description, [], ex.input), "completion": " " + why})
        dpo.append(
            {
                "prompt": naive_prompt(task.description, ex.input),
                "chosen": " " + why,
                "rejected": f" The answer is {wrong}. <ans>{wrong}</ans>",
            }
        )
    paths = work / "sft.jsonl", work / "dpo.jsonl"
    for path, rows in zip(paths, (sft, dpo), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


class StepTimer:
    """A transformers TrainerCallback that records each optimizer step's wall time and the losses."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.seconds.append(time.perf_counter() - timer.start)

            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    timer.losses.append(logs["loss"])

        self.callback, self.seconds, self.losses, self.start = _Callback(), [], [], 0.0


def time_steps(kind: str, model_dir: str, data: Path, setting: str, steps: int, threads: int) -> dict:
    from arte.stages.align import AlignConfig, build_dpo_trainer
    from arte.stages.train import TrainConfig, build_sft_trainer

    dtype, optimizer = setting.split("/")
    common = dict(
        dtype=dtype, optimizer=optimizer, threads=threads, checkpoint_steps=0, logging_steps=1, epochs=1
    )
    with tempfile.TemporaryDirectory() as out:
        if kind == "dpo":
            cfg = AlignConfig(batch_size=4, gradient_accumulation_steps=1, **common)
            run = build_dpo_trainer(model_dir, data, Path(out), cfg)
        else:
            cfg = TrainConfig(batch_size=2, gradient_accumulation_steps=1, learning_rate=5e-5, **common)
            run = build_sft_trainer(model_dir, data, Path(out), cfg)
        timer = StepTimer()
        run.trainer.add_callback(timer.callback)
        run.trainer.args.max_steps = steps
        run.trainer.train()
    timed = timer.seconds[1:]
    return {"s_per_step": statistics.median(timed), "loss": statistics.mean(timer.losses[1:])}


def child_run(args: argparse.Namespace, kind: str, setting: str, data: Path) -> dict:
    """`time_steps` in a fresh Python process; its RESULT line."""
    cmd = [sys.executable, __file__, "--one", f"{kind}:{setting}:{data}", "--model", args.model]
    cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not lines:
        sys.exit(f"{kind} {setting} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="an embedded model or an HF directory")
    ap.add_argument(
        "--settings",
        default="float32/adamw,float32/adamw_fused,bf16_mixed/adamw,bf16_mixed/adamw_fused",
        help="DTYPE/OPTIMIZER list; ratios are to the first",
    )
    ap.add_argument("--kinds", default="dpo,sft")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # KIND:SETTING:DATA, in a child process
    args = ap.parse_args()
    from arte.models import resolve_hf

    if args.one:
        kind, setting, data = args.one.split(":", 2)
        got = time_steps(kind, resolve_hf(args.model), Path(data), setting, args.steps, args.threads)
        print("RESULT " + json.dumps(got))
        return

    host = describe_host()
    flags = native_bf16() or "none"
    print(f"host: {host['cpu_model']}, {host['logical_cores']} cores, bf16 instructions: {flags}")
    resolve_hf(args.model)  # materialized once, before the children
    settings, kinds = args.settings.split(","), args.kinds.split(",")
    runs: dict[tuple[str, str], list[dict]] = {(k, d): [] for k in kinds for d in settings}
    with tempfile.TemporaryDirectory() as work:
        sft, dpo = write_rows(Path(work), max(args.steps * 4, 16))
        for r in range(args.rounds):
            for kind in kinds:
                for setting in settings:
                    got = child_run(args, kind, setting, dpo if kind == "dpo" else sft)
                    runs[(kind, setting)].append(got)
                    print(f"round {r + 1} {kind} {setting}: {got['s_per_step']:.2f} s/step", flush=True)
    print(f"\n| stage | dtype/optimizer | s/step (median) | vs {settings[0]} | mean loss |")
    print("|---|---|---|---|---|")
    result = []
    for kind in kinds:
        base = statistics.median(g["s_per_step"] for g in runs[(kind, settings[0])])
        name = "align (DPO, LoRA)" if kind == "dpo" else "train (SFT, full)"
        for setting in settings:
            s = statistics.median(g["s_per_step"] for g in runs[(kind, setting)])
            loss = statistics.mean(g["loss"] for g in runs[(kind, setting)])
            ratio = f"{base / s:.2f}x"
            print(f"| {name} | {setting} | {s:.2f} | {ratio} | {loss:.5f} |")
            result.append({"kind": kind, "setting": setting, "s_per_step": round(s, 3), "loss": loss})
    print(json.dumps({"host": host["cpu_model"], "bf16_flags": native_bf16(), "rows": result}))


if __name__ == "__main__":
    main()
