"""Reading labelled examples from files: JSONL, JSON, BIG-bench task.json, a directory of NAME.jsonl
files, and Hugging Face datasets (hub or `save_to_disk` directories; `datasets` imported lazily).

Every record needs `input` and `target` (or BIG-bench `target_scores`); optional `options` are rendered
BBH-style ("Options:\\n(A) ...") and the target becomes the option's letter; an optional `rationale`
(written reasoning ending in `<ans>target</ans>`) is what the teacher is shown as a worked example.
The first bad record stops loading with `file:line: what is wrong`, so nothing runs on half-read data.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.errors import UserError, missing_dependency
from common.tasks.answers import normalize_answer, parse_number
from common.tasks.base import AnswerKind, Example, Task, split_examples

log = logging.getLogger(__name__)

DEFAULT_DESCRIPTION = "Answer the question."
_MAX_OPTIONS = 26
_RENDERED_OPTIONS = re.compile(r"(?m)^Options:\s*$\s*^\(A\)")
_PAREN_LETTER = re.compile(r"^\([A-Za-z]\)$")

# ---------------------------------------------------------------- one record


def render_options(question: str, options: Iterable[str]) -> str:
    """BBH-style multiple choice: the question, then "Options:" and one "(A) text" line per option."""
    lines = [f"({chr(ord('A') + i)}) {opt}" for i, opt in enumerate(options)]
    return question.rstrip() + "\nOptions:\n" + "\n".join(lines)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _scalar_target(value: Any, where: str) -> str:
    if isinstance(value, list):  # BIG-bench: a list of acceptable targets; the first is the answer
        if not value:
            raise UserError(f'{where}: "target" is an empty list')
        value = value[0]
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise UserError(f'{where}: "target" must be a string, got {_type_name(value)}')
    if not value.strip():
        raise UserError(f'{where}: "target" is empty')
    return value.strip()


def _scored_options(scores: Any, where: str) -> tuple[list[str], str]:
    """BIG-bench `target_scores` {option: score} -> (options, letter of the best-scored option)."""
    if not isinstance(scores, Mapping) or not scores:
        raise UserError(f'{where}: "target_scores" must be a non-empty object of option -> score')
    options = [str(k) for k in scores]
    values = list(scores.values())
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UserError(f'{where}: "target_scores" values must be numbers')
    best = max(range(len(values)), key=lambda i: values[i])
    return options, chr(ord("A") + best)


def _check_options(options: Any, where: str) -> list[str]:
    if not isinstance(options, list) or not options:
        raise UserError(f'{where}: "options" must be a non-empty list of strings')
    if not all(isinstance(o, str) and o.strip() for o in options):
        raise UserError(f'{where}: every entry of "options" must be a non-empty string')
    if len(options) > _MAX_OPTIONS:
        raise UserError(f"{where}: {len(options)} options; at most {_MAX_OPTIONS} (A-Z) are supported")
    return [o.strip() for o in options]


def _option_letter(target: str, options: list[str], where: str) -> str:
    """The letter of `target`, given as a letter ("B", "(b)") or as the option's text."""
    norm = normalize_answer(target, "choice", options)
    if len(norm) == 1 and 0 <= ord(norm) - ord("a") < len(options):
        return norm.upper()
    last = chr(ord("A") + len(options) - 1)
    raise UserError(f"{where}: target {target!r} is neither one of the options nor a letter A-{last}")


def record_to_example(record: Any, where: str) -> Example:
    """One JSON object -> Example; a UserError starting with `where` says what is wrong."""
    if not isinstance(record, Mapping):
        raise UserError(f'{where}: expected an object with "input" and "target", got {_type_name(record)}')
    if "input" not in record:
        raise UserError(f'{where}: missing "input"')
    question = record["input"]
    if not isinstance(question, str):
        raise UserError(f'{where}: "input" must be a string, got {_type_name(question)}')
    if not question.strip():
        raise UserError(f'{where}: "input" is empty')
    if "target_scores" in record:
        options, target = _scored_options(record["target_scores"], where)
    elif "target" not in record:
        raise UserError(f'{where}: missing "target"')
    else:
        target = _scalar_target(record["target"], where)
        has_options = record.get("options") not in (None, [])
        options = _check_options(record["options"], where) if has_options else []
        if options:
            target = _option_letter(target, options, where)
    if options and not _RENDERED_OPTIONS.search(question):
        question = render_options(question, options)
    rationale = record.get("rationale") or ""
    if not isinstance(rationale, str):
        raise UserError(f'{where}: "rationale" must be a string, got {_type_name(rationale)}')
    return Example(
        input=question.strip(),
        target=target,
        options=tuple(options),
        rationale=rationale.strip(),
        where=where,
    )


def infer_answer_kind(examples: Iterable[Example]) -> AnswerKind:
    """'choice' with options (or "(A)"-style targets), 'number' when every target is a number,
    'bool' when every target is True/False, else 'text'."""
    examples = list(examples)
    if any(e.options for e in examples) or all(_PAREN_LETTER.match(e.target) for e in examples):
        return "choice"
    if all(parse_number(e.target) is not None for e in examples):
        return "number"
    if all(e.target.strip().casefold() in ("true", "false") for e in examples):
        return "bool"
    return "text"


# ---------------------------------------------------------------- files


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"task file not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark is not part of line 1
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_jsonl(path: Path) -> list[Example]:
    """One JSON object per line; blank lines skipped; the first bad line raises `path:line: ...`."""
    examples = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
        examples.append(record_to_example(record, f"{path}:{lineno}"))
    if not examples:
        raise UserError(f"{path}: empty file, no examples")
    return examples


def read_json(path: Path) -> tuple[list[Example], str | None]:
    """A JSON list of examples, or {"examples": [...], "description": ...} (also BIG-bench task.json).
    Returns the examples and the description, if the file has one."""
    text = _read_text(path)
    if not text.strip():
        raise UserError(f"{path}: empty file, no examples")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    description = None
    if isinstance(data, Mapping):
        if "examples" not in data:
            raise UserError(f'{path}: expected a list of examples or an object with "examples"')
        description = data.get("description")
        if description is not None and not isinstance(description, str):
            raise UserError(f'{path}: "description" must be a string, got {_type_name(description)}')
        data = data["examples"]
    if not isinstance(data, list):
        raise UserError(f'{path}: "examples" must be a list, got {_type_name(data)}')
    if not data:
        raise UserError(f"{path}: no examples")
    examples = [record_to_example(r, f"{path}: examples[{i}]") for i, r in enumerate(data)]
    return examples, (description.strip() or None) if description else None


def _description_file(path: Path, name: str) -> str | None:
    """Text of NAME.description.txt next to `path`, if present and not empty."""
    candidate = path.parent / f"{name}.description.txt"
    if candidate.is_file():
        text = candidate.read_text(encoding="utf-8-sig").strip()
        return text or None
    return None


def task_name_for(path: Path) -> str:
    """NAME.jsonl -> NAME; a BIG-bench .../NAME/task.json -> NAME."""
    if path.name == "task.json":
        return path.resolve().parent.name
    return path.name.removesuffix(".jsonl").removesuffix(".json")


def build_task(
    name: str,
    description: str | None,
    examples: list[Example],
    *,
    source: str,
    n_validation: int = 100,
    n_test: int | None = 200,
    seed: int = 0,
) -> Task:
    """De-duplicate by question text (first wins), infer the answer kind, split with `seed`. Dropped
    duplicates, and targets that are all the same, are logged as warnings."""
    unique = list({e.input: e for e in reversed(examples)}.values())[::-1]
    if len(unique) < len(examples):
        log.warning(
            "task %s (%s): %d duplicate question(s) dropped (the first of each is kept)",
            name,
            source,
            len(examples) - len(unique),
        )
    targets = {e.target for e in unique}
    if len(targets) == 1 and len(unique) > 1:
        log.warning(
            "task %s (%s): every example has the same target %r; a model that always answers it scores 100%%",
            name,
            source,
            next(iter(targets)),
        )
    seeds, validation, test = split_examples(
        unique, name=name, n_validation=n_validation, n_test=n_test, seed=seed
    )
    return Task(
        name=name,
        description=description or DEFAULT_DESCRIPTION,
        seeds=seeds,
        validation=validation,
        test=test,
        answer_kind=infer_answer_kind(unique),
        verifier=None,
        source=source,
    )


def load_file_task(
    path: Path, *, n_validation: int = 100, n_test: int | None = 200, seed: int = 0, sibling: bool = True
) -> Task:
    """A task from a .jsonl or .json file (NAME.description.txt beside it wins over a "description").
    With a NAME.validation.jsonl/.json beside it (and `sibling`; not read when no validation is
    wanted), validation comes from that file and the task's own examples give seeds and test only
    (`common.tasks.validation_file`)."""
    from common.tasks.validation_file import attach_validation, sibling_validation_file

    validation_path = sibling_validation_file(path) if sibling and n_validation > 0 else None
    if validation_path is not None:
        task = load_file_task(path, n_validation=0, n_test=n_test, seed=seed, sibling=False)
        return attach_validation(task, validation_path, n_validation=n_validation, seed=seed)
    name = task_name_for(path)
    if path.suffix == ".jsonl":
        examples, description = read_jsonl(path), None
    elif path.suffix == ".json":
        examples, description = read_json(path)
    else:
        raise UserError(f"{path}: unsupported task file type {path.suffix!r}; use .jsonl or .json")
    description = _description_file(path, name) or description
    return build_task(
        name, description, examples, source=str(path), n_validation=n_validation, n_test=n_test, seed=seed
    )


def is_hf_saved_dir(path: Path) -> bool:
    """A directory written by `datasets` `save_to_disk` (a Dataset or a DatasetDict)."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "dataset_info.json").is_file() and (path / "state.json").is_file()
    )


def load_task_dir(
    path: Path, *, n_validation: int = 100, n_test: int | None = 200, seed: int = 0
) -> list[Task]:
    """A saved HF dataset, a BIG-bench task directory (task.json), or one task per NAME.jsonl/.json."""
    kw = dict(n_validation=n_validation, n_test=n_test, seed=seed)
    if is_hf_saved_dir(path):
        return [load_hf_task(str(path), local=True, **kw)]
    if (path / "task.json").is_file():
        return [load_file_task(path / "task.json", **kw)]
    from common.tasks.validation_file import is_validation_file

    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix in (".jsonl", ".json") and not is_validation_file(p)
    )
    if not files:
        raise UserError(f"{path}: no task files in this directory (expected NAME.jsonl files)")
    names = [task_name_for(p) for p in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{path}: both NAME.json and NAME.jsonl for task(s) {', '.join(dupes)}; keep one")
    return [load_file_task(p, **kw) for p in files]


# ---------------------------------------------------------------- Hugging Face datasets


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise missing_dependency("datasets", "datasets<5", "Loading Hugging Face datasets") from None
    return datasets


def _rows(ds: Any) -> tuple[list[str], Iterable[Mapping[str, Any]]]:
    """Column names and rows of a Dataset, or of every split of a DatasetDict in order."""
    if hasattr(ds, "column_names") and isinstance(ds.column_names, list):
        return ds.column_names, ds
    splits = list(ds.values())
    columns = splits[0].column_names if splits else []
    return columns, (row for split in splits for row in split)


def _hf_examples(columns: list[str], rows: Iterable[Mapping[str, Any]], where: str) -> list[Example]:
    if {"input", "target"} <= set(columns):
        question_col, answer_col = "input", "target"
    elif {"question", "answer"} <= set(columns):
        question_col, answer_col = "question", "answer"
    else:
        raise UserError(
            f"{where}: needs columns input/target or question/answer; it has {', '.join(columns)}"
        )
    examples = []
    for i, row in enumerate(rows):
        answer, rationale = row[answer_col], row.get("rationale")
        if isinstance(answer, str) and "####" in answer:  # GSM8K: rationale, then "#### 42"
            steps, answer = (part.strip() for part in answer.rsplit("####", 1))
            rationale = f"{steps} <ans>{answer}</ans>" if steps else rationale
        record = {"input": row[question_col], "target": answer, "rationale": rationale}
        if row.get("options") is not None:
            record["options"] = list(row["options"])
        examples.append(record_to_example(record, f"{where}: row {i}"))
    if not examples:
        raise UserError(f"{where}: the dataset has no rows")
    return examples


def load_hf_task(
    dataset: str,
    config: str | None = None,
    split: str | None = None,
    *,
    local: bool = False,
    n_validation: int = 100,
    n_test: int | None = 200,
    seed: int = 0,
) -> Task:
    """A task from a hub dataset (`local=False`) or a `save_to_disk` directory (`local=True`, where
    `config`/`split` are unused). Without `split`, all splits are pooled (ARTE re-splits them itself)."""
    datasets = _import_datasets()
    if local:
        where, name = str(dataset), Path(dataset).resolve().name
        try:
            ds = datasets.load_from_disk(str(dataset))
        except Exception as e:  # any failure here is a bad directory
            raise UserError(f"{where}: could not read the saved dataset: {e}") from None
    else:
        where = f"hf:{dataset}" + (f":{config}" if config else "") + (f":{split}" if split else "")
        name = dataset.rsplit("/", 1)[-1] + (f"_{config}" if config else "")
        try:
            ds = datasets.load_dataset(dataset, config or None, split=split or None)
        except Exception as e:  # network, missing config, unknown split: one message
            raise UserError(f"{where}: could not load the dataset: {e}") from None
    columns, rows = _rows(ds)
    examples = _hf_examples(columns, rows, where)
    # Hub dataset cards describe the dataset, not the task: use the default instruction.
    return build_task(name, None, examples, source=where, n_validation=n_validation, n_test=n_test, seed=seed)
