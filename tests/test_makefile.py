"""The Makefile's entry points: `make demo` installs the main job's needs only, `make test` adds the test extra."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _planned(target: str, tmp_path: Path) -> list[str]:
    """The commands `make <target>` would run in a fresh clone (``make -n`` with a venv that does not exist)."""
    # Under `make test` (CI) this runs inside make: a sub-make then announces its directory unless told not to, and
    # the outer make's flags travel in MAKEFLAGS. A clean environment plans what a user's `make` would run.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "--no-print-directory", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True, env=env)  # fmt: skip
    return result.stdout.splitlines()


def test_make_demo_installs_the_runtime_assets_and_plotting_only(tmp_path):
    lines = _planned("demo", tmp_path)
    installs = [line.split("pip install", 1)[1] for line in lines if "pip install" in line]
    assert any('-e ".[assets,plot]"' in line for line in installs), installs
    assert not any("test" in line or "trl" in line or "deepspeed" in line for line in installs), installs
    assert lines[-1].rstrip().endswith("peft-catalyst train")


def test_make_test_adds_the_test_extra_and_runs_pytest(tmp_path):
    lines = _planned("test", tmp_path)
    assert any('-e ".[test,assets,plot]"' in line for line in lines if "pip install" in line)
    assert "-m pytest" in lines[-1] and "HF_HUB_OFFLINE=1" in lines[-1]
    assert any("pip install" in line and "[test," in line for line in _planned("lint", tmp_path))  # ruff


def test_the_main_job_imports_nothing_of_the_test_extra():
    """Neither TRL nor DeepSpeed, pytest, ruff or scipy is a runtime dependency: `make demo` can leave them out."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"] + project["optional-dependencies"]["assets"]
                       + project["optional-dependencies"]["plot"]).lower()  # fmt: skip
    for name in ("trl", "deepspeed", "pytest", "ruff", "scipy"):
        assert name not in runtime, name
