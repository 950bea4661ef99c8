"""Teacher reuse (paper, Tables 4 and 5): a run takes its aligned teacher from another run directory
(`--aligned_teacher_from`) instead of aligning its own, then generates, trains and evaluates for its
own student and tasks: the aligned teacher of student A serving student B, or unseen tasks.

Such a run skips the stages declared `skipped_with_reused_teacher` (elicit, prefset, score,
prefcheck, pairs, gain: its own student's preferences are not needed, and prefcheck and gain read
this run's D_pref and draft scores, which it has none of);
its align stage checks that the other run finished align, takes from it what this run's aligned
teacher engine needs (the merged HF teacher; the F16 GGUF for llama_cpp, converted into this run's
align/ when the other run has none) and writes align/reused.json: where the teacher came from, the
file or directory used, its sha256 (every byte), and the other run's teacher, student and tasks.
The same record goes into align/done.json and the manifest; generate loads that teacher. The other
run's align directory is an input of this run's align stage (`external_inputs`): when it is
re-aligned, the next command here says so. A reused teacher aligned from another teacher model
than this run's --teacher.model is an error unless --allow_teacher_mismatch; the summary carries the
other run's caveats (random D_pref, IRT warnings, a handful of DPO pairs) and its origin
(`arte.stages.evaluate.run_caveats`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from arte.run_dir import RunDir
from common.errors import UserError
from common.records import read_json, sha256_file, write_json_atomic

if TYPE_CHECKING:
    from arte.run_config import RunConfig

log = logging.getLogger(__name__)

FLAG = "--aligned_teacher_from"
RECORD = "reused.json"


def other_align_dir(cfg: RunConfig) -> Path:
    """The other run's align directory, checked: it exists, it is not this run, align finished."""
    other = Path(cfg.aligned_teacher_from).expanduser().resolve()
    if other == Path(cfg.run_dir).expanduser().resolve():
        raise UserError(f"{FLAG} {other} is this run's own directory: name another run, or leave it empty")
    align = other / "align"
    if (align / "done.json").is_file() and (align / RECORD).is_file():  # it reused one itself
        align = Path(read_json(align / RECORD)["reused_from"]) / "align"
    if not (align / "done.json").is_file() or not (align / "teacher" / "config.json").is_file():
        raise UserError(
            f"{FLAG} {other}: that run has no finished align stage ({align / 'done.json'} and "
            f"{align / 'teacher'} are needed): finish it there first (`arte align --run_dir {other} "
            "--config ITS_CONFIG`), or name another run directory"
        )
    return align


def full_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and every byte), records left out."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name not in ("done.json", "started.json"):
            h.update(f"{p.relative_to(path)}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def reuse_aligned_teacher(cfg: RunConfig, run_dir: RunDir) -> dict:
    """The align stage of a run with --aligned_teacher_from: align/reused.json (see module doc)."""
    align = other_align_dir(cfg)
    out = run_dir.stage("align")
    if cfg.aligned_teacher.name == "llama_cpp":
        teacher = align / "teacher-f16.gguf"
        if not teacher.is_file():
            from export.gguf_convert import convert_hf_to_gguf

            teacher = Path(convert_hf_to_gguf(align / "teacher", out / "teacher-f16.gguf", "f16"))
    else:
        teacher = align / "teacher"
    other_cfg = (read_json(align.parent / "manifest.json") or {}).get("config", {})
    record = {
        "reused_from": str(align.parent),
        "teacher": str(teacher),
        "sha256": full_hash(teacher),
        "other_run": {k: other_cfg.get(k) for k in ("teacher", "student", "tasks", "seed")},
    }
    theirs = (other_cfg.get("teacher") or {}).get("model")
    if theirs is not None and theirs != cfg.teacher.model:
        what = (
            f"{FLAG} {align.parent}: its teacher was {theirs}, this run's --teacher.model is "
            f"{cfg.teacher.model}: the original-teacher baseline is then not the aligned teacher's "
            "starting point"
        )
        if not cfg.allow_teacher_mismatch:
            raise UserError(f"{what}; use the same --teacher.model, or pass --allow_teacher_mismatch true")
        log.warning("%s (--allow_teacher_mismatch)", what)
        record["teacher_mismatch"] = {"aligned_from": theirs, "this_run": cfg.teacher.model}
    write_json_atomic(out / RECORD, record)
    return record


def reused_teacher(run_dir: RunDir) -> str:
    """The aligned teacher this run took from another (align/reused.json), for generate."""
    path = run_dir.path / "align" / RECORD
    if not path.is_file():
        raise UserError(f"{path} is missing: run the align stage, which takes the teacher from {FLAG}")
    return read_json(path)["teacher"]


def external_inputs(cfg: RunConfig) -> dict[str, str | None]:
    """{the other run's align directory: its hash} for align's provenance record (empty without reuse)."""
    if not cfg.aligned_teacher_from:
        return {}
    from arte.provenance import hash_path

    align = Path(cfg.aligned_teacher_from).expanduser().resolve() / "align"
    return {str(align): hash_path(align)}
