"""IRT warnings (arte/stages/prefset): a fit that warns keeps its selection, but its warnings reach
prefset/TASK.json and summary.md's "Read these numbers with care"; a clean fit adds no caveat."""

from __future__ import annotations

from types import SimpleNamespace

from test_prefset import run_prefset

from arte.run_config import RunConfig
from arte.run_dir import RunDir
from arte.stages.prefset import irt_warning_lines, prefset_summary_lines
from common.records import read_json, write_json_atomic
from common.tasks import load_task

TASK = SimpleNamespace(name="t")


def _write(tmp_path, **rec):
    write_json_atomic(tmp_path / "prefset" / "t.json", {"task": "t", "indices": [0], "reason": ""} | rec)


def test_a_fit_on_few_respondents_records_its_warning_and_the_summary_says_so(tmp_path):
    task = load_task("boolean_expressions", n_validation=20, n_test=5)
    run_prefset(tmp_path, [task], k=6, demo_sets=3)  # 10 rows: IRT is fitted, but < 30 respondents
    rec = read_json(tmp_path / "prefset" / "boolean_expressions.json")
    assert rec["method"] == "irt" and any("only 10 respondents" in w for w in rec["irt_warnings"])
    lines = irt_warning_lines(tmp_path, [task])
    assert len(lines) == 1 and "fit that warned** (boolean_expressions: only 10 respondents" in lines[0]
    assert lines == prefset_summary_lines(tmp_path, [task])  # not random: only the IRT caveat

    from arte.stages.evaluate.summary import write_summary

    write_json_atomic(tmp_path / "manifest.json", {"stages": {}})
    records = {
        v: [
            {"task": task.name, "shots": 0, "index": i, "correct": (i + j) % 2, "missing_tag": 0, "target": t}
            for i, t in enumerate(["True", "False"] * 5)
        ]
        for j, v in enumerate(("vanilla", "original", "arte"))
    }
    write_summary(RunConfig(run_dir=str(tmp_path), tasks=[task.name]), RunDir(tmp_path), [task], records)
    care = (tmp_path / "summary.md").read_text().split("### Read these numbers with care")[1].split("##")[0]
    assert "D_pref was IRT-selected from a fit that warned" in care
    assert any("fit that warned" in n for n in read_json(tmp_path / "summary.json")["caveats"])


def test_each_kind_of_warning_is_listed(tmp_path):
    warnings = ["EM did not converge in 500 iterations (last step 0.01)", "3 questions hit a parameter bound"]
    _write(tmp_path, method="irt", irt_warnings=warnings)
    (line,) = irt_warning_lines(tmp_path, [TASK])
    assert "t: EM did not converge" in line and "3 questions hit a parameter bound" in line


def test_a_clean_fit_or_a_random_d_pref_adds_no_irt_caveat(tmp_path):
    _write(tmp_path, method="irt", irt_warnings=[])
    assert irt_warning_lines(tmp_path, [TASK]) == [] == prefset_summary_lines(tmp_path, [TASK])
    _write(tmp_path, method="random", reason="IRT fit skipped", irt_warnings=[])
    assert irt_warning_lines(tmp_path, [TASK]) == []  # the random caveat says it instead
    assert irt_warning_lines(tmp_path / "nothing", [TASK]) == []
