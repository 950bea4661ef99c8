"""A task's validation questions from a file of their own (the paper takes them from BIG-bench data
outside BBH's test set), instead of cut from the task's examples.

Two ways to name the file, for any task spec:
- explicit: `SPEC::validation=PATH` in `--tasks`
  (`data/bbh/navigate.json::validation=data/bb/navigate_val.jsonl`,
  `boolean_expressions::validation=val.jsonl`); one task per spec (not a directory of several);
- beside a task file: `NAME.validation.jsonl` or `NAME.validation.json` next to `NAME.jsonl` /
  `NAME.json` (for a BIG-bench `task.json`: `task.validation.json`) is used on its own, and a
  directory of tasks does not load it as a task. An explicit path wins over the file beside it.

The file has the task files' format (JSONL or JSON records, `path:line` errors). The task's own
examples then give seeds and test only (no validation cut from them). A validation question that is
the same text as a seed or test question after whitespace normalisation (runs of spaces, tabs and
newlines made one space; ends stripped) is dropped, counted in `Task.validation_overlap` and logged
as a warning; duplicates within the file are dropped too. What remains is shuffled with the run's
seed and the first `n_validation` are kept.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from common.errors import UserError
from common.tasks.base import Example, Task

log = logging.getLogger(__name__)

SPEC_SEPARATOR = "::validation="
"""`SPEC::validation=PATH` in a task spec."""
_SIBLING_SUFFIXES = (".validation.jsonl", ".validation.json")


def split_spec(spec: str) -> tuple[str, Path | None]:
    """`SPEC::validation=PATH` -> (SPEC, PATH); a spec without it -> (spec, None)."""
    if SPEC_SEPARATOR not in spec:
        return spec, None
    task_spec, path = spec.split(SPEC_SEPARATOR, 1)
    if not task_spec.strip() or not path.strip():
        raise UserError(f"bad task spec {spec!r}: expected SPEC{SPEC_SEPARATOR}PATH with both parts")
    return task_spec.strip(), Path(path.strip()).expanduser()


def is_validation_file(path: Path) -> bool:
    """NAME.validation.jsonl / NAME.validation.json: a task's validation file, not a task."""
    return path.name.endswith(_SIBLING_SUFFIXES)


def sibling_validation_file(path: Path) -> Path | None:
    """The validation file beside task file `path` (NAME.validation.jsonl or .json), if there is one."""
    stem = path.name.removesuffix(".jsonl").removesuffix(".json")
    found = [path.parent / f"{stem}{suffix}" for suffix in _SIBLING_SUFFIXES]
    found = [p for p in found if p.is_file()]
    if len(found) > 1:
        raise UserError(f"{path}: both {found[0].name} and {found[1].name} beside it; keep one")
    return found[0] if found else None


def question_text_key(question: str) -> str:
    """A question compared across files: whitespace runs made one space, ends stripped."""
    return " ".join(question.split())


def read_validation_examples(path: Path) -> list[Example]:
    """The records of a validation file (JSONL or JSON, the task files' format and errors)."""
    from common.tasks.loaders import read_json, read_jsonl

    if not path.is_file():
        raise UserError(f"validation file not found: {path}")
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        return read_json(path)[0]
    raise UserError(f"{path}: unsupported validation file type {path.suffix!r}; use .jsonl or .json")


def attach_validation(task: Task, path: Path, *, n_validation: int, seed: int) -> Task:
    """`task` with its validation split read from `path` (see module doc); a UserError naming the
    file when nothing is left once the seed and test questions are removed."""
    taken = {question_text_key(e.input) for e in task.seeds + task.test}
    unique: dict[str, Example] = {}
    overlap = duplicates = 0
    for ex in read_validation_examples(path):
        key = question_text_key(ex.input)
        if key in taken:
            overlap += 1
        elif key in unique:
            duplicates += 1
        else:
            unique[key] = ex
    if overlap:
        log.warning(
            "task %s: %d validation question(s) of %s are also seed or test questions; dropped",
            task.name,
            overlap,
            path,
        )
    if duplicates:
        log.warning("task %s: %d duplicate question(s) in %s dropped", task.name, duplicates, path)
    if not unique:
        raise UserError(
            f"{path}: no validation question left for task {task.name!r} ({overlap} are seed or test "
            "questions of the task); give it questions outside the task's test set"
        )
    validation = list(unique.values())
    random.Random(f"arte-validation:{task.name}:{seed}").shuffle(validation)
    task.validation = validation[:n_validation]
    task.validation_source, task.validation_overlap = str(path), overlap
    return task
