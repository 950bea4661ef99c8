"""`arte compare-backends`: the same few-shot prompts, greedy, on two backends (by default hf and
llama_cpp on the embedded model). Reports each backend's accuracy, how often their extracted answers
agree, missing `<ans>` tags and decode speed. Writes `records.jsonl` and `summary.json` to --out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from arte.backends import BackendConfig, SamplingParams, load_backend
from common.config import opt, to_dict
from common.prompts import STUDENT_STOP, answer_only_rationale, icl_prompt
from common.tasks.base import Task

BUILTIN_TASKS = ["boolean_expressions", "multistep_arithmetic", "object_counting", "word_sorting"]


@dataclass
class CompareBackendsConfig:
    """Run the same prompts through backend `a` and backend `b` and compare the answers."""

    tasks: list[str] = opt(list(BUILTIN_TASKS), "Task specs (built-in names, files, directories).")
    n_questions: int = opt(20, "Test questions per task.")
    shots: int = opt(3, "Demonstrations per prompt, taken from the task's seeds (0-3).")
    max_new_tokens: int = opt(96, "Decode budget per answer, in tokens.")
    seed: int = opt(0, "Task split / generation seed.")
    a: BackendConfig = opt(BackendConfig(name="hf"), "First backend.")
    b: BackendConfig = opt(BackendConfig(name="llama_cpp"), "Second backend.")
    out: str = opt("runs/compare-backends", "Directory for records.jsonl and summary.json.")

    def __post_init__(self) -> None:
        if not 0 <= self.shots <= 3:
            raise ValueError(f"--shots must be between 0 and 3 (a task has 3 seeds), got {self.shots}")
        if self.n_questions < 1:
            raise ValueError(f"--n_questions must be >= 1, got {self.n_questions}")


def build_prompts(task: Task, n_questions: int, shots: int) -> list[tuple[str, str]]:
    """(prompt, target) for the first `n_questions` test questions, `shots` seed demonstrations each."""
    demos = [(ex.input, answer_only_rationale(ex.target)) for ex in task.seeds[:shots]]
    return [(icl_prompt(task.description, demos, ex.input), ex.target) for ex in task.test[:n_questions]]


def _run_backend(cfg: BackendConfig, prompts: list[str], max_new_tokens: int) -> tuple[list[str], dict]:
    from tqdm import tqdm

    backend = load_backend(cfg)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=STUDENT_STOP)
    texts, tokens, started = [], 0, time.perf_counter()
    step = max(cfg.batch_size, 1)
    try:
        for i in tqdm(range(0, len(prompts), step), desc=f"{cfg.name}", unit="batch"):
            gens = backend.generate(prompts[i : i + step], params)
            texts += [g.text for g in gens]
            tokens += sum(g.completion_tokens for g in gens)
    finally:
        backend.close()
    seconds = time.perf_counter() - started
    return texts, {
        "seconds": round(seconds, 2),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
    }


def compare_backends(cfg: CompareBackendsConfig) -> dict:
    """Run both backends; return the summary (also written, with per-prompt records, to cfg.out)."""
    from common.tasks import load_tasks
    from common.tasks.answers import extract_answer

    tasks = load_tasks(cfg.tasks, n_test=cfg.n_questions, seed=cfg.seed)
    items = [(t, p, tgt) for t in tasks for p, tgt in build_prompts(t, cfg.n_questions, cfg.shots)]
    prompts = [p for _, p, _ in items]
    texts_a, speed_a = _run_backend(cfg.a, prompts, cfg.max_new_tokens)
    texts_b, speed_b = _run_backend(cfg.b, prompts, cfg.max_new_tokens)

    records, per_task = [], {}
    for (task, _prompt, target), ta, tb in zip(items, texts_a, texts_b):
        ans_a, ans_b = extract_answer(ta), extract_answer(tb)
        norm_a = task.normalize(ans_a) if ans_a is not None else None
        norm_b = task.normalize(ans_b) if ans_b is not None else None
        rec = {
            "task": task.name,
            "target": target,
            "a_text": ta,
            "b_text": tb,
            "a_answer": ans_a,
            "b_answer": ans_b,
            "a_correct": task.is_correct(ta, target),
            "b_correct": task.is_correct(tb, target),
            "agree": norm_a == norm_b,
            "identical_text": ta == tb,
        }
        records.append(rec)
        per_task.setdefault(task.name, []).append(rec)

    def stats(recs: list[dict]) -> dict:
        n = len(recs)
        return {
            "n": n,
            "a_accuracy": round(sum(r["a_correct"] for r in recs) / n, 3),
            "b_accuracy": round(sum(r["b_correct"] for r in recs) / n, 3),
            "answer_agreement": round(sum(r["agree"] for r in recs) / n, 3),
            "identical_text": round(sum(r["identical_text"] for r in recs) / n, 3),
            "a_missing_tag": sum(r["a_answer"] is None for r in recs),
            "b_missing_tag": sum(r["b_answer"] is None for r in recs),
        }

    summary = {
        "config": to_dict(cfg),
        "a": cfg.a.name,
        "b": cfg.b.name,
        "overall": stats(records),
        "per_task": {name: stats(recs) for name, recs in per_task.items()},
        "speed": {"a": speed_a, "b": speed_b},
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    _write_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def print_summary(summary: dict) -> None:
    a, b = summary["a"], summary["b"]
    print(
        f"\n{'task':<22} {'n':>4} {a + ' acc':>12} {b + ' acc':>14} "
        f"{'agree':>7} {'same text':>9} {'no <ans>':>10}"
    )
    rows = list(summary["per_task"].items()) + [("ALL", summary["overall"])]
    for name, s in rows:
        missing = f"{s['a_missing_tag']}/{s['b_missing_tag']}"
        print(
            f"{name:<22} {s['n']:>4} {s['a_accuracy']:>12.3f} {s['b_accuracy']:>14.3f} "
            f"{s['answer_agreement']:>7.3f} {s['identical_text']:>9.3f} {missing:>10}"
        )
    sa, sb = summary["speed"]["a"], summary["speed"]["b"]
    print(
        f"decode: {a} {sa['tokens_per_s']} tok/s ({sa['seconds']} s), "
        f"{b} {sb['tokens_per_s']} tok/s ({sb['seconds']} s)"
    )
    line = {"answer_agreement": summary["overall"]["answer_agreement"], a: sa, b: sb}
    print(json.dumps(line))


def run_compare_backends(cfg: CompareBackendsConfig) -> int:
    summary = compare_backends(cfg)
    print_summary(summary)
    print(f"\nrecords and summary: {Path(cfg.out).resolve()}")
    return 0
