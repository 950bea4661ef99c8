"""Which embedded pairing should the demo use? Each model measured as teacher and as student on the
demo config's tasks, with the demo config's own prompts and sizes (issue 12, item 4).

As teacher (elicit's brainstorm prompt at `elicit.temperature`, then its strategy prompts, greedy):
- draft parse rate: question blocks that parse into <input>/<target>, of all blocks written;
- solver-readable: unique new questions the task's exact solver can read (it can then check them);
- target right: of those, how often the teacher's own <target> is the solver's answer;
- tagged: rationales (one per strategy and readable question) with a complete <ans> tag;
- ans = target: rationales whose <ans> agrees with the teacher's <target> (of all rationales);
- ans right: rationales whose <ans> is the solver's answer.
As student: vanilla 0- and 3-shot accuracy on the first --n_test test questions (evaluate's prompts
and decoding, `arte.stages.evaluate.stats.evaluate_student`), with the tag rate.

    python benchmarks/pairing.py --models smollm2-135m-f16,gemma3-270m-f16 --calls 24 --n_test 60

Prints markdown tables (one row per model and task) and one JSON line per row to --out if given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from arte.backends import BackendConfig, load_backend
from arte.run_config import RunConfig
from arte.stages.elicit import elicit_questions, elicit_rationales, teacher_example
from arte.stages.evaluate.stats import evaluate_student
from common.config import load_config
from common.records import RecordLog
from common.tasks import load_tasks
from common.tasks.answer_space import task_answer_space
from common.tasks.answers import extract_answer


def teacher_row(task, teacher, cfg: RunConfig, calls: int, tmp: Path) -> dict:
    """The teacher-side figures of one task (module doc), from `calls` brainstorm calls."""
    space = task_answer_space(task)
    canon = space.canonical
    log = RecordLog(tmp / f"{task.name}-questions.jsonl")
    started = time.time()
    got = elicit_questions(task, teacher, cfg.elicit, log, seed=cfg.seed, parallel=16, call_limit=calls)
    stats, questions = got["stats"], got["questions"]
    readable = [q for q in questions if task.solver(q["input"]) is not None]
    truth = {q["qid"]: space.canonical(task.solver(q["input"])) for q in readable}
    right = sum(space.canonical(q["target"]) == truth[q["qid"]] for q in readable)
    example = teacher_example(task, cfg.teacher_worked_example)
    drafts = elicit_rationales(
        task, readable, teacher, cfg.elicit, RecordLog(tmp / f"{task.name}-rationales.jsonl"), 16, example
    )
    answers = [(d, extract_answer(d.rationale)) for d in drafts]
    blocks = stats["parsed"] + stats["unparsable"]
    return {
        "calls": stats["calls"],
        "blocks": blocks,
        "parsed": stats["parsed"],
        "unique": len(questions),
        "readable": len(readable),
        "target_right": right,
        "rationales": len(drafts),
        "tagged": sum(a is not None for _, a in answers),
        "ans_eq_target": sum(a is not None and canon(a) == canon(d.target) for d, a in answers),
        "ans_right": sum(a is not None and canon(a) == truth[d.qid] for d, a in answers),
        "teacher_seconds": round(time.time() - started, 1),
    }


def student_row(task, student, cfg: RunConfig, n_test: int) -> dict:
    """Vanilla accuracy and tag rate per shot setting."""
    started = time.time()
    records = evaluate_student(student, [task], cfg.evaluate.shots, n_test, cfg.evaluate.max_new_tokens)
    row: dict = {}
    for k in cfg.evaluate.shots:
        rs = [r for r in records if r["shots"] == k]
        row[f"acc_{k}shot"] = round(sum(r["correct"] for r in rs) / len(rs), 3)
        row[f"tagged_{k}shot"] = round(1 - sum(r["missing_tag"] for r in rs) / len(rs), 3)
    row["n_test"] = len(records) // len(cfg.evaluate.shots)
    row["student_seconds"] = round(time.time() - started, 1)
    return row


def pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.0f}%)" if b else "0/0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m-f16,gemma3-270m-f16", help="llama_cpp models")
    ap.add_argument("--config", default="configs/demo.yaml", help="tasks, prompts and sizes from here")
    ap.add_argument("--tasks", default="", help="comma-separated tasks instead of the config's")
    ap.add_argument("--questions", type=int, default=40, help="unique questions wanted per task (elicit.m)")
    ap.add_argument("--calls", type=int, default=24, help="brainstorm calls per task and teacher, at most")
    ap.add_argument("--n_test", type=int, default=60)
    ap.add_argument("--out", default="", help="append one JSON line per (model, task) here")
    ap.add_argument("--work", default="/tmp/arte-pairing", help="scratch logs (deleted per model)")
    args = ap.parse_args()
    cfg = load_config(RunConfig, args.config)
    cfg = dataclasses.replace(cfg, elicit=dataclasses.replace(cfg.elicit, m=args.questions))
    if args.tasks:
        cfg = dataclasses.replace(cfg, tasks=args.tasks.split(","))
    n_test = max(cfg.n_test, args.n_test)
    tasks = load_tasks(cfg.tasks, n_validation=cfg.n_validation, n_test=n_test, seed=cfg.seed)
    rows = []
    for model in args.models.split(","):
        backend = load_backend(BackendConfig(name="llama_cpp", model=model, batch_size=16))
        try:
            for task in tasks:
                tmp = Path(args.work) / model.replace("/", "_")
                for f in tmp.glob(f"{task.name}-*.jsonl"):
                    f.unlink()
                tmp.mkdir(parents=True, exist_ok=True)
                row = {"model": model, "task": task.name}
                row |= teacher_row(task, backend, cfg, args.calls, tmp)
                row |= student_row(task, backend, cfg, args.n_test)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
        finally:
            backend.close()
    print_tables(rows, cfg.evaluate.shots)


def print_tables(rows: list[dict], shots: list[int]) -> None:
    print("\n**As teacher**\n")
    head = "draft parse rate | solver-readable | target right | tagged | ans = target | ans right"
    print(f"| model | task | {head} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [
            pct(r["parsed"], r["blocks"]),
            pct(r["readable"], r["unique"]),
            pct(r["target_right"], r["readable"]),
            pct(r["tagged"], r["rationales"]),
            pct(r["ans_eq_target"], r["rationales"]),
            pct(r["ans_right"], r["rationales"]),
        ]
        print(f"| {r['model']} | {r['task']} | " + " | ".join(cells) + " |")
    print("\n**As student (vanilla)**\n")
    head = " | ".join(f"{k}-shot acc (tagged)" for k in shots)
    print(f"| model | task | {head} |\n|---|---|" + "---|" * len(shots))
    for r in rows:
        cells = [f"{r[f'acc_{k}shot']:.3f} ({r[f'tagged_{k}shot']:.2f})" for k in shots]
        print(f"| {r['model']} | {r['task']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
