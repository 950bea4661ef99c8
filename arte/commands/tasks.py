"""`arte tasks`: list built-in tasks, or load task specs and show their splits and an example."""

from __future__ import annotations

from dataclasses import dataclass

from common.config import opt


@dataclass
class TasksConfig:
    """Show tasks. Without --tasks, lists the built-in ones."""

    tasks: list[str] = opt(
        [], "Task specs: built-in names, .jsonl/.json/task.json files, directories, hf:NAME."
    )
    n_validation: int = opt(100, "Validation questions per task (the pool D_pref is selected from).")
    n_test: int = opt(200, "Test questions per task (fewer if the data has fewer).")
    seed: int = opt(0, "Split / generation seed.")


def run_tasks(cfg: TasksConfig) -> int:
    from common.tasks import list_builtin_tasks, load_tasks

    if not cfg.tasks:
        print("built-in tasks (procedural, exact answers, any size offline):")
        for name, description in list_builtin_tasks().items():
            print(f"  {name:<22} {description}")
        print(
            "\nYour own: --tasks FILE.jsonl (input/target per line), a BIG-bench task.json, a directory "
            "of NAME.jsonl (+ NAME.description.txt), or hf:DATASET[:CONFIG][:SPLIT]."
        )
        return 0
    for task in load_tasks(cfg.tasks, n_validation=cfg.n_validation, n_test=cfg.n_test, seed=cfg.seed):
        verifier = "exact verifier" if task.verifier else "no verifier"
        print(f"{task.name} [{task.source}; answers: {task.answer_kind}; {verifier}]")
        print(f"  {task.description}")
        print(f"  seeds {len(task.seeds)}, validation {len(task.validation)}, test {len(task.test)}")
        ex = task.seeds[0]
        print(f"  e.g. {ex.input!r} -> {ex.target!r}\n")
    return 0
