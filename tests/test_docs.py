"""The documentation stays navigable: a short README that links every docs page, and no link,
anchor or repository path in README.md or docs/*.md that points at nothing.

Plain text checks (no project imports), so they run in milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 220

# Top-level folders whose backticked paths must exist (`lineargan/driver.py`, `scripts/run.sh`).
TOP = (
    "flows",
    "tasks",
    "storage",
    "lineargan",
    "tests",
    "scripts",
    "benchmarks",
    "docs",
    "requirements",
    ".ci",
)
PATH_TOKEN = re.compile(r"^(?:" + "|".join(re.escape(t) for t in TOP) + r")/[\w./-]*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text outside fenced code blocks (links and spans in a fence are not markdown)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _prose(path.read_text()), re.M)
    return {_slug(h) for h in headings}


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines (at most {MAX_README_LINES}): move detail to docs/"
    )


def test_docs_exist():
    assert DOCS, "docs/ has no pages"


@pytest.mark.parametrize("page", DOCS, ids=_id)
def test_every_docs_page_is_linked_from_the_readme(page):
    targets = {t.split("#")[0] for t in LINK.findall(_prose(README.read_text()))}
    assert _id(page) in targets, f"README.md does not link {_id(page)}"


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{_id(page)} links to what does not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_backticked_paths_exist(page):
    missing = []
    for span in CODE_SPAN.findall(_prose(page.read_text())):
        for word in span.split():
            word = word.rstrip(".,;:)")
            if PATH_TOKEN.match(word) and not (ROOT / word).exists():
                missing.append(word)
    assert not missing, f"{_id(page)} names paths that do not exist: {missing}"


def _expand_braces(text: str) -> str:
    """``pggan_{genforce,lineargan}.py`` -> ``pggan_genforce.py pggan_lineargan.py``."""

    def expand(m: re.Match) -> str:
        return " ".join(m[1] + part.strip() + m[3] for part in m[2].split(","))

    return re.sub(r"(\w*)\{([^{}]*)\}(\.py)", expand, text, flags=re.S)


def test_layout_tree_names_every_module():
    """docs/architecture.md's tree names every module of the four packages (an analysis's own
    folder counts as named when the folder is)."""
    tree = _expand_braces((ROOT / "docs" / "architecture.md").read_text())
    missing = []
    for package in ("lineargan", "storage", "tasks", "flows"):
        for module in sorted((ROOT / package).rglob("*.py")):
            rel = module.relative_to(ROOT)
            if module.name == "__init__.py":
                continue
            if rel.parts[:2] == ("tasks", "analyses") and len(rel.parts) == 4:
                named = f"{rel.parts[2]}/" in tree
            else:
                named = re.search(rf"(?<![\w/]){re.escape(module.name)}\b", tree) is not None
            if not named:
                missing.append(str(rel))
    assert not missing, f"docs/architecture.md's layout tree lacks {missing}"
