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
_REF = re.compile(r"^(arte|export|edge_bench|common)(\.\w+)*(:\w+)?$")


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
