"""The pipeline's two training stages as a program for multi-process launchers (DDP, FSDP, DeepSpeed):

    accelerate launch [--config_file configs/accelerate/{ddp,fsdp_full_shard,zero3}.yaml] \
        -m arte.training.launch align --config RUN.yaml
    accelerate launch ... -m arte.training.launch train --config RUN.yaml
    torchrun --nproc_per_node 8 -m arte.training.launch align --config RUN.yaml

`align` is ARTE step 3 (DPO on the teacher, `arte.stages.align`), `train` step 4b (SFT of the
students, `arte.stages.train`); flags are those of `arte run`. It runs the pipeline's own loop and
stage code (`arte.pipeline.run_pipeline`) with `LaunchedProcesses` as the process group
(`arte.training.processes`): every process builds the same trainer; transformers' Trainer picks up the
launcher's environment (RANK, WORLD_SIZE, the accelerate config) and shards the data. Only the main
process writes: the merged model, the stats, `STAGE/done.json` and manifest.json; the others train
and wait. A finished stage is skipped. The stages before (elicit ... pairs) and after
(generate, evaluate) run once, as usual (`arte elicit`, `arte generate`, ...): launching `arte run`
itself under accelerate would repeat the teacher's work in every process.

Without a launcher, `python -m arte.training.launch align ...` is the same as `arte align ...`.

DDP is tested on CPU (2 processes, gloo: tests/test_accelerate.py). FSDP and DeepSpeed ZeRO-3 shard
the weights, so the model is gathered with `Trainer.save_model` (collective) and the main process
reloads it before merging: UNVERIFIED here (no GPU); the shipped configs set what that needs
(FSDP: `fsdp_state_dict_type: FULL_STATE_DICT`; ZeRO-3: `zero3_save_16bit_model: true`, i.e.
`stage3_gather_16bit_weights_on_model_save`). Which to use when: docs/deployment.md, "Training at scale".
The memory estimate each stage prints reads the launcher's sharding from accelerate's environment
(`arte.training.precision.launcher_sharding`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arte.cli import add_config_flags
from arte.models import resolve_hf
from arte.pipeline import run_pipeline
from arte.run_config import RunConfig
from arte.stages import TRAINING_STAGES
from arte.training import processes
from arte.training.finetune import CHECKPOINTS, resume_point, run_fingerprint, run_training
from arte.training.processes import SingleProcess
from common.errors import UserError


def _gather_after_training(run, model_dir: str, gather_dir: Path) -> None:
    """FSDP / DeepSpeed: after `train()`, collect the full weights with `save_model` (every process
    takes part) and give the main process a plain model to merge and save (UNVERIFIED, no GPU here)."""
    trainer, train = run.trainer, run.trainer.train

    def train_then_gather(*args, **kwargs):
        result = train(*args, **kwargs)
        trainer.save_model(str(gather_dir))
        if trainer.args.should_save:
            import torch
            from transformers import AutoModelForCausalLM

            from common.hf_models import attention_kwargs

            precision = run.precision  # reloaded in the dtype it trained in (a 4-bit base: unquantised)
            dtype = getattr(torch, precision.compute_dtype if run.quantized else precision.load_dtype)

            if (gather_dir / "adapter_config.json").is_file():
                from peft import PeftModel

                from common.weights import check_model_weights

                # The training run loaded model_dir under the pickle policy already; load it the same way.
                use_safetensors = check_model_weights(Path(model_dir), allow_pickle=True)
                base = AutoModelForCausalLM.from_pretrained(
                    model_dir, dtype=dtype, use_safetensors=use_safetensors, **attention_kwargs(model_dir)
                )
                trainer.model = PeftModel.from_pretrained(base, str(gather_dir))
            else:
                trainer.model = AutoModelForCausalLM.from_pretrained(
                    str(gather_dir), dtype=dtype, use_safetensors=True, **attention_kwargs(gather_dir)
                )
        return result

    trainer.train = train_then_gather


class LaunchedProcesses(SingleProcess):
    """The processes `accelerate launch` / `torchrun` started, as one group (accelerate's
    `PartialState`): the main process materialises the model and settles the checkpoint directory
    first, every process trains on its shard, the main process merges and saves."""

    def __init__(self) -> None:
        import torch
        from accelerate import PartialState

        self.state = PartialState(cpu=not torch.cuda.is_available())
        self.is_main = self.state.is_main_process
        self.num_processes = self.state.num_processes

    def describe(self) -> str:
        return f" on {self.num_processes} process(es) ({self.state.distributed_type})"

    def barrier(self) -> None:
        self.state.wait_for_everyone()

    def share(self, value: Any) -> Any:
        from accelerate.utils import broadcast_object_list

        box = [value if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def threads(self, requested: int) -> int:
        """`requested`, or (0 = auto) this machine's cores shared by the processes launched on it."""
        if requested:
            return requested
        from common.threads import available_cores

        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return max(1, len(available_cores()) // max(1, local))

    def prepare_model(self, kind: str, model_spec: str, data: Path, out_dir: Path, cfg: Any) -> str:
        """On the main process first: materialise the model (embedded/tiny names) and settle the
        checkpoint directory, so the processes do not race on either."""

        with self.state.main_process_first():
            model_dir = resolve_hf(model_spec)
            if self.is_main:
                resume_point(out_dir / CHECKPOINTS, run_fingerprint(kind, model_dir, data, cfg))
        return model_dir

    def train_and_save(
        self, run: Any, out_dir: Path, stats_name: str, metrics: tuple[str, ...], model_dir: str
    ) -> dict | None:
        """Train on every process; the main process merges, saves and returns the stats (others: None)."""

        gather_dir = out_dir / ".gathered"
        if run.trainer.is_fsdp_enabled or run.trainer.is_deepspeed_enabled:
            _gather_after_training(run, model_dir, gather_dir)
        stats, error = None, None
        if self.is_main:
            try:
                stats = run_training(run, out_dir, stats_name, metrics)
            except UserError as e:  # diverged (NaN): every process stops with it, none waits
                error = str(e)
            shutil.rmtree(gather_dir, ignore_errors=True)
        else:
            run.trainer.train(resume_from_checkpoint=run.resume_from)
        error = self.share(error)
        if error:
            raise UserError(error)
        self.barrier()
        return stats

    def annotate(self, counts: dict) -> dict:
        return {**counts, "processes": self.num_processes}

    def close(self) -> None:
        """Every process reaches the end before any leaves, then the group is taken down. A process
        that exits while the others still hold their gloo connections to it can abort them: CI saw
        SIGABRT once when both processes skipped a finished align and exited at once."""
        import torch.distributed as dist

        self.barrier()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def run_training_stage(stage: str, cfg) -> dict | None:
    """Run (or skip, if done) `stage` of the run in `cfg.run_dir` in every launched process, with the
    pipeline's own loop; returns the manifest on the main process, None elsewhere."""

    if stage not in TRAINING_STAGES:
        raise UserError(
            f"arte.training.launch: stage must be one of {', '.join(TRAINING_STAGES)}, got {stage!r}"
        )
    procs = LaunchedProcesses()
    with processes.use(procs):
        manifest = run_pipeline(cfg, only=[stage], skip_done=True)
    procs.close()
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m arte.training.launch {align|train} --config RUN.yaml [--section.key value ...]`."""
    from common.config import load_config

    parser = argparse.ArgumentParser(
        prog="python -m arte.training.launch",
        description="Run the align (DPO) or train (SFT) stage in every process started by accelerate "
        "launch / torchrun; the main process writes the run directory. Flags as for `arte run`.",
    )
    parser.add_argument("stage", choices=TRAINING_STAGES)
    add_config_flags(parser, RunConfig)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        overrides = {k: v for k, v in vars(args).items() if k not in ("stage", "config")}
        run_training_stage(args.stage, load_config(RunConfig, args.config, overrides))
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":  # every rank stops with the same error; one says it
            print(f"arte.training.launch: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
