"""The stage registry (`arte.stages.PIPELINE` of declared `Stage`s) is the one list of stages:
no other module keeps a list of stage names, and what the orchestrator, rounds, teacher reuse and
`arte plan` know of the stages is derived from the declarations."""

from __future__ import annotations

import ast
from pathlib import Path

from patching import patch_everywhere

from arte.run_config import RunConfig
from arte.stage_loop import check_models, not_needed, switched_off
from arte.stages import PIPELINE, STAGE_NAMES, TRAINING_STAGES
from arte.stages.rounds import round_stages

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "arte" / "stages" / "__init__.py"


def _declarations(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `Stage(...)` calls: a stage's own declaration (its reads, its config
    fields) is the registry, not a list kept beside it."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Stage":
            inside |= {id(n) for n in ast.walk(node)}
    return inside


def stage_name_lists(root: Path, names: set[str]) -> list[str]:
    """ "file:line" of every list, tuple or set literal holding two or more stage names as strings,
    and of every dict literal keyed by stage names only, in the Python files under root/arte (the
    registry and the stages' own declarations left out). A record's fields that happen to share a
    stage's name ({"round": 2, "pairs": 12}) are not a list of stages."""
    out = []
    for path in sorted((root / "arte").rglob("*.py")):
        if path == root / REGISTRY.relative_to(ROOT):
            continue
        tree = ast.parse(path.read_text())
        declared = _declarations(tree)
        for node in ast.walk(tree):
            if id(node) in declared or not isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                continue
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            hits = [e.value for e in items if isinstance(e, ast.Constant) and e.value in names]
            if isinstance(node, ast.Dict) and len(hits) < len(items):
                continue
            if len(hits) >= 2:
                out.append(f"{path.relative_to(root)}:{node.lineno}: {', '.join(hits)}")
    return out


def test_no_stage_name_list_outside_the_registry():
    assert stage_name_lists(ROOT, set(STAGE_NAMES)) == []


def test_the_check_finds_a_list_of_stage_names(tmp_path):
    (tmp_path / "arte" / "stages").mkdir(parents=True)
    (tmp_path / "arte" / "x.py").write_text(
        'A = ("elicit", "score")\nB = {"train": 1, "evaluate": 2}\nC = ["elicit", "other"]\n'
        'D = {"round": 1, "pairs": 2, "train": 3}\nS = Stage(name="x", reads=("prefset", "score"))\n'
        'E = {"score", "gain"} & set(F)\n'
    )
    assert stage_name_lists(tmp_path, set(STAGE_NAMES)) == [
        "arte/x.py:1: elicit, score",
        "arte/x.py:2: train, evaluate",
        "arte/x.py:6: score, gain",
    ]


def test_every_stage_declares_itself_and_its_files():
    assert len(set(STAGE_NAMES)) == len(PIPELINE) == 11
    for i, stage in enumerate(PIPELINE):
        assert stage.help and stage.writes, stage.name
        assert all(w.split("/")[0] in (stage.name, "summary.md", "summary.json") for w in stage.writes)
        earlier = set(STAGE_NAMES[:i])
        assert {r.split("/")[0] for r in stage.reads} <= earlier, f"{stage.name} reads a later stage"
        for key in stage.depends_on + stage.sections:
            obj = RunConfig()
            for part in key.split("."):
                obj = getattr(obj, part)  # a field of the run config (AttributeError otherwise)
    assert TRAINING_STAGES == ("align", "train")


def test_derived_lists_match_the_method():
    """Teacher reuse skips the student-preference stages; rounds repeat elicit..gain; the optional
    stages switch off at size 0 (the lists that used to be written out by hand)."""
    reuse = RunConfig(aligned_teacher_from="elsewhere")
    assert set(not_needed(reuse)) == {"elicit", "prefset", "score", "prefcheck", "pairs", "gain"}
    assert not_needed(RunConfig()) == {}
    assert round_stages() == ["elicit", "prefset", "score", "prefcheck", "pairs", "align", "generate", "gain"]
    assert switched_off(RunConfig()) == {"prefcheck", "rounds"}  # prefcheck is off by default
    on = RunConfig(prefcheck=type(RunConfig().prefcheck)(questions=2), rounds=2)
    assert switched_off(on) == set()
    off = RunConfig(gain=type(RunConfig().gain)(n_examples=0))
    assert "gain" in switched_off(off)


def test_models_are_checked_per_stage(monkeypatch):
    """Each stage's declared models, once each, in order; a served student is not checked by the
    stages that only ask it, but train and evaluate load its weights."""

    checked = []
    patch_everywhere(monkeypatch, "arte.models.check_model_spec", lambda spec, flag, *a: checked.append(flag))
    cfg = RunConfig()
    check_models(cfg, ["elicit", "score", "align"])
    assert checked == ["--teacher.model", "--student.model"]  # the teacher once, for elicit and align
    checked.clear()
    served = RunConfig(student=type(cfg.student)(name="openai", model="m", base_url="http://127.0.0.1:1/v1"))
    check_models(served, ["prefset", "score", "gain"])
    assert checked == []
    check_models(served, ["evaluate"])
    assert checked == ["--student.model"]
