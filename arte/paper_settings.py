"""The paper's settings (arXiv 2406.19227), as one table to compare a run config with.

Sources: /work/shared/ARTE_METHOD.md and docs/method.md (which restate the paper), and the comments of
configs/paper.yaml. Only what the paper states is given a value; a setting it leaves open has
`paper=None` ("not given"), so that it is listed but never reported as a difference. The values are
in this config's units (a flag's value, or a count derived from flags, e.g. n = len(strategies)).
`arte plan` prints the rows where a config differs (`paper_differences`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arte.run_config import RunConfig
from arte.stages.prefset import respondent_settings
from arte.stages.prefset.respondents import respondent_configs


@dataclass(frozen=True)
class PaperSetting:
    """One setting of the paper: the flag (or derived quantity) it maps to and the paper's value."""

    flag: str
    """A dotted RunConfig field ("elicit.m"), or the name of a quantity `value` derives from flags."""
    paper: Any
    """The paper's value, in the config's units; None: the paper does not give one."""
    note: str
    value: Callable[[RunConfig], Any] | None = None
    """This config's value, when it is not the field `flag` itself."""
    matches: Callable[[Any, Any], bool] | None = None
    """(config value, paper value) -> same; default: equal (floats: relative 1e-9)."""

    def config_value(self, cfg: RunConfig) -> Any:
        if self.value is not None:
            return self.value(cfg)
        obj = cfg
        for part in self.flag.split("."):
            obj = getattr(obj, part)
        return obj

    def differs(self, cfg: RunConfig) -> bool:
        if self.paper is None:
            return False
        mine = self.config_value(cfg)
        if self.matches is not None:
            return not self.matches(mine, self.paper)
        if isinstance(mine, float) or isinstance(self.paper, float):
            return not math.isclose(float(mine), float(self.paper), rel_tol=1e-9)
        return mine != self.paper


def _model_named(mine: str, paper: str) -> bool:
    """A hub id or path names the paper's model when it contains its name (case and separators aside)."""

    def squash(s: str) -> str:
        return "".join(c for c in s.lower() if c.isalnum())

    return squash(paper) in squash(mine)


PAPER_SETTINGS: tuple[PaperSetting, ...] = (
    PaperSetting("teacher.model", "Llama-3-70B-Instruct", "the paper's teacher", matches=_model_named),
    PaperSetting("student.model", "Gemma-2B", "the paper's student", matches=_model_named),
    PaperSetting("elicit.m", 250, "draft questions per task (step 1)"),
    PaperSetting(
        "n = len(elicit.strategies)", 4, "rationales per question", value=lambda c: len(c.elicit.strategies)
    ),
    PaperSetting("elicit.temperature", 1.0, "brainstorm sampling temperature"),
    PaperSetting("teacher_worked_example", False, "the paper's prompts have no worked example"),
    PaperSetting("n_validation", 100, "validation questions D_pref is picked from (~100)"),
    PaperSetting("prefset.k", 40, "questions in D_pref"),
    PaperSetting("prefset.shots", [0, 1, 2, 3], "shot settings of each respondent model (IRT rows)"),
    PaperSetting(
        "respondent rows (models x shot settings)",
        20,
        "5 models (Gemma-2B, Gemma-7B, CodeGemma-2B, Qwen1.5-1.8B, MiniCPM-2B; the student is one) x "
        "shots 0-3",
        value=lambda c: respondent_rows(c),
    ),
    PaperSetting("pairs.quantile", 0.25, "question pairs: top vs bottom quarter by question score"),
    PaperSetting("pairs.max_question_pairs_per_task", 50, "question-level DPO pairs per task"),
    PaperSetting("align.method", None, "full DPO or an adapter: not stated"),
    PaperSetting("align.beta", None, "DPO beta: not stated"),
    PaperSetting("align.learning_rate", 1e-7, "the paper's rate for DPO on the 70B teacher"),
    PaperSetting(
        "align effective batch (batch_size x gradient_accumulation_steps)",
        16,
        "pairs per optimizer step, on one process",
        value=lambda c: c.align.batch_size * c.align.gradient_accumulation_steps,
    ),
    PaperSetting("align.epochs", 1.0, "passes over the DPO pairs"),
    PaperSetting("align.warmup_ratio", 0.1, "10% warm-up"),
    PaperSetting("align.lr_scheduler", "cosine", "decay after warm-up"),
    PaperSetting("generate.questions.temperature", 1.0, "the aligned teacher's brainstorm temperature"),
    PaperSetting("generate.n_examples", 250, "tailored examples per task (~250; 6,750 over 27 BBH tasks)"),
    PaperSetting(
        "generate.samples",
        1,
        "one greedy rationale per question; ours samples more only where a label needs them",
    ),
    PaperSetting("train.method", "full", "student SFT updates every weight"),
    PaperSetting("train.learning_rate", 2e-5, "student SFT, Adam"),
    PaperSetting("train.epochs", 1.0, "passes over the tailored set"),
    PaperSetting("train.warmup_ratio", 0.03, "3% warm-up"),
    PaperSetting("train.lr_scheduler", None, "not stated"),
    PaperSetting("evaluate.shots", [0, 3], "zero-shot and 3-shot accuracy"),
    PaperSetting("evaluate.n_test", None, "test questions per task: not stated"),
)
"""The paper's settings, in the order of the pipeline."""


def respondent_rows(cfg: RunConfig) -> int:
    """Rows of the IRT response matrix: every respondent model (the student,
    --prefset.extra_respondents and --prefset.respondents, each once: `respondents.respondent_configs`)
    at every (shots, rotation) setting of `prefset.respondent_settings`."""

    models = respondent_models(cfg)
    return models * len(respondent_settings(cfg.prefset.shots, cfg.prefset.demo_sets))


def respondent_models(cfg: RunConfig) -> int:
    """How many respondent models the prefset stage asks (the student included, duplicates once)."""

    return len(respondent_configs(cfg.student, cfg.prefset))


def _show(value: Any) -> str:
    if value is None:
        return "not given"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def paper_differences(cfg: RunConfig) -> list[dict[str, str]]:
    """{flag, value, paper, note} for every stated setting where `cfg` differs from the paper."""
    return [
        {"flag": s.flag, "value": _show(s.config_value(cfg)), "paper": _show(s.paper), "note": s.note}
        for s in PAPER_SETTINGS
        if s.differs(cfg)
    ]


def not_given(cfg: RunConfig) -> list[dict[str, str]]:
    """{flag, value} of the settings the paper leaves open, with this config's value."""
    return [
        {"flag": s.flag, "value": _show(s.config_value(cfg)), "note": s.note}
        for s in PAPER_SETTINGS
        if s.paper is None
    ]
