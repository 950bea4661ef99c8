"""What a teacher can write for a task, measured before sizing a training set from it: the labels of
the questions it drafts, and how often its rationales reach the task solver's answer.

    .venv/bin/python benchmarks/teacher_reach.py [--teacher M] [--tasks navigate,object_counting]

1. Questions: `--calls` brainstorm calls (the generate stage's prompt and `--temperature`) with the
   task's 3 seeds, then with 3 demonstrations of one label each (taken from the test split, for this
   measurement only): can the teacher be steered to the labels a balanced set needs by what it is
   shown? Per variant: parsed and unique questions and the solver's labels (None: unreadable).
2. Rationales: on the unique solver-readable questions of the seeds variant, the naive prompt with
   the worked example (as generate), greedy and `--samples` samples per question at each of
   `--sample_temperatures`: the share whose answer (tagged or repaired) is the solver's, and the
   questions with at least one such rationale.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arte.backends import BackendConfig, load_backend  # noqa: E402
from arte.backends.base import SamplingParams  # noqa: E402
from arte.stages.elicit import PRIMER, question_prompt, teacher_example  # noqa: E402
from arte.stages.elicit.draft_parsing import parse_question_blocks, question_key  # noqa: E402
from arte.stages.generate.tag_repair import read_rationale  # noqa: E402
from common.prompts import TEACHER_STOP, naive_prompt  # noqa: E402
from common.tasks.answer_space import task_answer_space  # noqa: E402
from common.tasks.builtin import make_builtin_task  # noqa: E402


def question_table(teacher, task, calls: int, temperature: float) -> list[str]:
    """Prints the label table; returns the unique readable questions of the seeds variant."""
    by_label = defaultdict(list)
    for ex in task.test:
        by_label[ex.target].append(ex)
    variants = {"seeds": [task.seeds[:3]] * calls}
    for label, exs in sorted(by_label.items(), key=lambda kv: -len(kv[1]))[:3]:
        if len(exs) >= 3:
            variants[f"3 of label {label}"] = [
                [exs[(c + j) % len(exs)] for j in range(3)] for c in range(calls)
            ]
    readable: list[str] = []
    for name, shown in variants.items():
        params = SamplingParams(max_new_tokens=100, temperature=temperature, seeds=tuple(range(calls)))
        gens = teacher.generate([question_prompt(task, s) for s in shown], params)
        parsed = [q for g in gens for q, _ in parse_question_blocks(PRIMER + g.text).questions]
        unique = {question_key(q): q for q in parsed}
        labels = Counter(str(task.solver(q)) for q in unique.values())
        print(f"| {task.name} | {name} | {len(parsed)} | {len(unique)} | {dict(labels.most_common(8))} |")
        if name == "seeds":
            readable = [q for q in unique.values() if task.solver(q) is not None]
    return readable


def rationale_row(teacher, task, questions: list[str], samples: int, temperatures: list[float]) -> None:
    space, example = task_answer_space(task), teacher_example(task, True)
    truth = [space.canonical(task.solver(q)) for q in questions]

    def right(gens, per: int) -> list[bool]:
        return [read_rationale(g.text, space).answer == truth[i // per] for i, g in enumerate(gens)]

    prompts = [naive_prompt(task.description, q, example) for q in questions]
    greedy = right(teacher.generate(prompts, SamplingParams(max_new_tokens=96, stop=TEACHER_STOP)), 1)
    print(f"| {task.name} | greedy | {sum(greedy)} / {len(greedy)} | {sum(greedy)} |")
    for temp in temperatures:
        many = [p for p in prompts for _ in range(samples)]
        params = SamplingParams(
            max_new_tokens=96, temperature=temp, stop=TEACHER_STOP, seeds=tuple(range(len(many)))
        )
        ok = right(teacher.generate(many, params), samples)
        hit = sum(any(ok[i * samples : (i + 1) * samples]) for i in range(len(questions)))
        print(f"| {task.name} | {samples} samples at T {temp} | {sum(ok)} / {len(ok)} | {hit} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="smollm2-135m-f16", help="a model the llama_cpp backend opens")
    ap.add_argument("--tasks", default="navigate,object_counting")
    ap.add_argument("--calls", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.5, help="brainstorm (the demo's generate)")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--sample_temperatures", default="0.7,1.0")
    args = ap.parse_args()
    teacher = load_backend(BackendConfig(name="llama_cpp", model=args.teacher, batch_size=16))
    try:
        readable = {}
        print("| task | shown | parsed | unique | solver's labels |\n|---|---|---|---|---|")
        for name in args.tasks.split(","):
            task = make_builtin_task(name, n_validation=30, n_test=60)
            readable[name] = (task, question_table(teacher, task, args.calls, args.temperature)[:40])
        print("\n| task | rationales | right / written | questions with one right |\n|---|---|---|---|")
        temps = [float(t) for t in args.sample_temperatures.split(",")]
        for task, questions in readable.values():
            rationale_row(teacher, task, questions, args.samples, temps)
    finally:
        teacher.close()


if __name__ == "__main__":
    main()
