"""`arte run`: every ARTE stage in order, into one run directory (the method: docs/method.md).

Each stage (`arte.stages.PIPELINE`, one module each, in order) is a function of (RunConfig, run
directory, tasks) that reads the files earlier stages wrote and writes its own; a finished stage
leaves `STAGE/done.json` and is skipped on a re-run. Inside a stage, records are appended as they
are made (teacher calls, draft scores, evaluation chunks), so a stage killed half-way resumes from
its last complete record. `manifest.json` records the config, library versions, input hashes and
per-stage timings and counts; `summary.md`/`summary.json` hold the accuracy table with confidence
intervals.

Before the first stage, every option has been validated (the config dataclasses' `__post_init__`,
`RunConfig.__post_init__` for the checks across sections), the tasks are loaded and the models the
remaining stages need are checked; only then is the run directory created. The writing process
holds its lock (`arte.run_lock`) and checks each recorded stage against the config and the files
(`arte.provenance`): a changed config stops the command, or with `--on_config_change redo` deletes
what must be redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arte import processes
from arte.backends import BackendConfig
from arte.provenance import check_run_dir, stage_provenance
from arte.run_dir import RunDir
from arte.run_lock import RunLock
from arte.stages.align import AlignConfig
from arte.stages.elicit import ElicitConfig
from arte.stages.evaluate import EvaluateConfig
from arte.stages.gain import GainConfig
from arte.stages.generate import GenerateConfig
from arte.stages.out_of_domain import load_extra_tasks
from arte.stages.pairs import PairsConfig
from arte.stages.prefcheck import PrefcheckConfig
from arte.stages.prefset import PrefsetConfig
from arte.stages.teacher_reuse import other_align_dir
from arte.stages.train import TrainConfig
from arte.stages.training_set.ablations import check_variants
from common.config import opt, to_dict
from common.errors import UserError
from common.records import read_json, write_json_atomic

log = logging.getLogger(__name__)

BUILTIN_TASKS = ["boolean_expressions", "multistep_arithmetic", "object_counting", "word_sorting"]


@dataclass
class RunConfig:
    """The whole ARTE pipeline: models, tasks, and every stage's settings."""

    run_dir: str = opt("runs/arte", "Run directory: every stage's files, the manifest and the summary.")
    tasks: list[str] = opt(list(BUILTIN_TASKS), "Target tasks; one aligned teacher serves all of them.")
    seed: int = opt(0, "Seed for task splits, sampling and training.")
    n_validation: int = opt(100, "Validation questions per task (the pool D_pref is selected from).")
    n_test: int = opt(200, "Test questions per task available to evaluation.")
    teacher: BackendConfig = opt(BackendConfig(), "The teacher that drafts questions and rationales.")
    student: BackendConfig = opt(BackendConfig(), "The student whose preferences are measured.")
    elicit: ElicitConfig = opt(ElicitConfig(), "Step 1: knowledge elicitation.")
    teacher_worked_example: bool = opt(
        True,
        "Show the task's first seed as a solved example in the teacher's rationale prompts (strategy "
        "prompts, naive prompt). Small teachers need it to keep the <ans> format; the paper had none.",
    )
    prefset: PrefsetConfig = opt(PrefsetConfig(), "Step 2: the preference set D_pref.")
    score_max_new_tokens: int = opt(128, "Decode budget of one student answer while scoring drafts.")
    prefcheck: PrefcheckConfig = opt(
        PrefcheckConfig(), "Optional check that D_pref picks the rationales the whole validation set would."
    )
    pairs: PairsConfig = opt(PairsConfig(), "Step 3: DPO pairs.")
    align: AlignConfig = opt(AlignConfig(), "Step 3: DPO on the teacher.")
    aligned_teacher: BackendConfig = opt(
        BackendConfig(name="hf", model=""),
        "Engine for the aligned teacher; its model is the align stage's output (leave model empty). "
        "llama_cpp: the align stage also writes an F16 GGUF of the aligned teacher.",
    )
    aligned_teacher_from: str = opt(
        "",
        "Another run directory whose finished align stage gives this run its aligned teacher (the "
        "paper's cross-student and cross-task tables); elicit, prefset, score and pairs are then skipped "
        "and align only records the teacher's origin and sha256 (align/reused.json). Empty: align here.",
    )
    generate: GenerateConfig = opt(GenerateConfig(), "Step 4: tailored data from the aligned teacher.")
    gain: GainConfig = opt(
        GainConfig(), "The direct check of alignment: both teachers' examples scored on the same D_pref."
    )
    train: TrainConfig = opt(TrainConfig(), "Step 4: student SFT.")
    variants: list[str] = opt(
        ["original", "arte"],
        "Students to train and evaluate next to the vanilla one: original (original-teacher data), arte "
        "(the aligned teacher's), and the paper's ablations question_only (aligned questions, original "
        "rationales) and rationale_only (original questions, aligned rationales). Each ablation costs one "
        "teacher's rationales per task, one SFT and one evaluation more.",
    )
    rounds: int = opt(
        1,
        "Iterative ARTE (arte.stages.rounds): round r >= 2 drafts with round r-1's aligned teacher, "
        "scores the drafts on the same D_pref, pairs and aligns again, writes a tailored set and trains "
        "a student (arte_rR), all in rounds/rR/. 1: the paper's single round.",
    )
    round_align_from: Literal["previous", "original"] = opt(
        "previous",
        "What round r >= 2 runs DPO on: previous (default: round r-1's aligned teacher, the model that "
        "drafted this round's pairs, so DPO stays on-policy and the reference is the model being "
        "improved, as in iterative DPO and Montessori-Instruct) or original (the original teacher "
        "again, on this round's pairs: rounds then differ only in who drafted the pairs).",
    )
    evaluate: EvaluateConfig = opt(EvaluateConfig(), "Evaluation of the vanilla and trained students.")
    on_config_change: Literal["stop", "redo"] = opt(
        "stop",
        "When the run directory holds stages made with another config or input (what each stage depends "
        "on is recorded in its done.json): stop, naming the stages and the fields that differ; or redo, "
        "deleting those stages and every stage made from them, and running them again.",
    )

    def __post_init__(self) -> None:
        """Checks of options that only later stages use, so that they fail before the first stage."""
        if not self.tasks:
            raise ValueError("--tasks is empty: name at least one task")
        for flag, value in (
            ("--n_validation", self.n_validation),
            ("--n_test", self.n_test),
            ("--score_max_new_tokens", self.score_max_new_tokens),
        ):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        check_variants(self.variants, self.generate.original)  # arte.stages.training_set.ablations
        if self.aligned_teacher_from and self.generate.original == "drafts":
            raise ValueError(
                "--generate.original drafts takes this run's own elicit drafts and scores, which a run with "
                "--aligned_teacher_from does not make: use --generate.original teacher"
            )
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1 (1 = the paper's single round), got {self.rounds}")
        if self.rounds > 1 and self.aligned_teacher_from:
            raise ValueError(
                "--rounds > 1 aligns the teacher again on this run's own preferences, which a run with "
                "--aligned_teacher_from does not measure: use --rounds 1, or run the rounds in the other run"
            )
        if self.evaluate.n_test > self.n_test:
            raise ValueError(
                f"--evaluate.n_test ({self.evaluate.n_test}) is more than --n_test ({self.n_test}), the test "
                "questions each task keeps: lower --evaluate.n_test or raise --n_test"
            )


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("arte-edge", "torch", "transformers", "trl", "peft", "llama-cpp-python", "numpy", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def task_hash(task) -> str:
    payload = [task.description] + [
        [(e.input, e.target) for e in split] for split in (task.seeds, task.validation, task.test)
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def load_run_tasks(cfg: RunConfig) -> list:
    from arte.stages.prefset import check_task_sizes
    from common.tasks import load_tasks

    tasks = load_tasks(cfg.tasks, n_validation=cfg.n_validation, n_test=cfg.n_test, seed=cfg.seed)
    for t in tasks:
        check_task_sizes(t, cfg.prefset.k)
    return tasks


def llama_cpp_runtime(cfg: RunConfig) -> dict | None:
    """How llama.cpp runs in this pipeline: its own CPU report and, per role that uses the llama_cpp
    backend, the extra-buffer-type decision (off where AMX is reported; common.llama_cpp_loader).
    None when no role uses llama.cpp."""
    roles = {
        "teacher": cfg.teacher,
        "student": cfg.student,
        "aligned_teacher": cfg.aligned_teacher,
        "evaluate.backend": cfg.evaluate.backend,
    }
    used = {role: b for role, b in roles.items() if b.name == "llama_cpp"}
    if not used:
        return None
    from common.llama_cpp_loader import LlamaCppSettingError, decide_extra_bufts, llama_system_info

    try:
        decisions = {role: decide_extra_bufts(b.extra_bufts).as_record() for role, b in used.items()}
    except LlamaCppSettingError as e:
        raise UserError(str(e)) from None
    return {"system_info": llama_system_info(), "extra_bufts": decisions}


def configure_logging() -> None:
    """INFO lines of the stages on stderr; the per-request lines of HTTP clients are left out."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "openai", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def check_models(cfg: RunConfig, stages: list[str]) -> None:
    """The models that the `stages` about to run need, checked before the first one runs (no weights
    loaded): they exist, are not truncated, hold safetensors (or pickles with the opt-in flag)."""
    from arte.models import check_model_spec

    local = ("hf", "llama_cpp", "vllm")
    todo = set(stages)
    t = cfg.teacher
    if "align" in todo and cfg.align.base_model:
        check_model_spec(cfg.align.base_model, "--align.base_model", t.allow_pickle, "--teacher.allow_pickle")
    if ("align" in todo and not cfg.align.base_model) or ("elicit" in todo and t.name in local):
        check_model_spec(t.model, "--teacher.model", t.allow_pickle, "--teacher.allow_pickle")
    if {"train", "evaluate"} & todo or (
        {"prefset", "score", "prefcheck", "gain"} & todo and cfg.student.name in local
    ):
        s = cfg.student
        check_model_spec(s.model, "--student.model", s.allow_pickle, "--student.allow_pickle")


def open_manifest(run: RunDir, cfg: RunConfig, hashes: dict) -> dict:
    """Create or re-open manifest.json with this command's config. Called after `check_run_dir`, so
    every stage's files agree with this config on every field they depend on."""
    path = run.path / "manifest.json"
    manifest = read_json(path) if path.exists() else {"created_at": time.time(), "stages": {}}
    manifest["stages"] = {k: v for k, v in manifest.get("stages", {}).items() if run.is_done(k)}
    manifest.update(config=to_dict(cfg), versions=library_versions(), input_hashes={"tasks": hashes})
    roles = {"teacher": cfg.teacher, "student": cfg.student, "evaluate.backend": cfg.evaluate.backend}
    manifest["allow_pickle"] = [role for role, b in roles.items() if b.allow_pickle]
    manifest["llama_cpp"] = llama_cpp_runtime(cfg)
    write_json_atomic(path, manifest)
    return manifest


def not_needed(cfg: RunConfig) -> dict[str, str]:
    """Stages this config does not run, with the reason: `teacher_reuse.SKIPPED` when the aligned
    teacher is another run's."""
    from arte.stages.teacher_reuse import SKIPPED

    why = f"the aligned teacher comes from {cfg.aligned_teacher_from}"
    return {s: why for s in SKIPPED} if cfg.aligned_teacher_from else {}


def switched_off(cfg: RunConfig) -> set[str]:
    """Optional stages whose size is 0: they run (and record that they skipped), but an `--only`
    list that leaves them out does not have to wait for them."""
    return {
        n
        for n, off in (
            ("prefcheck", cfg.prefcheck.questions == 0),
            ("gain", cfg.gain.n_examples == 0),
            ("rounds", cfg.rounds == 1),
        )
        if off
    }


def stages_to_run(cfg: RunConfig, run: RunDir, only: list[str] | None, skip_done: bool) -> list[str]:
    """The stages this command runs, as the run directory stands now."""
    from arte.stages import STAGE_NAMES

    return [
        n
        for n in STAGE_NAMES
        if (not only or n in only) and not (skip_done and run.is_done(n)) and n not in not_needed(cfg)
    ]


def prepare_run(cfg: RunConfig, run: RunDir, tasks: list, only: list[str] | None, skip_done: bool) -> dict:
    """The main process's work before the first stage, holding the lock: check the recorded stages
    against `cfg` (stop, or delete what must be redone), then open the manifest."""
    hashes = {t.name: task_hash(t) for t in tasks}
    check_run_dir(cfg, run, hashes, rerun=set(stages_to_run(cfg, run, only, skip_done)), only=only)
    return open_manifest(run, cfg, hashes)


def run_pipeline(cfg: RunConfig, only: list[str] | None = None, *, skip_done: bool | None = None) -> dict:
    """Run (or resume) the stages in order; `only` runs just those, after checking their inputs exist.
    A finished stage is skipped, except when named in `only` (`arte STAGE` redoes it) unless
    `skip_done`. Runs in the current process group (`arte.processes`): only its main process writes
    the run directory and holds its lock (`arte.run_lock`); the manifest it returns is None
    elsewhere. Before the first stage the main process checks the recorded stages against `cfg`
    (`arte.provenance`); a refusal stops every process of the group alike."""
    from arte.stages import STAGE_NAMES

    procs = processes.current()
    if procs.is_main:
        configure_logging()
    for name in only or []:
        if name not in STAGE_NAMES:
            raise UserError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    tasks = load_run_tasks(cfg)
    cfg.elicit.check_tasks([t.name for t in tasks])  # strategy prompts of every task: checked now
    load_extra_tasks(cfg, tasks)  # out-of-domain tasks: checked now, read by evaluate
    if cfg.aligned_teacher_from:
        other_align_dir(cfg)  # the other run finished align: checked now, read by align
    skip_done = not only if skip_done is None else skip_done
    run, lock, manifest, error = RunDir(cfg.run_dir), None, None, None
    check_models(cfg, stages_to_run(cfg, run, only, skip_done))  # nothing is written before these checks
    try:
        if procs.is_main:
            try:
                lock = RunLock.acquire(run.create().path)
                manifest = prepare_run(cfg, run, tasks, only, skip_done)
            except (UserError, OSError) as e:  # told to every process: all stop, none waits
                error = str(e) if isinstance(e, UserError) else f"{run.path}: {e.strerror or e}"
        error = procs.share(error)
        if error:
            raise UserError(error)
        _run_stages(cfg, run, tasks, only, skip_done, manifest)
    finally:
        if lock is not None:
            lock.release()
    return manifest


def _run_stages(
    cfg: RunConfig, run: RunDir, tasks: list, only: list[str] | None, skip_done: bool, manifest: dict | None
) -> None:
    """The stage loop; `manifest` (main process only) gets each finished stage's time and counts."""
    from arte.stages import PIPELINE, STAGE_NAMES, stage_name

    procs = processes.current()
    hashes = {t.name: task_hash(t) for t in tasks}
    for i, stage in enumerate(PIPELINE):
        name = stage_name(stage)
        if only and name not in only:
            continue
        if name in not_needed(cfg):
            if procs.is_main:
                print(f"[{name}] not needed: {not_needed(cfg)[name]}")
            continue
        skippable = not_needed(cfg).keys() | switched_off(cfg)
        missing = [p for p in STAGE_NAMES[:i] if not run.is_done(p) and p not in skippable]
        if only and missing:
            raise UserError(
                f"stage {name!r} needs {', '.join(missing)} first: run `arte run` or those stages"
            )
        if run.is_done(name) and skip_done:
            if procs.is_main:
                print(f"[{name}] done earlier, skipped ({run.path / name})")
            continue
        provenance = None
        if procs.is_main:
            print(f"[{name}] running{procs.describe()} ...", flush=True)
            provenance = stage_provenance(cfg, run, stage, hashes)
            run.mark_started(name, provenance)
        procs.barrier()
        started = time.time()
        counts = stage.run(cfg, run, tasks)
        if procs.is_main:
            seconds = round(time.time() - started, 1)
            counts = procs.annotate(counts)
            run.mark_done(name, {"seconds": seconds, "counts": counts, "provenance": provenance})
            manifest["stages"][name] = {"seconds": seconds, "counts": counts}
            write_json_atomic(run.path / "manifest.json", manifest)
            print(f"[{name}] done in {seconds} s: {json.dumps(counts)[:300]}", flush=True)
        procs.barrier()


def run_pipeline_cli(cfg: RunConfig) -> int:
    run_pipeline(cfg)
    summary = Path(cfg.run_dir) / "summary.md"
    if summary.exists():
        print("\n" + summary.read_text())
    print(f"run directory: {Path(cfg.run_dir).resolve()}")
    return 0


def run_stage_cli(cfg: RunConfig, name: str) -> int:
    """`arte NAME`: run one stage of the pipeline with the run config."""
    run_pipeline(cfg, only=[name])
    return 0
