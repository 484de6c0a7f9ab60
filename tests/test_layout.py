"""The package's import graph: dependencies between its modules go one way (no cycle, even through lazy imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "peft_catalyst"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("peft_catalyst")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


@pytest.mark.parametrize(
    "low, high",
    [
        ("peft_catalyst.mentors.base", "peft_catalyst.mentors.metaprompt"),
        ("peft_catalyst.tuners.catalyst.registration", "peft_catalyst.tuners.catalyst.peft_model"),
        ("peft_catalyst.tuners.catalyst.model", "peft_catalyst.tuners.catalyst.peft_model"),
        ("peft_catalyst.tuners.catalyst.peft_model", "peft_catalyst.tuners.catalyst"),
        ("peft_catalyst.compat.peft", "peft_catalyst.offline_models"),
        ("peft_catalyst.compat.peft", "peft_catalyst.tuners.catalyst.registration"),
    ],
)
def test_dependency_goes_one_way(low, high):
    graph = _graph()
    assert _reaches(graph, high, low), f"{high} is expected to use {low}"
    assert not _reaches(graph, low, high), f"{low} imports {high} (directly or through others): a cycle"


#: Package modules a mentor may import: pure data, no torch (the records, their scored prompt and the one score
#: comparison).
MENTOR_MAY_IMPORT = {
    "peft_catalyst.records",
    "peft_catalyst.records.is_better",
    "peft_catalyst.records.ranking_key",
    "peft_catalyst.records.LabeledExample",
    "peft_catalyst.records.ScoredPrompt",
}


def test_mentors_import_neither_torch_nor_the_rest_of_the_package():
    for path in (PACKAGE / "mentors").glob("*.py"):
        outside = {m for m in _imports(path) if not m.startswith("peft_catalyst.mentors")} - MENTOR_MAY_IMPORT
        assert not outside, (path.name, outside)


def test_records_are_pure_data():
    """What mentors may import imports nothing of the package, nor torch or numpy."""
    path = PACKAGE / "records.py"
    assert not _imports(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m.split(".")[0] for m in modules} & {"torch", "numpy", "transformers"}, modules


def test_the_compat_layer_imports_nothing_of_the_package():
    """``peft_catalyst.compat`` sits under every module (the tuner's registration included): it imports none."""
    for path in (PACKAGE / "compat").glob("*.py"):
        outside = {m for m in _imports(path) if not m.startswith("peft_catalyst.compat")}
        assert not outside, (path.name, outside)


def test_the_library_never_imports_the_application():
    graph = _graph()
    library = [m for m in graph if not m.startswith("peft_catalyst.app")]
    for module in library:
        assert not any(
            _reaches(graph, dep, "peft_catalyst.app.cli") or dep.startswith("peft_catalyst.app")
            for dep in graph[module]
        ), module


def test_no_import_cycles_in_the_package():
    graph = _graph()
    for module, deps in graph.items():
        # a package's __init__ re-exporting its submodules is not a cycle of ideas: skip edges into a parent package
        for dep in deps:
            if module.startswith(dep + "."):
                continue
            assert not _reaches(graph, dep, module) or dep.startswith(module + "."), f"{module} <-> {dep}"


def test_no_file_cites_a_document_that_is_not_in_the_repository():
    """A Markdown document named in a tracked text file (``DESIGN.md section 3``, say) must exist in the checkout:
    a newcomer following the pointer finds nothing otherwise."""
    import re
    import subprocess

    root = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    names = {Path(p).name for p in tracked if p.endswith(".md")}
    cited = re.compile(r"\b([A-Z][A-Za-z_-]*\.md)\b")
    missing = []
    for path in tracked:
        if not path.endswith((".py", ".md", ".txt", ".toml", ".cfg", ".yaml", ".yml")) or path.startswith("tests/"):
            continue
        text = (root / path).read_text(encoding="utf-8", errors="replace")
        missing += [f"{path}: {name}" for name in cited.findall(text) if name not in names and name != "README.md"]
    assert not missing, missing


def _test_module_imports(path: Path) -> list[str]:
    """Test modules (``test_*``) that the file at ``path`` imports, as written, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found += [n for n in names if n.rpartition(".")[2].startswith("test_")]
    return found


def test_no_test_module_imports_another():
    """Shared test helpers live in tests/testing_utils.py (or tiny.py and the other support modules): a test module
    that imports another runs that module's fixtures and import side effects, and ties the two together."""
    tests = Path(__file__).resolve().parent
    offenders = {p.relative_to(tests).as_posix(): i for p in tests.rglob("*.py") if (i := _test_module_imports(p))}
    assert not offenders, f"import helpers from tests/testing_utils.py instead: {offenders}"


def test_the_test_import_check_sees_every_spelling(tmp_path):
    probe = tmp_path / "probe.py"
    pkg = "tests"  # spelled apart, so that a grep for test-module imports in tests/ finds none in this file
    probe.write_text(
        f"import {pkg}.test_a\nfrom {pkg}.test_b import x\nfrom {pkg} import test_c, tiny\nfrom .test_d import y\n"
        f"def f():\n    from {pkg}.test_e import z\nfrom {pkg}.testing_utils import ScriptedMentor\n"
    )
    assert _test_module_imports(probe) == [
        "tests.test_a", "tests.test_b", "tests.test_c", ".test_d", "tests.test_e"
    ]  # fmt: skip
