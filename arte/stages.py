"""The pipeline's stages, in order. Each is `stage(cfg, run, tasks) -> counts` and talks to the
others only through files in the run directory (paths below, relative to it):

    elicit/TASK.questions.jsonl, elicit/TASK.rationales.jsonl, elicit/drafts.jsonl
    prefset/TASK.json                      D_pref indices, method (irt | random) and why
    score/cache.jsonl, score/scores.jsonl  one score per draft (cached by content hash)
    pairs/dpo.jsonl                        question- and rationale-level DPO pairs
    align/teacher/                         the aligned teacher, merged, HF format (+ teacher-adapter/
                                           with LoRA, teacher-f16.gguf when it runs on llama.cpp)
    generate/arte.jsonl, generate/original.jsonl   SFT data (tailored; original-teacher baseline)
    train/arte/, train/original/           the fine-tuned students, HF format
    evaluate/VARIANT.jsonl, summary.md, summary.json
"""

from __future__ import annotations

import dataclasses

from arte.backends import BackendConfig, load_backend
from arte.errors import UserError
from arte.models import resolve_hf
from arte.run_dir import RecordLog, RunDir, read_json, write_json_atomic
from arte.scoring import Draft


def _write_jsonl(path, rows) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    RecordLog(tmp).extend(rows)
    tmp.touch()
    tmp.replace(path)


def _drafts(run: RunDir) -> list[Draft]:
    return [Draft(**r) for r in RecordLog(run.path / "elicit" / "drafts.jsonl")]


def stage_elicit(cfg, run: RunDir, tasks) -> dict:
    from arte.elicit import elicit_questions, elicit_rationales, teacher_example

    out, counts, drafts = run.stage("elicit"), {}, []
    teacher = load_backend(cfg.teacher)
    try:
        for task in tasks:
            got = elicit_questions(
                task, teacher, cfg.elicit, RecordLog(out / f"{task.name}.questions.jsonl"), cfg.seed
            )
            if not got["questions"]:
                raise UserError(
                    f"the teacher wrote no parsable question for task {task.name!r} in {got['stats']['calls']} "
                    f"calls (see {out / task.name}.questions.jsonl); use a stronger teacher or --teacher.chat true"
                )
            log = RecordLog(out / f"{task.name}.rationales.jsonl")
            example = teacher_example(task, cfg.teacher_worked_example)
            drafts += elicit_rationales(
                task, got["questions"], teacher, cfg.elicit, log, cfg.teacher.batch_size, example
            )
            counts[task.name] = got["stats"] | {"drafts": len(got["questions"]) * len(cfg.elicit.strategies)}
    finally:
        teacher.close()
    _write_jsonl(out / "drafts.jsonl", [dataclasses.asdict(d) for d in drafts])
    return counts


def stage_prefset(cfg, run: RunDir, tasks) -> dict:
    from arte.prefset import select_pref_set

    out, counts = run.stage("prefset"), {}
    student = load_backend(cfg.student)
    try:
        for task in tasks:
            path = out / f"{task.name}.json"
            if not path.exists():  # per-task resume
                write_json_atomic(
                    path, select_pref_set(task, cfg.student, cfg.prefset, seed=cfg.seed, student=student)
                )
            rec = read_json(path)
            counts[task.name] = {"k": len(rec["indices"]), "method": rec["method"], "reason": rec["reason"]}
    finally:
        student.close()
    return counts


def stage_score(cfg, run: RunDir, tasks) -> dict:
    from arte.scoring import score_drafts

    out, drafts, rows, counts = run.stage("score"), _drafts(run), [], {}
    cache = RecordLog(out / "cache.jsonl")
    student = load_backend(cfg.student)
    try:
        for task in tasks:
            indices = read_json(run.path / "prefset" / f"{task.name}.json")["indices"]
            pref = [task.validation[i] for i in indices]
            mine = [d for d in drafts if d.task == task.name]
            values = score_drafts(task, mine, pref, student, student_id=_student_id(cfg.student),
                                  cache=cache, max_new_tokens=cfg.score_max_new_tokens)  # fmt: skip
            rows += [dataclasses.asdict(d) | {"score": s} for d, s in zip(mine, values, strict=True)]
            counts[task.name] = {"drafts": len(mine), "mean_score": round(sum(values) / max(len(values), 1), 3),
                                 "distinct_scores": len(set(values))}  # fmt: skip
    finally:
        student.close()
    _write_jsonl(out / "scores.jsonl", rows)
    return counts


def _student_id(student: BackendConfig) -> str:
    """What identifies the student's answers for the score cache: engine and model file contents."""
    from pathlib import Path

    from arte.models import EMBEDDED, resolve_gguf

    model = str(resolve_gguf(student.model)) if student.name == "llama_cpp" else student.model
    path = Path(model)
    stamp = f"{path.stat().st_size}:{int(path.stat().st_mtime)}" if path.is_file() else ""
    return (
        f"{student.name}:{student.model if student.model in EMBEDDED else model}:{stamp}:chat={student.chat}"
    )


def stage_pairs(cfg, run: RunDir, tasks) -> dict:
    from arte.elicit import question_prompt, teacher_example
    from arte.pairs import build_dpo_pairs

    scored = list(RecordLog(run.path / "score" / "scores.jsonl"))
    drafts = [Draft(**{k: r[k] for k in Draft.__dataclass_fields__}) for r in scored]
    by_name = {t.name: t for t in tasks}
    prompts = {t.name: question_prompt(t) for t in tasks}
    examples = {t.name: teacher_example(t, cfg.teacher_worked_example) for t in tasks}
    rows, stats = build_dpo_pairs(by_name, prompts, drafts, [r["score"] for r in scored], cfg.pairs, examples)
    if not rows:
        raise UserError(
            "no DPO pair could be built: every draft of a question scored the same and question scores "
            f"did not separate (see {run.path / 'score' / 'scores.jsonl'}). The student may answer nothing "
            "(or everything) correctly on D_pref: use a larger --prefset.k, more drafts, or another student."
        )
    _write_jsonl(run.stage("pairs") / "dpo.jsonl", rows)
    return stats


def stage_align(cfg, run: RunDir, tasks) -> dict:
    from arte.align import align_teacher

    out = run.stage("align")
    teacher_dir, pairs = out / "teacher", run.path / "pairs" / "dpo.jsonl"
    if (teacher_dir / "config.json").is_file() and (teacher_dir / "align_stats.json").is_file():
        stats = read_json(teacher_dir / "align_stats.json")  # trained before a later step failed
    else:
        stats = align_teacher(resolve_hf(cfg.teacher.model), pairs, teacher_dir, cfg.align)
    if cfg.aligned_teacher.name == "llama_cpp":  # generation runs on llama.cpp: a GGUF of the aligned teacher
        from export.gguf_convert import convert_hf_to_gguf

        stats["gguf"] = str(convert_hf_to_gguf(teacher_dir, out / "teacher-f16.gguf", "f16"))
    return stats


def stage_generate(cfg, run: RunDir, tasks) -> dict:
    from arte.elicit import teacher_example
    from arte.generate import generate_tailored, sft_rows_from_drafts

    out, counts, arte_rows, original_rows = run.stage("generate"), {}, [], []
    teacher = load_backend(_aligned_teacher_config(cfg, run))
    scored = list(RecordLog(run.path / "score" / "scores.jsonl"))
    try:
        for task in tasks:
            rows, stats = generate_tailored(
                task, teacher, cfg.generate, RecordLog(out / f"{task.name}.questions.jsonl"),
                RecordLog(out / f"{task.name}.rationales.jsonl"), seed=cfg.seed + 10_000,
                batch=cfg.aligned_teacher.batch_size, example=teacher_example(task, cfg.teacher_worked_example),
            )  # fmt: skip
            mine = [r for r in scored if r["task"] == task.name]
            drafts = [Draft(**{k: r[k] for k in Draft.__dataclass_fields__}) for r in mine]
            base, base_counts = sft_rows_from_drafts(
                task, drafts, [r["score"] for r in mine], cfg.generate.verify
            )
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
        _write_jsonl(out / f"{name}.jsonl", rows)
    return counts


def _aligned_teacher_config(cfg, run: RunDir) -> BackendConfig:
    """The aligned teacher for its engine: the F16 GGUF (llama_cpp), the base model plus the unmerged
    LoRA adapter as a LoRA request (vllm, when align used LoRA), else the merged HF directory."""
    align, name = run.path / "align", cfg.aligned_teacher.name
    if name == "vllm" and (align / "teacher-adapter" / "adapter_config.json").is_file():
        model, adapter = resolve_hf(cfg.teacher.model), str(align / "teacher-adapter")
        return dataclasses.replace(cfg.aligned_teacher, model=model, lora_adapter=adapter)
    aligned = align / ("teacher-f16.gguf" if name == "llama_cpp" else "teacher")
    if not aligned.exists():
        raise UserError(f"{aligned} is missing: re-run the align stage with this --aligned_teacher.name")
    return dataclasses.replace(cfg.aligned_teacher, model=str(aligned))


def stage_train(cfg, run: RunDir, tasks) -> dict:
    from arte.train import train_student

    out, counts = run.stage("train"), {}
    for variant in ("original", "arte"):
        target = out / variant
        if (target / "config.json").is_file():
            counts[variant] = (
                read_json(target / "train_stats.json") if (target / "train_stats.json").exists() else {}
            )
            continue
        data = run.path / "generate" / f"{variant}.jsonl"
        counts[variant] = train_student(resolve_hf(cfg.student.model), data, target, cfg.train)
    return counts


def stage_evaluate(cfg, run: RunDir, tasks) -> dict:
    from arte.evaluate_stage import evaluate_variants

    return evaluate_variants(cfg, run, tasks)


STAGES = [
    ("elicit", stage_elicit),
    ("prefset", stage_prefset),
    ("score", stage_score),
    ("pairs", stage_pairs),
    ("align", stage_align),
    ("generate", stage_generate),
    ("train", stage_train),
    ("evaluate", stage_evaluate),
]
