"""ARTE step 4a: the aligned teacher writes the tailored training set.

Questions come from the same brainstorm prompt (temperature 1.0, `arte.elicit.elicit_questions`);
each gets one greedy rationale from the *naive* prompt (the aligned teacher picks its own strategy).
Then three filters, each counted: the rationale's `<ans>` must agree with the question's target;
duplicates go; and where the task has an exact verifier, examples whose target is wrong go.

The same row format serves the baseline built from the original teacher's drafts
(`sft_rows_from_drafts`): prompt = the student's zero-shot prompt, completion = the rationale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from arte.backends.base import Backend, SamplingParams
from arte.config import opt
from arte.draft_parsing import question_key
from arte.elicit import ElicitConfig, elicit_questions
from arte.prompts import icl_prompt, naive_prompt
from arte.run_dir import RecordLog
from arte.scoring import Draft
from arte.tasks.answers import extract_answer
from arte.tasks.base import Task


@dataclass
class GenerateConfig:
    """Tailored data generation by the aligned teacher (ARTE step 4)."""

    n_per_task: int = opt(250, "Candidate questions per task before filtering (paper: ~250 per BBH task).")
    temperature: float = opt(1.0, "Sampling temperature of the brainstorm prompt (paper: 1.0).")
    question_max_new_tokens: int = opt(400, "Decode budget of one brainstorm call.")
    rationale_max_new_tokens: int = opt(160, "Decode budget of one rationale.")
    max_calls_factor: float = opt(3.0, "Give up after n / 5 * this many brainstorm calls.")
    verify: bool = opt(True, "Drop examples whose target the task's exact verifier rejects.")


def sft_row(task: Task, question: str, target: str, rationale: str, source: str) -> dict:
    """One student training example in the format the student is evaluated with (zero-shot prompt)."""
    return {
        "task": task.name,
        "prompt": icl_prompt(task.description, [], question),
        "completion": " " + rationale.strip(),
        "question": question,
        "target": target,
        "source": source,
    }


def filter_examples(task: Task, candidates: Sequence[dict], verify: bool) -> tuple[list[dict], dict]:
    """Apply the answer-agreement, duplicate and verifier filters; return kept rows and counts."""
    counts = {"candidates": len(candidates), "no_answer_tag": 0, "answer_disagrees": 0, "duplicate": 0,
              "verifier_rejected": 0, "verifier_unparsable": 0}  # fmt: skip
    kept, seen = [], set()
    for c in candidates:
        answer = extract_answer(c["rationale"])
        if answer is None:
            counts["no_answer_tag"] += 1
            continue
        if task.normalize(answer) != task.normalize(c["target"]):
            counts["answer_disagrees"] += 1
            continue
        key = question_key(c["question"])
        if key in seen:
            counts["duplicate"] += 1
            continue
        if verify and task.verifier is not None:
            verdict = task.verifier(c["question"], c["target"])
            if verdict is None:
                counts["verifier_unparsable"] += 1  # kept: the verifier could not read the question
            elif not verdict:
                counts["verifier_rejected"] += 1
                continue
        seen.add(key)
        kept.append(sft_row(task, c["question"], c["target"], c["rationale"], c.get("source", "arte")))
    counts["kept"] = len(kept)
    return kept, counts


def generate_tailored(
    task: Task, teacher: Backend, cfg: GenerateConfig, questions_log: RecordLog, rationales_log: RecordLog,
    *, seed: int = 0, batch: int = 8, example: str = "",
) -> tuple[list[dict], dict]:  # fmt: skip
    """Questions + one naive-prompt rationale each from the aligned teacher, then the filters."""
    from tqdm import tqdm

    ecfg = ElicitConfig(
        m=cfg.n_per_task,
        temperature=cfg.temperature,
        question_max_new_tokens=cfg.question_max_new_tokens,
        max_calls_factor=cfg.max_calls_factor,
    )
    drafted = elicit_questions(task, teacher, ecfg, questions_log, seed=seed)
    done = {r["qid"]: r["rationale"] for r in rationales_log}
    todo = [q for q in drafted["questions"] if q["qid"] not in done]
    params = SamplingParams(max_new_tokens=cfg.rationale_max_new_tokens, temperature=0.0, stop=("</ans>",))
    for start in tqdm(
        range(0, len(todo), batch), desc=f"generate {task.name}", unit="batch", disable=not todo
    ):
        chunk = todo[start : start + batch]
        gens = teacher.generate([naive_prompt(task.description, q["input"], example) for q in chunk], params)
        records = [{"qid": q["qid"], "rationale": g.text.strip()} for q, g in zip(chunk, gens)]
        rationales_log.extend(records)
        done.update({r["qid"]: r["rationale"] for r in records})
    candidates = [
        {"question": q["input"], "target": q["target"], "rationale": done[q["qid"]], "source": "arte"}
        for q in drafted["questions"]
    ]
    kept, counts = filter_examples(task, candidates, cfg.verify)
    return kept, {"elicit": drafted["stats"], "filters": counts}


def sft_rows_from_drafts(
    task: Task, drafts: Sequence[Draft], scores: Sequence[float], verify: bool
) -> tuple[list[dict], dict]:
    """The 'original teacher' baseline: each draft question with its best-scoring rationale (no
    alignment), through the same filters as the tailored set."""
    best: dict[str, tuple[float, Draft]] = {}
    for d, s in zip(drafts, scores):
        if d.qid not in best or s > best[d.qid][0]:
            best[d.qid] = (s, d)
    candidates = [
        {"question": d.question, "target": d.target, "rationale": d.rationale, "source": "original"}
        for _, d in best.values()
    ]
    return filter_examples(task, candidates, verify)
