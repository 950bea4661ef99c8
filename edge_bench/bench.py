"""The benchmark run: every variant x thread count x prompt length, then accuracy, then the report.

For each variant and thread count (pinned to that many of the quietest CPUs when `pin`), the runtime
is loaded (timed), and for each prompt length:
- the machine is checked for other load (`host.machine_busy`, recorded per configuration);
- one greedy generation is warmed up, then repeated until both `min_repeats` runs and `min_seconds`
  (`latency.benchmark_generation`): TTFT, prefill and decode tokens/s, per-token p50/p90/p99;
- peak RSS is measured in a fresh process (`memory.measure_peak_rss`, mmap recorded);
- efficiency = decode tokens/s x weight bytes per token / read bandwidth, measured with the same
  CPUs and thread count just before and just after the block (`bandwidth.BandwidthMeter`).
llama.cpp runs with flash attention (its own default), extra buffer types decided by
`common.llama_cpp_loader` (off where llama.cpp reports AMX) and, where `hugepages` and the process's
environment allow (`edge_bench.hugepages`; `arte bench` arranges it), with the GGUF read into
huge-page memory instead of mapped. Every row records the runtime settings it ran with.
At the largest thread count the loaded runtime also answers the task's test questions (accuracy) and
is compared token by token with its fp32 reference (top-1 agreement, KL); references run first
(`edge_bench.accuracy_runs`). With `--n_questions auto` those are a pilot, and the variants that
need it answer more questions afterwards (`edge_bench.auto_questions`). The report then holds each
accuracy with its interval, the paired drop against the reference on the same questions
(`edge_bench.paired`), fidelity from this run and from the export's manifest (`edge_bench.fidelity`)
and a recommendation that respects the intervals (`edge_bench.recommend`).

`pin`, `min_repeats`, `min_seconds` and `hugepages` are fields of the run's `BenchSettings`
(edge_bench.settings), validated there for `arte bench` and Python callers alike.

Speed prompts are the task's prompts (or a filler text) tokenized by the variant's harness tokenizer
and cut or cycled to each prompt length, so variants of one model all receive the same token ids.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from common.llama_cpp_loader import decide_extra_bufts
from edge_bench import hugepages
from edge_bench.accuracy import load_tokenizer, task_prompts
from edge_bench.accuracy_runs import AccuracyRuns, export_fidelity
from edge_bench.auto_questions import AUTO_PILOT, extend_accuracy, plan_questions
from edge_bench.bandwidth import BandwidthMeter
from edge_bench.fidelity import rank_accuracy, rank_fidelity
from edge_bench.host import (
    describe_host,
    llama_cpp_system_info,
)
from edge_bench.measure import BANDWIDTH_UNSTABLE, bench_threads, log, prompt_ids
from edge_bench.recommend import accuracy_drop, best_speed, compare_reports, decide, recommend
from edge_bench.report import STATISTICS, load_report, write_report
from edge_bench.schema import SCHEMA_VERSION, Comparison, Rankings, Recommendation, Report
from edge_bench.settings import AUTO, BenchSettings
from edge_bench.variants import Variant, discover_variants

FILLER = "The quick brown fox jumps over the lazy dog. " * 8
"""Speed prompt text when no task is given."""


def _reference_first(variants: list[Variant]) -> list[Variant]:
    return sorted(variants, key=lambda v: not v.is_reference)


def _variant_entry(v: Variant) -> dict:
    d = v.to_json()
    d.update(
        accuracy=None,
        accuracy_ci=None,
        correct=None,
        n_questions=0,
        missing_tag=None,
        top1_agreement=None,
        top1_steps=0,
        accuracy_drop=None,
        paired=None,
        fidelity=export_fidelity(d),
        accuracy_threads=None,
        accuracy_seconds=None,
        best=None,
        error=None,
    )
    return d


def bench_variant(
    v: Variant,
    s: BenchSettings,
    speed_text: str,
    tokenizers: dict,
    acc: AccuracyRuns | None,
    meter: BandwidthMeter | None,
    warnings: list[str],
) -> tuple[dict, list[dict]]:
    """(variant entry, result rows) of one variant; an error is recorded in the entry, not raised."""
    entry, rows = _variant_entry(v), []
    acc_threads = max(s.threads)
    try:
        key = (v.runtime == "fake", str(v.tokenizer))
        if key not in tokenizers:
            tokenizers[key] = load_tokenizer(v.runtime, v.tokenizer)
        tok = tokenizers[key]
        prompts = [prompt_ids(tok, speed_text, n) for n in s.prompt_lengths]
        for t in s.threads:
            run_acc = None
            if acc and t == acc_threads:
                run_acc = acc.runner(v.name, v.reference, tok, 0, acc.first_n)
            new_rows, _ = bench_threads(v, t, prompts, s, meter, warnings, run_acc)
            rows += new_rows
        if acc:
            entry["accuracy_threads"] = acc_threads
    except Exception as e:  # noqa: BLE001 - one broken variant must not cost the others' figures
        entry["error"] = f"{type(e).__name__}: {e}"
        warnings.append(f"{v.name}: not benchmarked: {entry['error']}")
        log(f"{v.name}: ERROR {entry['error']}")
    entry["best"] = best_speed(rows)
    return entry, rows


def _load_accuracy(task: str | None, s: BenchSettings, warnings: list[str]) -> AccuracyRuns | None:
    if not task:
        return None
    from common.tasks import load_task

    t = load_task(task, n_validation=s.n_validation, n_test=s.n_test, seed=s.seed)
    if not t.test:
        raise ValueError(f"task {t.name!r} has no test questions (see --n_test)")
    auto = s.n_questions == AUTO
    items = task_prompts(t, s.shots, None if auto else s.n_questions)
    if not auto and s.n_questions > len(items):
        warnings.append(
            f"--n_questions {s.n_questions}: the task has {len(items)} test questions (--n_test): all used"
        )
    return AccuracyRuns(t, items, min(AUTO_PILOT, len(items)) if auto else len(items), s)


def _meter(s: BenchSettings) -> BandwidthMeter | None:
    if not s.bandwidth_mb:
        return None
    log(f"memory read bandwidth: {s.bandwidth_mb} MB buffer, measured around every variant x threads")
    return BandwidthMeter(size_bytes=s.bandwidth_mb << 20, repeats=5)


def _hugepages_warning(variants: list[Variant], s: BenchSettings) -> list[str]:
    if not (s.hugepages and any(v.runtime == "llama_cpp" for v in variants)):
        return []
    mode = hugepages.thp_mode()
    if hugepages.hugepages_active() or mode is None:  # active, or not Linux: nothing to say
        return []
    how = (
        "the kernel has them off (THP 'never')"
        if mode == "never"
        else "run under GLIBC_TUNABLES=glibc.malloc.hugetlb=1, as `arte bench` does itself"
    )
    return [f"huge pages not active, so llama.cpp maps its weights in 4 KiB pages and decodes slower: {how}"]


def _host(variants: list[Variant], s: BenchSettings) -> dict:
    host = describe_host()
    host["pinned"] = s.pin
    host["hugepages"] = hugepages.describe()
    if any(v.runtime == "llama_cpp" for v in variants):
        host["llama_cpp_system_info"] = llama_cpp_system_info()
        host["llama_cpp_extra_bufts"] = decide_extra_bufts(s.extra_bufts).as_record()
    return host


def _summary_warnings(report: Report) -> list[str]:
    out, results = [], report.results
    busy = [r for r in results if r.busy]
    if busy:
        out.append(
            f"machine busy during {len(busy)} of {len(results)} configurations "
            f"({busy[0].busy_detail['warning']})"
        )
    unstable = [r for r in results if r.bandwidth_unstable]
    if unstable:
        out.append(
            f"memory bandwidth changed by more than {BANDWIDTH_UNSTABLE - 1:.0%} around "
            f"{len(unstable)} of {len(results)} configurations (see bandwidth_before_after): their "
            "efficiency is a lower bound"
        )
    capped = [r for r in results if r.capped]
    if capped:
        out.append(f"{len(capped)} configuration(s) hit the repeat cap before min_seconds")
    for v in report.variants:
        if v.accuracy is not None and v.format != "pytorch" and v.reference is None:
            out.append(f"{v.name}: no fp32 reference (manifest source missing?): no accuracy drop, no top-1")
    return out


def bench_report(
    dirs: Sequence[str | Path | Variant],
    task: str | None,
    out_dir: str | Path,
    settings: BenchSettings | None = None,
    *,
    compare: str | Path | None = None,
) -> Report:
    """Benchmark every variant found at `dirs` (see edge_bench.variants) with `settings` (validated
    when built; default: `BenchSettings()`) and write OUT/report.json, OUT/report.md,
    OUT/answers.jsonl and the PNG plots; return the report. `task`: accuracy on its test questions
    (None: speed only); `compare`: a previous report to compare with."""
    if settings is None:
        settings = BenchSettings()
    if not isinstance(settings, BenchSettings):
        raise TypeError(f"run_bench: settings must be a BenchSettings, got {type(settings).__name__}")
    s = settings if type(settings) is BenchSettings else BenchSettings.of(settings)  # config: its fields only
    out_dir = Path(out_dir)
    variants = _reference_first(discover_variants(dirs))
    if not variants:
        raise ValueError(f"no variants found at {list(map(str, dirs))}")
    warnings: list[str] = _hugepages_warning(variants, s)
    acc = _load_accuracy(task, s, warnings)
    speed_text = "\n".join(p for p, _ in acc.items[: acc.first_n]) if acc else FILLER
    host, meter = _host(variants, s), _meter(s)
    entries, results, tokenizers = [], [], {}
    try:
        for v in variants:
            entry, rows = bench_variant(v, s, speed_text, tokenizers, acc, meter, warnings)
            entries.append(entry)
            results += rows
    finally:
        if meter:
            meter.close()
    plan = None
    if acc and s.n_questions == AUTO:
        plan = plan_questions(acc, variants, s)
        log(f"--n_questions auto: {plan['chosen']} questions (limited by {plan['limited_by']})")
        extend_accuracy(acc, variants, plan, s, tokenizers, warnings)
    report = _assemble(
        entries, results, s, task, acc, plan, host, meter.summary() if meter else None, warnings
    )
    if compare:
        lines = compare_reports(report, load_report(compare), s.max_accuracy_drop)
        report.comparison = Comparison(previous=str(compare), lines=lines)
    _write(report, out_dir, acc)
    return report


def run_bench(
    dirs: Sequence[str | Path | Variant],
    task: str | None,
    out_dir: str | Path,
    settings: BenchSettings | None = None,
    *,
    compare: str | Path | None = None,
) -> dict:
    """`bench_report`, its report returned as report.json's dict (edge_bench.schema)."""
    return bench_report(dirs, task, out_dir, settings, compare=compare).to_dict()


def _assemble(entries, results, s: BenchSettings, task, acc, plan, host, bandwidth, warnings) -> Report:
    """The typed report of the run's raw records: checked against edge_bench.schema here, so that a
    record the schema does not describe fails the run before anything is written."""
    if acc:
        for e in entries:
            e.update(acc.variant_fields(e, s.max_accuracy_drop))
    task_record = {
        "spec": task,
        "name": acc.task.name if acc else None,
        "shots": s.shots,
        "n_questions": max((acc.answered(e["name"]) for e in entries), default=0) if acc else 0,
        "available_questions": acc.available if acc else None,
        "max_new_tokens": s.max_new_tokens,
        "threads": max(s.threads),
        "auto": plan,
    }
    report = Report.from_dict(
        {
            "schema_version": SCHEMA_VERSION,
            "tool": "edge_bench",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": dataclasses.asdict(s),
            "task": task_record,
            "statistics": STATISTICS,
            "host": host,
            "bandwidth": bandwidth,
            "variants": entries,
            "results": results,
            "rankings": {},
            "recommendation": {},
            "warnings": [],
        }
    )
    for v in report.variants:
        v.accuracy_drop = accuracy_drop(v)
    report.rankings = Rankings(
        fidelity=rank_fidelity(report.variants), accuracy=rank_accuracy(report.variants)
    )
    report.warnings = warnings + _summary_warnings(report)
    d = decide(report, s.max_accuracy_drop)
    report.recommendation = Recommendation(
        variant=d["variant"],
        status=d["status"],
        safe_choice=d["safe_choice"],
        undecided=d["undecided"],
        questions_needed=d["questions_needed"],
        questions_needed_all=d["questions_needed_all"],
        max_accuracy_drop=s.max_accuracy_drop,
        line=recommend(report, s.max_accuracy_drop),
    )
    return report


def _write(report: Report, out_dir: Path, acc: AccuracyRuns | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    if report.config["plots"]:
        from edge_bench.plots import write_plots

        plots = [p.name for p in write_plots(report, out_dir)]
    if acc:
        (out_dir / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in acc.answers()))
    write_report(report, out_dir, plots)
