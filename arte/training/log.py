"""What a fine-tuning run's log says: first/last/mean of the logged metrics, and the true mean
training loss of a resumed run (transformers under-reports it). Used by
`arte.training.finetune.run_training`."""

from __future__ import annotations

from typing import Any


def summarize_log(log_history: list[dict], metrics: tuple[str, ...]) -> dict[str, Any]:
    """First/last training loss and first/last/mean of each logged metric."""
    out: dict[str, Any] = {}
    for key in ("loss", *metrics):
        values = [e[key] for e in log_history if key in e and "train_runtime" not in e]
        if values:
            name = "train_loss" if key == "loss" else key.replace("/", "_")
            out[f"{name}_first"], out[f"{name}_last"] = values[0], values[-1]
            out[f"{name}_mean"] = sum(values) / len(values)
    return out


def resumed_train_loss(reported: float, steps: int, started_step: int, log_history: list[dict]) -> float:
    """The mean training loss over all `steps`, also after a resume at `started_step`: transformers
    then sums the losses of the new steps only but still divides by every step (0.34 reported for a
    true 0.69 when resumed half-way). The steps before the resume enter with the mean of the losses
    logged for them (each log entry covers the steps since the one before). Unresumed: `reported`."""
    if not started_step or not steps:
        return reported
    logged, last, covered = 0.0, 0, 0
    for entry in log_history:
        step = entry.get("step", 0)
        if "loss" in entry and "train_runtime" not in entry and last < step <= started_step:
            logged += entry["loss"] * (step - last)
            covered += step - last
            last = step
    if not covered:
        return reported
    return (reported * steps + logged / covered * started_step) / steps
