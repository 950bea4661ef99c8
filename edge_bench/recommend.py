"""What the benchmark concludes from its measurements: each variant's best speed, its accuracy drop
against its fp32 reference, the recommendation (the fastest variant whose paired 95% drop interval
lies within the allowed drop, or "none" when the intervals cannot decide), and the side-by-side
comparison with a previous report (whose own recommendation line is shown as it was written)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from edge_bench.paired import verdict
from edge_bench.schema import Host, Report, VariantResult, as_report
from edge_bench.stats import questions_needed


def _mean(xs: Sequence[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def best_speed(results: Sequence[dict]) -> dict | None:
    """A variant's figures at its fastest thread count (the report's `best`, edge_bench.schema.Best)
    from its result rows: per thread count, the mean over prompt lengths of decode tokens/s, p50/p90/p99
    ms per token and efficiency; the thread count with the highest decode tokens/s wins."""
    by_threads: dict[int, list[dict]] = {}
    for r in results:
        if r["decode_tokens_per_s"] is not None:
            by_threads.setdefault(r["threads"], []).append(r)
    if not by_threads:
        return None
    rows = []
    for threads, rs in sorted(by_threads.items()):
        pct = [r["per_token_ms"] for r in rs if r["per_token_ms"]]
        rows.append(
            {
                "threads": threads,
                "decode_tokens_per_s": round_or_none(_mean([r["decode_tokens_per_s"] for r in rs]), 3),
                **{f"{p}_ms": round_or_none(_mean([d[p] for d in pct]), 4) for p in ("p50", "p90", "p99")},
                "efficiency": round_or_none(_mean([r["efficiency"] for r in rs]), 4),
            }
        )
    return max(rows, key=lambda row: row["decode_tokens_per_s"])


def accuracy_drop(variant: VariantResult) -> float | None:
    """Reference accuracy - the variant's on the same questions (0 for a reference itself); None when
    either is unknown."""
    if variant.accuracy is None:
        return None
    if variant.reference is None:
        return 0.0 if variant.format == "pytorch" else None
    return None if variant.paired is None else variant.paired.drop


def _is_reference(v: VariantResult) -> bool:
    return v.reference is None and v.format == "pytorch" and v.accuracy is not None


def _judgement(v: VariantResult, tolerance: float) -> str | None:
    """ "reference", or the verdict of its paired drop interval at `tolerance` ("within", "beyond",
    "undecided"), or None (no speed, or nothing to compare with)."""
    if v.best is None:
        return None
    if _is_reference(v):
        return "reference"
    return None if v.paired is None else verdict(v.paired.drop_ci, tolerance)


def decide(report: Report | dict, max_accuracy_drop: float) -> dict:
    """What the report's figures allow: walking from the fastest variant down, variants "beyond" the
    tolerance are passed over; the first variant that is "within" it (or an fp32 reference, drop 0 by
    definition) is the answer, unless a faster variant is still "undecided": then the data cannot
    decide and nothing is recommended (`status` "undecided"; `safe_choice` is the fastest variant
    known to be within). Returns {status: "recommended" | "undecided" | "none", variant, safe_choice,
    undecided (names, fastest first), questions_needed (what deciding the fastest of them takes; None:
    no number of questions can), questions_needed_all (deciding all of them), reason}."""
    variants = as_report(report).variants
    out = {
        "status": "none",
        "variant": None,
        "safe_choice": None,
        "undecided": [],
        "questions_needed": None,
        "questions_needed_all": None,
    }
    if not any(v.accuracy is not None for v in variants):
        return {**out, "reason": "task accuracy was not measured (give --task)"}
    judged = [(v, j) for v in variants if (j := _judgement(v, max_accuracy_drop)) is not None]
    judged.sort(key=lambda vj: -vj[0].best.decode_tokens_per_s)
    undecided: list[VariantResult] = []
    safe = None
    for v, j in judged:
        if j in ("reference", "within"):
            safe = v
            break
        if j == "undecided":
            undecided.append(v)
    out["undecided"] = [v.name for v in undecided]
    out["safe_choice"] = safe.name if safe else None
    if undecided:
        needs = [questions_needed(v.paired.discordant_share, max_accuracy_drop) for v in undecided]
        out["questions_needed"] = needs[0]
        out["questions_needed_all"] = None if None in needs else max(needs)
        return {**out, "status": "undecided", "reason": "the intervals cannot decide"}
    if safe is None:
        unjudged = [v.name for v in variants if _judgement(v, max_accuracy_drop) is None]
        why = f"no variant is shown to be within {max_accuracy_drop * 100:.1f} points of an fp32 reference"
        return {**out, "reason": why + (f" (not compared: {', '.join(unjudged)})" if unjudged else "")}
    return {**out, "status": "recommended", "variant": safe.name, "reason": ""}


def _points(x: float) -> str:
    return f"{x * 100:+.1f}"


def _drop_text(v: VariantResult) -> str:
    p = v.paired
    if p is None:
        return "drop 0 (the reference)"
    lo, hi = p.drop_ci
    return f"drop {_points(p.drop)} [{_points(lo)}, {_points(hi)}] points vs {v.reference}"


def _differ_text(v: VariantResult) -> str:
    """How often its answers differ from its reference's: a variant can pass on accuracy while it
    changes many answers (near chance, wrong answers turn right as often as right ones wrong)."""
    p = v.paired
    return "" if p is None else f"; its answers differ from {v.reference}'s on {p.answers_differ_share:.0%}"


def _accuracy_text(v: VariantResult) -> str:
    ci = v.accuracy_ci
    ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"accuracy {v.accuracy:.3f}{ci_text} on {v.n_questions} questions"


def _undecided_text(report: Report, d: dict, tol_pts: str) -> str:
    n = max(report.variant(name).n_questions for name in d["undecided"])
    shown = "; ".join(f"{name} ({_drop_text(report.variant(name))})" for name in d["undecided"][:3])
    more = f"; and {len(d['undecided']) - 3} more" if len(d["undecided"]) > 3 else ""
    text = (
        f"recommendation: none - at {n} questions the data cannot decide whether the fastest variants "
        f"lose at most {tol_pts} points: {shown}{more}"
    )
    need, need_all = d["questions_needed"], d["questions_needed_all"]
    available = report.task.available_questions
    fastest = d["undecided"][0]
    also = f"; {need_all} for all of them" if need_all not in (None, need) and len(d["undecided"]) > 1 else ""
    if need is None:
        text += f"; no number of questions can show a drop of at most {tol_pts} points for {fastest}"
    elif available is not None and need > available:
        text += (
            f"; deciding {fastest} needs about {need} questions at its observed disagreement{also}, more "
            f"than the task's {available} test questions: no --n_questions can decide with this task "
            "(see --n_test)"
        )
    else:
        text += (
            f"; about {need} questions would decide {fastest} at its observed disagreement{also} "
            f"(--n_questions {need}, or --n_questions auto)"
        )
    if d["safe_choice"]:
        safe = report.variant(d["safe_choice"])
        speed = safe.best.decode_tokens_per_s
        text += (
            f". Within {tol_pts} points at 95%: {safe.name} ({speed:.1f} decode tok/s{_differ_text(safe)})"
        )
    return text


def recommend(report: Report | dict, max_accuracy_drop: float) -> str:
    """One line: the fastest variant (decode tokens/s at its best thread count) whose accuracy drop
    against its fp32 reference is within `max_accuracy_drop` (a fraction: 0.02 = 2 points) at the
    upper end of its 95% paired interval, or why there is none (see `decide`)."""
    report = as_report(report)
    d = decide(report, max_accuracy_drop)
    tol_pts = f"{max_accuracy_drop * 100:.1f}"
    if d["status"] == "none":
        return f"recommendation: none - {d['reason']}"
    if d["status"] == "undecided":
        return _undecided_text(report, d, tol_pts)
    v = report.variant(d["variant"])
    b = v.best
    why = (
        "every faster variant loses more than that"
        if v.paired is None
        else "the fastest variant shown to be within that"
    )
    return (
        f"recommendation: {v.name} - {b.decode_tokens_per_s:.1f} decode tok/s at {b.threads} "
        f"thread(s), p50 {fmt_or_dash(b.p50_ms, '.2f')} ms/token, {_accuracy_text(v)}, {_drop_text(v)} (95%, "
        f"paired), {v.size_bytes / 1e6:.1f} MB; tolerance {tol_pts} points: {why}{_differ_text(v)}"
    )


# ---- comparison with a previous report --------------------------------------------------------------


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _pct(new: float | None, old: float | None) -> str:
    if new is None or old is None or not old:
        return ""
    return f" ({(new / old - 1) * 100:+.1f}%)"


def fmt_or_dash(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _speed(v: VariantResult | None) -> float | None:
    return v.best.decode_tokens_per_s if v is not None and v.best is not None else None


def compare_reports(new: Report | dict, old: Report | dict, max_accuracy_drop: float) -> list[str]:
    """Side-by-side lines: hosts, then per variant decode tokens/s and accuracy (old -> new, deltas),
    then both recommendations. Variants match by name, else by name without the source prefix."""
    new, old = as_report(new), as_report(old)
    lines = []
    for label, rep in (("old", old), ("new", new)):
        h = rep.host
        lines.append(
            f"{label}: {rep.created_at}  {h.cpu_model or '?'}, {h.logical_cores or '?'} cores, "
            f"task {rep.task.name or '?'}"
        )
    lines += _extra_bufts_differ(new, old)
    old_by = {v.name: v for v in old.variants}
    old_short = {_short(v.name): v for v in old.variants}
    width = max([len(v.name) for v in new.variants + old.variants] + [7])
    lines.append(f"{'variant':<{width}}  {'decode tok/s old -> new':>32}  {'accuracy old -> new':>28}")
    matched = set()
    for v in new.variants:
        o = old_by.get(v.name) or old_short.get(_short(v.name))
        if o is not None:
            matched.add(o.name)
        d_new, d_old = _speed(v), _speed(o)
        a_new, a_old = v.accuracy, o and o.accuracy
        delta = f" ({(a_new - a_old) * 100:+.1f} pts)" if a_new is not None and a_old is not None else ""
        speed = f"{fmt_or_dash(d_old, '.1f')} -> {fmt_or_dash(d_new, '.1f')}{_pct(d_new, d_old)}"
        acc = f"{fmt_or_dash(a_old, '.3f')} -> {fmt_or_dash(a_new, '.3f')}{delta}"
        lines.append(f"{v.name:<{width}}  {speed:>32}  {acc:>28}")
    for o in old.variants:
        if o.name not in matched:
            speed = f"{fmt_or_dash(_speed(o), '.1f')} -> -"
            lines.append(f"{o.name:<{width}}  {speed:>32}  {fmt_or_dash(o.accuracy, '.3f') + ' -> -':>28}")
    lines.append("old " + (old.recommendation.line or "recommendation: (none recorded)"))
    lines.append("new " + recommend(new, max_accuracy_drop))
    return lines


def _extra_bufts_differ(new: Report | dict, old: Report | dict) -> list[str]:
    """A warning line when llama.cpp ran with extra buffer types (repacked weights) in one report
    and without them in the other: its speeds are then not like for like. (Takes reports or their
    JSON dicts; only their host is read.)"""
    hosts = [rep.host if isinstance(rep, Report) else Host.from_dict(rep["host"]) for rep in (old, new)]
    got = [h.llama_cpp_extra_bufts for h in hosts]
    if None in got or got[0]["use_extra_bufts"] == got[1]["use_extra_bufts"]:
        return []
    on_off = ["on" if g["use_extra_bufts"] else "off" for g in got]
    return [
        f"warning: llama.cpp extra buffer types were {on_off[0]} (old) and {on_off[1]} (new): "
        "GGUF speeds differ by that setting too, not only by the change compared"
    ]


def round_or_none(x: float | None, nd: int) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)
