"""The code in docs/cells.md and README.md is the code of the examples, so they cannot drift.

A ```python block taken from a file is marked by the line before it::

    <!-- include: stream_app/examples/reminders.py lines 117-143 -->

and must be exactly those lines of the file (dedented as a whole, so a method can be shown
without its class). When a block no longer matches, the failure says where the block's text
now is in the file, if it is there unchanged, so that only the line numbers need updating.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cells.md"
EXAMPLES = ("reminders", "tickets", "audit")

_MARKER = re.compile(r"<!-- include: (?P<path>\S+) lines (?P<first>\d+)-(?P<last>\d+) -->")


@dataclass(frozen=True)
class Include:
    """One marked block of a Markdown file."""

    doc_line: int
    path: str
    first: int
    last: int
    code: str | None  # None when the marker is not followed by a ```python block


def includes(text: str) -> list[Include]:
    """Every include marker of ``text`` with the code block that follows it."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = _MARKER.fullmatch(line.strip())
        if match is None:
            if "<!-- include:" in line:
                found.append(Include(index + 1, line.strip(), 0, 0, None))
            continue
        code = None
        if index + 1 < len(lines) and lines[index + 1].strip() == "```python":
            end = next((j for j in range(index + 2, len(lines)) if lines[j].strip() == "```"), None)
            if end is not None:
                code = "\n".join(lines[index + 2 : end])
        found.append(
            Include(
                index + 1,
                match["path"],
                int(match["first"]),
                int(match["last"]),
                code,
            )
        )
    return found


def excerpt(path: Path, first: int, last: int) -> str:
    """Lines ``first``..``last`` (1-based, inclusive) of ``path``, dedented as a whole."""
    return textwrap.dedent("\n".join(path.read_text().splitlines()[first - 1 : last]))


def locate(path: Path, code: str) -> str:
    """Where ``code`` now is in ``path`` (as ``lines a-b``), or why it cannot be found."""
    lines = path.read_text().splitlines()
    size = len(code.splitlines())
    for start in range(len(lines) - size + 1):
        if textwrap.dedent("\n".join(lines[start : start + size])) == code:
            return f"the block is unchanged at lines {start + 1}-{start + size}: update the marker"
    return "the block's text is not in the file any more: copy the new code into the docs"


DOC_INCLUDES = includes(DOC.read_text())
README = ROOT / "README.md"
QUESTS = ROOT / "docs" / "quests.md"
WORKFLOWS = ROOT / "docs" / "workflows.md"
ATOMIC = ROOT / "docs" / "atomic.md"
#: Included blocks of every page: (page, block).
PAGE_INCLUDES = [
    (page, i)
    for page in (DOC, README, QUESTS, WORKFLOWS, ATOMIC)
    for i in includes(page.read_text())
]


def test_the_docs_include_every_example() -> None:
    paths = {i.path for i in DOC_INCLUDES}
    for name in EXAMPLES:
        assert f"stream_app/examples/{name}.py" in paths, f"docs/cells.md shows no {name}.py code"


def test_the_quests_page_shows_the_fitness_example() -> None:
    shown = {i.path for page, i in PAGE_INCLUDES if page == QUESTS}
    assert shown == {"stream_app/examples/fitness.py"}, "docs/quests.md shows no fitness.py code"


def test_the_workflows_page_shows_both_examples() -> None:
    shown = [i for page, i in PAGE_INCLUDES if page == WORKFLOWS]
    assert {i.path for i in shown} == {"stream_app/examples/workflows.py"}
    code = "\n".join(i.code or "" for i in shown)
    assert 'Workflow("generic"' in code and 'Workflow("sources"' in code


def test_the_atomic_page_shows_the_auction_example() -> None:
    shown = [i for page, i in PAGE_INCLUDES if page == ATOMIC]
    assert {i.path for i in shown} == {"stream_app/examples/auction.py"}
    code = "\n".join(i.code or "" for i in shown)
    assert 'AtomicLog(\n    "lots"' in code and "def decide(" in code


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = README.read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_the_readme_shows_the_counter_as_it_is() -> None:
    shown = {i.path for page, i in PAGE_INCLUDES if page == README}
    assert "stream_app/examples/counter.py" in shown, "README.md shows no counter.py code"


@pytest.mark.parametrize(
    ("page", "include"),
    PAGE_INCLUDES,
    ids=[f"{page.name}:{i.path}:{i.first}-{i.last}" for page, i in PAGE_INCLUDES],
)
def test_included_block_is_the_file(page: Path, include: Include) -> None:
    where = f"{page.relative_to(ROOT)} line {include.doc_line}"
    assert include.first, f"{where}: malformed marker {include.path!r}"
    assert include.code is not None, f"{where}: the marker is not followed by a ```python block"
    path = ROOT / include.path
    assert path.is_file(), f"{where}: {include.path} does not exist"
    total = len(path.read_text().splitlines())
    assert 1 <= include.first <= include.last <= total, (
        f"{where}: lines {include.first}-{include.last} are outside {include.path} ({total} lines)"
    )
    expected = excerpt(path, include.first, include.last)
    assert include.code == expected, (
        f"{where}: the block differs from {include.path} lines {include.first}-"
        f"{include.last}; {locate(path, include.code)}"
    )


def test_the_checker_catches_drift(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("class A:\n    def f(self) -> int:\n        return 1\n")
    doc = (
        "text\n<!-- include: example.py lines 2-3 -->\n```python\n"
        "def f(self) -> int:\n    return 1\n```\n<!-- include: example.py lines 9 -->\n"
    )
    first, broken = includes(doc)
    assert (first.first, first.last, first.code) == (2, 3, "def f(self) -> int:\n    return 1")
    assert excerpt(source, first.first, first.last) == first.code
    assert broken.first == 0 and broken.code is None
    # The same code moved down one line: found, with its new numbers.
    source.write_text("# moved\n" + source.read_text())
    assert excerpt(source, 2, 3) != first.code
    assert "lines 3-4" in locate(source, first.code or "")
    source.write_text("class A:\n    def f(self) -> int:\n        return 2\n")
    assert "not in the file" in locate(source, first.code or "")


def test_readme_and_docs_stand_on_their_own() -> None:
    """Nothing a reader of the repository is sent to lies outside it."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "../shared" not in page.read_text(), f"{page.name} points outside the repository"
