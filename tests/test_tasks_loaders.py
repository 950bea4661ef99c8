"""Loading tasks from files, directories and Hugging Face datasets; loud, located errors on bad data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UserError
from common.tasks import load_task, load_tasks


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def qa(n, target=lambda i: str(i)):
    return [{"input": f"What is {i} plus zero?", "target": target(i)} for i in range(n)]


def all_examples(task):
    return task.seeds + task.validation + task.test


# ---------------------------------------------------------------- JSONL


def test_jsonl_basic_with_blank_lines(tmp_path):
    path = tmp_path / "adding.jsonl"
    lines = [json.dumps(r) for r in qa(20)]
    path.write_text("\n".join(lines[:10]) + "\n\n   \n" + "\n".join(lines[10:]) + "\n")
    task = load_task(str(path), n_validation=10, n_test=5)
    assert task.name == "adding"
    assert task.description == "Answer the question."
    assert task.answer_kind == "number"
    assert (len(task.seeds), len(task.validation), len(task.test)) == (3, 10, 5)
    assert task.verifier is None
    assert task.source == str(path)


def test_splits_reproducible_and_disjoint(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", qa(60))
    a = load_task(str(path), n_validation=20, seed=5)
    b = load_task(str(path), n_validation=20, seed=5)
    c = load_task(str(path), n_validation=20, seed=6)
    assert all_examples(a) == all_examples(b)
    assert [e.input for e in a.test] != [e.input for e in c.test]
    seen = [e.input for e in all_examples(a)]
    assert len(seen) == len(set(seen)) == 60


def test_duplicate_questions_are_dropped_with_a_warning(tmp_path, caplog):
    path = write_jsonl(tmp_path / "t.jsonl", qa(10) + qa(10))
    task = load_task(str(path))
    assert len(all_examples(task)) == 10
    assert "task t (" in caplog.text and "10 duplicate question(s) dropped" in caplog.text


def test_targets_all_the_same_are_warned_about(tmp_path, caplog):
    load_task(str(write_jsonl(tmp_path / "same.jsonl", qa(10, target=lambda i: "yes"))))
    assert "every example has the same target 'yes'" in caplog.text
    caplog.clear()
    load_task(str(write_jsonl(tmp_path / "varied.jsonl", qa(10))))
    assert "same target" not in caplog.text and "duplicate" not in caplog.text


def test_utf8_byte_order_mark_is_not_part_of_line_one(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in qa(10)).encode())
    assert len(all_examples(load_task(str(jsonl)))) == 10
    as_json = tmp_path / "bom.json"
    as_json.write_bytes(b"\xef\xbb\xbf" + json.dumps(qa(10)).encode())
    assert len(all_examples(load_task(str(as_json)))) == 10


@pytest.mark.parametrize(
    ("targets", "kind"),
    [
        (["True", "false", "TRUE", "False", "true"], "bool"),
        (["1,000", "twelve", "-3", "4.5", "+2"], "number"),
        (["cat", "dog", "42", "True", "x y"], "text"),
        (["(A)", "(B)", "(C)", "(a)", "(D)"], "choice"),
    ],
)
def test_answer_kind_inferred(tmp_path, targets, kind):
    records = [{"input": f"q{i}", "target": t} for i, t in enumerate(targets)]
    assert load_task(str(write_jsonl(tmp_path / "t.jsonl", records))).answer_kind == kind


def test_non_string_targets_accepted(tmp_path):
    records = [{"input": f"q{i}", "target": t} for i, t in enumerate([1, 2.5, 3, 4, 5])]
    task = load_task(str(write_jsonl(tmp_path / "t.jsonl", records)))
    assert task.answer_kind == "number"
    assert {e.target for e in all_examples(task)} == {"1", "2.5", "3", "4", "5"}


def test_options_rendered_and_target_converted_to_letter(tmp_path):
    records = [
        {"input": "Which is a fruit?", "options": ["chair", "apple", "car"], "target": "apple"},
        {"input": "Which is red?", "options": ["sky", "blood"], "target": "(B)"},
        {"input": "Which is big?", "options": ["whale", "ant"], "target": "a"},
        {"input": "Which flies?", "options": ["bird", "rock"], "target": "bird"},
        {"input": "Which swims?", "options": ["fish", "rock"], "target": "A"},
    ]
    task = load_task(str(write_jsonl(tmp_path / "mc.jsonl", records)), seed=0)
    assert task.answer_kind == "choice"
    by_start = {e.input.split("\n")[0]: e for e in all_examples(task)}
    fruit = by_start["Which is a fruit?"]
    assert fruit.input == "Which is a fruit?\nOptions:\n(A) chair\n(B) apple\n(C) car"
    assert fruit.target == "B" and fruit.options == ("chair", "apple", "car")
    assert by_start["Which is red?"].target == "B"
    assert by_start["Which is big?"].target == "A"
    assert task.is_correct("<ans>(B)</ans>", fruit.target)


def test_target_not_an_option(tmp_path):
    records = qa(4) + [{"input": "Pick", "options": ["x", "y"], "target": "z"}]
    path = write_jsonl(tmp_path / "mc.jsonl", records)
    with pytest.raises(
        UserError, match=r"mc\.jsonl:5: target 'z' is neither one of the options nor a letter A-B"
    ):
        load_task(str(path))


# ---------------------------------------------------------------- malformed files


def test_bad_json_reports_file_and_line(tmp_path):
    path = tmp_path / "file.jsonl"
    path.write_text(
        '{"input": "a", "target": "1"}\n{"input": "b", "target": "2"}\n{"input": "c", "target": \n'
    )
    with pytest.raises(UserError, match=r"file\.jsonl:3: invalid JSON"):
        load_task(str(path))


def test_first_bad_line_is_reported(tmp_path):
    path = tmp_path / "file.jsonl"
    path.write_text('{"input": "a", "target": "1"}\n{"input": "b"}\nnot json\n')
    with pytest.raises(UserError, match=r"file\.jsonl:2: missing \"target\""):
        load_task(str(path))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"target": "1"}, 'missing "input"'),
        ({"input": 5, "target": "1"}, '"input" must be a string, got number'),
        ({"input": "  ", "target": "1"}, '"input" is empty'),
        ({"input": "q", "target": {"a": 1}}, '"target" must be a string, got object'),
        ({"input": "q", "target": ""}, '"target" is empty'),
        ({"input": "q", "target": []}, '"target" is an empty list'),
        ({"input": "q", "target": "a", "options": "abc"}, '"options" must be a non-empty list'),
        (["q", "a"], "expected an object"),
    ],
)
def test_malformed_records(tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", qa(3) + [record])
    with pytest.raises(UserError) as err:
        load_task(str(path))
    assert "bad.jsonl:4: " in str(err.value) and message in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n \n")
    with pytest.raises(UserError, match="empty.jsonl: empty file"):
        load_task(str(path))


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope" / "missing.jsonl"
    with pytest.raises(UserError, match="task file not found: .*missing.jsonl"):
        load_task(str(path))


def test_too_few_examples(tmp_path):
    with pytest.raises(UserError, match="has 2 examples"):
        load_task(str(write_jsonl(tmp_path / "tiny.jsonl", qa(2))))


def test_unknown_spec_lists_builtins_and_forms():
    with pytest.raises(UserError) as err:
        load_task("boolean_expresions")
    msg = str(err.value)
    assert "Did you mean 'boolean_expressions'" in msg
    assert "word_sorting" in msg and "hf:DATASET[:CONFIG][:SPLIT]" in msg and ".jsonl" in msg


def test_bad_hf_spec():
    with pytest.raises(UserError, match="hf:DATASET"):
        load_task("hf:")


# ---------------------------------------------------------------- JSON and BIG-bench


def test_json_list_and_examples_object(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(qa(8)))
    (tmp_path / "b.json").write_text(json.dumps({"description": "Add zero.", "examples": qa(8)}))
    a = load_task(str(tmp_path / "a.json"))
    b = load_task(str(tmp_path / "b.json"))
    assert (a.name, a.description) == ("a", "Answer the question.")
    assert (b.name, b.description) == ("b", "Add zero.")
    assert len(all_examples(b)) == 8


def test_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "examples": [\n    {"input": "a",, }\n  ]\n}')
    with pytest.raises(UserError, match=r"bad\.json:3: invalid JSON"):
        load_task(str(bad))
    bad.write_text(json.dumps({"examples": qa(3) + [{"input": "x"}]}))
    with pytest.raises(UserError, match=r'bad\.json: examples\[3\]: missing "target"'):
        load_task(str(bad))
    bad.write_text(json.dumps({"items": []}))
    with pytest.raises(UserError, match='an object with "examples"'):
        load_task(str(bad))
    bad.write_text("[]")
    with pytest.raises(UserError, match="no examples"):
        load_task(str(bad))


def test_bigbench_task_json(tmp_path):
    task_dir = tmp_path / "color_pick"
    task_dir.mkdir()
    examples = [
        {
            "input": f"Item {i}: which colour?",
            "target_scores": {"red": 0, "green": int(i % 2 == 0), "blue": i % 2},
        }
        for i in range(10)
    ]
    data = {"name": "color_pick", "description": "Pick the colour.", "keywords": ["x"], "examples": examples}
    (task_dir / "task.json").write_text(json.dumps(data))
    for spec in (task_dir / "task.json", task_dir):
        task = load_task(str(spec))
        assert (task.name, task.description, task.answer_kind) == ("color_pick", "Pick the colour.", "choice")
        for e in all_examples(task):
            i = int(e.input.split()[1].rstrip(":"))
            assert e.input.endswith("Options:\n(A) red\n(B) green\n(C) blue")
            assert e.target == ("B" if i % 2 == 0 else "C")


def test_bigbench_list_target_takes_first(tmp_path):
    examples = [{"input": f"Say {i}", "target": [f"w{i}", "other"]} for i in range(6)]
    (tmp_path / "task.json").write_text(json.dumps({"examples": examples}))
    task = load_task(str(tmp_path / "task.json"))
    assert {e.target for e in all_examples(task)} == {f"w{i}" for i in range(6)}


def test_prerendered_bbh_options_not_duplicated(tmp_path):
    records = [{"input": f"Q{i}\nOptions:\n(A) x\n(B) y", "target": "(A)"} for i in range(6)]
    task = load_task(str(write_jsonl(tmp_path / "bbh.jsonl", records)))
    assert task.answer_kind == "choice"
    assert all(e.input.count("Options:") == 1 for e in all_examples(task))


# ---------------------------------------------------------------- directories


def test_directory_of_tasks_with_description(tmp_path):
    write_jsonl(tmp_path / "alpha.jsonl", qa(6))
    write_jsonl(tmp_path / "beta.jsonl", qa(7))
    (tmp_path / "beta.description.txt").write_text("  Beta: add zero to a number.\n")
    tasks = load_tasks([str(tmp_path)], n_validation=2)
    assert [t.name for t in tasks] == ["alpha", "beta"]
    assert tasks[0].description == "Answer the question."
    assert tasks[1].description == "Beta: add zero to a number."
    with pytest.raises(UserError, match="holds 2 tasks"):
        load_task(str(tmp_path))


def test_description_file_wins_over_json_key(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"description": "from key", "examples": qa(6)}))
    (tmp_path / "t.description.txt").write_text("from file")
    assert load_task(str(tmp_path / "t.json")).description == "from file"


def test_load_tasks_mixes_builtin_and_files_and_rejects_duplicate_names(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", qa(6))
    tasks = load_tasks(["word_sorting", str(path)], n_validation=3, n_test=4)
    assert [t.name for t in tasks] == ["word_sorting", "mine"]
    with pytest.raises(UserError, match="two tasks are named 'mine'"):
        load_tasks([str(path), str(path)])


def test_empty_directory(tmp_path):
    with pytest.raises(UserError, match="no task files"):
        load_task(str(tmp_path))


# ---------------------------------------------------------------- Hugging Face datasets


def test_hf_saved_dataset_input_target(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = qa(12)
    datasets.Dataset.from_dict(
        {"input": [r["input"] for r in rows], "target": [r["target"] for r in rows]}
    ).save_to_disk(str(tmp_path / "mini"))
    task = load_task(str(tmp_path / "mini"), n_validation=4)
    assert task.name == "mini" and task.answer_kind == "number"
    assert len(all_examples(task)) == 12


def test_hf_saved_datasetdict_question_answer(tmp_path):
    datasets = pytest.importorskip("datasets")
    split = {
        "question": [f"Tom has {i} apples. How many?" for i in range(5)],
        "answer": [f"He has {i}.\n#### {i}" for i in range(5)],
    }
    other = {"question": [q + " (again)" for q in split["question"]], "answer": split["answer"]}
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(split), "test": datasets.Dataset.from_dict(other)}
    )
    dd.save_to_disk(str(tmp_path / "gsm"))
    task = load_task(str(tmp_path / "gsm"))
    assert len(all_examples(task)) == 10
    assert {e.target for e in all_examples(task)} == {str(i) for i in range(5)}


def test_hf_saved_dataset_wrong_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(UserError, match="needs columns input/target or question/answer; it has text, label"):
        load_task(str(tmp_path / "bad"))


def test_import_is_light():
    code = (
        "import sys, common.tasks; bad = {'datasets', 'torch', 'transformers'} & set(sys.modules); print(bad)"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "set()"
