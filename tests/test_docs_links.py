"""The README and docs/: every relative Markdown link resolves, and the README stays short.

A link `[text](path)` or `[text](path#anchor)` in README.md or docs/**/*.md is resolved relative to
the file that holds it and must name an existing file or directory; where it points into a Markdown
file with an anchor, that file must have a heading with that anchor (GitHub's rule: lower case,
punctuation dropped, spaces to hyphens). Web links (http, https), mailto: and links within the same
page (`#anchor` alone) are not followed. Links inside code (fenced blocks, `inline code`) are not
links. Plain file reads only: no project package is imported.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300

LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
SKIP_SCHEMES = ("http://", "https://", "mailto:")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/."""
    files = [root / "README.md"]
    files += sorted((root / "docs").rglob("*.md")) if (root / "docs").is_dir() else []
    return [f for f in files if f.is_file()]


def _prose_lines(text: str, blank_inline_code: bool = True):
    """(line number, line) outside fenced code blocks, inline code blanked out unless asked not to."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            if blank_inline_code:
                line = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
            yield number, line


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link in the text, outside code."""
    return [(n, m.group(1)) for n, line in _prose_lines(text) for m in LINK.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (repeats get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), blank_inline_code=False):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(files: list[Path]) -> list[str]:
    """One 'FILE:LINE: target (why)' for each relative link that does not resolve."""
    problems = []
    for md in files:
        for number, target in links(md.read_text(encoding="utf-8")):
            if target.startswith(SKIP_SCHEMES) or target.startswith("#"):
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (md.parent / path_part).resolve()
            where = f"{md}:{number}: {target}"
            if not resolved.exists():
                problems.append(f"{where} (no such file: {resolved})")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where} (no heading #{anchor} in {resolved.name})")
    return problems


def test_docs_exist():
    names = {f.relative_to(ROOT).as_posix() for f in markdown_files()}
    assert "README.md" in names
    assert "docs/method.md" in names
    assert "docs/measurements.md" in names


def test_every_relative_link_resolves():
    problems = broken_links(markdown_files())
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


def test_checker_reports_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "good.md").write_text("# Good page\n\n## A section\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "[fine](docs/good.md) and [fine too](docs/good.md#a-section) and [web](https://example.com)\n"
        "[mail](mailto:a@b.c) and [here](#title) and `[in code](docs/missing.md)`\n\n"
        "```\n[in a fence](docs/missing.md)\n```\n\n"
        "[broken](docs/missing.md) and [bad anchor](docs/good.md#nowhere)\n",
        encoding="utf-8",
    )
    problems = broken_links(markdown_files(tmp_path))
    assert len(problems) == 2, problems
    assert "README.md:10: docs/missing.md (no such file" in problems[0]
    assert "docs/good.md#nowhere (no heading #nowhere in good.md)" in problems[1]


def test_links_relative_to_the_file_that_holds_them(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# R\n", encoding="utf-8")
    # from docs/, "README.md" would be docs/README.md: wrong; "../README.md" is right
    (tmp_path / "docs" / "a.md").write_text("[up](../README.md) [wrong](README.md)\n", encoding="utf-8")
    problems = broken_links(markdown_files(tmp_path))
    assert len(problems) == 1 and "docs/a.md:1: README.md" in problems[0].replace("\\", "/"), problems
