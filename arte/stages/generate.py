"""ARTE step 4a: the aligned teacher writes the tailored training set.

Questions come from the same brainstorm prompt (temperature 1.0, `arte.stages.elicit.elicit_questions`,
with the settings in `generate.questions`);
each gets one greedy rationale from the *naive* prompt (the aligned teacher picks its own strategy).
Then three filters, each counted: the rationale's `<ans>` must agree with the question's target;
duplicates go; and where the task has an exact verifier, examples whose target is wrong go.

The same row format serves the baseline built from the original teacher's drafts
(`sft_rows_from_drafts`): prompt = the student's zero-shot prompt, completion = the rationale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from arte.backends.base import Backend, SamplingParams
from arte.stages.draft_parsing import question_key
from arte.stages.elicit import QuestionConfig, elicit_questions
from arte.stages.score import ScoredDraft
from common.config import opt
from common.errors import UserError
from common.prompts import icl_prompt, naive_prompt
from common.records import RecordLog, write_jsonl_atomic
from common.tasks.answers import extract_answer
from common.tasks.base import Task

if TYPE_CHECKING:
    from arte.backends import BackendConfig
    from arte.pipeline import RunConfig
    from arte.run_dir import RunDir

HELP = "Step 4a: the aligned teacher writes the tailored training set (filtered)."

DEPENDS_ON = ("seed", "teacher.model", "aligned_teacher", "generate", "teacher_worked_example")
"""The RunConfig fields this stage's files depend on (recorded in done.json: `arte.provenance`)."""
READS: tuple[str, ...] = ("align", "score/scores.jsonl")
"""Files of earlier stages it reads, relative to the run directory."""


@dataclass
class GenerateConfig:
    """Tailored data generation by the aligned teacher (ARTE step 4)."""

    questions: QuestionConfig = opt(
        QuestionConfig(), "Candidate questions per task before filtering, drafted with the brainstorm prompt."
    )
    rationale_max_new_tokens: int = opt(160, "Decode budget of one rationale.")
    verify: bool = opt(True, "Drop examples whose target the task's exact verifier rejects.")

    def __post_init__(self) -> None:
        if self.rationale_max_new_tokens < 1:
            raise ValueError(f"--rationale_max_new_tokens must be >= 1, got {self.rationale_max_new_tokens}")


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
    counts = {
        "candidates": len(candidates),
        "no_answer_tag": 0,
        "answer_disagrees": 0,
        "duplicate": 0,
        "verifier_rejected": 0,
        "verifier_unparsable": 0,
    }
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
    task: Task,
    teacher: Backend,
    cfg: GenerateConfig,
    questions_log: RecordLog,
    rationales_log: RecordLog,
    *,
    seed: int = 0,
    batch: int = 8,
    example: str = "",
) -> tuple[list[dict], dict]:
    """Questions + one naive-prompt rationale each from the aligned teacher, then the filters."""
    from tqdm import tqdm

    drafted = elicit_questions(task, teacher, cfg.questions, questions_log, seed=seed, parallel=batch)
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


def sft_rows_from_drafts(task: Task, scored: Sequence[ScoredDraft], verify: bool) -> tuple[list[dict], dict]:
    """The 'original teacher' baseline: each draft question with its best-scoring rationale (no
    alignment), through the same filters as the tailored set."""
    best: dict[str, ScoredDraft] = {}
    for d in scored:
        if d.qid not in best or d.score > best[d.qid].score:
            best[d.qid] = d
    candidates = [
        {"question": d.question, "target": d.target, "rationale": d.rationale, "source": "original"}
        for d in best.values()
    ]
    return filter_examples(task, candidates, verify)


def aligned_teacher_config(cfg: RunConfig, run_dir: RunDir) -> BackendConfig:
    """The aligned teacher for its engine: the F16 GGUF (llama_cpp), the base model plus the unmerged
    LoRA adapter as a LoRA request (vllm, when align used LoRA), else the merged HF directory."""
    from arte.models import resolve_hf

    align, name = run_dir.path / "align", cfg.aligned_teacher.name
    if name == "vllm" and (align / "teacher-adapter" / "adapter_config.json").is_file():
        model, adapter = resolve_hf(cfg.teacher.model), str(align / "teacher-adapter")
        return dataclasses.replace(cfg.aligned_teacher, model=model, lora_adapter=adapter)
    aligned = align / ("teacher-f16.gguf" if name == "llama_cpp" else "teacher")
    if not aligned.exists():
        raise UserError(f"{aligned} is missing: re-run the align stage with this --aligned_teacher.name")
    return dataclasses.replace(cfg.aligned_teacher, model=str(aligned))


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """The tailored set (generate/arte.jsonl) from the aligned teacher, and the original-teacher
    baseline (generate/original.jsonl) from the scored drafts, both through the same filters."""
    from arte.backends import load_backend
    from arte.stages.elicit import teacher_example
    from arte.stages.score import read_scored_drafts

    out, counts, arte_rows, original_rows = run_dir.stage("generate"), {}, [], []
    teacher = load_backend(aligned_teacher_config(cfg, run_dir))
    scored = read_scored_drafts(run_dir)
    try:
        for task in tasks:
            rows, stats = generate_tailored(
                task,
                teacher,
                cfg.generate,
                RecordLog(out / f"{task.name}.questions.jsonl", resume=True),
                RecordLog(out / f"{task.name}.rationales.jsonl", resume=True),
                seed=cfg.seed + 10_000,
                batch=cfg.aligned_teacher.call_size,
                example=teacher_example(task, cfg.teacher_worked_example),
            )
            mine = [d for d in scored if d.task == task.name]
            base, base_counts = sft_rows_from_drafts(task, mine, cfg.generate.verify)
            arte_rows += rows
            original_rows += base
            counts[task.name] = {"arte": stats, "original_filters": base_counts}
    finally:
        teacher.close()
    for name, rows in (("arte", arte_rows), ("original", original_rows)):
        if not rows:
            raise UserError(
                f"the {name} training set is empty after filtering; see {out} and the counts: {counts}"
            )
        write_jsonl_atomic(out / f"{name}.jsonl", rows)
    return counts
