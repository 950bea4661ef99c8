"""Target tasks: where labelled examples come from and how answers are checked.

`load_task(spec)` accepts
- a built-in name (`list_builtin_tasks()`): procedural BBH-style tasks with exact verifiers;
- a .jsonl file (one {"input", "target", optional "options"} per line) or a .json file (a list of
  those, or {"examples": [...], "description": ...}; BIG-bench task.json included);
- a directory of NAME.jsonl files (one task each, NAME.description.txt optional; `load_tasks` expands
  it), a BIG-bench task directory, or a directory written by `datasets` `save_to_disk`;
- `hf:DATASET[:CONFIG][:SPLIT]` for a Hugging Face hub dataset (`datasets` is imported only then);
- any of these followed by `::validation=PATH`: validation questions from their own file (a
  NAME.validation.jsonl beside a task file does the same: `common.tasks.validation_file`).

Importing this package is cheap: no `datasets`, no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import UserError, unknown_name
from common.tasks.answers import AnswerStats, extract_answer, normalize_answer, score_completions
from common.tasks.base import Example, Task, split_examples
from common.tasks.builtin import BUILTIN_TASKS, make_builtin_task
from common.tasks.loaders import load_file_task, load_hf_task, load_task_dir
from common.tasks.validation_file import SPEC_SEPARATOR, attach_validation, split_spec

ACCEPTED_FORMS = (
    "a built-in task name, a .jsonl or .json file (BIG-bench task.json too), a directory of NAME.jsonl "
    "files, a directory saved by datasets' save_to_disk, or hf:DATASET[:CONFIG][:SPLIT]; any of them "
    "followed by ::validation=PATH to read the validation questions from PATH"
)


def list_builtin_tasks() -> dict[str, str]:
    """Built-in task name -> description."""
    return dict(BUILTIN_TASKS)


def _parse_hf_spec(spec: str) -> tuple[str, str | None, str | None]:
    parts = spec.removeprefix("hf:").split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(
            f"bad task spec {spec!r}: expected hf:DATASET[:CONFIG][:SPLIT], e.g. hf:gsm8k:main:test"
        )
    dataset, config, split = (parts + [None, None])[:3]
    return dataset, config or None, split or None


def _load_spec(spec: str, *, n_validation: int, n_test: int, seed: int) -> list[Task]:
    """The tasks of one spec; `SPEC::validation=PATH` reads validation from PATH
    (`common.tasks.validation_file`)."""
    spec, validation_path = split_spec(spec)
    if validation_path is None or n_validation == 0:  # no validation wanted (out-of-domain tasks)
        return _load_plain_spec(spec, n_validation=n_validation, n_test=n_test, seed=seed)
    if not validation_path.is_file():
        raise UserError(f"validation file not found: {validation_path} (in task spec {spec!r})")
    tasks = _load_plain_spec(spec, n_validation=0, n_test=n_test, seed=seed)
    if len(tasks) != 1:
        raise UserError(
            f"{spec} holds {len(tasks)} tasks; {SPEC_SEPARATOR}PATH names one task's validation file "
            "(name each task file, or put NAME.validation.jsonl beside each)"
        )
    return [attach_validation(tasks[0], validation_path, n_validation=n_validation, seed=seed)]


def _load_plain_spec(spec: str, *, n_validation: int, n_test: int, seed: int) -> list[Task]:
    kw = dict(n_validation=n_validation, n_test=n_test, seed=seed)
    if spec.startswith("hf:"):
        dataset, config, split = _parse_hf_spec(spec)
        return [load_hf_task(dataset, config, split, **kw)]
    if spec in BUILTIN_TASKS:
        return [make_builtin_task(spec, **kw)]
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_task_dir(path, **kw)
    if path.is_file():
        return [load_file_task(path, **kw)]
    if path.suffix in (".json", ".jsonl") or "/" in spec or os.sep in spec:
        raise UserError(f"task file not found: {path}")
    raise UserError(f"{unknown_name('task', spec, BUILTIN_TASKS)}. A task can be {ACCEPTED_FORMS}.")


def load_task(spec: str, *, n_validation: int = 100, n_test: int = 200, seed: int = 0) -> Task:
    """One task from `spec` (see the module docstring), split reproducibly with `seed`.

    n_validation: questions D_pref is selected from (~100 in the paper); n_test: held-out questions
    (file tasks keep at most this many of what is left after seeds and validation).
    """
    tasks = _load_spec(spec, n_validation=n_validation, n_test=n_test, seed=seed)
    if len(tasks) != 1:
        names = ", ".join(t.name for t in tasks)
        raise UserError(f"{spec} holds {len(tasks)} tasks ({names}); use load_tasks, or name one file")
    return tasks[0]


def load_tasks(specs: list[str], *, n_validation: int = 100, n_test: int = 200, seed: int = 0) -> list[Task]:
    """Every task named by `specs`, directories expanded to one task per file; names must be unique."""
    tasks: list[Task] = []
    for spec in specs:
        tasks += _load_spec(spec, n_validation=n_validation, n_test=n_test, seed=seed)
    seen: dict[str, str] = {}
    for task in tasks:
        if task.name in seen:
            raise UserError(
                f"two tasks are named {task.name!r} ({seen[task.name]} and {task.source}); rename one"
            )
        seen[task.name] = task.source
    return tasks


__all__ = [
    "AnswerStats",
    "Example",
    "Task",
    "extract_answer",
    "list_builtin_tasks",
    "load_task",
    "load_tasks",
    "normalize_answer",
    "score_completions",
    "split_examples",
]
