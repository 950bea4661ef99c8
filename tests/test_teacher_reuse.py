"""A run that takes its aligned teacher from another run (--aligned_teacher_from,
arte/stages/teacher_reuse.py): it skips elicit..pairs, generates with the other run's teacher,
records that teacher's hash, and notices when the other run's teacher changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from patching import patch_everywhere

from arte.pipeline import run_pipeline
from arte.run_config import RunConfig
from common.config import load_config
from common.errors import UserError
from common.records import RecordLog

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
BEFORE_ALIGN = ["elicit", "prefset", "score", "pairs"]


def _reference_hash(directory: Path) -> str:
    """sha256 over (relative name, sha256 of every byte) of each file, as the record promises."""
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name not in ("done.json", "started.json"):
            h.update(f"{p.relative_to(directory)}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def test_a_run_reuses_another_runs_aligned_teacher(tmp_path, monkeypatch):
    from arte import backends

    a, b = tmp_path / "a", tmp_path / "b"
    run_pipeline(load_config(RunConfig, SMOKE, {"run_dir": str(a)}), only=[*BEFORE_ALIGN, "align"])
    loaded: list[str] = []
    real = backends.load_backend
    patch_everywhere(monkeypatch, "arte.backends.load_backend", lambda c: loaded.append(c.model) or real(c))
    overrides = {"run_dir": str(b), "aligned_teacher_from": str(a), "tasks": ["multistep_arithmetic"]}
    cfg = load_config(RunConfig, SMOKE, {**overrides, "evaluate": {"shots": [0], "n_test": 4}})
    manifest = run_pipeline(cfg)

    assert list(manifest["stages"]) == ["align", "generate", "train", "rounds", "evaluate"]
    assert not any((b / s).exists() for s in BEFORE_ALIGN)  # no preferences of its own
    reused = json.loads((b / "align" / "reused.json").read_text())
    assert reused["reused_from"] == str(a.resolve()) and reused["teacher"] == str(
        a.resolve() / "align" / "teacher"
    )
    assert reused["sha256"] == _reference_hash(
        a / "align" / "teacher"
    )  # the other run's teacher, byte for byte
    assert manifest["stages"]["align"]["counts"]["sha256"] == reused["sha256"]
    assert reused["other_run"]["tasks"] == ["boolean_expressions", "multistep_arithmetic"]
    assert str(a.resolve() / "align" / "teacher") in loaded  # generate drafted with it
    assert {r["task"] for r in RecordLog(b / "generate" / "arte.jsonl")} == {"multistep_arithmetic"}
    assert (b / "train" / "arte" / "config.json").is_file()
    summary = json.loads((b / "summary.json").read_text())
    assert summary["data"]["aligned_teacher_from"]["sha256"] == reused["sha256"]
    assert f"sha256 {reused['sha256']}" in (b / "summary.md").read_text()
    # Issue 28 (4): the other run's caveats and the teacher's origin travel with it.
    notes = "\n".join(summary["caveats"])
    assert "**the aligned teacher comes from another run**" in notes
    assert "aligned teacher's run: **the teacher was aligned on a handful of DPO pairs**" in notes

    # The other run's teacher changes: this run's next command names it and stops.
    weights = next((a / "align" / "teacher").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"align \(its input .*/a/align changed since it ran\)"):
        run_pipeline(cfg)


def test_reuse_refuses_a_run_without_a_finished_align(tmp_path, capsys):
    from arte.cli import main

    other, run = tmp_path / "other", tmp_path / "run"
    (other / "align").mkdir(parents=True)  # started, never finished
    args = ["run", "--config", str(SMOKE), "--run_dir", str(run), "--aligned_teacher_from", str(other)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--aligned_teacher_from" in err and "has no finished align stage" in err and "arte align" in err
    assert "Traceback" not in err and not run.exists()
    assert (
        main(["run", "--config", str(SMOKE), "--run_dir", str(run), "--aligned_teacher_from", str(run)]) == 2
    )
    assert "this run's own directory" in capsys.readouterr().err


def test_reuse_with_the_drafts_baseline_is_refused():
    with pytest.raises(UserError, match="--generate.original drafts takes this run's own elicit"):
        load_config(RunConfig, SMOKE, {"aligned_teacher_from": "runs/x", "generate": {"original": "drafts"}})


def test_a_teacher_aligned_for_another_student_on_other_tasks_says_so(tmp_path):
    """The paper's Tables 4 and 5 on tiny models: the other run aligned its teacher to another
    student on another task; this run's summary names both, and carries that run's caveats."""
    a, b = tmp_path / "a", tmp_path / "b"
    donor = {"run_dir": str(a), "tasks": ["boolean_expressions"], "student": {"model": "fake-respondent-1"}}
    run_pipeline(load_config(RunConfig, SMOKE, donor), only=[*BEFORE_ALIGN, "align"])
    overrides = {"run_dir": str(b), "aligned_teacher_from": str(a), "tasks": ["multistep_arithmetic"]}
    cfg = load_config(RunConfig, SMOKE, {**overrides, "evaluate": {"shots": [0], "n_test": 4}})
    run_pipeline(cfg)
    notes = "\n".join(json.loads((b / "summary.json").read_text())["caveats"])
    assert "aligned to student fake-respondent-1, not this run's tiny-random-llama" in notes
    assert "tasks it never saw: multistep_arithmetic" in notes
    assert (
        "aligned teacher's run: **the teacher was aligned on a handful of DPO pairs** (boolean_expressions"
        in notes
    )
