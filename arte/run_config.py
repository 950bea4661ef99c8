"""The run's schema: `RunConfig` (every stage's section and the checks across them), the default
tasks, how a run loads its tasks, and the logging set-up every entry point shares.

Below the stages' own config sections and above nothing: stage modules import `RunConfig` for their
type hints only; the orchestrator (`arte.pipeline`) and the stage loop (`arte.stage_loop`) import it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Literal

from arte.backends import BackendConfig
from arte.example_lengths import check_example_lengths
from arte.stages.align import AlignConfig
from arte.stages.elicit import ElicitConfig
from arte.stages.evaluate import EvaluateConfig
from arte.stages.gain import GainConfig
from arte.stages.generate import GenerateConfig
from arte.stages.generate.ablations import check_variants
from arte.stages.pairs import PairsConfig
from arte.stages.prefcheck import PrefcheckConfig
from arte.stages.prefset import PrefsetConfig, check_task_sizes
from arte.stages.train import TrainConfig
from common.config import opt

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
    allow_teacher_mismatch: bool = opt(
        False,
        "With --aligned_teacher_from: accept a reused teacher aligned from another --teacher.model than "
        "this run's (the original-teacher baseline is then not the aligned teacher's starting point, and "
        "the summary says so). False: such a mismatch is an error.",
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
    round_ablations: bool = opt(
        False,
        "Rounds r >= 2 also draw the ablation sets that --variants names (question_only, rationale_only). "
        "False: a round draws only its tailored set (and its baseline, read back from the round before), "
        "so size matching never cuts arte_rR to an ablation set nobody trains.",
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
        if not str(self.run_dir).strip():
            raise ValueError("--run_dir is empty: give the run's directory (e.g. runs/NAME)")
        if not self.tasks:
            raise ValueError("--tasks is empty: name at least one task")
        for flag, value in (
            ("--n_validation", self.n_validation),
            ("--n_test", self.n_test),
            ("--score_max_new_tokens", self.score_max_new_tokens),
        ):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        check_variants(self.variants, self.generate.original)  # arte.stages.generate.ablations
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


def task_hash(task) -> str:
    payload = [task.description] + [
        [(e.input, e.target) for e in split] for split in (task.seeds, task.validation, task.test)
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def load_run_tasks(cfg: RunConfig) -> list:
    from common.tasks import load_tasks

    tasks = load_tasks(cfg.tasks, n_validation=cfg.n_validation, n_test=cfg.n_test, seed=cfg.seed)
    for t in tasks:
        check_task_sizes(t, cfg.prefset.k)
    check_example_lengths(tasks, cfg)  # a question longer than a model's context: refused now
    return tasks


def configure_logging() -> None:
    """INFO lines of the stages on stderr; the per-request lines of HTTP clients are left out."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "openai", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
