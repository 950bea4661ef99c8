"""The pipeline's two training stages as a program for multi-process launchers (DDP, FSDP, DeepSpeed):

    accelerate launch [--config_file ddp|fsdp|deepspeed.yaml] -m arte.train_launch align --config RUN.yaml
    accelerate launch ... -m arte.train_launch train --config RUN.yaml
    torchrun --nproc_per_node 8 -m arte.train_launch align --config RUN.yaml

`align` is ARTE step 3 (DPO on the teacher, `arte.align`), `train` step 4b (SFT of the students,
`arte.train`); flags are those of `arte run`. Every process builds the same trainer; transformers'
Trainer picks up the launcher's environment (RANK, WORLD_SIZE, the accelerate config) and shards
the data. Only the main process writes: the merged model, the stats, `STAGE/done.json` and
manifest.json; the others train and wait. The stages before (elicit ... pairs) and after
(generate, evaluate) run once, as usual (`arte elicit`, `arte generate`, ...): launching `arte run`
itself under accelerate would repeat the teacher's work in every process.

Without a launcher, `python -m arte.train_launch align ...` is the same as `arte align ...`.

DDP is tested on CPU (2 processes, gloo: tests/test_accelerate.py). FSDP and DeepSpeed ZeRO-3 shard
the weights, so the model is gathered with `Trainer.save_model` (collective) and the main process
reloads it before merging: UNVERIFIED here (no GPU); for ZeRO-3 set
`stage3_gather_16bit_weights_on_model_save: true` in the DeepSpeed config.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from arte.errors import UserError

STAGES = ("align", "train")


def _threads_per_process(requested: int) -> int:
    """`requested`, or (0 = auto) this machine's cores shared by the processes launched on it."""
    if requested:
        return requested
    from arte.backends.threads import available_cores

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, len(available_cores()) // max(1, local))


def _gather_after_training(run, model_dir: str, gather_dir: Path) -> None:
    """FSDP / DeepSpeed: after `train()`, collect the full weights with `save_model` (every process
    takes part) and give the main process a plain model to merge and save (UNVERIFIED, no GPU here)."""
    trainer, train = run.trainer, run.trainer.train

    def train_then_gather(*args, **kwargs):
        result = train(*args, **kwargs)
        trainer.save_model(str(gather_dir))
        if trainer.args.should_save:
            from transformers import AutoModelForCausalLM

            if (gather_dir / "adapter_config.json").is_file():
                from peft import PeftModel

                base = AutoModelForCausalLM.from_pretrained(model_dir)
                trainer.model = PeftModel.from_pretrained(base, str(gather_dir))
            else:
                trainer.model = AutoModelForCausalLM.from_pretrained(str(gather_dir))
        return result

    trainer.train = train_then_gather


def train_and_save(
    run, out_dir: Path, stats_name: str, metrics: tuple[str, ...], model_dir: str
) -> dict | None:
    """Train on every process; the main process merges, saves and returns the stats (others: None)."""
    from accelerate import PartialState

    from arte.finetune import run_training

    state = PartialState()
    gather_dir = out_dir / ".gathered"
    if run.trainer.is_fsdp_enabled or run.trainer.is_deepspeed_enabled:
        _gather_after_training(run, model_dir, gather_dir)
    stats = None
    if state.is_main_process:
        stats = run_training(run, out_dir, stats_name, metrics)
        shutil.rmtree(gather_dir, ignore_errors=True)
    else:
        run.trainer.train(resume_from_checkpoint=run.resume_from)
    state.wait_for_everyone()
    return stats


def _prepare(kind: str, model_spec: str, data: Path, out_dir: Path, cfg) -> str:
    """On the main process first: materialise the model (embedded/tiny names) and settle the
    checkpoint directory, so the processes do not race on either. Returns the model directory."""
    from accelerate import PartialState

    from arte.finetune import CHECKPOINTS, resume_point, run_fingerprint
    from arte.models import resolve_hf

    with PartialState().main_process_first():
        model_dir = resolve_hf(model_spec)
        if PartialState().is_main_process:
            resume_point(out_dir / CHECKPOINTS, run_fingerprint(kind, model_dir, data, cfg))
    return model_dir


def align_stage(cfg, run) -> dict | None:
    """ARTE step 3 under a launcher: DPO on the teacher into align/teacher (+ its GGUF if the
    aligned teacher runs on llama_cpp), like `arte.stages.stage_align`."""
    from accelerate import PartialState

    from arte.align import DPO_METRICS, build_dpo_trainer
    from arte.run_dir import read_json

    acfg = dataclasses.replace(cfg.align, threads=_threads_per_process(cfg.align.threads))
    out, pairs = run.stage("align"), run.path / "pairs" / "dpo.jsonl"
    teacher_dir = out / "teacher"
    if (teacher_dir / "config.json").is_file() and (teacher_dir / "align_stats.json").is_file():
        stats = read_json(teacher_dir / "align_stats.json")  # trained before a later step failed
    else:
        model_dir = _prepare("dpo", cfg.teacher.model, pairs, teacher_dir, acfg)
        stats = train_and_save(build_dpo_trainer(model_dir, pairs, teacher_dir, acfg), teacher_dir,
                               "align_stats.json", DPO_METRICS, model_dir)  # fmt: skip
    if PartialState().is_main_process and cfg.aligned_teacher.name == "llama_cpp":
        from export.gguf_convert import convert_hf_to_gguf

        stats["gguf"] = str(convert_hf_to_gguf(teacher_dir, out / "teacher-f16.gguf", "f16"))
    return stats


def train_stage(cfg, run) -> dict | None:
    """ARTE step 4b under a launcher: SFT of the original-teacher and ARTE students, like
    `arte.stages.stage_train`."""
    from accelerate import PartialState

    from arte.run_dir import read_json
    from arte.train import build_sft_trainer

    tcfg = dataclasses.replace(cfg.train, threads=_threads_per_process(cfg.train.threads))
    out, counts = run.stage("train"), {}
    for variant in ("original", "arte"):
        target, data = out / variant, run.path / "generate" / f"{variant}.jsonl"
        if (target / "config.json").is_file():
            stats_file = target / "train_stats.json"
            counts[variant] = read_json(stats_file) if stats_file.exists() else {}
            continue
        target.mkdir(parents=True, exist_ok=True)
        model_dir = _prepare("sft", cfg.student.model, data, target, tcfg)
        run_ = build_sft_trainer(model_dir, data, target, tcfg)
        counts[variant] = train_and_save(
            run_, target, "train_stats.json", ("mean_token_accuracy",), model_dir
        )
    return counts if PartialState().is_main_process else None


def run_training_stage(stage: str, cfg) -> dict | None:
    """Run (or skip, if done) `stage` of the run in `cfg.run_dir` in every launched process; the
    main process records it in `STAGE/done.json` and manifest.json. Returns the counts (main) or None."""
    import torch
    from accelerate import PartialState

    from arte.pipeline import load_run_tasks, open_manifest
    from arte.run_dir import RunDir, read_json, write_json_atomic
    from arte.stages import STAGES as PIPELINE

    if stage not in STAGES:
        raise UserError(f"arte.train_launch: stage must be one of {', '.join(STAGES)}, got {stage!r}")
    run = RunDir(cfg.run_dir)
    tasks = load_run_tasks(cfg)
    names = [name for name, _ in PIPELINE]
    missing = [p for p in names[: names.index(stage)] if not run.is_done(p)]
    if missing:
        raise UserError(f"stage {stage!r} needs {', '.join(missing)} first: run `arte run` or those stages")
    state = PartialState(cpu=not torch.cuda.is_available())
    if run.is_done(stage):
        if state.is_main_process:
            print(f"[{stage}] done earlier, skipped ({run.path / stage})")
        return None
    if state.is_main_process:
        manifest = open_manifest(run, cfg, tasks)
        print(
            f"[{stage}] running on {state.num_processes} process(es) ({state.distributed_type}) ...",
            flush=True,
        )
    state.wait_for_everyone()
    started = time.time()
    counts = (align_stage if stage == "align" else train_stage)(cfg, run)
    if state.is_main_process:
        seconds = round(time.time() - started, 1)
        counts = {**counts, "processes": state.num_processes}
        run.mark_done(stage, {"seconds": seconds, "counts": counts})
        manifest = read_json(run.path / "manifest.json")
        manifest["stages"][stage] = {"seconds": seconds, "counts": counts}
        write_json_atomic(run.path / "manifest.json", manifest)
        print(f"[{stage}] done in {seconds} s on {state.num_processes} process(es)", flush=True)
    state.wait_for_everyone()
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m arte.train_launch {align|train} --config RUN.yaml [--section.key value ...]`."""
    from arte.cli import add_config_flags
    from arte.config import load_config
    from arte.pipeline import RunConfig

    parser = argparse.ArgumentParser(
        prog="python -m arte.train_launch",
        description="Run the align (DPO) or train (SFT) stage in every process started by accelerate "
        "launch / torchrun; the main process writes the run directory. Flags as for `arte run`.",
    )
    parser.add_argument("stage", choices=STAGES)
    add_config_flags(parser, RunConfig)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        overrides = {k: v for k, v in vars(args).items() if k not in ("stage", "config")}
        run_training_stage(args.stage, load_config(RunConfig, args.config, overrides))
    except UserError as e:
        print(f"arte.train_launch: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
