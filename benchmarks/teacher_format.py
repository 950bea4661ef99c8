"""How often a teacher's naive-prompt rationales carry the `<ans>` tag, before and after the output
format was separated from the strategy (docs/method.md, "Output format").

before: the paper's naive prompt (no format instruction) with the answer-only worked example
        ("The answer is X. <ans>X</ans>"), decoding stopped at "</ans>" only;
after:  the naive prompt with "Give your final answer as <ans>...</ans>." and a worked example that
        reasons (the task's explainer), decoding stopped at "</ans>" or a new "\\nQuestion:".

Then, per --question_temperatures, how many of 48 brainstorm calls' questions are unique and
readable by the task's solver (the share the generate stage can label).

For each teacher and task: tag rate (a complete `<ans>` before any runaway "Question:"), repaired
rate (a final sentence stating an answer, `arte.stages.generate.tag_repair`), and how often
the answer is right (the task's solver). Greedy, on the first --n test questions of each built-in task.

    python benchmarks/teacher_format.py --teachers smollm2-135m-f16,runs/demo/align/teacher-f16.gguf
"""

from __future__ import annotations

import argparse

from arte.backends import BackendConfig, load_backend
from arte.backends.base import SamplingParams
from arte.stages.elicit import teacher_example
from arte.stages.generate.tag_repair import clean_rationale, read_rationale
from common.prompts import STEP_BY_STEP, TEACHER_STOP, naive_prompt
from common.tasks.answer_space import task_answer_space
from common.tasks.answers import extract_answer
from common.tasks.builtin import make_builtin_task


def before_prompt(description: str, question: str, seed_q: str, seed_t: str) -> str:
    example = f"Question: {seed_q} Answer: {STEP_BY_STEP} The answer is {seed_t}. <ans>{seed_t}</ans>\n"
    return f"Task Description: {description}\n{example}Question: {question} Answer: {STEP_BY_STEP}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", default="smollm2-135m-f16", help="comma-separated models (llama_cpp)")
    ap.add_argument("--tasks", default="boolean_expressions,object_counting,multistep_arithmetic")
    ap.add_argument("--n", type=int, default=40, help="test questions per task")
    ap.add_argument("--max_new_tokens", type=int, default=128)
    ap.add_argument("--question_temperatures", default="0.3,0.5,0.8", help="'' to skip the question table")
    args = ap.parse_args()
    print("| teacher | task | prompt | tagged | repaired | tagged or repaired | right |")
    print("|---|---|---|---|---|---|---|")
    for model in args.teachers.split(","):
        teacher = load_backend(BackendConfig(name="llama_cpp", model=model, batch_size=16))
        try:
            for name in args.tasks.split(","):
                task = make_builtin_task(name, n_validation=30, n_test=max(60, args.n))
                space, seed, qs = task_answer_space(task), task.seeds[0], task.test[: args.n]
                variants = {
                    "before": (
                        [before_prompt(task.description, q.input, seed.input, seed.target) for q in qs],
                        ("</ans>",),
                    ),
                    "after": (
                        [naive_prompt(task.description, q.input, teacher_example(task, True)) for q in qs],
                        TEACHER_STOP,
                    ),
                }
                for label, (prompts, stop) in variants.items():
                    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0, stop=stop)
                    gens = teacher.generate(prompts, params)
                    tagged = sum(extract_answer(clean_rationale(g.text)) is not None for g in gens)
                    reads = [read_rationale(g.text, space) for g in gens]
                    repaired = sum(r.repaired for r in reads)
                    right = sum(
                        r.answer is not None and r.answer == space.canonical(task.solver(q.input))
                        for r, q in zip(reads, qs, strict=True)
                    )
                    n = len(qs)
                    print(
                        f"| {model.rsplit('/', 3)[-3] if '/' in model else model} | {name} | {label} | "
                        f"{tagged}/{n} | {repaired}/{n} | {tagged + repaired}/{n} | {right}/{n} |",
                        flush=True,
                    )
            if args.question_temperatures:
                question_table(teacher, args.tasks.split(","), args.question_temperatures.split(","))
        finally:
            teacher.close()


def question_table(teacher, tasks: list[str], temperatures: list[str], calls: int = 48) -> None:
    """Unique and solver-readable questions from `calls` brainstorm calls, per temperature."""
    from arte.stages.elicit import PRIMER, question_prompt
    from arte.stages.elicit.draft_parsing import parse_question_blocks, question_key

    print("\n| task | temperature | parsed | unique | readable by the solver |\n|---|---|---|---|---|")
    for name in tasks:
        task = make_builtin_task(name, n_validation=30, n_test=60)
        for temp in map(float, temperatures):
            params = SamplingParams(max_new_tokens=120, temperature=temp, seeds=tuple(range(calls)))
            gens = teacher.generate([question_prompt(task)] * calls, params)
            parsed = [q for g in gens for q, _ in parse_question_blocks(PRIMER + g.text).questions]
            unique = {question_key(q): q for q in parsed}
            readable = sum(task.solver(q) is not None for q in unique.values())
            print(f"| {name} | {temp} | {len(parsed)} | {len(unique)} | {readable} |", flush=True)


if __name__ == "__main__":
    main()
