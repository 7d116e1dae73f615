"""The README and docs/ point at things that exist: relative links, in-page anchors, repository paths in backticks,
and a picture for every example workflow. Read statically; nothing is run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*DOCS, ROOT / "BENCHMARKS.md"]  # BENCHMARKS.md names past file locations as history; its links must work
TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".git")}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.M)}


def relative_links(doc: Path) -> list[str]:
    return [t for t in LINK.findall(doc.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", t)]


def repository_paths(doc: Path) -> list[str]:
    """Backticked words that name a file or folder of this repository (first part a top-level entry), without
    placeholders such as <name>, … or *."""
    found = []
    for span in CODE.findall(doc.read_text(encoding="utf-8")):
        for word in span.split():
            word = word.rstrip(".,;:)")
            first = word.split("/")[0]
            if first in TOP_LEVEL and ("/" in word or "." in word) and not re.search(r"[<>…*{}|]", word):
                found.append(word)
    return found


@pytest.mark.parametrize("doc", LINKED, ids=[d.name for d in LINKED])
def test_relative_links_and_anchors_exist(doc):
    """Catches a link to a file that was moved or never committed (e.g. a workflow picture), or to a heading that
    was renamed."""
    assert doc.is_file()
    broken = []
    for target in relative_links(doc):
        path, _, anchor = target.partition("#")
        where = (doc.parent / path) if path else doc
        if not where.exists():
            broken.append(target)
        elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
            broken.append(target)
    assert broken == [], f"{doc.name}: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_repository_paths_named_in_the_docs_exist(doc):
    """Catches a doc naming `tests/…` or `openuni_core/…` files that were renamed or removed."""
    missing = [p for p in repository_paths(doc) if not (ROOT / p).exists()]
    assert missing == [], f"{doc.name}: {missing}"


def test_every_example_workflow_has_its_picture_in_the_readme():
    """Catches a new example workflow without a picture (tests/screenshot_workflows.py makes it), or a picture the
    README does not show."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    assert names
    for name in names:
        picture = f"docs/workflows/{name}.png"
        assert (ROOT / picture).is_file() and f"]({picture})" in readme, name
        assert (ROOT / picture).stat().st_size < 300_000, f"{picture} is over 300 KB"


def test_the_docs_cite_nothing_users_do_not_have():
    """The project's internal design notes are not shipped: citing them (e.g. "DESIGN §3") sends users nowhere."""
    for doc in LINKED:
        assert not re.search(r"DESIGN(\.md| §)", doc.read_text(encoding="utf-8")), doc.name


def test_the_checker_finds_what_it_should(tmp_path):
    """The extraction itself: links, anchors and backticked repository paths, with placeholders left out."""
    sample = tmp_path / "sample.md"
    sample.write_text("# Speed and memory\nSee [a](docs/engine.md#the-command-line), [b](#speed-and-memory), "
                      "[c](https://x.org/y), `tests/test_docs.py`, `docs/workflows/<name>.png`, `models/openuni/`.\n")
    assert relative_links(sample) == ["docs/engine.md#the-command-line", "#speed-and-memory"]
    assert repository_paths(sample) == ["tests/test_docs.py"]
    assert "speed-and-memory" in _anchors(sample)
