"""`arte plan` / `arte run --dry_run`: the plan of every shipped config, its numbers computed here from
the YAML values, its differences from the paper, config errors as `arte run` gives them, problems
reported instead of raised, and no model library imported on its path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arte.cli import main
from arte.run_config import RunConfig
from arte.stages import STAGE_NAMES
from common.config import load_config
from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
HEAVY = ("torch", "transformers", "llama_cpp", "trl", "peft", "vllm", "bitsandbytes")


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Plans made away from the checkout: a config's run directory (runs/demo, ...) left there by a
    real run would be checked too."""
    monkeypatch.chdir(tmp_path)


def is_run_config(path: Path) -> bool:
    try:
        load_config(RunConfig, path)
        return True
    except UserError:
        return False


def plan_of(capsys, *argv: str) -> dict:
    code = main(["plan", *argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, "--json prints one line"
    plan = json.loads(out[0])
    assert code == (0 if plan["ready"] else 2)  # a plan that cannot start exits 2
    return plan


def counts(plan: dict, column: str = "per_task") -> dict[str, dict]:
    rows = plan[column] if column == "per_task" else plan[column]["counts"]
    return {c["key"]: c for c in rows}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_plan_runs_on_every_shipped_config(path, capsys, tmp_path):
    if not is_run_config(path):  # a config of another command: refused as `arte run` refuses it
        assert main(["run", "--config", str(path)]) == 2
        run_error = capsys.readouterr().err
        assert main(["plan", "--config", str(path)]) == 2
        plan_error = capsys.readouterr().err
        assert "unknown config key" in run_error
        # the same message; the list of valid keys differs by each command's own option (--json, --dry_run)
        assert plan_error.split(". Valid:")[0] == run_error.split(". Valid:")[0]
        return
    plan = plan_of(capsys, "--config", str(path))
    assert [s["stage"] for s in plan["stages"]] == list(STAGE_NAMES)
    cfg = load_config(RunConfig, path)
    m, n, k = cfg.elicit.m, len(cfg.elicit.strategies), cfg.prefset.k
    assert counts(plan)["elicit.teacher_rationales"]["high"] == m * n
    assert counts(plan)["score.student_generations"]["high"] == m * n * k
    # the human text ends with the same JSON line; --dry_run gives the same plan and writes nothing
    run_dir = tmp_path / "never-made"
    code = main(["run", "--config", str(path), "--dry_run", "--run_dir", str(run_dir)])
    assert code == (0 if plan["ready"] else 2)
    text = capsys.readouterr().out.strip().splitlines()
    assert text[0].startswith("# arte plan:") and "## Differences from the paper (arXiv 2406.19227)" in text
    assert json.loads(text[-1]) | {"run_dir": plan["run_dir"]} == plan
    assert not run_dir.exists()


def test_paper_config_numbers(capsys):
    path = ROOT / "configs" / "paper.yaml"
    y = yaml.safe_load(path.read_text())
    m, n, k = y["elicit"]["m"], len(y["elicit"]["strategies"]), y["prefset"]["k"]
    assert (m, n, k) == (250, 4, 40)  # the paper's sizes, as the README quotes them
    plan = plan_of(capsys, "--config", str(path))
    c = counts(plan)
    assert c["elicit.teacher_rationales"]["high"] == m * n == 1000
    assert c["score.student_generations"]["high"] == m * n * k == 40_000
    # The student and the paper's five respondents, at shots 0,1,2,3 with one demonstration set each.
    models = 1 + len({r["model"] for r in y["prefset"]["respondents"]} - {y["student"]["model"]})
    assert models == 6
    rows = models * (1 + 3 * 1)
    assert c["prefset.student_generations"]["high"] == rows * y["n_validation"]
    assert plan["irt"]["rows"] == rows == 24 and "fall back" not in plan["irt"]["verdict"]
    cap = y["pairs"]["max_question_pairs_per_task"]
    assert c["pairs.question_level_pairs"]["high"] == min(cap, int(0.25 * m) ** 2) == 50
    assert c["pairs.rationale_level_pairs"]["high"] == m
    assert c["gain.student_generations"]["high"] == 2 * y["gain"]["n_examples"] * k
    ev = y["evaluate"]
    students = 1 + len(y["variants"])  # vanilla, original, arte and the paper's two ablations
    assert students == 5
    assert c["evaluate.student_generations"]["high"] == students * len(ev["shots"]) * ev["n_test"]
    assert c["prefcheck.student_generations"]["high"] == 0
    # data/bbh is not there: reported, counts per task, no totals
    assert plan["tasks"]["unread"][0]["spec"] == "data/bbh" and plan["all_tasks"] is None
    assert not plan["ready"] and any("data/bbh" in p for p in plan["problems"])
    assert any(p.startswith("--teacher.model is still the placeholder") for p in plan["problems"])
    align = next(t for t in plan["training"] if t["stage"] == "align")
    a = y["align"]
    assert align["examples"] == 50 + m
    assert align["tokens"] == (50 + m) * 2 * a["max_length"]
    effective = a["batch_size"] * a["gradient_accumulation_steps"]
    assert align["steps"] == math.ceil((50 + m) / effective)
    diffs = {d["flag"]: d for d in plan["paper_differences"]}
    assert (
        diffs["align.learning_rate"]["value"] == "5e-05" and diffs["align.learning_rate"]["paper"] == "1e-07"
    )
    for same in ("elicit.m", "prefset.k", "n = len(elicit.strategies)", "pairs.max_question_pairs_per_task"):
        assert same not in diffs
    assert "align.beta" in {g["flag"] for g in plan["paper_not_given"]}


def test_demo_config_numbers(capsys):
    path = ROOT / "configs" / "demo.yaml"
    y = yaml.safe_load(path.read_text())
    m, n, k = y["elicit"]["m"], len(y["elicit"]["strategies"]), y["prefset"]["k"]
    plan = plan_of(capsys, "--config", str(path))
    per, total = counts(plan), counts(plan, "all_tasks")
    n_tasks = len(y["tasks"])
    assert plan["all_tasks"]["tasks"] == n_tasks and plan["ready"], plan["problems"]
    assert per["elicit.teacher_rationales"]["high"] == m * n == 36
    assert total["elicit.teacher_rationales"]["high"] == n_tasks * m * n
    assert per["score.student_generations"]["high"] == m * n * k == 288
    rows = 1 + 3 * y["prefset"]["demo_sets"]  # default shots 0..3
    assert plan["irt"]["rows"] == rows and "fall back" not in plan["irt"]["verdict"]
    ev = y["evaluate"]
    students = 1 + len(y["variants"])  # vanilla and every trained variant (the demo: with the ablations)
    ablations = [v for v in y["variants"] if v not in ("original", "arte")]  # their own teacher calls
    assert (
        total["evaluate.student_generations"]["high"] == n_tasks * students * len(ev["shots"]) * ev["n_test"]
    )
    g = y["generate"]
    assert (
        per["generate.teacher_generations"]["high"]
        == (2 + len(ablations)) * g["max_calls"] + 2 * g["label_check"] * g["samples"]
    )
    train = next(t for t in plan["training"] if t["set"] == "arte")
    t = y["train"]
    assert train["examples"] == n_tasks * g["n_examples"]
    assert train["tokens"] == n_tasks * g["n_examples"] * t["epochs"] * t["max_length"]
    assert train["steps"] == t["epochs"] * math.ceil(n_tasks * g["n_examples"] / t["batch_size"])
    flagged = {d["flag"] for d in plan["paper_differences"]}
    changed = {"elicit.m", "prefset.k", "n = len(elicit.strategies)", "elicit.temperature", "n_validation"}
    assert changed | {"generate.n_examples", "train.epochs", "pairs.max_question_pairs_per_task"} <= flagged
    assert "evaluate.shots" not in flagged  # demo keeps the paper's 0 and 3 shots


def test_plan_imports_no_model_library_and_is_fast(tmp_path):
    configs = [str(p) for p in CONFIGS if is_run_config(p)]
    script = f"""
import json, sys, time, io, contextlib
from arte.cli import main
times = []
for path in {configs!r}:
    started = time.time()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["plan", "--config", path]) in (0, 2)  # 2: not ready here (data/bbh, a placeholder)
    times.append(time.time() - started)
print(json.dumps({{"heavy": sorted(m for m in {HEAVY!r} if m in sys.modules), "times": times}}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert max(result["times"]) < 10, result["times"]  # seconds; ~0.1 s each on an idle machine


def test_config_errors_are_those_of_arte_run(capsys):
    assert main(["run", "--elicit.m", "0"]) == 2
    run_error = capsys.readouterr().err
    assert "--elicit.m must be >= 1" in run_error
    for argv in (["plan", "--elicit.m", "0"], ["run", "--dry_run", "--elicit.m", "0"]):
        assert main(argv) == 2
        assert capsys.readouterr().err == run_error


def test_missing_model_and_task_are_reported_not_raised(capsys, tmp_path):
    missing = tmp_path / "no-such-model"
    plan = plan_of(
        capsys,
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--teacher.model",
        str(missing),
        "--tasks",
        f"boolean_expressions,{tmp_path / 'absent.jsonl'}",
    )
    assert not plan["ready"]
    assert any(p.startswith("--teacher.model") and str(missing) in p for p in plan["problems"])
    assert any("absent.jsonl" in p for p in plan["problems"])
    assert [t["name"] for t in plan["tasks"]["read"]] == ["boolean_expressions"]
    assert plan["all_tasks"] is None and plan["training_per"] == "task"


def test_teacher_reuse_skips_the_preference_stages(capsys, tmp_path):
    other = tmp_path / "other-run"
    plan = plan_of(
        capsys, "--config", str(ROOT / "configs" / "smoke.yaml"), "--aligned_teacher_from", str(other)
    )
    status = {s["stage"]: s["status"] for s in plan["stages"]}
    for name in ("elicit", "prefset", "score", "prefcheck", "pairs", "gain"):
        assert status[name].startswith("not needed") and name not in plan["stages_to_run"]
    assert {c["stage"] for c in plan["per_task"]} == {"generate", "evaluate"}
    assert [t["stage"] for t in plan["training"]] == ["train", "train"]
    assert any(str(other) in p for p in plan["problems"])  # that run has no finished align stage


def test_done_stages_and_out_of_domain_tasks(capsys, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "elicit").mkdir(parents=True)
    (run_dir / "elicit" / "done.json").write_text("{}")
    smoke = ROOT / "configs" / "smoke.yaml"
    plan = plan_of(
        capsys, "--config", str(smoke), "--run_dir", str(run_dir), "--evaluate.extra_tasks", "navigate"
    )
    assert plan["stages"][0]["status"].startswith("done earlier") and "elicit" not in plan["stages_to_run"]
    ev = load_config(RunConfig, smoke).evaluate
    assert plan["out_of_domain"]["high"] == 3 * len(ev.shots) * ev.n_test


def test_memory_estimate_of_the_paper_config(capsys):
    """paper.yaml's placeholders: the paper's models stand in (Llama-3-70B: 70.6B parameters per its
    model card, Gemma-2B: 2.51B), with align's bf16 LoRA, precomputed reference and checkpointing."""
    plan = plan_of(capsys, "--config", str(ROOT / "configs" / "paper.yaml"))
    text = "\n".join(plan["memory"])
    assert "the paper's Llama-3-70B-Instruct shape stands in" in text and "70.55B params, bfloat16" in text
    assert "the paper's Gemma-2B shape stands in" in text and "2.51B params, bfloat16" in text
    align = plan["memory"][: plan["memory"].index(next(x for x in plan["memory"] if x.startswith("train")))]
    assert any("reference" in x and "precomputed" in x for x in align)
    assert any("checkpointing on" in x for x in align)
    per_device = [float(x.split(":")[1].split()[0]) for x in align if "FSDP full-shard on 8" in x]
    total = [float(x.split()[1]) for x in align if x.strip().startswith("total")]
    assert per_device and total and per_device[0] < total[0] / 3  # sharding the 141 GB of weights


def test_memory_estimate_reads_a_local_model_config(capsys, tmp_path):
    from transformers import LlamaConfig

    model = tmp_path / "model"
    model.mkdir()
    LlamaConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    ).to_json_file(model / "config.json")
    # 2 x embeddings 64,000 + 2 layers x (4 x 64 x 64 attention + 3 x 64 x 128 MLP + 2 x 64 norms) + 64
    expected = 2 * 1000 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64
    plan = plan_of(capsys, "--config", str(ROOT / "configs" / "smoke.yaml"), "--student.model", str(model))
    train = plan["memory"][[i for i, x in enumerate(plan["memory"]) if x.startswith("train")][0] :]
    assert str(model / "config.json") in train[0]
    assert f"{expected / 1e6:.1f}M params" in "\n".join(train)


def test_run_command_passes_a_plain_run_config_to_the_pipeline():
    from arte.commands.plan import RunCommandConfig, run_config
    from common.config import to_dict

    cfg = run_config(RunCommandConfig(dry_run=True, seed=3))
    assert type(cfg) is RunConfig and "dry_run" not in to_dict(cfg)  # the manifest records no --dry_run
    assert to_dict(cfg) == to_dict(RunConfig(seed=3))


def test_ablation_variants_cost_a_set_a_student_and_an_evaluation_more(capsys):
    path = ROOT / "configs" / "demo.yaml"
    y = yaml.safe_load(path.read_text())
    plan = plan_of(capsys, "--config", str(path), "--variants", "original,arte,question_only")
    status = {s["stage"]: s["status"] for s in plan["stages"]}
    assert "question_only" in status["generate"] and "(not rationale_only)" in status["train"]
    g, ev, c = y["generate"], y["evaluate"], counts(plan)
    assert (
        c["generate.teacher_generations"]["high"] == 3 * g["max_calls"] + 2 * g["label_check"] * g["samples"]
    )
    assert c["evaluate.student_generations"]["high"] == 4 * len(ev["shots"]) * ev["n_test"]
    assert [t["set"] for t in plan["training"]] == ["dpo pairs", "original", "arte", "question_only"]


def test_stages_recorded_with_another_config_are_reported_as_the_run_would(capsys, tmp_path):
    from arte.provenance import stage_provenance
    from arte.run_config import load_run_tasks, task_hash
    from arte.run_dir import RunDir
    from arte.stages import elicit

    smoke = ROOT / "configs" / "smoke.yaml"
    run = RunDir(tmp_path / "run")
    made_with = load_config(RunConfig, smoke, {"run_dir": str(run.path)})
    hashes = {t.name: task_hash(t) for t in load_run_tasks(made_with)}
    run.mark_done("elicit", {"provenance": stage_provenance(made_with, run, elicit.STAGE, hashes)})
    base = ["--config", str(smoke), "--run_dir", str(run.path)]
    assert plan_of(capsys, *base)["problems"] == []  # the same config: nothing to say
    plan = plan_of(capsys, *base, "--elicit.m", "5")
    assert not plan["ready"] and any("elicit.m: 8 -> 5" in p for p in plan["problems"])
    plan = plan_of(capsys, *base, "--elicit.m", "5", "--on_config_change", "redo")
    assert plan["ready"] and any("elicit.m: 8 -> 5" in n for n in plan["notes"])
    assert (run.path / "elicit" / "done.json").is_file()  # nothing deleted


def test_rounds_config_counts_every_round(capsys):
    path = ROOT / "configs" / "rounds.yaml"
    y = yaml.safe_load(path.read_text())
    extra = y["rounds"] - 1
    assert extra == 1
    m, n, k = y["elicit"]["m"], len(y["elicit"]["strategies"]), y["prefset"]["k"]
    plan = plan_of(capsys, "--config", str(path))
    c = counts(plan)
    gain = 8  # gain.n_examples default
    assert c["rounds.student_generations"]["high"] == extra * (m * n * k + 2 * gain * k)
    assert c["rounds.teacher_generations"]["high"] == extra * (m * n + y["generate"]["max_calls"])
    students = ["vanilla", "original", "arte", "arte_r2"]
    assert c["evaluate.student_generations"]["high"] == len(students) * 2 * y["evaluate"]["n_test"]
    assert any(s["stage"] == "rounds" and s["status"] == "runs" for s in plan["stages"])
