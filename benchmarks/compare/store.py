"""The resumable record store: one JSON per finished run, reused only while the settings that decide its result
match; locks that let worker processes share a plan, and a git commit per finished run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.compare.methods import _OPTIONAL_DOER_FIELDS, BENCH_VERSION, Cell
from benchmarks.compare.plans import Plan

logger = logging.getLogger(__name__)


RESULTS_DIR = Path(__file__).parent.parent / "results" / "compare"


def cell_settings(plan: Plan, cell: Cell) -> dict[str, Any]:
    """Everything that decides a run's result: a finished run is reused only when these match.

    The number of seeds of the plan is not one of them: adding or dropping seeds keeps the runs of the others.
    """
    doer_plan = asdict(plan.doer(cell.doer))
    doer_plan.pop("seeds")
    for key in _OPTIONAL_DOER_FIELDS:
        if doer_plan.get(key) is None:
            doer_plan.pop(key, None)
    settings = {
        "bench_version": plan.version if plan.version > 1 else BENCH_VERSION,
        "cell": asdict(cell),
        "doer_plan": doer_plan,
        "restart_init": plan.restart_init,
    }
    if plan.version > 1:
        settings["method"] = asdict(plan.spec(cell.method))
    return settings


def _comparable_settings(settings: Any) -> Any:
    """Stored settings as :func:`cell_settings` writes them now (runs saved before it left out the seed count)."""
    if isinstance(settings, dict) and isinstance(settings.get("doer_plan"), dict):
        settings = {**settings, "doer_plan": {k: v for k, v in settings["doer_plan"].items() if k != "seeds"}}
    return settings


def cell_path(cells_dir: Path, cell: Cell) -> Path:
    """Where a finished run is stored."""
    return cells_dir / f"{cell.key}.json"


def _read_run(plan: Plan, cells_dir: Path, cell: Cell, quiet: bool = False) -> dict[str, Any] | None:
    """The stored run of ``cell`` when it was run with the plan's settings (None otherwise)."""
    path = cell_path(cells_dir, cell)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        if not quiet:
            logger.warning("ignoring unreadable %s (%s): it will be run again", path, exc)
        return None
    if _comparable_settings(data.get("settings")) != cell_settings(plan, cell):
        if not quiet:
            logger.warning("%s was run with other settings: it will be run again", path.name)
        return None
    return data


def dependency(plan: Plan, cell: Cell) -> Cell | None:
    """The run whose result ``cell`` needs before it can start (single-matched: the same seed's catalyst-race)."""
    matched = plan.spec(cell.method).matched_to
    return Cell(cell.task, cell.doer, matched, cell.seed) if matched else None


def matched_steps(plan: Plan, cells_dir: Path, cell: Cell) -> int | None:
    """The optimizer steps ``cell`` (single-matched) trains: the total gradient steps (stages + races) of the same
    seed's catalyst-race run as stored; None while that run is not finished."""
    dep = dependency(plan, cell)
    if dep is None:
        return None
    record = _read_run(plan, cells_dir, dep, quiet=True)
    if record is None:
        return None
    return int(record["gradient_steps"]["total"])


def load_finished(plan: Plan, cells_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished runs of ``plan`` whose stored settings match the plan's (others are run again); a single-matched run
    counts only while its catalyst-race run is finished with the step count it trained."""
    finished = {}
    for cell in plan.cells():
        data = _read_run(plan, cells_dir, cell)
        if data is None:
            continue
        if dependency(plan, cell) is not None:
            steps = matched_steps(plan, cells_dir, cell)
            if steps is None or (data.get("matched_to") or {}).get("total_steps") != steps:
                logger.warning(
                    "%s no longer matches its %s run: it will be run again", cell.key, dependency(plan, cell).key
                )
                continue
        finished[cell.key] = data
    return finished


def claim_cell(locks_dir: Path, cell: Cell) -> bool:
    """Atomically claim a run for this worker (False when another worker holds it); the lock holds our pid."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(locks_dir / f"{cell.key}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    return True


def lock_holder_alive(locks_dir: Path, cell: Cell) -> bool | None:
    """Whether the process holding ``cell``'s lock still runs (None: no lock; True when its pid is unreadable)."""
    path = locks_dir / f"{cell.key}.lock"
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return True
    if not text.isdigit():
        return True  # being written, or an old lock without a pid
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def commit_run(path: Path, message: str, pending: list[Path] | None = None, attempts: int = 20) -> bool:
    """``git add -f`` and ``git commit -m message -- <paths>``: commits only ``path`` (and the earlier runs in
    ``pending`` whose commit failed), never anything else that is staged. Failures are logged, not raised: the
    file stays on disk and is retried with the next run. Returns True when committed."""
    paths = [*(pending or []), path]
    cwd = path.parent
    names = [str(p.resolve()) for p in paths]
    for attempt in range(attempts):
        add = subprocess.run(["git", "add", "-f", "--", *names], cwd=cwd, capture_output=True, text=True)
        if add.returncode == 0:
            commit = subprocess.run(
                ["git", "commit", "-q", "-m", message, "--", *names], cwd=cwd, capture_output=True, text=True
            )
            if commit.returncode == 0:
                if pending is not None:
                    pending.clear()
                return True
            error = (commit.stderr or commit.stdout).strip()
            if "nothing to commit" in error or "no changes added" in error:
                if pending is not None:
                    pending.clear()
                return True
        else:
            error = add.stderr.strip()
        if "index.lock" not in error and ".lock" not in error:  # not another git process: don't spin
            break
        time.sleep(0.5 + attempt * 0.25)
    logger.warning("could not commit %s (%s): the run is kept on disk and retried with the next one", path, error)
    if pending is not None and path not in pending:
        pending.append(path)
    return False
