"""Draw candidates from a teacher until N examples per task survive, or the call budget is spent.

One round: draft questions (the brainstorm prompt, `arte.stages.elicit.elicit_questions`), then the
rationales that the selection still needs, then select again (`select`). Selection walks the
questions in draft order: question checks, the label (solver, else a vote over `samples`
rationales), the label's cap, the first rationale that agrees with the label. Rationale 0 is greedy
(the paper's one rationale per question); rationales 1.. are sampled, only where needed: with a
solver when rationale 0 disagrees with it, for a vote always.

Every teacher call is a record in the logs, so a killed run resumes without repeating a call: it
starts from every question already drafted, and selection is a pure function of the logs. The
stop reason is reported: "enough", "budget" (`max_calls` generations per task), or
"teacher_gave_up" (a round of brainstorm calls gave no new question).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from arte.backends.base import Backend, SamplingParams
from arte.backends.streaming import generate_stream
from arte.stages.elicit import elicit_questions
from arte.stages.elicit.contamination import split_guard
from arte.stages.elicit.draft_parsing import question_key
from arte.stages.generate.balance import LabelCaps, balance_report
from arte.stages.generate.labels import majority, solver_label, uses_solver
from arte.stages.generate.question_checks import QuestionChecks
from arte.stages.generate.tag_repair import read_rationale
from common.prompts import TEACHER_STOP, icl_prompt, naive_prompt
from common.records import RecordLog
from common.tasks.answer_space import AnswerSpace, task_answer_space
from common.tasks.answers import extract_answer
from common.tasks.base import Task

if TYPE_CHECKING:
    from arte.stages.generate import GenerateConfig

MIN_YIELD = 0.05
"""The kept share assumed at worst when sizing the next round of questions."""
SEED_OFFSET = 10_000
"""generate's seeds are --seed plus this (elicit's are --seed): its questions are not elicit's."""


def sft_row(task: Task, question: str, target: str, rationale: str, source: str, **extra) -> dict:
    """One student training example in the format the student is evaluated with (zero-shot prompt)."""
    return {
        "task": task.name,
        "prompt": icl_prompt(task.description, [], question),
        "completion": " " + rationale.strip(),
        "question": question,
        "target": target,
        "source": source,
        **extra,
    }


@dataclass
class Selection:
    """What `select` kept, what it dropped and why, and the rationales it still needs."""

    rows: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    needs: list[tuple[dict, int]] = field(default_factory=list)
    decided: int = 0

    @property
    def yield_rate(self) -> float:
        return len(self.rows) / self.decided if self.decided else 0.5


def _pick(reads: list, label: str, scores: list[float] | None) -> int | None:
    """The rationale to keep among those whose answer is `label`: the best-scored, else the first."""
    agree = [i for i, r in enumerate(reads) if r is not None and r.answer == label]
    if not agree:
        return None
    return max(agree, key=lambda i: (scores[i], -i)) if scores else agree[0]


def select(
    task: Task,
    questions: list[dict],
    rationales: dict[tuple[str, int], str],
    cfg: GenerateConfig,
    source: str,
    *,
    space: AnswerSpace | None = None,
    checks: QuestionChecks | None = None,
    expected_yield: float = 0.5,
    can_sample: bool = True,
) -> Selection:
    """Walk `questions` in order and keep up to `cfg.n_examples` examples (see module doc).
    `rationales[(qid, i)]` is rationale i of question qid; a question's `scores` (a list over its
    rationales), when present, chooses among agreeing ones. Needs are planned only while the kept
    rows plus the pending questions times `expected_yield` fall short of N."""
    space = space or task_answer_space(task)
    checks = checks or QuestionChecks.learn([e.input for e in task.seeds + task.validation])
    caps, sel, pending = LabelCaps(space, cfg.n_examples, cfg.balance_tolerance), Selection(), 0
    with_solver = uses_solver(task, cfg.verify)
    for q in questions:
        if len(sel.rows) >= cfg.n_examples:
            sel.counts["not_needed"] += 1
            continue
        problem = checks.problem(q["input"])
        if problem:
            sel.counts[problem] += 1
            sel.decided += 1
            continue
        label = solver_label(task, space, q["input"]) if with_solver else None
        if with_solver and label is None:
            sel.counts["unverifiable"] += 1
            sel.decided += 1
            continue
        if label is not None and caps.is_full(label):
            sel.counts["over_cap"] += 1
            continue
        n = len(q["scores"]) if "scores" in q else cfg.samples
        texts = [rationales.get((q["qid"], i)) for i in range(n)]
        have = next((i for i, t in enumerate(texts) if t is None), n)
        reads = [read_rationale(t, space) for t in texts[:have]]
        pick = _pick(reads, label, q.get("scores")) if label is not None else None
        if pick is None and have < n and can_sample:
            if len(sel.rows) + pending * expected_yield < cfg.n_examples:
                first_only = have == 0 and with_solver
                sel.needs += [(q, i) for i in range(have, 1 if first_only else n)]
                pending += 1
            continue
        if label is None:
            vote = majority([r.answer for r in reads], cfg.min_votes)
            sel.counts["voted"] += 1
            if vote.label is None:
                sel.counts["no_majority"] += 1
                sel.decided += 1
                continue
            label = vote.label
            if caps.is_full(label):
                sel.counts["over_cap"] += 1
                continue
            pick = _pick(reads, label, q.get("scores"))
        sel.decided += 1
        if pick is None:
            sel.counts["no_agreeing_rationale"] += 1
            continue
        kept = reads[pick]
        caps.take(label)
        sel.counts["repaired"] += int(kept.repaired)
        teacher_target = space.canonical(q["target"])
        sel.counts["teacher_target_agrees"] += int(teacher_target == label)
        sel.rows.append(
            sft_row(
                task,
                q["input"],
                extract_answer(kept.text) or label,
                kept.text,
                source,
                label=label,
                label_from="solver" if with_solver else "vote",
                teacher_target=q["target"],
                repaired=kept.repaired,
                qid=q["qid"],
            )
        )
    sel.counts["kept"] = len(sel.rows)
    return sel


def _seed(seed: int, qid: str, sample: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(qid.encode()) * 31 + sample) % 2**31


def draw_rationales(
    task: Task,
    teacher: Backend,
    needs: list[tuple[dict, int]],
    cfg: GenerateConfig,
    log: RecordLog,
    *,
    seed: int,
    call_size: int,
    example: str,
) -> list[dict]:
    """Generate the needed rationales (0 greedy, the others sampled with their own seeds), logging
    each record as it arrives (`arte.backends.streaming`); returns the records."""
    records: list[dict] = []
    greedy = [(q, i) for q, i in needs if i == 0]
    sampled = [(q, i) for q, i in needs if i > 0]
    for jobs, temperature in ((greedy, 0.0), (sampled, cfg.sample_temperature)):
        params = SamplingParams(
            max_new_tokens=cfg.rationale_max_new_tokens,
            temperature=temperature,
            stop=TEACHER_STOP,
            seeds=tuple(_seed(seed, q["qid"], i) for q, i in jobs),
        )
        prompts = [naive_prompt(task.description, q["input"], example) for q, _ in jobs]
        for k, g in generate_stream(teacher, prompts, params, call_size):
            (q, i) = jobs[k]
            made = {"qid": q["qid"], "sample": i, "text": g.text, "finish": g.finish_reason}
            log.append(made)
            records.append(made)
    return records


def drafted_questions(task: Task, questions_log: RecordLog) -> int:
    """The distinct questions a brainstorm log holds that `elicit_questions` keeps (not a seed, nor
    of the validation or test split): a resumed run starts with m at least this, and no more, so
    it asks for no question it did not need the first time."""
    guard = split_guard([task])
    return len({question_key(q) for r in questions_log for q, _ in r["questions"] if not guard.match(q)})


def collect_training_set(
    task: Task,
    teacher: Backend,
    cfg: GenerateConfig,
    out: Path,
    *,
    source: str,
    seed: int,
    call_size: int,
    example: str,
    rationale_teacher: Backend | None = None,
) -> tuple[list[dict], dict]:
    """Rounds of questions and rationales until `cfg.n_examples` are kept (see module doc). Logs:
    out/TASK.questions.jsonl (brainstorm calls), out/TASK.rationales.jsonl (one record each).
    `rationale_teacher` writes the rationales when given (the ablations: one teacher's questions,
    another's rationales); `teacher` then only drafts questions."""
    from tqdm import tqdm

    questions_log = RecordLog(out / f"{task.name}.questions.jsonl", resume=True)
    rationales_log = RecordLog(out / f"{task.name}.rationales.jsonl", resume=True)
    rationales = {(r["qid"], r["sample"]): r["text"] for r in rationales_log}
    space = task_answer_space(task)
    checks = QuestionChecks.learn([e.input for e in task.seeds + task.validation])
    logged = drafted_questions(task, questions_log)
    m, expected, stop = max(cfg.questions.m, min(logged, 50 * cfg.n_examples)), 0.5, "enough"
    drafted = {"questions": [], "stats": {"calls": 0}}
    bar = tqdm(total=cfg.n_examples, desc=f"generate {task.name} ({source})", unit="ex")

    def reselect(can_sample: bool = True) -> Selection:
        return select(
            task,
            drafted["questions"],
            rationales,
            cfg,
            source,
            space=space,
            checks=checks,
            expected_yield=expected,
            can_sample=can_sample,
        )

    while True:
        calls_left = cfg.max_calls - drafted["stats"]["calls"] - len(rationales)
        before = len(drafted["questions"])
        round_calls = max(call_size, 4 * (m - before))  # at 1 question per 4 calls at worst
        drafted = elicit_questions(
            task,
            teacher,
            dataclasses.replace(cfg.questions, m=m, max_calls_factor=1e9),  # the call budget limits instead
            questions_log,
            seed=seed,
            parallel=call_size,
            call_limit=drafted["stats"]["calls"] + max(0, min(calls_left, round_calls)),
        )
        sel = reselect()
        expected = max(MIN_YIELD, sel.yield_rate)
        while sel.needs and len(sel.rows) < cfg.n_examples:
            calls_left = cfg.max_calls - drafted["stats"]["calls"] - len(rationales)
            if calls_left <= 0:
                break
            made = draw_rationales(
                task,
                rationale_teacher or teacher,
                sel.needs[:calls_left],
                cfg,
                rationales_log,
                seed=seed,
                call_size=call_size,
                example=example,
            )
            rationales.update({(r["qid"], r["sample"]): r["text"] for r in made})
            sel = reselect()
            expected = max(MIN_YIELD, sel.yield_rate)
            bar.n = len(sel.rows)
            bar.refresh()
        if len(sel.rows) >= cfg.n_examples:
            break
        if cfg.max_calls - drafted["stats"]["calls"] - len(rationales) <= 0:
            stop = "budget"
            break
        if len(drafted["questions"]) == before:  # a whole round of brainstorm calls, no new question
            stop = "teacher_gave_up"
            break
        deficit = cfg.n_examples - len(sel.rows)
        wanted = math.ceil(deficit / max(expected, MIN_YIELD))
        m = len(drafted["questions"]) + min(wanted, max(cfg.questions.m, 2 * deficit))
    bar.close()
    sel = reselect(can_sample=False)
    reads = Counter()
    for text in rationales.values():
        got = read_rationale(text, space)
        reads["repaired" if got.repaired else "tagged" if got.answer else got.reason] += 1
    report = {
        "stop": stop,
        "kept": len(sel.rows),
        "wanted": cfg.n_examples,
        "teacher_calls": drafted["stats"]["calls"] + len(rationales),
        "questions": drafted["stats"],
        "answer_space": space.describe(),
        "selection": dict(sel.counts),
        "rationales": dict(reads),
        "balance": balance_report([r["label"] for r in sel.rows], space),
    }
    return sel.rows, report
