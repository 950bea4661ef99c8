"""One direction between the packages: `common` imports none of the others; `export` imports only
`common`; `edge_bench` reads files and imports only `common`; the training core (`arte`) may use all.
Every import counts, lazy ones inside functions included, and so do "package.module:Name" strings
(the lazy plug-in registries)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("arte", "export", "edge_bench", "common")
ALLOWED = {
    "common": set(),
    "export": {"common"},
    "edge_bench": {"common"},
    "arte": {"common", "export", "edge_bench"},
}
_REF = re.compile(r"^(arte|export|edge_bench|common)((\.\w+)+(:\w+)?|:\w+)$")
"""A "package.module:Name" plug-in reference (a bare "arte" is data, such as a student's name)."""


def imported_packages(source: str) -> set[tuple[str, int]]:
    """(top-level project package, line) for every import and "pkg.module:Name" string in `source`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _REF.match(node.value):
            names = [node.value]
        for name in names:
            top = name.split(".")[0].split(":")[0]
            if top in PACKAGES:
                found.add((top, node.lineno))
    return found


def forbidden_edges(root: Path) -> list[str]:
    """ "file:line: pkg -> other" for every import that breaks the allowed direction."""
    out = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for target, line in sorted(imported_packages(path.read_text())):
                if target != package and target not in allowed:
                    out.append(f"{path.relative_to(root)}:{line}: {package} -> {target}")
    return out


def test_packages_import_in_one_direction():
    assert forbidden_edges(ROOT) == []


def test_the_check_finds_a_forbidden_edge(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "export" / "ok.py").write_text("from common.errors import UserError\n")
    (tmp_path / "edge_bench" / "bad.py").write_text(
        "def f():\n    from arte.tasks import load_task\n\nRUNTIMES = {'x': 'export.verify:Ref'}\n"
    )
    (tmp_path / "common" / "bad.py").write_text("import edge_bench.report\n")
    assert forbidden_edges(tmp_path) == [
        "common/bad.py:1: common -> edge_bench",
        "edge_bench/bad.py:2: edge_bench -> arte",
        "edge_bench/bad.py:4: edge_bench -> export",
    ]


# Inside `arte`: the orchestrator is the top floor. No stage module imports it (nor the commands or
# the CLI above it), and no chain of imports, lazy ones included, leads from it back to itself.
ORCHESTRATOR = ("arte.pipeline", "arte.commands", "arte.cli")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def arte_imports(source: str, known: set[str]) -> set[tuple[str, int]]:
    """(arte module, line) for every import and "arte.module:Name" string in `source`; `from
    arte.x import y` counts as arte.x.y when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
            names = names or [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _REF.match(node.value):
            names = [node.value.split(":")[0]]
        found |= {(n, node.lineno) for n in names if n.split(".")[0] == "arte"}
    return found


def arte_graph(root: Path) -> dict[str, dict[str, int]]:
    """{module: {imported arte module: line}} over every module of root/arte."""
    paths = {module_name(root, p): p for p in sorted((root / "arte").rglob("*.py"))}
    return {m: {n: line for n, line in arte_imports(p.read_text(), set(paths))} for m, p in paths.items()}


def orchestrator_imports_in_stages(root: Path) -> list[str]:
    graph = arte_graph(root)
    return [
        f"{m}:{line} imports {n}"
        for m, edges in graph.items()
        if m.startswith("arte.stages")
        for n, line in sorted(edges.items())
        if n.startswith(ORCHESTRATOR)
    ]


def cycle_through(root: Path, start: str) -> list[str]:
    """A chain of imports from `start` back to `start` (empty when there is none)."""
    graph = arte_graph(root)
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for target in graph.get(node, {}):
            if target == start:
                return path + [start]
            if target not in seen and target in graph:
                seen.add(target)
                stack.append((target, path + [target]))
    return []


def test_stages_never_import_the_orchestrator():
    assert orchestrator_imports_in_stages(ROOT) == []


def test_no_import_circle_contains_the_pipeline():
    assert cycle_through(ROOT, "arte.pipeline") == []


def test_the_checks_find_an_upward_import_and_a_circle(tmp_path):
    (tmp_path / "arte" / "stages").mkdir(parents=True)
    (tmp_path / "arte" / "__init__.py").write_text("")
    (tmp_path / "arte" / "stages" / "__init__.py").write_text("from arte.stages import late\n")
    (tmp_path / "arte" / "stages" / "late.py").write_text("def f():\n    from arte.pipeline import run\n")
    (tmp_path / "arte" / "pipeline.py").write_text("import arte.stages\n")
    assert orchestrator_imports_in_stages(tmp_path) == ["arte.stages.late:2 imports arte.pipeline"]
    assert cycle_through(tmp_path, "arte.pipeline") == [
        "arte.pipeline",
        "arte.stages",
        "arte.stages.late",
        "arte.pipeline",
    ]
