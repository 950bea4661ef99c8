"""`--n_questions auto`: how many test questions the accuracy decision needs, within a time budget.

1. Pilot: the sweep answers the first AUTO_PILOT questions with every variant (as for a fixed
   --n_questions), timing each variant's seconds per question.
2. Plan (`plan_questions`): for every variant compared with an fp32 reference, the questions its
   tolerance needs at its observed disagreement with the reference (`edge_bench.stats.
   questions_needed`: an 80% chance of showing the drop within --max_accuracy_drop if the variant is
   as accurate as fp32). The target is the largest of those, capped by what --accuracy_budget_s
   affords at the pilot's speeds (references and the variants still in the running answer the extra
   questions) and by the task's test split. A variant already shown to lose more than the tolerance
   (verdict "beyond") is not extended: more questions cannot make it recommendable, only confirm it.
   Variants already "within" are extended like the others, so that stopping never depends on a
   favourable early result (that would inflate the chance of recommending a worse variant).
3. Extension (`extend_accuracy`): each of those variants is loaded again at the accuracy thread
   count (pinned like the sweep) and answers the remaining questions, references first.
"""

from __future__ import annotations

import contextlib
import math

from edge_bench.accuracy_runs import AccuracyRuns
from edge_bench.host import pinned, quietest_cpus
from edge_bench.latency import measure_load
from edge_bench.measure import log, runtime_options
from edge_bench.paired import paired_accuracy
from edge_bench.settings import BenchSettings
from edge_bench.stats import questions_needed
from edge_bench.variants import Variant

AUTO_PILOT = 20
"""Questions every variant answers before the number is chosen."""


def plan_questions(acc: AccuracyRuns, variants: list[Variant], s: BenchSettings) -> dict:
    """The auto plan (recorded as the report's task.auto): per variant its pilot verdict, the questions
    it needs and its seconds per question; the number chosen and what limited it."""
    available, pilot = len(acc.items), acc.first_n
    per_q = {v.name: acc.runs[v.name]["seconds"] / pilot for v in variants if acc.answered(v.name) == pilot}
    needed, verdicts, extend = {}, {}, set()
    for v in variants:
        ref = v.reference
        if v.name not in per_q or not ref or ref not in per_q:
            continue
        p = paired_accuracy(acc.runs[ref]["records"], acc.runs[v.name]["records"], s.max_accuracy_drop)
        verdicts[v.name] = p["verdict"]
        needed[v.name] = questions_needed(p["discordant_share"], s.max_accuracy_drop)
        if p["verdict"] != "beyond" and needed[v.name] is not None:
            extend |= {v.name, ref}
    spent = sum(acc.runs[name]["seconds"] for name in per_q)
    reachable = [n for name, n in needed.items() if name in extend]
    target = max(reachable) if reachable else pilot
    cost = sum(per_q[name] for name in extend)
    extra = math.floor((s.accuracy_budget_s - spent) / cost) if cost > 0 else available
    affordable = pilot + max(0, extra)
    chosen = max(pilot, min(target, affordable, available))
    limits = {"needed": target, "budget": affordable, "task": available}
    plan = {
        "pilot": pilot,
        "budget_s": s.accuracy_budget_s,
        "pilot_seconds": round(spent, 2),
        "seconds_per_question": {k: round(x, 4) for k, x in per_q.items()},
        "pilot_verdicts": verdicts,
        "needed": needed,
        "target": target,
        "affordable": affordable,
        "available": available,
        "chosen": chosen,
        "limited_by": min(limits, key=lambda k: (limits[k], list(limits).index(k))),
        "extended": [v.name for v in variants if v.name in extend] if chosen > pilot else [],
    }
    plan["estimated_seconds"] = round(spent + (chosen - pilot) * cost, 1)
    return plan


def extend_accuracy(
    acc: AccuracyRuns,
    variants: list[Variant],
    plan: dict,
    s: BenchSettings,
    tokenizers: dict,
    warnings: list[str],
) -> None:
    """Answer questions [pilot, chosen) with every variant the plan extends, references first; a
    variant that fails keeps its pilot answers (and a warning)."""
    start, stop = plan["pilot"], plan["chosen"]
    threads = max(s.threads)
    ordered = sorted((v for v in variants if v.name in plan["extended"]), key=lambda v: not v.is_reference)
    for v in ordered:
        if v.reference and acc.answered(v.reference) < stop:
            warnings.append(f"{v.name}: not extended past {start} questions: its reference was not")
            continue
        key = (v.runtime == "fake", str(v.tokenizer))
        run = acc.runner(v.name, v.reference, tokenizers[key], start, stop)
        kept = list(acc.runs[v.name]["records"])
        log(f"{v.name}: accuracy on questions {start}-{stop - 1} (--n_questions auto)")
        try:
            with pinned(quietest_cpus(threads)) if s.pin else contextlib.nullcontext():
                rt, _ = measure_load(v.runtime, v.path, threads, **runtime_options(v.runtime, s))
                try:
                    run(rt)
                finally:
                    rt.close()
        except Exception as e:  # noqa: BLE001 - the pilot's figures stay valid
            acc.runs[v.name]["records"] = kept
            warnings.append(f"{v.name}: not extended past {start} questions: {type(e).__name__}: {e}")
