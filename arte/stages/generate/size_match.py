"""Like-for-like training sets: every trained variant (original, arte, the ablations) gets the same
number of examples per task, so the students differ in what their data holds, not in how much of it
there is (the paper samples the same number from every set "to ensure a fair comparison").

`generate.size_match`:
- sample (default): per task, a seeded random sample of each set down to the target size, drawn
  *within each label* (largest-remainder allocation of the set's own label shares), so a set that the
  label caps made balanced stays balanced; the kept rows stay in their set's order. The same seed
  gives the same rows; the set, the task and the seed all enter the random stream;
- trim: each set's first rows (selection order);
- report: no matching; the raw sets are trained and the summary says where sizes differ.

The target size per task is `generate.size_match_n` (0: the smallest surviving set's size; a larger
value is capped at that size, since no set can be grown here). Each set's per-task counts record
`size_match` {mode, before, after}: the summary shows both sizes.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.tasks.base import Task

SIZE_MATCH_MODES = ("sample", "trim", "report")

Sets = dict[str, tuple[list[dict], dict]]
"""{set name: (rows, {task: counts})}, as the generate stage holds them."""


def target_sizes(sets: Sets, tasks: list[Task], wanted: int = 0) -> dict[str, int]:
    """Per task: the smallest set's size, or `wanted` where that is smaller (0 = the smallest)."""
    sizes = {t.name: min(sum(r["task"] == t.name for r in rows) for rows, _ in sets.values()) for t in tasks}
    return {t: min(n, wanted) if wanted else n for t, n in sizes.items()}


def _label(row: dict) -> str:
    return str(row.get("label", row.get("target", "")))


def stratified_sample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    """`n` of `rows` drawn within each label in proportion to the label's share (largest remainder,
    ties broken by the label's first row), in the rows' own order."""
    if n >= len(rows):
        return list(rows)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_label[_label(r)].append(i)
    quotas = {lab: n * len(idx) / len(rows) for lab, idx in by_label.items()}
    take = {lab: int(q) for lab, q in quotas.items()}
    order = sorted(by_label, key=lambda lab: (-(quotas[lab] - take[lab]), by_label[lab][0]))
    for lab in order[: n - sum(take.values())]:
        take[lab] += 1
    kept = sorted(i for lab, idx in by_label.items() for i in rng.sample(idx, take[lab]))
    return [rows[i] for i in kept]


def match_sizes(sets: Sets, tasks: list[Task], mode: str, *, seed: int, wanted: int = 0) -> dict[str, int]:
    """Cut every set to the same size per task (see module doc), in place; returns {task: size}
    (the sizes as they are for `report`). Records `size_match` in each set's per-task counts."""
    before = {name: Counter(r["task"] for r in rows) for name, (rows, _) in sets.items()}
    targets = target_sizes(sets, tasks, wanted)
    for name, (rows, counts) in sets.items():
        if mode != "report":
            kept = []
            for t in tasks:
                mine = [r for r in rows if r["task"] == t.name]
                if mode == "trim":
                    kept += mine[: targets[t.name]]
                else:
                    rng = random.Random(f"arte-size-match:{seed}:{name}:{t.name}")
                    kept += stratified_sample(mine, targets[t.name], rng)
            rows[:] = kept
        after = Counter(r["task"] for r in rows)
        for t in tasks:
            got = {"mode": mode, "before": before[name][t.name], "after": after[t.name]}
            counts[t.name]["size_match"] = got
    return targets


def size_match_lines(counts: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown lines "TASK (mode): set before -> after, ..." from the generate stage's counts
    ({task: {set: counts}}); sets without a `size_match` record are left out."""
    lines = []
    for task, by_set in counts.items():
        cells = {name: c["size_match"] for name, c in by_set.items() if c.get("size_match")}
        if not cells:
            continue
        mode = next(iter(cells.values()))["mode"]
        listed = ", ".join(f"{name} {m['before']} -> {m['after']}" for name, m in cells.items())
        lines.append(f"- {task} ({mode}): {listed}")
    return lines
