"""The README runs as written: its tested blocks run here, every other Python block says what it assumes, and every
repository path, test and ``peft_catalyst`` name it mentions exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = "<!-- tests/test_readme.py runs this block -->"


def _tested_blocks() -> list[str]:
    """The ```python blocks that directly follow the marker comment."""
    pattern = re.escape(MARKER) + r"\s*```python\n(.*?)```"
    return re.findall(pattern, README.read_text(encoding="utf-8"), flags=re.DOTALL)


def _tested_block(containing: str) -> str:
    (block,) = [b for b in _tested_blocks() if containing in b]
    return block


def test_readme_custom_mentor_snippet_runs(capsys):
    exec(compile(_tested_block("class MyMentor(ChatMentor)"), str(README), "exec"), {"__name__": "readme"})
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
        exec(compile(_tested_block("CatalystTrainer("), str(README), "exec"), namespace)
    upstream = [str(w.message) for w in caught if "Could not find a config file" in str(w.message)]
    assert not upstream, upstream  # PEFT's vocabulary check on save: it answers from the packaged MiniLM now
    assert namespace["trainer"].catalyst_history and len(namespace["trainer"].catalyst_history) == 1
    assert capsys.readouterr().out.strip()  # the soft prompt as text
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "out" / "portable" / "adapter_model.safetensors").is_file()


def test_every_python_block_runs_in_a_test_or_says_what_it_assumes():
    """A block is run by this file (the marker), by tests/test_integrations.py (``<!-- snippet: name -->``), or the
    line above it says what it assumes ("Assumes ...")."""
    lines = README.read_text(encoding="utf-8").splitlines()
    integrations = (ROOT / "tests" / "test_integrations.py").read_text(encoding="utf-8")
    unexplained = []
    for i, line in enumerate(lines):
        if line.strip() != "```python":
            continue
        above = next(lines[j] for j in range(i - 1, -1, -1) if lines[j].strip())
        snippet = re.fullmatch(r"<!-- snippet: (\w+) -->", above.strip())
        if above.strip() == MARKER or above.startswith("Assumes "):
            continue
        if snippet and f'"{snippet.group(1)}"' in integrations:
            continue
        unexplained.append(f"README.md:{i + 1}: {above!r}")
    assert not unexplained, unexplained


_PATH = re.compile(r"(?<![\w/.$~-])((?:peft_catalyst|tests|benchmarks|examples|model_cards|\.ci)/[\w./-]*[\w/])")
_TEST_ID = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def test_every_repository_path_the_readme_names_exists():
    text = README.read_text(encoding="utf-8")
    paths = set(_PATH.findall(text)) | set(re.findall(r"\]\(((?!#|https?:)[^)]+)\)", text))
    assert "peft_catalyst/app/data.py" in paths and "examples/README.md" in paths  # the scan sees what it should
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing
    for path, name in _TEST_ID.findall(text):
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{path}::{name}"
    for module in re.findall(r"python -m (benchmarks\.\w+)", text):
        path = ROOT / module.replace(".", "/")  # a module, or a package that runs as one (benchmarks.compare)
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module


def test_every_peft_catalyst_name_the_readme_uses_resolves():
    """``peft_catalyst.x.y`` in text or code: a module, or a name in one (what a reader would import)."""
    names = set(re.findall(r"\bpeft_catalyst(?:\.\w+)+", README.read_text(encoding="utf-8")))
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
