"""Iterative ARTE (`--rounds N`, issue 14): the paper does one round; this stage does rounds 2..N.

Round r drafts with the aligned teacher of round r-1, scores the drafts on the same D_pref with the
same student, builds pairs and aligns again, writes a tailored training set and trains a student on
it. Each round is a run directory of its own, `rounds/rR/`, run by the pipeline's own stage loop
(`arte.stage_loop.run_stages`, the stages declared `in_rounds`) on the round's config
(`round_config`, also written to `rounds/rR/config.yaml`), so it keeps its own files, locks,
provenance and resumes on its own: re-running `arte run` picks a killed round up where it stopped.

What a round takes from the one before:
- the drafting teacher: round r-1's aligned teacher on the aligned teacher's engine (the merged HF
  directory, its F16 GGUF for llama_cpp, base + adapter for vllm);
- D_pref: round 1's prefset/ is copied, not selected again (same student, same questions), so every
  round's scores and preference gain are on one D_pref;
- DPO's starting weights (`--round_align_from`): `previous` (default) is round r-1's aligned teacher,
  the model that drafted the pairs: DPO stays on-policy and its reference is the model being
  improved, as in iterative DPO and Montessori-Instruct's second iteration. `original` starts from
  the original teacher again on the new pairs;
- the round's baseline set ("original" inside the round: its teacher is round r-1's): round r-1's
  tailored-set logs are copied into rounds/rR/generate/original/, so it is read back, not drawn
  again. The round's preference gain therefore compares round r's teacher with round r-1's: against
  the drafts (written by round r-1's teacher) and against round r-1's examples.

Round r's student is `arte_rR` (round 1's is `arte`): evaluate tests it with the others and the
summary has one row per round, compared with the previous round's student and the original one, plus
a table of each round's DPO statistics and preference gain. Under a multi-process launcher, run the
round's training stages from its config: `accelerate launch -m arte.training.launch align --config
RUN/rounds/rR/config.yaml`.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arte.run_dir import RunDir
from arte.stages.stage import PlanCount, Stage, TaskSize
from common.records import RecordLog, read_json, write_json_atomic

if TYPE_CHECKING:
    from arte.run_config import RunConfig
    from common.tasks import Task


VARIANT_PREFIX = "arte_r"


def round_stages() -> list[str]:
    """The pipeline stages each round runs in its own directory (declared `in_rounds`); its student
    is trained after them."""
    from arte.stages import PIPELINE

    return [s.name for s in PIPELINE if s.in_rounds]


def round_variant(r: int) -> str:
    """The student of round r: arte (round 1), arte_r2, arte_r3, ..."""
    return "arte" if r == 1 else f"{VARIANT_PREFIX}{r}"


def previous_variant(variant: str) -> str | None:
    """The student of the round before `variant`'s (arte_r2 -> arte); None if it is no round's."""
    if not variant.startswith(VARIANT_PREFIX) or not variant[len(VARIANT_PREFIX) :].isdigit():
        return None
    return round_variant(int(variant[len(VARIANT_PREFIX) :]) - 1)


def round_dir(run_dir: RunDir, r: int) -> RunDir:
    """Round r's run directory: the run itself for round 1, rounds/rR/ after."""
    return run_dir if r == 1 else RunDir(run_dir.path / "rounds" / f"r{r}")


def round_students(cfg: RunConfig, run_dir: RunDir) -> dict[str, Path]:
    """{arte_rR: rounds/rR/train/arte} for rounds 2..N (what evaluate tests beside --variants)."""
    return {round_variant(r): round_dir(run_dir, r).path / "train" / "arte" for r in range(2, cfg.rounds + 1)}


def round_config(cfg: RunConfig, run_dir: RunDir, r: int) -> RunConfig:
    """Round r's config (r >= 2): the run's, with round r-1's aligned teacher as the drafting teacher,
    DPO starting from --round_align_from's weights, this round's directory, and only the original and
    arte sets (the ablations too with --round_ablations: only arte_rR is trained). Needs round r-1's
    align stage finished."""
    from arte.stages.align import align_base
    from arte.stages.generate import aligned_teacher_config

    previous_cfg = cfg if r == 2 else round_config(cfg, run_dir, r - 1)
    previous = round_dir(run_dir, r - 1)
    drafting = aligned_teacher_config(previous_cfg, previous)
    if cfg.round_align_from == "previous":
        base = str(previous.path / "align" / "teacher")
    else:
        base = align_base(cfg)
    return dataclasses.replace(
        cfg,
        run_dir=str(round_dir(run_dir, r).path),
        teacher=dataclasses.replace(drafting, allow_pickle=False),
        align=dataclasses.replace(cfg.align, base_model=base),
        rounds=1,
        variants=list(cfg.variants) if cfg.round_ablations else ["original", "arte"],
    )


def _copy_once(source: Path, target: Path) -> None:
    """Copy a directory unless the target exists (through a temporary name: a kill leaves none)."""
    if target.exists() or not source.is_dir():
        return
    tmp = target.with_name(target.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    tmp.rename(target)


def prepare_round(cfg: RunConfig, run_dir: RunDir, r: int, rcfg: RunConfig) -> RunDir:
    """Round r's directory before its stages: round 1's D_pref, round r-1's tailored-set logs as the
    round's baseline logs (when the baseline is drawn from a teacher), and its config.yaml."""
    import yaml

    from common.config import to_dict

    here = round_dir(run_dir, r).create()
    here.path.mkdir(parents=True, exist_ok=True)
    _copy_once(run_dir.path / "prefset", here.path / "prefset")
    if cfg.generate.original == "teacher":
        (here.path / "generate").mkdir(exist_ok=True)
        _copy_once(round_dir(run_dir, r - 1).path / "generate" / "arte", here.path / "generate" / "original")
    (here.path / "config.yaml").write_text(yaml.safe_dump(to_dict(rcfg), sort_keys=False))
    return here


def check_same_pref(run_dir: RunDir, here: RunDir, tasks: list[Task]) -> None:
    """Every round scores on round 1's D_pref: a round whose prefset differs (edited, re-selected)
    stops the stage instead of comparing rounds across two preference sets."""
    from common.errors import UserError

    for t in tasks:
        ours, theirs = (d.path / "prefset" / f"{t.name}.json" for d in (here, run_dir))
        if read_json(ours)["indices"] != read_json(theirs)["indices"]:
            raise UserError(
                f"{ours}: D_pref differs from round 1's ({theirs}); rounds compare on one D_pref: delete "
                f"{here.path} and re-run `arte rounds`"
            )


def round_record(rcfg: RunConfig, here: RunDir, r: int, tasks: list[Task], train_stats: Any) -> dict:
    """What the summary shows of round r: its teachers, DPO statistics, gain and set sizes."""
    from arte.stages.align.alignment_report import alignment_summary

    rows = RecordLog(here.path / "generate" / "arte.jsonl").read()
    return {
        "round": r,
        "variant": round_variant(r),
        "dir": str(here.path),
        "drafting_teacher": rcfg.teacher.model,
        "align_base": rcfg.align.base_model,
        "pairs": sum(1 for _ in RecordLog(here.path / "pairs" / "dpo.jsonl")),
        **alignment_summary(here.path),
        "sft_examples_per_task": {t.name: sum(1 for x in rows if x["task"] == t.name) for t in tasks},
        "train": {k: (train_stats or {}).get(k) for k in ("steps", "train_loss", "seconds")},
    }


def run(cfg: RunConfig, run_dir: RunDir, tasks: list[Task]) -> dict:
    """Rounds 2..N in rounds/rR/ (see module doc), then rounds/rounds.json: one record per round."""
    from arte.stage_loop import run_stages
    from arte.stages.train import train_variant

    out = run_dir.stage("rounds")
    if cfg.rounds == 1:
        write_json_atomic(out / "rounds.json", {"skipped": "--rounds is 1", "rounds": []})
        return {"skipped": True}
    from arte.stages.align import align_base

    first = dataclasses.replace(cfg, align=dataclasses.replace(cfg.align, base_model=align_base(cfg)))
    stats_file = run_dir.path / "train" / "arte" / "train_stats.json"
    first_stats = read_json(stats_file) if stats_file.is_file() else None
    records = [round_record(first, run_dir, 1, tasks, first_stats)]
    for r in range(2, cfg.rounds + 1):
        rcfg = round_config(cfg, run_dir, r)
        here = prepare_round(cfg, run_dir, r, rcfg)
        print(f"[rounds] round {r} of {cfg.rounds} in {here.path}: drafting teacher {rcfg.teacher.model}")
        check_same_pref(run_dir, here, tasks)
        run_stages(rcfg, here, tasks, only=round_stages(), skip_done=True)
        check_same_pref(run_dir, here, tasks)  # a redone prefset inside the round would differ
        stats = train_variant(rcfg, here, "arte")
        records.append(round_record(rcfg, here, r, tasks, stats))
    write_json_atomic(out / "rounds.json", {"round_align_from": cfg.round_align_from, "rounds": records})
    return {r["variant"]: {"pairs": r["pairs"], "examples": r["sft_examples_per_task"]} for r in records}


def rounds_info(run_dir: RunDir) -> dict | None:
    """rounds/rounds.json, or None when the run has a single round (or the stage has not run)."""
    path = run_dir.path / "rounds" / "rounds.json"
    info = read_json(path) if path.is_file() else None
    return info if info and info.get("rounds") else None


def round_sets(run_dir: RunDir) -> dict[str, dict[str, int]]:
    """Kept examples per task of each later round's tailored set (rounds 2..N), by student name."""
    info = rounds_info(run_dir) or {"rounds": []}
    return {rec["variant"]: rec["sft_examples_per_task"] for rec in info["rounds"] if rec["round"] > 1}


def _gain_cell(gains: dict | None, key: str) -> str:
    from arte.stages.align.alignment_report import _interval_text

    g = (gains or {}).get(key)
    return _interval_text(g) if g else "-"


def _number(dpo: dict | None, key: str) -> str:
    v = (dpo or {}).get(key)
    return "-" if v is None else f"{v:.3f}"


def rounds_markdown(info: dict | None) -> list[str]:
    """The summary's section on the rounds: one row per round (empty with a single round)."""
    if not info:
        return []
    head = [
        "round",
        "student",
        "drafted by",
        "DPO from",
        "DPO pairs",
        "reward accuracy (late)",
        "reward margin (late)",
        "gain vs its drafts (pts)",
        "gain vs the drafting teacher's examples (pts)",
        "examples per task",
    ]
    out = [
        "## Iterative rounds",
        "",
        f"Round r >= 2 drafts with round r-1's aligned teacher and runs DPO from "
        f"{'that teacher' if info['round_align_from'] == 'previous' else 'the original teacher'} "
        "(--round_align_from); every round scores on round 1's D_pref. Round 1's gains compare with the "
        "original teacher; round r's with round r-1's teacher, whose drafts and examples it was given. "
        "The accuracy table compares each round's student with the round before's.",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for rec in info["rounds"]:
        gains, dpo = rec.get("preference_gain"), rec.get("dpo")
        cells = [
            rec["round"],
            rec["variant"],
            rec["drafting_teacher"],
            rec["align_base"],
            rec["pairs"],
            _number(dpo, "accuracies_late"),
            _number(dpo, "margins_late"),
            _gain_cell(gains, "vs_drafts"),
            _gain_cell(gains, "vs_original_examples"),
            ", ".join(f"{t} {n}" for t, n in rec["sft_examples_per_task"].items()),
        ]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return out + [""]


def plan_counts(cfg: RunConfig, size: TaskSize) -> list[PlanCount]:
    """Rounds 2..N for one task: each drafts m x n, scores m x n x k, and draws one tailored set (its
    baseline is the round before's, read back) plus the gain's scoring."""
    extra = cfg.rounds - 1
    if extra < 1:
        return []
    e, g, k = cfg.elicit, cfg.generate, cfg.prefset.k
    m, n = e.m, len(e.strategies)
    teacher = extra * (m * n + g.max_calls)
    student = extra * (m * n * k + 2 * cfg.gain.n_examples * k)
    return [
        PlanCount.at_most(
            "teacher generations",
            teacher,
            f"{extra} rounds x (m {m} x n {n} drafts + max_calls {g.max_calls}) (+ brainstorm calls)",
        ),
        PlanCount.exact(
            "student generations",
            student,
            f"{extra} rounds x (m x n x k {m * n * k} + gain 2 x {cfg.gain.n_examples} x k {k})",
        ),
    ]


STAGE = Stage(
    name="rounds",
    help="Iterative ARTE: rounds 2..--rounds, each drafting with the last aligned teacher (rounds/rR/).",
    run=run,
    depends_on=("rounds", "round_align_from"),
    reads=("prefset", "align", "generate/arte", "generate/arte.jsonl"),
    writes=("rounds/rR/", "rounds/rounds.json"),
    sections=("rounds", "round_align_from"),
    switched_off=lambda cfg: cfg.rounds == 1,
    plan_counts=plan_counts,
)
