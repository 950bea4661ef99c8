"""The whole ARTE pipeline on configs/smoke.yaml (fake generation engine, real tiny models for DPO,
SFT and evaluation), and resume after a SIGKILL half-way through a stage."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from smoke_runs import arte_bg

from arte.pipeline import run_pipeline
from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages import STAGE_NAMES
from common.config import load_config
from common.records import RecordLog

STAGES = list(STAGE_NAMES)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def smoke_config(run_dir: Path, **overrides) -> RunConfig:
    return load_config(RunConfig, SMOKE, {"run_dir": str(run_dir), **overrides})


def test_smoke_pipeline_end_to_end_and_rerun_skips(tmp_path, capsys):
    cfg = smoke_config(tmp_path / "run")
    manifest = run_pipeline(cfg)
    run = tmp_path / "run"
    assert list(manifest["stages"]) == STAGES
    assert all(manifest["stages"][s]["seconds"] >= 0 for s in STAGES)
    assert manifest["versions"]["torch"] and manifest["input_hashes"]["tasks"].keys() == {
        "boolean_expressions",
        "multistep_arithmetic",
    }
    elicit = manifest["stages"]["elicit"]["counts"]["boolean_expressions"]
    assert elicit["unparsable"] > 0 and elicit["kept"] == 8  # malformed teacher blocks: counted, skipped
    assert manifest["stages"]["prefset"]["counts"]["boolean_expressions"]["method"] == "irt"
    gen = manifest["stages"]["generate"]["counts"]["boolean_expressions"]
    for name in ("arte", "original"):  # both teachers through the same procedure, until N are kept
        assert gen[name]["kept"] == gen[name]["wanted"] == 12 and gen[name]["stop"] == "enough"
        assert gen[name]["selection"]["teacher_target_agrees"] < 12  # the solver, not the teacher, labels
        assert gen[name]["label_check"]["questions"] == 6
    assert len(RecordLog(run / "score" / "scores.jsonl").read()) == 2 * 8 * 3  # one score per draft
    by_task = manifest["stages"]["pairs"]["counts"]["by_task"]
    assert all(t["questions"] == 8 for t in by_task.values())  # every question reaches the pair builder
    summary = json.loads((run / "summary.json").read_text())
    variants = {row["variant"] for row in summary["accuracy"]["accuracy"]}
    assert variants == {"vanilla", "original", "arte"}
    comparisons = {row["comparison"] for row in summary["accuracy"]["differences"]}
    assert {"arte - vanilla", "arte - original", "original - vanilla"} <= comparisons
    assert summary["data"]["drafts"] == 2 * 8 * 3  # tasks x m x strategies
    assert summary["data"]["pairs"] > 0 and summary["data"]["sft_examples"]["arte"] > 0
    assert "| vanilla |" in (run / "summary.md").read_text()
    # Did alignment move the teacher: the preference gain on the same D_pref, and DPO's rewards.
    dpo, gains = summary["alignment"]["dpo"], summary["alignment"]["preference_gain"]
    assert dpo["pairs"] == summary["data"]["pairs"] and dpo["steps"] > 0 and 0 <= dpo["accuracies_late"] <= 1
    for name in ("vs_drafts", "vs_original_examples"):
        g = gains[name]
        assert set(g["tasks"]) == {"boolean_expressions", "multistep_arithmetic"}
        assert g["low"] <= g["gain"] <= g["high"]
    assert gains["vs_drafts"]["tasks"]["boolean_expressions"]["n_reference"] == 8 * 3  # every draft
    assert gains["vs_original_examples"]["tasks"]["boolean_expressions"]["n_aligned"] == 8  # gain.n_examples
    fmt = summary["format"]
    assert {r["variant"] for r in fmt["rows"]} == variants and fmt["levels"]["boolean_expressions"][
        "chance"
    ] == 0.5
    md = (run / "summary.md").read_text()
    assert "## Did alignment move the teacher towards the student?" in md and "| chance / majority |" in md
    # LoRA DPO keeps the unmerged adapter too: a vLLM aligned teacher is the base + a LoRA request.
    assert (run / "align" / "teacher-adapter" / "adapter_config.json").is_file()
    from arte.stages.generate import aligned_teacher_config

    vcfg = smoke_config(run, **{"aligned_teacher.name": "vllm"})
    served = aligned_teacher_config(vcfg, RunDir(run))
    assert served.lora_adapter.endswith("teacher-adapter") and "tiny-random-llama" in served.model
    for variant in ("arte", "original"):  # trained students are plain HF models, ready for export
        assert (run / "train" / variant / "config.json").is_file()
        assert list((run / "train" / variant).glob("*.safetensors"))
    # Every evaluation record is there once: variants x tasks x shots x n_test.
    for variant in ("vanilla", "original", "arte"):
        recs = RecordLog(run / "evaluate" / f"{variant}.jsonl").read()
        assert len({(r["task"], r["shots"], r["index"]) for r in recs}) == len(recs) == 2 * 2 * 8

    for stage in STAGES:  # what each stage was made from, for the next command to check
        provenance = json.loads((run / stage / "done.json").read_text())["provenance"]
        assert provenance["tasks"] == manifest["input_hashes"]["tasks"] and provenance["config_sha256"]
    assert json.loads((run / "score" / "done.json").read_text())["provenance"]["inputs"].keys() == {
        "elicit/drafts.jsonl",
        "prefset",
    }
    assert (run / "run.lock").read_text() == ""  # released
    capsys.readouterr()
    started = time.time()
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert out.count("done earlier, skipped") == len(STAGES) and time.time() - started < 30

    # The same students evaluated on llama.cpp (converted to F16 GGUF) answer like on transformers.
    # Redone, not resumed: the hf records are deleted (a changed engine is a changed config).
    hf_records = {v: RecordLog(run / "evaluate" / f"{v}.jsonl").read() for v in ("vanilla", "arte")}
    lcfg = smoke_config(run, **{"evaluate.backend.name": "llama_cpp", "on_config_change": "redo"})
    run_pipeline(lcfg, only=["evaluate"])
    assert (run / "evaluate" / "arte-f16.gguf").is_file()
    provenance = RunDir(run).provenance("evaluate")["config"]["evaluate"]["backend"]
    assert provenance["name"] == "llama_cpp" and "threads" not in provenance  # threads: runtime only
    for variant, recs in hf_records.items():
        got = RecordLog(run / "evaluate" / f"{variant}.jsonl").read()
        assert len(got) == len(recs)
        # Compared up to whitespace: on this random model the two engines write some runs of newlines
        # and spaces differently (2 of 32 answers, on the longer 3-shot prompts with rationales).
        same = sum(a["completion"].split() == b["completion"].split() for a, b in zip(recs, got)) / len(recs)
        assert same >= 0.9, f"{variant}: only {same:.0%} identical completions across engines"


def _stages_up_to_score(run_dir: Path) -> None:
    for stage in STAGES[: STAGES.index("pairs")]:
        proc = arte_bg(stage, "--config", str(SMOKE), "--run_dir", str(run_dir))
        assert proc.wait(timeout=120) == 0, proc.stderr.read()


def test_score_stage_killed_half_way_resumes_without_loss_or_duplicates(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _stages_up_to_score(reference)
    for stage in STAGES[: STAGES.index("score")]:
        assert arte_bg(stage, "--config", str(SMOKE), "--run_dir", str(killed)).wait(timeout=120) == 0

    cache = killed / "score" / "cache.jsonl"
    slow = {"ARTE_FAKE_DELAY_S": "0.05"}
    proc = arte_bg("score", "--config", str(SMOKE), "--run_dir", str(killed), env=slow)
    deadline = time.time() + 60
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 10):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(RecordLog(cache).read())
    assert 10 <= done_before < 20, "the kill should land half-way through the drafts"
    assert not (killed / "score" / "done.json").exists()

    proc = arte_bg("score", "--config", str(SMOKE), "--run_dir", str(killed))
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    keys = [r["key"] for r in RecordLog(cache)]
    reference_keys = {r["key"] for r in RecordLog(reference / "score" / "cache.jsonl")}
    assert len(keys) == len(set(keys))  # nothing scored twice (identical drafts share one score)
    assert set(keys) == reference_keys  # nothing missing
    ref = RecordLog(reference / "score" / "scores.jsonl").read()
    got = RecordLog(killed / "score" / "scores.jsonl").read()
    assert got == ref  # identical to the uninterrupted run


def test_stage_refuses_to_run_before_its_inputs(tmp_path, capsys):
    from arte.cli import main

    assert main(["pairs", "--config", str(SMOKE), "--run_dir", str(tmp_path / "r")]) == 2
    before = [s for s in STAGES[: STAGES.index("pairs")] if s != "prefcheck"]  # off in smoke.yaml
    assert f"needs {', '.join(before)} first" in capsys.readouterr().err


def test_task_too_small_for_k_is_refused(tmp_path, capsys):
    from arte.cli import main

    assert main(["run", "--config", str(SMOKE), "--run_dir", str(tmp_path / "r"), "--prefset.k", "50"]) == 2
    err = capsys.readouterr().err
    assert "12 validation questions" in err and "--prefset.k is 50" in err
    assert not (tmp_path / "r").exists()  # refused before anything is written


@pytest.mark.parametrize("typo", ["--elicit.mm", "--prefset.kk"])
def test_config_typo_names_valid_keys(typo, capsys):
    from arte.cli import main

    assert main(["run", "--config", str(SMOKE), typo, "3"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_align_writes_a_gguf_of_the_aligned_teacher_for_llama_cpp_generation(tmp_path):
    from arte.backends import BackendConfig, SamplingParams, load_backend

    run, config = tmp_path / "run", tmp_path / "llama_cpp.yaml"  # every stage command reads the file
    config.write_text(
        SMOKE.read_text().replace("aligned_teacher: {name: fake,", "aligned_teacher: {name: llama_cpp,")
    )
    assert "name: llama_cpp" in config.read_text()
    for stage in STAGES[: STAGES.index("generate")]:
        proc = arte_bg(stage, "--config", str(config), "--run_dir", str(run))
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    gguf = run / "align" / "teacher-f16.gguf"
    backend = load_backend(BackendConfig(name="llama_cpp", model=str(gguf), threads=1))
    assert backend.generate(["Question: 1 + 1 ="], SamplingParams(max_new_tokens=4))[0].completion_tokens > 0


@pytest.mark.slow
def test_smoke_pipeline_with_a_gemma_student_evaluated_by_llama_cpp(tmp_path, gemma3_tokenizer):
    """The student is a tiny random Gemma 3 (Gemma's SentencePiece tokenizer, sliding window 8):
    SFT trains it, and evaluation runs its trained copies on llama.cpp, converted to F16 GGUF by
    llama.cpp's own converter (`evaluate._engine_model`). Slow (6.7 min measured on 2 cores shared
    with other jobs): SFT computes logits over Gemma's 262k-token vocabulary."""
    cfg = smoke_config(
        tmp_path / "run",
        **{
            "student.model": "tiny-random-gemma3",
            "evaluate.backend.name": "llama_cpp",
            "evaluate.shots": [0],
            "evaluate.n_test": 4,
        },
    )
    manifest = run_pipeline(cfg)
    run = tmp_path / "run"
    assert list(manifest["stages"]) == STAGES
    for variant in ("arte", "original"):
        config = json.loads((run / "train" / variant / "config.json").read_text())
        assert config["architectures"] == ["Gemma3ForCausalLM"]
        assert (run / "evaluate" / f"{variant}-f16.gguf").is_file()
    for variant in ("vanilla", "original", "arte"):
        recs = RecordLog(run / "evaluate" / f"{variant}.jsonl").read()
        assert len({(r["task"], r["shots"], r["index"]) for r in recs}) == len(recs) == 2 * 1 * 4
    summary = json.loads((run / "summary.json").read_text())
    assert {row["variant"] for row in summary["accuracy"]["accuracy"]} == {"vanilla", "original", "arte"}
