"""The report's schema, in code: one dataclass per object of report.json, in the order its keys are
written. `Report.from_dict` checks a loaded report against it (a missing or ill-typed key is refused
with its path: "report.json: variants[2].best.p50_ms: expected a number, got str"); `to_dict` writes
the same JSON layout back. Keys this edge_bench does not know are ignored.

Units: times in ms unless named *_s, speeds in tokens/s, sizes in bytes, accuracies and drops as
fractions, intervals as [low, high] at 95%.

schema_version 2 is bumped when a field changes meaning or goes away (or a required one is added).
2 added accuracy intervals, paired drops, fidelity, rankings and the recommendation status; version 1
reports are still read (for --compare), with those fields empty. A field without a default is
required; the others were added later or are optional, and take their default when absent.
"""

from __future__ import annotations

from typing import Any

from edge_bench.json_records import OMIT_NONE, JsonRecord, ReportError, field_default, record

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Versions `load_report` reads (for --compare); reports are written as SCHEMA_VERSION only."""

# ---- the report's objects ---------------------------------------------------------------------------


@record
class LatencyMs(JsonRecord):
    """A latency distribution in ms (edge_bench.latency.LatencyStats.ms)."""

    n: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float


@record
class Parallel(JsonRecord):
    """llama.cpp --parallel: N sequences decoded together."""

    sequences: int
    prompt_tokens: int
    decode_steps: int
    seconds: float
    tokens_per_s: float | None = None
    """Over the whole call, prefills included."""
    decode_tokens_per_s: float | None = None
    """Once every sequence has its first token."""


@record
class ResultRow(JsonRecord):
    """One (variant, threads, prompt length) configuration (edge_bench.measure.measure_config)."""

    variant: str
    threads: int
    prompt_tokens: int
    n_decode: int | None = None
    runs: int | None = None
    capped: bool = False
    load_s: float
    ttft_ms: LatencyMs
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    per_token_ms: LatencyMs | None
    deterministic: bool | None = None
    peak_rss_mb: float | None
    mmap: bool | None
    memory: dict | None = None
    efficiency: float | None
    """decode tokens/s x bytes_per_token / bandwidth_gb_per_s."""
    bandwidth_gb_per_s: float | None = None
    bandwidth_before_after: list[float] | None = None
    bandwidth_unstable: bool | None = None
    runtime_settings: dict | None = None
    """llama.cpp: use_mmap, flash_attn, huge_pages_added_bytes, extra buffer types."""
    busy: bool
    busy_detail: dict = field_default({})
    internal: dict | None = None
    """The runtime's own timing (llama.cpp)."""
    harness_vs_internal: float | None = None
    parallel: list[Parallel] | None = None


@record
class Best(JsonRecord):
    """A variant's figures at the thread count with the highest decode tokens/s (mean over prompt
    lengths)."""

    threads: int
    decode_tokens_per_s: float
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    efficiency: float | None = None


@record
class Paired(JsonRecord):
    """A variant against its reference on the same questions (edge_bench.paired.paired_accuracy)."""

    n: int
    both_correct: int = 0
    reference_only: int
    variant_only: int
    neither: int = 0
    drop: float
    drop_ci: list[float]
    """Tango score interval."""
    mcnemar_p: float
    discordant_share: float
    answers_differ: int = 0
    answers_differ_share: float
    answers_differ_ci: list[float]
    verdict: str
    """At the run's max_accuracy_drop: "within", "beyond" or "undecided"."""
    questions_needed: int | None


@record
class BenchFidelity(JsonRecord):
    """This bench's top-1 agreement and KL, teacher-forced along the reference's answers."""

    top1_agreement: float | None = None
    top1_positions: int = 0
    mean_kl: float | None = None
    max_kl: float | None = None
    kl_positions: int = 0
    what: str = ""


@record
class ManifestFidelity(JsonRecord):
    """The export's own verification, as manifest.json records it."""

    top1_agreement: float | None = None
    mean_kl: float | None = None
    max_kl: float | None = None
    positions: int | None = None
    flagged: bool | None = None
    reason: str | None = None
    greedy_identical: bool | None = None
    what: str = ""


@record
class Fidelity(JsonRecord):
    bench: BenchFidelity | None = None
    manifest: ManifestFidelity | None = None


@record
class VariantResult(JsonRecord):
    """One variant: what it is (edge_bench.variants.Variant), its accuracy and fidelity, its best speed."""

    name: str
    format: str
    runtime: str
    path: str = ""
    quant: str
    size_bytes: int
    bits_per_weight: float | None
    tokenizer: str | None = None
    bytes_per_token: int | None = None
    """Weight bytes read per decoded token (estimated)."""
    reference: str | None
    """Name of its fp32 reference, or None."""
    source: str = ""
    accuracy: float | None
    accuracy_ci: list[float] | None
    """Wilson interval."""
    correct: int | None = None
    n_questions: int
    missing_tag: int | None = None
    top1_agreement: float | None
    """= fidelity.bench.top1_agreement."""
    top1_steps: int = 0
    accuracy_drop: float | None = None
    """Reference - this, on the same questions (0 for a reference)."""
    paired: Paired | None
    fidelity: Fidelity
    accuracy_threads: int | None = None
    accuracy_seconds: float | None = None
    best: Best | None
    error: str | None = None
    """Why it could not be benchmarked."""


@record
class AutoPlan(JsonRecord):
    """--n_questions auto (edge_bench.auto_questions.plan_questions)."""

    pilot: int
    budget_s: float
    pilot_seconds: float
    seconds_per_question: dict[str, float]
    pilot_verdicts: dict[str, str]
    needed: dict[str, int | None]
    target: int
    affordable: int
    available: int
    chosen: int
    limited_by: str
    extended: list[str]
    estimated_seconds: float


@record
class Task(JsonRecord):
    spec: str | None = None
    name: str | None = None
    shots: int | None = None
    n_questions: int = 0
    """The most questions any variant answered."""
    available_questions: int | None = None
    """The task's test split."""
    max_new_tokens: int | None = None
    threads: int | None = None
    auto: AutoPlan | None = None


@record
class Host(JsonRecord):
    """The machine (edge_bench.host.describe_host) and how the run used it."""

    cpu_model: str | None = None
    machine: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    affinity: list[int] = field_default([])
    cgroup_cpu_limit: float | None = None
    isa_flags: list[str] = field_default([])
    caches: dict[str, str] = field_default({})
    ram_bytes: int | None = None
    os: str | None = None
    python: str | None = None
    runtime_versions: dict[str, str | None] = field_default({})
    pinned: bool | None = None
    hugepages: dict | None = None
    llama_cpp_system_info: str | None = field_default(None, metadata=OMIT_NONE)
    llama_cpp_extra_bufts: dict | None = field_default(None, metadata=OMIT_NONE)


@record
class Rankings(JsonRecord):
    fidelity: list[str] = field_default([])
    """By bench mean KL, closest first."""
    accuracy: list[str] = field_default([])
    """By accuracy, best first (point estimates)."""


@record
class Recommendation(JsonRecord):
    variant: str | None = None
    status: str = "none"
    """"recommended", "undecided" or "none"."""
    safe_choice: str | None = None
    undecided: list[str] = field_default([])
    """Fastest first."""
    questions_needed: int | None = None
    questions_needed_all: int | None = None
    max_accuracy_drop: float | None = None
    line: str = ""


@record
class Comparison(JsonRecord):
    previous: str
    lines: list[str]


@record
class Report(JsonRecord):
    """report.json."""

    schema_version: int
    tool: str
    created_at: str
    """UTC, ISO 8601."""
    config: dict[str, Any]
    """The BenchSettings fields."""
    task: Task
    statistics: dict[str, Any]
    """Which interval and test each figure uses (edge_bench.report.STATISTICS)."""
    host: Host
    bandwidth: dict | None
    """Memory read bandwidth measured in the run (edge_bench.bandwidth), or None."""
    variants: list[VariantResult]
    results: list[ResultRow]
    rankings: Rankings
    recommendation: Recommendation
    warnings: list[str]
    comparison: Comparison | None = None

    @classmethod
    def from_dict(cls, d: Any, source: str = "report", versions: tuple[int, ...] = (SCHEMA_VERSION,)):
        """The report of JSON `d` whose schema_version is one of `versions` (a version 1 report gets
        version 2's fields, empty), or a ReportError naming `source` and every bad key path."""
        version = d.get("schema_version") if isinstance(d, dict) else None
        if isinstance(version, int) and version not in versions:
            readable = ", ".join(map(str, versions))
            raise ReportError(f"{source}: schema_version: {version}, this edge_bench reads {readable}")
        return super().from_dict(_upgrade_v1(d) if version == 1 else d, source)

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)


def _upgrade_v1(d: dict) -> dict:
    """A version 1 report with version 2's fields (which it did not measure) empty."""
    v2 = {"accuracy_ci": None, "n_questions": 0, "paired": None, "fidelity": {}}
    out = {"statistics": {}, "rankings": {}, **d}
    if isinstance(d.get("variants"), list):
        out["variants"] = [{**v2, **v} if isinstance(v, dict) else v for v in d["variants"]]
    return out


def as_report(report: Report | dict) -> Report:
    """`report` itself, or the Report of its JSON dict (checked)."""
    return report if isinstance(report, Report) else Report.from_dict(report)
