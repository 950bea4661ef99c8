"""The pipeline's last stage: evaluate the vanilla student and every trained one (`--variants`:
original-teacher, ARTE, the ablations) on the same test questions, zero- and few-shot, and on the
out-of-domain tasks (`--evaluate.extra_tasks`, `arte.stages.evaluate.out_of_domain`); then write `summary.md`
and `summary.json` (accuracy table with bootstrap intervals, paired differences, caveats,
training-set yields, stage timings). The statistics are in `arte.stages.evaluate.stats`, the summary
in `arte.stages.evaluate.summary`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from arte.backends import BackendConfig, load_backend
from arte.models import f16_twin, resolve_gguf, resolve_hf
from arte.run_dir import RunDir
from arte.stages.stage import PlanCount, Stage, TaskSize, student_model
from common.config import opt
from common.errors import UserError
from common.records import RecordLog, write_json_atomic, write_jsonl_atomic

if TYPE_CHECKING:
    from arte.run_config import RunConfig
    from common.tasks import Task


def extra_task_hashes(cfg: RunConfig) -> dict[str, str]:
    """The out-of-domain tasks' data hashes, recorded in this stage's provenance (`arte.provenance`)."""
    from arte.stages.evaluate.out_of_domain import extra_task_hashes as hashes

    return hashes(cfg)


@dataclass
class EvaluateConfig:
    """Evaluation of the students (paper's protocol: target-task accuracy, zero-shot and 3-shot)."""

    shots: list[int] = opt([0, 3], "Shot settings (demonstrations are the task's seeds).")
    demo_rationales: bool = opt(
        True,
        "k-shot demonstrations show each seed's written reasoning (its `rationale` field, else the task's "
        "explainer) before its <ans> answer, in the format the students are trained on; seeds without "
        "reasoning, or false here, show the answer only. The summary says which, per task.",
    )
    n_test: int = opt(200, "Test questions per task.")
    max_new_tokens: int = opt(192, "Decode budget per answer.")
    n_boot: int = opt(2000, "Bootstrap resamples for the confidence intervals.")
    extra_tasks: list[str] = opt(
        [],
        "Out-of-domain tasks (built-in names or task files, like --tasks) that no stage drafts, scores or "
        "trains on; every student answers them too, reported in their own summary section.",
    )
    backend: BackendConfig = opt(
        BackendConfig(name="hf", model=""),
        "Engine for every student; its model is filled in per variant. llama_cpp: each student is "
        "converted to an F16 GGUF first (evaluate/VARIANT-f16.gguf; our converter, verified top-1 1.0); "
        "a vanilla embedded student is its F16 GGUF in the model cache (the same conversion).",
    )

    def __post_init__(self) -> None:
        if (
            not self.shots
            or any(not 0 <= s <= 3 for s in self.shots)
            or len(set(self.shots)) < len(self.shots)
        ):
            raise ValueError(
                f"--shots must be distinct counts within 0..3 (a task has 3 seeds), got {self.shots}"
            )
        for flag, value in (("--n_test", self.n_test), ("--max_new_tokens", self.max_new_tokens)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if self.n_boot < 1:
            raise ValueError(f"--n_boot must be >= 1 (bootstrap resamples), got {self.n_boot}")


def variant_models(cfg: RunConfig, run_dir: RunDir) -> dict[str, str]:
    from arte.stages.rounds import round_students

    trained = {v: str(run_dir.path / "train" / v) for v in cfg.variants}
    later_rounds = {v: str(path) for v, path in round_students(cfg, run_dir).items()}
    return {"vanilla": resolve_hf(cfg.student.model), **trained, **later_rounds}


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """Evaluate each variant on the run's tasks (evaluate/VARIANT.jsonl) and the out-of-domain ones
    (evaluate/ood/VARIANT.jsonl), resumable per variant and task; then write the summary files."""
    from tqdm import tqdm

    from arte.stages.evaluate.out_of_domain import (
        OVERLAP_FILE,
        drop_ood_overlap,
        load_extra_tasks,
        training_questions,
    )
    from arte.stages.evaluate.stats import evaluate_stream

    out, ev = run_dir.stage("evaluate"), cfg.evaluate
    extra = load_extra_tasks(cfg, tasks)
    if extra:  # near-duplicates of a target or training question are not out-of-domain
        extra, overlap = drop_ood_overlap(extra, tasks, training_questions(run_dir.path))
        write_json_atomic(out / OVERLAP_FILE, overlap)
        extra = [t for t in extra if t.test]  # every test question a near-duplicate: nothing to evaluate
    records: dict[str, list[dict]] = {}
    ood: dict[str, list[dict]] = {}
    for variant, model in variant_models(cfg, run_dir).items():
        logs = [(RecordLog(out / f"{variant}.jsonl", resume=True), tasks)]
        if extra:
            logs.append((RecordLog(out / "ood" / f"{variant}.jsonl", resume=True), extra))
        written = [finished_tasks(log, ts, ev) for log, ts in logs]  # each log read once
        todo = [(log, [t for t in ts if t.name not in done]) for (log, ts), done in zip(logs, written)]
        if any(ts for _, ts in todo):
            pickle_ok = ev.backend.allow_pickle or (variant == "vanilla" and cfg.student.allow_pickle)
            engine_model = _engine_model(ev.backend, model, out, variant, cfg.student.model)
            backend = load_backend(
                dataclasses.replace(ev.backend, model=engine_model, allow_pickle=pickle_ok)
            )
            try:
                for log, ts in todo:  # one stream per log; each task is written when done
                    bar = tqdm(total=len(ts), desc=f"evaluate {variant}", unit="task", disable=not ts)
                    stream = evaluate_stream(
                        backend,
                        ts,
                        ev.shots,
                        ev.n_test,
                        ev.max_new_tokens,
                        ev.demo_rationales,
                        ev.backend.call_size,
                    )
                    for _, task_records in stream:
                        log.extend(task_records)
                        bar.update(1)
                    bar.close()
            finally:
                backend.close()
        for (done, ts), into in zip(logs, (records, ood)):  # the run's tasks, then the OOD ones
            rows = done.read()
            _refuse_duplicates(done.path, rows)
            order = {t.name: n for n, t in enumerate(ts)}  # tasks are written as they finish
            into[variant] = sorted(
                rows, key=lambda r: (order.get(r["task"], len(order)), r["shots"], r["index"])
            )
    from arte.stages.evaluate.summary import write_summary

    return write_summary(cfg, run_dir, tasks, records, ood_records=ood or None, ood_tasks=extra)


def finished_tasks(log: RecordLog, tasks: list[Task], ev: EvaluateConfig) -> set[str]:
    """The tasks whose every (shots, question) record is in `log`. A task with only some of them (a
    kill while its records were written) is dropped from the log (rewritten atomically) and
    evaluated again, so a resumed evaluate loses no question, duplicates none and leaves no task
    short."""
    rows = log.read()
    wanted = {t.name: {(k, i) for k in ev.shots for i in range(len(t.test[: ev.n_test]))} for t in tasks}
    have: dict[str, set[tuple[int, int]]] = {}
    for r in rows:
        have.setdefault(r["task"], set()).add((int(r["shots"]), int(r["index"])))
    partial = {name for name, got in have.items() if name in wanted and got != wanted[name]}
    if partial:
        write_jsonl_atomic(log.path, [r for r in rows if r["task"] not in partial])
    return {name for name in have if name not in partial}


def demonstration_kinds(cfg: EvaluateConfig, tasks: list[Task]) -> dict[str, dict[int, str]]:
    """{task: {k: what its k-shot demonstrations show}} for every k > 0 evaluated ("with rationales",
    "answer-only", ...: `Task.demonstration_kind`), for the summary."""
    shots = [k for k in cfg.shots if k > 0]
    return {t.name: {k: t.demonstration_kind(k, cfg.demo_rationales) for k in shots} for t in tasks}


def demonstration_line(kinds: dict[str, dict[int, str]]) -> str | None:
    """One Markdown line saying, per task, what the k-shot demonstrations showed (None: no k > 0)."""
    cells = [f"{task} {k}-shot {kind}" for task, per in kinds.items() for k, kind in per.items()]
    return f"- k-shot demonstrations (the task's seeds): {'; '.join(cells)}" if cells else None


def _refuse_duplicates(path: Path, records: list[dict]) -> None:
    """One record per (task, shots, question): a second one means two writers shared the file."""
    seen: set[tuple] = set()
    for lineno, r in enumerate(records, 1):
        key = (r["task"], r["shots"], r["index"])
        if key in seen:
            raise UserError(
                f"{path}:{lineno}: a second record for {r['task']} {r['shots']}-shot question {r['index']} "
                f"(two runs wrote this directory at once?): delete {path.parent} and re-run `arte evaluate`"
            )
        seen.add(key)


def _engine_model(backend: BackendConfig, model: str, out: Path, variant: str, student: str) -> str:
    """The variant's model as the evaluation engine needs it (an F16 GGUF for llama_cpp). The vanilla
    student of an embedded model is its cached F16 GGUF (`arte.models.EMBEDDED_F16`: the same
    conversion of the same weights, made once per machine) rather than a new conversion per run."""
    if backend.name != "llama_cpp":
        return model
    from export.gguf_convert import convert_hf_to_gguf

    gguf = out / f"{variant}-f16.gguf"
    if gguf.is_file():
        return str(gguf)
    if variant == "vanilla" and (twin := f16_twin(student)):
        return str(resolve_gguf(twin))
    return str(convert_hf_to_gguf(Path(resolve_hf(model)), gguf, "f16"))


def evaluated_students(cfg: RunConfig) -> list[str]:
    """The students evaluate tests: vanilla, each --variants entry, each later round's (arte_rR)."""
    from arte.stages.rounds import round_variant

    return ["vanilla", *cfg.variants, *(round_variant(r) for r in range(2, cfg.rounds + 1))]


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """Every student, every shot setting, every test question evaluate keeps."""
    students, shots = evaluated_students(cfg), len(cfg.evaluate.shots)
    n_eval = min(cfg.evaluate.n_test, size.test)
    return [
        PlanCount.exact(
            "student generations",
            len(students) * shots * n_eval,
            f"{len(students)} students ({', '.join(students)}) x {shots} shot settings x n_test {n_eval}",
        )
    ]


STAGE = Stage(
    name="evaluate",
    help="Evaluate the vanilla and trained students (and on out-of-domain tasks); write summary.md/json.",
    run=run,
    depends_on=("seed", "student.model", "evaluate", "variants", "rounds"),
    reads=(
        "train",
        "rounds/rounds.json",
        "gain/gain.json",
        "align/teacher/align_stats.json",
        "prefcheck/consistency.json",
    ),
    writes=("evaluate/VARIANT.jsonl", "evaluate/ood/VARIANT.jsonl", "summary.md", "summary.json"),
    sections=("student", "evaluate", "variants"),
    models=lambda cfg: (student_model(cfg),),
    run_files=("summary.md", "summary.json"),
    extra_task_hashes=extra_task_hashes,
    plan_counts=plan_counts,
    plan_note=lambda cfg: f"students {', '.join(evaluated_students(cfg))}",
)
