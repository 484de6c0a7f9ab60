"""The README's code that claims to be tested is run here, exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- tests/test_readme.py runs this block -->"


def _tested_blocks() -> list[str]:
    """The ```python blocks that directly follow the marker comment."""
    pattern = re.escape(MARKER) + r"\s*```python\n(.*?)```"
    return re.findall(pattern, README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_readme_custom_mentor_snippet_runs(capsys):
    (block,) = _tested_blocks()
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "Is this movie review positive or negative?" in printed and "Sentiment of the review" in printed
