"""The project's documentation as tests read it: README.md and every docs/*.md page, their marked code blocks, their
sections and their heading anchors (GitHub's), so a block or a table can move between pages without breaking a test."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    """``path`` relative to the repository root, for messages."""
    return path.relative_to(ROOT).as_posix()


def marked_blocks(marker: str, language: str = "python") -> list[tuple[Path, str]]:
    """Every ```language block that directly follows ``marker`` (an HTML comment), in any page, with its page."""
    pattern = re.escape(marker) + rf"\s*```{language}\n(.*?)```"
    return [(page, block) for page in DOCS for block in re.findall(pattern, page.read_text(encoding="utf-8"), re.S)]


def snippet(name: str) -> tuple[Path, str]:
    """The one Python block that follows ``<!-- snippet: name -->``, in whichever page holds it."""
    found = marked_blocks(f"<!-- snippet: {name} -->")
    assert len(found) == 1, f"{len(found)} blocks marked snippet {name!r} in README.md and docs/"
    return found[0]


def section(page: Path, heading: str) -> str:
    """The text under the heading whose title is ``heading`` (without the #s), up to the next heading of its level
    or above."""
    lines, out, level = page.read_text(encoding="utf-8").splitlines(), None, 0
    for line, is_heading in _lines_outside_fences(lines):
        match = re.match(r"(#+) (.*)", line) if is_heading else None
        if out is None:
            if match and match.group(2).strip() == heading:
                out, level = [], len(match.group(1))
        elif match and len(match.group(1)) <= level:
            break
        else:
            out.append(line)
    assert out is not None, f"{rel(page)} has no heading {heading!r}"
    return "\n".join(out)


def _lines_outside_fences(lines: list[str]) -> list[tuple[str, bool]]:
    """Each line and whether it may be a heading (a ``#`` line inside a code block is a comment, not a heading)."""
    fence, out = False, []
    for line in lines:
        if line.startswith("```"):
            fence = not fence
        out.append((line, not fence and line.startswith("#")))
    return out


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation but ``-`` and ``_`` dropped, spaces to
    ``-``; a repeated one gets ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    out = set()
    for line, is_heading in _lines_outside_fences(page.read_text(encoding="utf-8").splitlines()):
        match = re.match(r"#+ (.*)", line) if is_heading else None
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out
