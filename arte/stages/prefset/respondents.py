"""The prefset stage's respondents: student-like models that answer every validation question at
0..3 shots, giving the rows of the IRT response matrix (`arte.stages.prefset`).

The paper (arXiv 2406.19227) uses 5 models x 4 shot settings = 20 rows. Here the student is always
the first respondent, then `prefset.extra_respondents` (models on the student's engine), then
`prefset.respondents` (any engine, one `BackendConfig` each); a respondent listed twice is asked once.

One engine at a time: each respondent is loaded, answers every shot setting of every task, and is
closed (then `gc` and the CUDA cache) before the next is loaded, so peak memory is the largest
respondent, not the sum. vLLM does not always give GPU memory back inside a process, so a vllm
respondent runs in a process of its own (`prefset.respondent_process: auto`; `subprocess` forces
it for any engine, `in_process` never): `python -m arte.stages.prefset.respondent_worker JOB.json`, which
reads its prompts from the job file and appends its answers to the same answer log.

Answers are cached as they are made: `prefset/answers.jsonl`, one record per (respondent, task,
shots, demo_set, question) with the completion text, written after each generate call. A re-run
asks only what is missing; a respondent with nothing missing is not loaded at all.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from arte.backends import BackendConfig, SamplingParams, load_backend
from arte.backends.streaming import generate_stream
from common.errors import UserError
from common.prompts import answer_only_rationale, icl_prompt
from common.records import RecordLog, write_json_atomic
from common.tasks.base import Task

log = logging.getLogger(__name__)

ANSWERS = "answers.jsonl"
"""The answer log, in the prefset stage directory."""
JOBS = "jobs"
"""Where the job files of respondents run in their own process go (prefset/jobs/N.json)."""

AnswerKey = tuple[str, str, int, int, int]
"""(respondent, task, shots, demo_set, question index): one cell of the response matrix."""


def respondent_id(cfg: BackendConfig) -> str:
    """A respondent's name in the answer log and the matrix rows: "engine:model" (+ adapter, chat)."""
    rid = f"{cfg.name}:{cfg.model}"
    if cfg.lora_adapter:
        rid += f"+lora:{cfg.lora_adapter}"
    return rid + ("+chat" if cfg.chat else "")


def respondent_configs(student: BackendConfig, cfg) -> list[BackendConfig]:
    """The student, then `cfg.extra_respondents` (the student's engine, another model), then
    `cfg.respondents`; a respondent that appears again (same `respondent_id`) is asked once."""
    listed = [student]
    listed += [dataclasses.replace(student, model=m, lora_adapter="") for m in cfg.extra_respondents]
    listed += list(cfg.respondents)
    out, seen = [], set()
    for r in listed:
        if respondent_id(r) in seen:
            log.info(
                "respondent %s is listed twice (the student is always one): asked once", respondent_id(r)
            )
            continue
        seen.add(respondent_id(r))
        out.append(r)
    return out


def setting_prompts(task: Task, shots: int, demo_set: int) -> list[str]:
    """The student prompt of every validation question with `shots` seeds as demonstrations, the
    seeds rotated by `demo_set` (demo set r shows seeds r, r+1, ...)."""
    seeds = task.seeds[demo_set:] + task.seeds[:demo_set]
    demos = [(ex.input, answer_only_rationale(ex.target)) for ex in seeds[:shots]]
    return [icl_prompt(task.description, demos, ex.input) for ex in task.validation]


def read_answers(path: Path) -> dict[AnswerKey, str]:
    """The cached answers by key (the first record of a key wins; a cut-off last line is dropped)."""
    answers: dict[AnswerKey, str] = {}
    for r in RecordLog(path, resume=True):
        answers.setdefault((r["respondent"], r["task"], r["shots"], r["demo_set"], r["question"]), r["text"])
    return answers


def pending_jobs(
    rid: str, tasks: Sequence[Task], settings: Sequence[tuple[int, int]], cached: dict[AnswerKey, str]
) -> list[dict]:
    """What respondent `rid` still has to answer: one job (its key fields and prompt) per missing cell."""
    jobs = []
    for task in tasks:
        for shots, demo_set in settings:
            cell = {"task": task.name, "shots": shots, "demo_set": demo_set}
            jobs += [
                {**cell, "question": i, "prompt": prompt}
                for i, prompt in enumerate(setting_prompts(task, shots, demo_set))
                if (rid, task.name, shots, demo_set, i) not in cached
            ]
    return jobs


def answer_jobs(
    backend, rid: str, jobs: Sequence[dict], params: SamplingParams, call_size: int, answers: RecordLog
) -> None:
    """Generate for `jobs` as one stream (`arte.backends.streaming`: one continuous batch on
    llama_cpp, calls of `call_size` prompts elsewhere), appending the answers to the log as they
    arrive, FLUSH_EVERY at a time and whatever is left when the engine fails: a kill loses at most
    the answers in flight and FLUSH_EVERY - 1 unwritten ones."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=f"prefset {rid}", unit="answer")
    pending: list[dict] = []

    def flush() -> None:
        answers.extend(pending)
        bar.update(len(pending))
        pending.clear()

    try:
        for i, g in generate_stream(backend, [j["prompt"] for j in jobs], params, call_size):
            rest = {k: v for k, v in jobs[i].items() if k != "prompt"}
            pending.append({"respondent": rid, **rest, "text": g.text, "pid": os.getpid()})
            if len(pending) >= FLUSH_EVERY:
                flush()
    finally:  # an engine that fails half-way keeps the answers it gave
        flush()
        bar.close()


FLUSH_EVERY = 8
"""Answers written (and fsynced) together: one fsync per answer would cost more than some answers."""


def memory_in_use() -> str:
    """This process's resident memory and, when torch is loaded with CUDA, the GPU memory it holds."""
    text = "rss n/a"
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        text = f"rss {pages * os.sysconf('SC_PAGE_SIZE') / 2**30:.2f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        text += f", cuda {torch.cuda.memory_allocated() / 2**30:.2f} GiB allocated"
    return text


def free_memory() -> None:
    """Collect garbage and hand the CUDA cache back after a respondent's engine is closed."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_in_process(
    cfg: BackendConfig, jobs: Sequence[dict], params: SamplingParams, answers: RecordLog
) -> None:
    """Load the respondent, answer `jobs`, close and free it (also when generation fails)."""
    rid = respondent_id(cfg)
    backend = load_backend(cfg)
    log.info("respondent %s loaded (%s)", rid, memory_in_use())
    try:
        answer_jobs(backend, rid, jobs, params, cfg.call_size, answers)
    finally:
        backend.close()
        del backend
        free_memory()
        log.info("respondent %s closed and freed (%s)", rid, memory_in_use())


def run_in_subprocess(
    cfg: BackendConfig, jobs: Sequence[dict], params: SamplingParams, answers: RecordLog, job_path: Path
) -> None:
    """Run the respondent in a process of its own (`arte.stages.prefset.respondent_worker`), which appends
    to the same answer log."""
    import arte

    rid = respondent_id(cfg)
    write_json_atomic(
        job_path,
        {
            "backend": dataclasses.asdict(cfg),
            "params": dataclasses.asdict(params),
            "answers": str(answers.path),
            "jobs": list(jobs),
        },
    )
    env = dict(os.environ)
    root = str(Path(arte.__file__).resolve().parents[1])  # the child imports this same arte
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    log.info("respondent %s: starting its own process (%s)", rid, job_path)
    done = subprocess.run(
        [sys.executable, "-m", "arte.stages.prefset.respondent_worker", str(job_path)], env=env
    )
    if done.returncode != 0:
        raise UserError(
            f"respondent {rid}'s process failed (exit {done.returncode}; its error is above). The answers "
            f"it gave are kept in {answers.path}: fix the cause and re-run the prefset stage to resume."
        )
    log.info("respondent %s: its process has exited (memory freed with it)", rid)


def uses_subprocess(cfg: BackendConfig, mode: str) -> bool:
    """Whether a respondent runs in its own process: `mode` subprocess, or auto and a vllm engine."""
    return mode == "subprocess" or (mode == "auto" and cfg.name == "vllm")


def collect_answers(
    respondents: Sequence[BackendConfig],
    tasks: Sequence[Task],
    settings: Sequence[tuple[int, int]],
    params: SamplingParams,
    out_dir: Path,
    mode: str = "auto",
) -> dict[AnswerKey, str]:
    """Every respondent's answer in every setting of every task, one engine at a time; answers
    already in `out_dir/answers.jsonl` are not asked again. Returns all answers by key."""
    path = out_dir / ANSWERS
    for n, cfg in enumerate(respondents, 1):
        rid = respondent_id(cfg)
        answers = RecordLog(path, resume=True)  # cuts a line left half-written by a kill
        jobs = pending_jobs(rid, tasks, settings, read_answers(path))
        if not jobs:
            log.info("respondent %d/%d %s: every answer is cached, not loaded", n, len(respondents), rid)
            continue
        log.info("respondent %d/%d %s: %d answers to give", n, len(respondents), rid, len(jobs))
        if uses_subprocess(cfg, mode):
            run_in_subprocess(cfg, jobs, params, answers, out_dir / JOBS / f"{n}.json")
        else:
            run_in_process(cfg, jobs, params, answers)
    return read_answers(path)
