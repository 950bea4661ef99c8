"""Training that diverged (NaN or inf losses, gradients or weights) stops the stage with a clear
error before anything is saved: a NaN model must never be written as a trained model, evaluated or
exported. `check_training_finite` is called by `arte.training.finetune.run_training` after
`trainer.train()`; `check_learning_rate` by the config sections (finite and > 0; a warning when
implausibly high)."""

from __future__ import annotations

import logging
import math
from typing import Any

from common.errors import UserError

log = logging.getLogger(__name__)

WATCHED = ("loss", "grad_norm")
"""Logged values that are non-finite when training diverges (trl logs loss 0.0 and grad_norm nan)."""
IMPLAUSIBLE_LR = 1e-2
"""Above this a learning rate warns: fine-tuning LLMs uses 1e-7 (DPO) to 1e-3 (LoRA)."""
_warned: set[tuple[str, float]] = set()


def check_learning_rate(value: float, flag: str = "--learning_rate") -> None:
    """ValueError unless `value` is finite and > 0 (naming --learning_rate: the config loader puts
    the section in front); a warning naming `flag` (once per flag and value) above IMPLAUSIBLE_LR."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--learning_rate must be a finite number > 0, got {value}")
    if value > IMPLAUSIBLE_LR and (flag, value) not in _warned:
        _warned.add((flag, value))
        log.warning(
            "%s %g is unusually high (fine-tuning uses 1e-7 to 1e-3): training may diverge to NaN",
            flag,
            value,
        )


def first_non_finite_log(log_history: list[dict[str, Any]]) -> str | None:
    """'grad_norm nan at step 3' for the first logged loss or gradient norm that is not finite."""
    for entry in log_history:
        for key in WATCHED:
            value = entry.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                return f"{key} {value} at step {entry.get('step', '?')}"
    return None


def first_non_finite_weight(model) -> str | None:
    """The name of the first parameter holding a NaN or inf, or None."""
    import torch

    for name, param in model.named_parameters():
        if param.is_floating_point() and not bool(torch.isfinite(param.detach()).all()):
            return name
    return None


def check_training_finite(model, log_history: list[dict[str, Any]], section: str, cfg: Any) -> None:
    """UserError naming what diverged and what to try, when the log or the weights are not finite."""
    what = first_non_finite_log(log_history)
    if what is None:
        bad = first_non_finite_weight(model)
        what = f"weight {bad} is not finite" if bad else None
    if what is None:
        return
    raise UserError(
        f"{section}: training diverged ({what}); no model was saved. Lower --{section}.learning_rate "
        f"(now {cfg.learning_rate:g}) or train in float32 (--{section}.dtype float32), and re-run with "
        "--on_config_change redo"
    )
