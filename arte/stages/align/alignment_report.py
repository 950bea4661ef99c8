"""Did alignment move the teacher? The summary's section on it: the preference gain (gain/gain.json,
`arte.stages.gain`) and the DPO trainer's reward statistics (align/teacher/align_stats.json).

trl's DPOTrainer logs, per logging step and on that step's training batch: rewards/margins, the mean
of beta x (policy - reference log-ratio of chosen) - (same of rejected), and rewards/accuracies, the
share of pairs whose chosen completion gets the larger reward. They say how well DPO fitted its
pairs, not whether the student gains: that is the preference gain's question.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.records import read_json

LATE_SHARE = 0.25
"""The last quarter of the logged steps gives the 'late' mean (less noisy than the last step alone)."""


def dpo_rewards(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Reward margin and accuracy of a DPO run (align_stats.json): first, last, mean and late mean
    (over the last LATE_SHARE of the logged steps), with the steps, pairs and beta."""
    out: dict[str, Any] = {
        "steps": stats.get("steps"),
        "pairs": stats.get("pairs"),
        "beta": (stats.get("config") or {}).get("beta"),
    }
    log = [e for e in stats.get("log", []) if "rewards/margins" in e]
    late = log[-max(1, round(LATE_SHARE * len(log))) :] if log else []
    for key in ("margins", "accuracies"):
        name = f"rewards_{key}"
        for part in ("first", "last", "mean"):
            out[f"{key}_{part}"] = stats.get(f"{name}_{part}")
        out[f"{key}_late"] = sum(e[f"rewards/{key}"] for e in late) / len(late) if late else None
    return out


def alignment_summary(run_path: Path) -> dict[str, Any]:
    """{"preference_gain": gain/gain.json or None, "dpo": dpo_rewards or None} of a run directory."""
    gain, stats = run_path / "gain" / "gain.json", run_path / "align" / "teacher" / "align_stats.json"
    return {
        "preference_gain": read_json(gain) if gain.is_file() else None,
        "dpo": dpo_rewards(read_json(stats)) if stats.is_file() else None,
    }


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _interval_text(g: Mapping[str, Any]) -> str:
    star = "*" if g["low"] > 0 or g["high"] < 0 else ""
    return f"{_pts(g['gain'])} [{_pts(g['low'])}, {_pts(g['high'])}]{star}"


def _gain_rows(gains: Mapping[str, Any]) -> list[str]:
    head = "| task | aligned examples: mean score (n) | reference: mean score (n) | gain (points) [95% CI] |"
    out = []
    for name, title in (
        ("vs_drafts", "original teacher's drafts"),
        ("vs_original_examples", "original teacher's examples"),
    ):
        g = gains.get(name)
        if not g:
            continue
        out += [f"Against the {title}:", "", head, "|---|---|---|---|"]
        for task, t in g["tasks"].items():
            out.append(
                f"| {task} | {100 * t['aligned']:.1f} ({t['n_aligned']}) | {100 * t['reference']:.1f} "
                f"({t['n_reference']}) | {_interval_text(t)} |"
            )
        out += [f"| macro | | | {_interval_text(g)} |", ""]
    return out


def d_pref_line(d_pref: Mapping[str, Any] | None) -> str:
    """Which D_pref questions the gain was measured on (gain.json's "d_pref")."""
    if not d_pref:
        return "D_pref used for the gain: not recorded."
    k = ", ".join(f"{t} {n}" for t, n in d_pref["questions_per_task"].items())
    if d_pref["held_out"]:
        return (
            f"Held-out gain: measured on the half of each task's D_pref ({k} questions) that no draft "
            f"score, hence no DPO pair, used (split seeded with --seed {d_pref['split_seed']})."
        )
    return (
        f"In-sample gain: measured on the same D_pref ({k} questions) whose scores built the DPO pairs "
        "(--gain.held_out true measures it on a held-out half)."
    )


def alignment_markdown(data: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the section (empty when neither file exists)."""
    gains, dpo = data.get("preference_gain"), data.get("dpo")
    if not gains and not dpo:
        return []
    out = ["## Did alignment move the teacher towards the student?", ""]
    if gains and gains.get("skipped"):
        out += [f"- preference gain: not measured ({gains['skipped']})", ""]
    elif gains:
        out += [
            "Preference gain: each example as the one-shot demonstration, the student's accuracy on the "
            "task's D_pref (the score stage's measure, same D_pref, same student); gain = aligned - "
            "reference, macro = mean over tasks; bootstrap resamples questions within each task, a "
            "draft's rationales together (* = the interval excludes 0).",
            "",
            d_pref_line(gains.get("d_pref")),
            "",
        ] + _gain_rows(gains)
        if gains.get("vs_drafts"):
            out += [
                "The drafts went through no filter; both teachers' examples went through generate's (labels "
                "checked, tags repaired, naive prompt): the like-for-like gain is the second.",
                "",
            ]
        same = gains.get("identical_examples")
        if same:
            cells = [
                f"{t} {c['identical']} of {c['arte']} (original {c['original']})" for t, c in same.items()
            ]
            out += [
                "Examples both teachers wrote identically (question and rationale): " + "; ".join(cells),
                "",
            ]
    if dpo:

        def show(key: str, fmt: str) -> str:
            v = dpo.get(key)
            return "-" if v is None else format(v, fmt)

        out += [
            f"DPO on the teacher ({dpo['pairs']} pairs, {dpo['steps']} steps, beta {dpo['beta']}), on the "
            "training batches:",
            "",
            "| reward statistic | first step | last step | mean | last quarter |",
            "|---|---|---|---|---|",
        ]
        for key, name, fmt in (
            ("accuracies", "accuracy (chosen > rejected)", ".2f"),
            ("margins", "margin", ".3f"),
        ):
            cells = [show(f"{key}_{p}", fmt) for p in ("first", "last", "mean", "late")]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return out
