"""Evaluation (the ARTE paper's protocol): a student's target-task accuracy zero-shot and 3-shot, and
paired-bootstrap confidence intervals for accuracies and for differences between students.

Variants compared (`--variants`; docs/method.md, Evaluation): "vanilla" (the untrained student),
"original" (trained on the unaligned teacher's data), "arte" (trained on the aligned teacher's
tailored data) and the paper's ablations "question_only" / "rationale_only" (one teacher's questions
with the other's rationales).
Every variant answers the same test questions, so a difference is estimated *paired*: bootstrap
resamples question indices and uses the same indices for both variants, which removes the
question-difficulty noise the two share. Macro averages resample within each task (stratified).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from arte.backends.base import Backend, SamplingParams
from arte.backends.streaming import stream_groups
from arte.stages.rounds import previous_variant
from common.errors import UserError
from common.prompts import STUDENT_STOP, icl_prompt
from common.tasks.answers import extract_answer
from common.tasks.base import Task

MACRO = "macro"
"""The task name under which the macro average over tasks is reported."""


def shot_prompts(task: Task, shots: int, n_test: int | None = None, rationales: bool = True) -> list[str]:
    """The student prompts for the task's test questions with the first `shots` seeds as
    demonstrations: question, written reasoning and `<ans>target</ans>` where the seed or the task's
    explainer has reasoning (and `rationales` is on), else `<ans>target</ans>` alone
    (`Task.demonstrations`)."""
    if not 0 <= shots <= len(task.seeds):
        raise UserError(f"task {task.name!r} has {len(task.seeds)} seeds; cannot evaluate {shots}-shot")
    demos = task.demonstrations(shots, rationales)
    return [icl_prompt(task.description, demos, ex.input) for ex in task.test[:n_test]]


def evaluate_student(backend: Backend, tasks: Sequence[Task], *args, **kwargs) -> list[dict[str, Any]]:
    """Greedy answers to the first `n_test` test questions of each task (None = all), per shot count;
    the arguments are `evaluate_stream`'s.

    One record per (task, shots, question index): {"task", "shots", "index", "target", "answer"
    (None when no complete `<ans>` tag), "correct" (0/1), "missing_tag" (0/1), "completion"}, in
    task, shots and index order (`evaluate_stream` has them task by task as each is done)."""
    done = dict(evaluate_stream(backend, tasks, *args, **kwargs))
    return [rec for task in tasks for rec in done[task.name]]


def evaluate_stream(
    backend: Backend,
    tasks: Sequence[Task],
    shots: Sequence[int] = (0, 3),
    n_test: int | None = None,
    max_new_tokens: int = 256,
    rationales: bool = True,
    call_size: int = 64,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(task name, its records in shots and index order) as each task's last answer is done. Every
    prompt of every task and shot count goes to the backend as one stream (`arte.backends.streaming`),
    so a batching backend never waits for one task's stragglers before starting the next."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=STUDENT_STOP)
    for task in tasks:
        if not task.test:
            raise UserError(f"task {task.name!r} has no test questions to evaluate on")
    groups = [[p for k in shots for p in shot_prompts(task, k, n_test, rationales)] for task in tasks]
    for t, gens in stream_groups(backend, groups, params, call_size):
        task = tasks[t]
        examples = task.test[:n_test]
        records = []
        for j, gen in enumerate(gens):
            k, i = shots[j // len(examples)], j % len(examples)
            ex, answer = examples[i], extract_answer(gen.text)
            records.append(
                {
                    "task": task.name,
                    "shots": k,
                    "index": i,
                    "target": ex.target,
                    "answer": answer,
                    "correct": int(task.is_correct(gen.text, ex.target)),
                    "missing_tag": int(answer is None),
                    "completion": gen.text,
                }
            )
        yield task.name, records


def _resampled_means(strata: Sequence[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_strata): the mean of each stratum under `n_boot` resamplings of its indices with
    replacement. Stratum i uses its own stream (seed, i); work is chunked to bound memory."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    out = np.empty((n_boot, len(strata)))
    for i, x in enumerate(strata):
        x = np.asarray(x, dtype=float)
        if x.ndim != 1 or len(x) == 0:
            raise ValueError(f"expected a non-empty 1-D array, got shape {x.shape}")
        rng = np.random.default_rng([seed, i])
        chunk = max(1, 4_000_000 // len(x))
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            idx = rng.integers(0, len(x), size=(stop - start, len(x)))
            out[start:stop, i] = x[idx].mean(axis=1)
    return out


def _interval(boot: np.ndarray, ci: float) -> tuple[float, float]:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    low, high = np.quantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(low), float(high)


def _p_value(diff: float, boot: np.ndarray) -> float:
    """Two-sided: twice the fraction of bootstrap differences at or beyond 0 on the side opposite the
    observed one, capped at 1 (0 means below 2 / n_boot)."""
    if diff == 0:
        return 1.0
    other = np.mean(boot <= 0) if diff > 0 else np.mean(boot >= 0)
    return float(min(1.0, 2 * other))


def bootstrap_ci(
    x: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> dict:
    """Mean of `x` (e.g. 0/1 correctness) with a percentile-bootstrap interval: {mean, low, high}."""
    boot = _resampled_means([np.asarray(x, dtype=float)], n_boot, seed)[:, 0]
    low, high = _interval(boot, ci)
    return {"mean": float(np.mean(x)), "low": low, "high": high}


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap of mean(b) - mean(a) over the same questions (a[i] and b[i] answer question i).

    Returns {diff, low, high, p_value}: the observed difference, its percentile interval, and the
    two-sided bootstrap p-value (see `_p_value`).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    return _paired_strata([a], [b], n_boot, seed, ci)


def _paired_strata(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], n_boot: int, seed: int, ci: float
) -> dict:
    """Paired difference of the (macro) mean over strata; one stratum is the plain paired bootstrap."""
    d = [np.asarray(y, dtype=float) - np.asarray(x, dtype=float) for x, y in zip(a, b, strict=True)]
    boot = _resampled_means(d, n_boot, seed).mean(axis=1)
    diff = float(np.mean([x.mean() for x in d]))
    low, high = _interval(boot, ci)
    return {"diff": diff, "low": low, "high": high, "p_value": _p_value(diff, boot)}


def _index_records(records: Sequence[Mapping[str, Any]], variant: str) -> dict[tuple, dict[int, Mapping]]:
    """{(task, shots): {question index: record}}, refusing duplicate records."""
    out: dict[tuple, dict[int, Mapping]] = {}
    for rec in records:
        cell = out.setdefault((rec["task"], int(rec["shots"])), {})
        if rec["index"] in cell:
            raise ValueError(
                f"variant {variant!r}: two records for {rec['task']} {rec['shots']}-shot #{rec['index']}"
            )
        cell[rec["index"]] = rec
    return out


def _accuracy_rows(
    variant: str, cells: dict[tuple, dict[int, Mapping]], n_boot: int, seed: int, ci: float
) -> list:
    rows = []
    for shots in sorted({s for _, s in cells}):
        tasks = [t for t, s in cells if s == shots]
        correct = [np.array([r["correct"] for r in cells[(t, shots)].values()], dtype=float) for t in tasks]
        missing = [np.array([r.get("missing_tag", 0) for r in cells[(t, shots)].values()]) for t in tasks]
        boot = _resampled_means(correct, n_boot, seed)
        for j, t in enumerate(tasks):
            low, high = _interval(boot[:, j], ci)
            rows.append(
                {
                    "variant": variant,
                    "task": t,
                    "shots": shots,
                    "acc": float(correct[j].mean()),
                    "low": low,
                    "high": high,
                    "n": len(correct[j]),
                    "missing_rate": float(missing[j].mean()),
                }
            )
        low, high = _interval(boot.mean(axis=1), ci)
        rows.append(
            {
                "variant": variant,
                "task": MACRO,
                "shots": shots,
                "acc": float(np.mean([c.mean() for c in correct])),
                "low": low,
                "high": high,
                "n": sum(len(c) for c in correct),
                "missing_rate": float(np.mean([m.mean() for m in missing])),
            }
        )
    return rows


def _difference_rows(ref: str, var: str, indexed: dict, n_boot: int, seed: int, ci: float) -> list:
    """var - ref per (task, shots) and macro, over the questions both answered."""
    rows = []
    common = [key for key in indexed[var] if key in indexed[ref]]
    for shots in sorted({s for _, s in common}):
        tasks = [t for t, s in common if s == shots]
        a, b = [], []
        for t in tasks:
            ra, rb = indexed[ref][(t, shots)], indexed[var][(t, shots)]
            idx = sorted(set(ra) & set(rb))
            a.append(np.array([ra[i]["correct"] for i in idx], dtype=float))
            b.append(np.array([rb[i]["correct"] for i in idx], dtype=float))
        keep = [j for j in range(len(tasks)) if len(a[j])]
        base = {"comparison": f"{var} - {ref}", "variant": var, "reference": ref, "shots": shots}
        for j in keep:
            res = _paired_strata([a[j]], [b[j]], n_boot, seed, ci)
            rows.append({**base, "task": tasks[j], **res, "n": len(a[j])})
        if keep:
            res = _paired_strata([a[j] for j in keep], [b[j] for j in keep], n_boot, seed, ci)
            rows.append({**base, "task": MACRO, **res, "n": sum(len(a[j]) for j in keep)})
    return rows


def accuracy_table(
    records_by_variant: Mapping[str, Sequence[Mapping[str, Any]]],
    baseline: str = "vanilla",
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Accuracies and paired differences of evaluated variants (records from `evaluate_student`).

    Returns {"ci", "n_boot", "baseline", "variants", "accuracy": rows, "differences": rows}.
    accuracy rows: {variant, task (or "macro"), shots, acc, low, high, n, missing_rate}.
    difference rows: {comparison "var - ref", variant, reference, task, shots, diff, low, high,
    p_value, n} for every variant against `baseline` (when present), "arte" against "original"
    when both exist, a later round's student (arte_rR) against "original" and the round before's,
    and every other variant (an ablation) against "original" and "arte" against it.
    Records are matched by (task, shots, question index); the macro average is the unweighted mean
    over tasks.
    """
    indexed = {v: _index_records(recs, v) for v, recs in records_by_variant.items()}
    accuracy = [row for v, cells in indexed.items() for row in _accuracy_rows(v, cells, n_boot, seed, ci)]
    comparisons = [(baseline, v) for v in indexed if baseline in indexed and v != baseline]
    if "arte" in indexed and "original" in indexed and baseline != "original":
        comparisons.append(("original", "arte"))
    for v in indexed:  # an ablation against the original teacher's student, and ARTE against it
        before = previous_variant(v)  # a later round (arte.stages.rounds): against the one before
        if before in indexed:
            comparisons += [("original", v)] if "original" in indexed else []
            comparisons.append((before, v))
        elif v not in (baseline, "original", "arte") and "original" in indexed and "arte" in indexed:
            comparisons += [("original", v), (v, "arte")]
    differences = [
        row for ref, v in comparisons for row in _difference_rows(ref, v, indexed, n_boot, seed, ci)
    ]
    return {
        "ci": ci,
        "n_boot": n_boot,
        "baseline": baseline,
        "variants": list(indexed),
        "accuracy": accuracy,
        "differences": differences,
    }


def _columns(rows: Sequence[Mapping[str, Any]], shots: int) -> list[str]:
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["shots"] == shots and r["task"] != MACRO))
    return tasks + [MACRO]


def format_table_markdown(
    table: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
    marks: Mapping[tuple[str, str, int], str] | None = None,
    legend: str = "",
) -> str:
    """Markdown: per shot count, accuracy (%) ± half the CI width per variant × task, then the paired
    differences (points) with their [low, high] interval; * marks an interval that excludes 0.
    `names` shows a variant under another name (with its training set size, say); `marks` appends a
    marker to a difference cell, keyed (comparison, task, shots), explained by `legend` under the
    differences table whenever one is used."""
    names, marks = names or {}, marks or {}
    pct = round(100 * table["ci"])
    out: list[str] = []
    for shots in sorted({r["shots"] for r in table["accuracy"]}):
        acc = [r for r in table["accuracy"] if r["shots"] == shots]
        cols = _columns(acc, shots)
        out += [
            f"### {shots}-shot accuracy (%, ± half the {pct}% bootstrap CI)",
            "",
            "| variant | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        cell = {(r["variant"], r["task"]): r for r in acc}
        for v in table["variants"]:
            vals = [cell.get((v, t)) for t in cols]
            text = [f"{100 * r['acc']:.1f} ± {50 * (r['high'] - r['low']):.1f}" if r else "-" for r in vals]
            out.append(f"| {names.get(v, v)} | " + " | ".join(text) + " |")
        out.append("")
        diffs = [r for r in table["differences"] if r["shots"] == shots]
        if not diffs:
            continue
        dcols = _columns(diffs, shots)
        out += [
            f"### {shots}-shot paired differences (points, [{pct}% CI], * = excludes 0)",
            "",
            "| comparison | " + " | ".join(dcols) + " |",
            "|---" * (len(dcols) + 1) + "|",
        ]
        dcell = {(r["comparison"], r["task"]): r for r in diffs}
        for comp in dict.fromkeys(r["comparison"] for r in diffs):
            text = [_diff_text(dcell.get((comp, t))) + marks.get((comp, t, shots), "") for t in dcols]
            out.append(f"| {comp} | " + " | ".join(text) + " |")
        out.append("")
        if legend and any(key[2] == shots for key in marks):
            out += [legend, ""]
    return "\n".join(out)


def _diff_text(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "-"
    star = "*" if r["low"] > 0 or r["high"] < 0 else ""
    return f"{100 * r['diff']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]{star}"
