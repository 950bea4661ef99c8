"""What the benchmark concludes from its measurements: each variant's best speed, its accuracy drop
against its fp32 reference, the recommendation (the fastest variant within the allowed drop), and
the side-by-side comparison with a previous report."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _mean(xs: Sequence[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def best_speed(results: Sequence[dict]) -> dict | None:
    """A variant's figures at its fastest thread count: per thread count, the mean over prompt lengths
    of decode tokens/s, p50/p90/p99 ms per token and efficiency; the thread count with the highest
    decode tokens/s wins."""
    by_threads: dict[int, list[dict]] = {}
    for r in results:
        if r.get("decode_tokens_per_s") is not None:
            by_threads.setdefault(r["threads"], []).append(r)
    if not by_threads:
        return None
    rows = []
    for threads, rs in sorted(by_threads.items()):
        pct = [r.get("per_token_ms") or {} for r in rs]
        rows.append(
            {
                "threads": threads,
                "decode_tokens_per_s": round_or_none(_mean([r["decode_tokens_per_s"] for r in rs]), 3),
                **{
                    f"{p}_ms": round_or_none(_mean([d.get(p) for d in pct]), 4) for p in ("p50", "p90", "p99")
                },
                "efficiency": round_or_none(_mean([r.get("efficiency") for r in rs]), 4),
            }
        )
    return max(rows, key=lambda row: row["decode_tokens_per_s"])


def accuracy_drop(report: dict, variant: dict) -> float | None:
    """Reference accuracy - the variant's (0 for a reference itself); None when either is unknown."""
    if variant.get("accuracy") is None:
        return None
    if variant.get("reference") is None:
        return 0.0 if variant["format"] == "pytorch" else None
    ref = next((v for v in report["variants"] if v["name"] == variant["reference"]), None)
    if ref is None or ref.get("accuracy") is None:
        return None
    return ref["accuracy"] - variant["accuracy"]


def choose(report: dict, max_accuracy_drop: float) -> tuple[dict | None, str]:
    """(the fastest variant within `max_accuracy_drop` of its fp32 reference or None, the reason)."""
    eligible, skipped = [], []
    for v in report["variants"]:
        drop = accuracy_drop(report, v)
        if v.get("best") is None or drop is None:
            skipped.append(v["name"])
        elif drop <= max_accuracy_drop + 1e-9:
            eligible.append(v)
    if not any(v.get("accuracy") is not None for v in report["variants"]):
        return None, "task accuracy was not measured (give --task)"
    if not eligible:
        why = f"no variant is within {max_accuracy_drop * 100:.1f} points of its fp32 reference"
        return None, why + (f" (no speed or accuracy for: {', '.join(skipped)})" if skipped else "")
    best = max(eligible, key=lambda v: v["best"]["decode_tokens_per_s"])
    return best, f"fastest of {len(eligible)} within {max_accuracy_drop * 100:.1f} points of fp32"


def recommend(report: dict, max_accuracy_drop: float) -> str:
    """One line: the fastest variant (decode tokens/s at its best thread count) whose task accuracy is
    within `max_accuracy_drop` (a fraction: 0.02 = 2 points) of its fp32 reference."""
    v, why = choose(report, max_accuracy_drop)
    if v is None:
        return f"recommendation: none - {why}"
    b, drop = v["best"], accuracy_drop(report, v)
    return (
        f"recommendation: {v['name']} - {b['decode_tokens_per_s']:.1f} decode tok/s at {b['threads']} "
        f"thread(s), p50 {b['p50_ms']:.2f} ms/token, accuracy {v['accuracy']:.3f} "
        f"(drop {drop * 100:+.1f} points), {v['size_bytes'] / 1e6:.1f} MB; {why}"
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


def compare_reports(new: dict, old: dict, max_accuracy_drop: float) -> list[str]:
    """Side-by-side lines: hosts, then per variant decode tokens/s and accuracy (old -> new, deltas),
    then both recommendations. Variants match by name, else by name without the source prefix."""
    lines = []
    for label, rep in (("old", old), ("new", new)):
        h = rep.get("host", {})
        lines.append(
            f"{label}: {rep.get('created_at', '?')}  {h.get('cpu_model', '?')}, "
            f"{h.get('logical_cores', '?')} cores, task {rep['task'].get('name', '?')}"
        )
    lines += _extra_bufts_differ(new, old)
    old_by = {v["name"]: v for v in old["variants"]}
    old_short = {_short(v["name"]): v for v in old["variants"]}
    width = max([len(v["name"]) for v in new["variants"] + old["variants"]] + [7])
    lines.append(f"{'variant':<{width}}  {'decode tok/s old -> new':>32}  {'accuracy old -> new':>28}")
    matched = set()
    for v in new["variants"]:
        o = old_by.get(v["name"]) or old_short.get(_short(v["name"]))
        if o is not None:
            matched.add(o["name"])
        d_new = (v.get("best") or {}).get("decode_tokens_per_s")
        d_old = ((o or {}).get("best") or {}).get("decode_tokens_per_s")
        a_new, a_old = v.get("accuracy"), (o or {}).get("accuracy")
        delta = f" ({(a_new - a_old) * 100:+.1f} pts)" if a_new is not None and a_old is not None else ""
        speed = f"{fmt_or_dash(d_old, '.1f')} -> {fmt_or_dash(d_new, '.1f')}{_pct(d_new, d_old)}"
        acc = f"{fmt_or_dash(a_old, '.3f')} -> {fmt_or_dash(a_new, '.3f')}{delta}"
        lines.append(f"{v['name']:<{width}}  {speed:>32}  {acc:>28}")
    for o in old["variants"]:
        if o["name"] not in matched:
            d_old = (o.get("best") or {}).get("decode_tokens_per_s")
            speed = f"{fmt_or_dash(d_old, '.1f')} -> -"
            lines.append(
                f"{o['name']:<{width}}  {speed:>32}  {fmt_or_dash(o.get('accuracy'), '.3f') + ' -> -':>28}"
            )
    lines.append("old " + recommend(old, max_accuracy_drop))
    lines.append("new " + recommend(new, max_accuracy_drop))
    return lines


def _extra_bufts_differ(new: dict, old: dict) -> list[str]:
    """A warning line when llama.cpp ran with extra buffer types (repacked weights) in one report
    and without them in the other: its speeds are then not like for like."""
    got = [(rep.get("host") or {}).get("llama_cpp_extra_bufts") for rep in (old, new)]
    if None in got or got[0]["use_extra_bufts"] == got[1]["use_extra_bufts"]:
        return []
    on_off = ["on" if g["use_extra_bufts"] else "off" for g in got]
    return [
        f"warning: llama.cpp extra buffer types were {on_off[0]} (old) and {on_off[1]} (new): "
        "GGUF speeds differ by that setting too, not only by the change compared"
    ]


def round_or_none(x: float | None, nd: int) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)
