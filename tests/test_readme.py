"""README.md and the docs/ pages run as written: their tested blocks run here (and tests/test_integrations.py's
snippets there), every other Python block says what it assumes, every repository path, test and ``peft_catalyst``
name they mention exists, every link between pages lands on a file and heading that exist, and the README stays
short enough to read."""

from __future__ import annotations

import importlib
import re

import pytest

from tests.docs_support import DOCS, README, ROOT, anchors, marked_blocks, rel

MARKER = "<!-- tests/test_readme.py runs this block -->"
README_MAX_LINES = 250


def _tested_block(containing: str) -> tuple[str, str]:
    """The one block after the marker, in README.md or a docs page, that contains ``containing``; and its page."""
    found = [(page, block) for page, block in marked_blocks(MARKER) if containing in block]
    assert len(found) == 1, f"{len(found)} tested blocks contain {containing!r}"
    return found[0][1], str(found[0][0])


def test_readme_fits_a_screen_or_three():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move a section to docs/"
    assert len(DOCS) > 5  # the rest lives in docs/, and the scans below see it


@pytest.mark.timeout(300)
def test_readme_quickstart_runs_offline_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes to quickstart/
    block, where = _tested_block("quickstart")
    assert where == str(README)
    namespace = {"__name__": "readme"}
    exec(compile(block, where, "exec"), namespace)
    assert len(namespace["trainer"].catalyst_history) == 1 and namespace["trainer"].catalyst_history[0].candidates
    assert capsys.readouterr().out.strip()  # the soft prompt as text
    out = tmp_path / "quickstart"
    for name in ("adapter_config.json", "catalyst_history.json", "README.md", "portable/adapter_model.safetensors"):
        assert (out / name).is_file(), name


def test_readme_quickstart_imports_only_the_package_exports():
    """What a pip user reads first imports ``peft_catalyst``'s ``__all__`` (and the public ``mentors`` package),
    never the command-line app's modules or the package's internals."""
    import ast

    import peft_catalyst

    tree = ast.parse(_tested_block("quickstart")[0])
    ours = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module.startswith("peft_cat")]
    assert ours and {node.module for node in ours} <= {"peft_catalyst", "peft_catalyst.mentors"}
    exported = set(peft_catalyst.__all__)
    for node in ours:
        if node.module == "peft_catalyst":
            assert {alias.name for alias in node.names} <= exported
    used = set(re.findall(r"\bpeft_catalyst\.(\w+)", _tested_block("quickstart")[0]))
    assert used <= exported | {"mentors"}, used - exported


def test_readme_custom_mentor_snippet_runs(capsys):
    exec(compile(*_tested_block("class MyMentor(ChatMentor)"), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "Is this movie review positive or negative?" in printed and "Sentiment of the review" in printed


@pytest.mark.timeout(300)
def test_readme_trainer_example_runs_offline_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes to out/
    namespace = {"__name__": "readme"}
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # the process's filters stay (peft_catalyst.quiet's too)
        # ... but not pyproject's test-wide ignore of PEFT's vocabulary check (for the tests' made-up tiny ids)
        warnings.filterwarnings("always", message="Could not find a config file", category=UserWarning)
        exec(compile(*_tested_block("load_task("), "exec"), namespace)
    upstream = [str(w.message) for w in caught if "Could not find a config file" in str(w.message)]
    assert not upstream, upstream  # PEFT's vocabulary check on save: it answers from the packaged MiniLM now
    assert namespace["trainer"].catalyst_history and len(namespace["trainer"].catalyst_history) == 1
    assert capsys.readouterr().out.strip()  # the soft prompt as text
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "out" / "portable" / "adapter_model.safetensors").is_file()


def test_every_python_block_runs_in_a_test_or_says_what_it_assumes():
    """A block in README.md or docs/ is run by this file (the marker), by tests/test_integrations.py
    (``<!-- snippet: name -->``), or the line above it says what it assumes ("Assumes ...")."""
    integrations = (ROOT / "tests" / "test_integrations.py").read_text(encoding="utf-8")
    unexplained, python_blocks = [], 0
    for page in DOCS:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "```python":
                continue
            python_blocks += 1
            above = next(lines[j] for j in range(i - 1, -1, -1) if lines[j].strip())
            snippet = re.fullmatch(r"<!-- snippet: (\w+) -->", above.strip())
            if above.strip() == MARKER or above.startswith("Assumes "):
                continue
            if snippet and f'"{snippet.group(1)}"' in integrations:
                continue
            unexplained.append(f"{rel(page)}:{i + 1}: {above!r}")
    assert python_blocks >= 10  # the scan sees the blocks
    assert not unexplained, unexplained


_PATH = re.compile(r"(?<![\w/.$~-])((?:peft_catalyst|tests|benchmarks|examples|model_cards|docs|\.ci)/[\w./-]*[\w/])")
_TEST_ID = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
_LINK = re.compile(r"\]\((?!https?:|mailto:)([^)\s]+)\)")


def test_every_repository_path_the_docs_name_exists():
    """Paths in text and code are read from the repository root; link targets from the page's own folder."""
    named, linked, missing = set(), set(), []
    for page in DOCS:
        text = page.read_text(encoding="utf-8")
        for path in _PATH.findall(text):
            named.add(path)
            if not (ROOT / path).exists():
                missing.append(f"{rel(page)}: {path}")
        for target in _LINK.findall(text):
            target = target.split("#", 1)[0]
            if target:
                linked.add((page.parent / target).resolve().relative_to(ROOT).as_posix())
                if not (page.parent / target).exists():
                    missing.append(f"{rel(page)}: link {target}")
        for path, name in _TEST_ID.findall(text):
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{rel(page)}: {path}::{name}"
        for module in re.findall(r"python -m (benchmarks\.\w+)", text):
            path = ROOT / module.replace(".", "/")  # a module, or a package that runs as one (benchmarks.compare)
            assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), f"{rel(page)}: {module}"
    assert "peft_catalyst/app/data.py" in named and "examples/README.md" in linked  # the scan sees what it should
    assert "docs/cli.md" in linked and "benchmarks/results/compare/v3.md" in linked
    assert not missing, missing


def test_every_link_between_pages_lands_on_a_heading_that_exists():
    """``[..](page.md#anchor)`` and ``[..](#anchor)`` in README.md and docs/: the anchor is one of the target page's
    headings (GitHub's anchors), so a section that moved is not linked where it used to be."""
    broken, checked = [], 0
    for page in DOCS:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            path, _, anchor = target.partition("#")
            if not anchor or not (path == "" or path.endswith(".md")):
                continue
            checked += 1
            linked = (page.parent / path) if path else page
            if not linked.is_file() or anchor not in anchors(linked):
                broken.append(f"{rel(page)}: {target}")
    assert checked >= 4  # the anchored links the docs hold
    assert not broken, broken


def test_every_peft_catalyst_name_the_docs_use_resolves():
    """``peft_catalyst.x.y`` in text or code: a module, or a name in one (what a reader would import)."""
    names = {n for page in DOCS for n in re.findall(r"\bpeft_catalyst(?:\.\w+)+", page.read_text(encoding="utf-8"))}
    assert {"peft_catalyst.app.assets.load_smollm2", "peft_catalyst.history.read_history"} <= names
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"{name}: {'.'.join(parts[:cut])} has no {attr}"
                obj = getattr(obj, attr)
            break


def test_a_generated_block_is_read_and_replaced_between_its_markers_only():
    from benchmarks.generated_block import block_of, replace_block

    page = "head\n<!-- b -->\nold\n<!-- e -->\ntail\n"
    assert block_of(page, "<!-- b -->", "<!-- e -->") == "old"
    assert replace_block(page, "<!-- b -->", "<!-- e -->", "new\n") == "head\n<!-- b -->\nnew\n<!-- e -->\ntail\n"
    for broken in ("head\n", "<!-- e -->\n<!-- b -->\n", "<!-- b -->\n<!-- b -->\n<!-- e -->\n"):
        with pytest.raises(ValueError, match="'<!-- b -->' and '<!-- e -->', once each, in that order"):
            replace_block(broken, "<!-- b -->", "<!-- e -->", "new", "the page")


def test_the_timings_table_is_generated_from_its_committed_measurements():
    """docs/timings.md's table is what benchmarks/timings.py makes of benchmarks/results/timings.json: a time on the
    page without a row in the file (or a row not on the page) fails here."""
    import json

    from benchmarks import timings

    rows = json.loads(timings.RESULTS.read_text(encoding="utf-8"))["rows"]
    page = timings.PAGE.read_text(encoding="utf-8")
    assert timings.rendered(page, rows) == page, "docs/timings.md is not current: run python -m benchmarks.timings"
    assert timings.main(["--check"]) == 0
    assert all(row["source"] == "measured by hand" or (ROOT / row["source"]).is_file() for row in rows)
    assert timings.rendered(page, rows[:-1]) != page  # a row dropped from the file shows on the page
    assert timings.wall_time(741) == "12 min 21 s" and timings.wall_time(1020, approximate=True) == "about 17 min"
