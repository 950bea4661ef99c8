"""ARTE step 1, knowledge elicitation: the teacher drafts questions, then rationales.

Questions: the brainstorm prompt shows the task's 3 seeds as `<Question_x>` blocks and asks for 5
more; it is sampled at temperature 1.0, call after call, until m unique questions exist. Unparsable
blocks are counted and dropped; duplicates are dropped, and so are seeds and questions of the
validation/test splits and their near-duplicates (`arte.stages.elicit.contamination`: a draft close
to a test question would leak it into training), counted as split_overlap, by rule in
split_overlap_by.

Rationales: n per question, one per reasoning-strategy prompt, greedy. Every strategy ends by asking
for the final answer as `<ans>...</ans>`. The strategy texts are the four generic ones, or the run
config's, for all tasks or per task (`elicit.strategy_prompts`, `elicit.task_strategy_prompts`:
`arte.stages.elicit.strategy_prompts`).

Both loops append one record per teacher call to a JSONL log, so a killed run resumes where it
stopped and never asks the teacher for a finished prompt again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from arte.backends import load_backend
from arte.backends.base import Backend, SamplingParams
from arte.backends.streaming import generate_stream
from arte.run_dir import RunDir
from arte.stages.elicit.contamination import split_guard
from arte.stages.elicit.draft_parsing import parse_question_blocks, question_key
from arte.stages.elicit.strategy_prompts import (
    DEFAULT_STRATEGIES,
    checked_prompts,
    strategy_text,
    undefined_strategies,
)
from arte.stages.stage import LOCAL_ENGINES, PlanCount, Stage, TaskSize, teacher_model
from common.config import opt
from common.errors import UserError
from common.prompts import STEP_BY_STEP, TEACHER_STOP, render_question_block, worked_example
from common.records import RecordLog, write_jsonl_atomic
from common.tasks.base import Example, Task

if TYPE_CHECKING:
    from arte.run_config import RunConfig

QUESTIONS_PER_CALL = 5
"""The brainstorm prompt asks for 5 questions per call (paper)."""
PRIMER = "<Question_4><input>"
"""The brainstorm prompt ends by opening the 4th block; the teacher continues with a question."""


@dataclass(frozen=True)
class Draft:
    """A teacher draft: question `qid` of `task`, with one rationale written under `strategy`."""

    task: str
    qid: str
    question: str
    target: str
    strategy: str
    rationale: str


@dataclass
class QuestionConfig:
    """How the teacher drafts questions with the brainstorm prompt: the original teacher in step 1,
    the aligned teacher in step 4 (`generate.questions`)."""

    m: int = opt(250, "Questions per task (paper: m = 250 drafts in step 1, ~250 per BBH task in step 4).")
    temperature: float = opt(1.0, "Sampling temperature of the brainstorm prompt (paper: 1.0).")
    question_max_new_tokens: int = opt(400, "Decode budget of one brainstorm call (5 questions).")
    max_calls_factor: float = opt(3.0, "Give up after m / 5 * this many brainstorm calls (a weak teacher).")
    spare_calls: int = opt(
        2,
        "Brainstorm calls sent beyond those still needed, in the same batch, against unparsable ones. Calls "
        "not needed are dropped unrecorded: the questions are the same as one call at a time. Nearly free "
        "on a batching engine (fewer rounds of long calls); 0 for a paid API.",
    )

    RUNTIME_ONLY = ("spare_calls",)
    """Changes how fast the questions come, not which (left out of `arte.provenance`'s record)."""

    def __post_init__(self) -> None:
        if self.spare_calls < 0:
            raise ValueError(f"--spare_calls must be >= 0, got {self.spare_calls}")
        if self.m < 1:
            raise ValueError(f"--m must be >= 1, got {self.m}")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.question_max_new_tokens < 1:
            raise ValueError(f"--question_max_new_tokens must be >= 1, got {self.question_max_new_tokens}")
        if self.max_calls_factor <= 0:
            raise ValueError(f"--max_calls_factor must be > 0, got {self.max_calls_factor}")


@dataclass
class ElicitConfig(QuestionConfig):
    """Knowledge elicitation (ARTE step 1): m questions, then n rationales each (one per strategy)."""

    rationale_max_new_tokens: int = opt(160, "Decode budget of one rationale.")
    strategies: list[str] = opt(
        list(DEFAULT_STRATEGIES),
        "Reasoning strategies used for rationales (n), the same names for every task: the built-in "
        f"{', '.join(DEFAULT_STRATEGIES)}, or names that --elicit.strategy_prompts / "
        "--elicit.task_strategy_prompts define.",
    )
    strategy_prompts: dict[str, str] = opt(
        {},
        "Strategy name -> prompt text for every task (YAML), adding a strategy or replacing a built-in's "
        "text. {task} and {description} are filled in; the standard <ans> sentence is appended (a text "
        "asking for <ans> in other words is refused). See arte/stages/strategy_prompts.py.",
    )
    task_strategy_prompts: dict[str, dict[str, str]] = opt(
        {},
        "Task name -> {strategy name -> prompt text} (YAML): that task's own texts (paper, Table 12: four "
        "per task), over --elicit.strategy_prompts and the built-in ones.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rationale_max_new_tokens < 1:
            raise ValueError(f"--rationale_max_new_tokens must be >= 1, got {self.rationale_max_new_tokens}")
        if not self.strategies or len(set(self.strategies)) < len(self.strategies):
            raise ValueError(f"--strategies must name one or more distinct strategies, got {self.strategies}")
        self.strategy_prompts = checked_prompts("--elicit.strategy_prompts", self.strategy_prompts)
        self.task_strategy_prompts = {
            task: checked_prompts(f"--elicit.task_strategy_prompts.{task}", prompts)
            for task, prompts in self.task_strategy_prompts.items()
        }
        known = set(DEFAULT_STRATEGIES) | set(self.strategy_prompts)
        known |= {n for prompts in self.task_strategy_prompts.values() for n in prompts}
        unknown = [s for s in self.strategies if s not in known]
        if unknown:
            raise ValueError(
                f"--strategies: unknown {unknown}; valid: {', '.join(sorted(known))} (define new ones in "
                "--elicit.strategy_prompts or --elicit.task_strategy_prompts)"
            )

    def check_tasks(self, task_names: list[str]) -> None:
        """Every strategy defined for every task, and no per-task texts for a task the run lacks."""
        stray = [t for t in self.task_strategy_prompts if t not in task_names]
        if stray:
            raise UserError(
                f"--elicit.task_strategy_prompts names task(s) {', '.join(stray)} that are not among the "
                f"run's tasks ({', '.join(task_names)})"
            )
        prompts, per_task = self.strategy_prompts, self.task_strategy_prompts
        gaps = undefined_strategies(self.strategies, task_names, prompts, per_task)
        if gaps:
            listed = "; ".join(f"{t}: {', '.join(names)}" for t, names in gaps.items())
            raise UserError(
                f"--elicit.strategies has no prompt text for some tasks ({listed}): define them in "
                "--elicit.task_strategy_prompts for each task, or in --elicit.strategy_prompts for all"
            )

    def prompt_text(self, task: Task, strategy: str) -> str:
        """The instructions of `strategy` for `task`, ending with the standard format sentence."""
        return strategy_text(
            strategy, task.name, task.description, self.strategy_prompts, self.task_strategy_prompts
        )


_BUILTIN = ElicitConfig()
"""The built-in strategy texts only (callers that pass no config)."""


def question_prompt(task: Task, shown: Sequence[Example] | None = None) -> str:
    """The brainstorm prompt. It ends by opening block 4 (`PRIMER`), which keeps small teachers on
    format; the completion is parsed as `PRIMER + completion`. `shown`: the 3 example questions
    (default: the task's seeds; benchmarks/teacher_reach.py shows others)."""
    shown = task.seeds[:3] if shown is None else shown
    seeds = "\n".join(render_question_block(ex.input, ex.target, i) for i, ex in enumerate(shown, 1))
    return (
        f"{task.name} is a task whose description is: {task.description} Here are 3 example questions. "
        f"Brainstorm {QUESTIONS_PER_CALL} more questions about {task.name}. Output each as "
        f"<Question_x><input>...</input><target>...</target></Question_x>.\n{seeds}\n{PRIMER}"
    )


def teacher_example(task: Task, enabled: bool) -> str:
    """The worked example (the task's first seed, with its written reasoning where the seed or the
    task has one: `Task.worked_rationale`) for the teacher's rationale prompts, or ""."""
    if not enabled:
        return ""
    seed = task.seeds[0]
    return worked_example(seed.input, seed.target, task.worked_rationale(seed))


def strategy_prompt(
    task: Task, strategy: str, question: str, example: str = "", cfg: ElicitConfig | None = None
) -> str:
    """A rationale prompt: the strategy's instructions (the config's text for this task, else the
    built-in one: `ElicitConfig.prompt_text`), an optional worked example, the question."""
    head = (cfg or _BUILTIN).prompt_text(task, strategy)
    return f"{head}\n{example}Question: {question} Answer: {STEP_BY_STEP}"


def elicit_questions(
    task: Task,
    teacher: Backend,
    cfg: QuestionConfig,
    log: RecordLog,
    seed: int = 0,
    parallel: int = 1,
    call_limit: int | None = None,
) -> dict:
    """Sample brainstorm calls until `cfg.m` unique questions exist; returns {questions, stats}.

    Call c samples with seed `seed + c`. Up to `parallel` calls go to the teacher together (as many
    as the questions still missing need, at the rate of new questions per call seen so far, 5 at
    first, plus `cfg.spare_calls`), each with its own
    seed, and their results are taken in call order until m questions exist: the questions, the log
    and the counts are the same as one call at a time. `call_limit` caps the calls in the log (a
    caller's budget) below the config's own limit."""
    from tqdm import tqdm

    guard = split_guard([task])  # near-duplicates of a seed, validation or test question
    questions: dict[str, dict] = {}
    stats = {"calls": 0, "parsed": 0, "unparsable": 0, "duplicates": 0, "split_overlap": 0}
    stats["split_overlap_by"] = {"exact": 0, "normalised": 0, "ngram": 0}

    def absorb(rec: dict) -> None:
        stats["calls"] += 1
        stats["unparsable"] += rec["unparsable"]
        for q, t in rec["questions"]:
            stats["parsed"] += 1
            key = question_key(q)
            if why := guard.match(q):
                stats["split_overlap"] += 1
                stats["split_overlap_by"][why] += 1
            elif key in questions or len(questions) >= cfg.m:
                stats["duplicates"] += 1
            else:
                questions[key] = {"qid": f"{task.name}-q{len(questions):04d}", "input": q, "target": t}

    for rec in log:
        absorb(rec)
    max_calls = max(1, round(cfg.m / QUESTIONS_PER_CALL * cfg.max_calls_factor))
    if call_limit is not None:
        max_calls = min(max_calls, call_limit)
    prompt = question_prompt(task)
    bar = tqdm(total=cfg.m, initial=min(cfg.m, len(questions)), desc=f"questions {task.name}", unit="q")
    while len(questions) < cfg.m and stats["calls"] < max_calls:
        first = stats["calls"]
        rate = len(questions) / first if first >= parallel else QUESTIONS_PER_CALL  # new questions per call
        need = math.ceil((cfg.m - len(questions)) / max(rate, 0.25))
        n = max(1, min(parallel, need + cfg.spare_calls, max_calls - first))
        params = SamplingParams(
            max_new_tokens=cfg.question_max_new_tokens,
            temperature=cfg.temperature,
            seed=seed + first,
            seeds=tuple(seed + first + j for j in range(n)),
        )
        for j, gen in enumerate(teacher.generate([prompt] * n, params)):
            if len(questions) >= cfg.m:
                break  # a call that one-at-a-time sampling would not have made
            parsed = parse_question_blocks(PRIMER + gen.text)
            rec = {
                "call": first + j,
                "text": gen.text,
                "questions": parsed.questions,
                "unparsable": parsed.unparsable,
            }
            log.append(rec)
            before = len(questions)
            absorb(rec)
            bar.update(len(questions) - before)
    bar.close()
    stats["kept"] = len(questions)
    stats["gave_up"] = len(questions) < cfg.m
    return {"questions": list(questions.values()), "stats": stats}


def elicit_rationales(
    task: Task,
    questions: Sequence[dict],
    teacher: Backend,
    cfg: ElicitConfig,
    log: RecordLog,
    batch: int = 8,
    example: str = "",
) -> list[Draft]:
    """One greedy rationale per (question, strategy), cut where the teacher starts a new question;
    returns the drafts in a stable order."""
    from tqdm import tqdm

    from arte.stages.generate.tag_repair import clean_rationale

    done = {(r["qid"], r["strategy"]): r["rationale"] for r in log}
    jobs = [(q, s) for q in questions for s in cfg.strategies]
    todo = [(q, s) for q, s in jobs if (q["qid"], s) not in done]
    params = SamplingParams(max_new_tokens=cfg.rationale_max_new_tokens, temperature=0.0, stop=TEACHER_STOP)
    prompts = [strategy_prompt(task, s, q["input"], example, cfg) for q, s in todo]
    bar = tqdm(total=len(todo), desc=f"rationales {task.name}", unit="draft", disable=not todo)
    for k, g in generate_stream(teacher, prompts, params, batch):  # each one logged as it is done
        q, s = todo[k]
        rec = {
            "qid": q["qid"],
            "strategy": s,
            "rationale": clean_rationale(g.text),
            "finish": g.finish_reason,
        }
        log.append(rec)
        done[(q["qid"], s)] = rec["rationale"]
        bar.update(1)
    bar.close()
    return [Draft(task.name, q["qid"], q["input"], q["target"], s, done[(q["qid"], s)]) for q, s in jobs]


def read_drafts(run_dir: RunDir) -> list[Draft]:
    """elicit/drafts.jsonl of a run, as written by this stage."""
    return [Draft(**r) for r in RecordLog(run_dir.path / "elicit" / "drafts.jsonl")]


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """Per task: m questions (elicit/TASK.questions.jsonl), then n rationales each
    (elicit/TASK.rationales.jsonl); all drafts in elicit/drafts.jsonl."""

    cfg.elicit.check_tasks([t.name for t in tasks])
    out, counts, drafts = run_dir.stage("elicit"), {}, []
    teacher = load_backend(cfg.teacher)
    try:
        for task in tasks:
            questions_log = RecordLog(out / f"{task.name}.questions.jsonl", resume=True)
            got = elicit_questions(
                task, teacher, cfg.elicit, questions_log, cfg.seed, parallel=cfg.teacher.call_size
            )
            if not got["questions"]:
                raise UserError(
                    f"the teacher wrote no parsable question for task {task.name!r} in "
                    f"{got['stats']['calls']} calls (see {out / task.name}.questions.jsonl); use a stronger "
                    "teacher or --teacher.chat true"
                )
            log = RecordLog(out / f"{task.name}.rationales.jsonl", resume=True)
            example = teacher_example(task, cfg.teacher_worked_example)
            drafts += elicit_rationales(
                task, got["questions"], teacher, cfg.elicit, log, cfg.teacher.call_size, example
            )
            counts[task.name] = got["stats"] | {"drafts": len(got["questions"]) * len(cfg.elicit.strategies)}
    finally:
        teacher.close()
    write_jsonl_atomic(out / "drafts.jsonl", [dataclasses.asdict(d) for d in drafts])
    return counts


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """m/5 brainstorm calls (up to max_calls_factor times that) and m x n rationales per task."""
    e = cfg.elicit
    m, n, per_call, factor = e.m, len(e.strategies), QUESTIONS_PER_CALL, e.max_calls_factor
    return [
        PlanCount(
            "teacher brainstorm calls",
            math.ceil(m / per_call),
            max(1, round(m / per_call * factor)),
            f"m/{per_call} .. m/{per_call} x max_calls_factor {factor:g}",
        ),
        PlanCount.exact("teacher rationales (drafts)", m * n, f"m {m} x n {n} strategies"),
    ]


STAGE = Stage(
    name="elicit",
    help="Step 1: the teacher drafts m questions and n rationales per question.",
    run=run,
    depends_on=("seed", "teacher", "elicit", "teacher_worked_example"),
    reads=(),
    writes=("elicit/TASK.questions.jsonl", "elicit/TASK.rationales.jsonl", "elicit/drafts.jsonl"),
    sections=("teacher", "elicit", "teacher_worked_example"),
    models=lambda cfg: (teacher_model(cfg),) if cfg.teacher.name in LOCAL_ENGINES else (),
    skipped_with_reused_teacher=True,
    in_rounds=True,
    plan_counts=plan_counts,
)
