"""The plan's side of the record store (:mod:`peft_catalyst.app.compare.store`): what decides a run's result (its
settings), where it is stored, and which run a matched ``single`` needs."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.compare.methods import _OPTIONAL_DOER_FIELDS, BENCH_VERSION, Cell
from benchmarks.compare.plans import Plan
from peft_catalyst.app.compare.store import claim, commit_run, read_record, record_path
from peft_catalyst.app.compare.store import lock_holder_alive as lock_holder_alive_by_key

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
        method = asdict(plan.spec(cell.method))
        if not method["trainer"]:  # a field added with v3: v2's runs were stored without it
            method.pop("trainer")
        settings["method"] = method
    return json.loads(json.dumps(settings))  # as stored: tuples read back as lists


def _comparable_settings(settings: Any) -> Any:
    """Stored settings as :func:`cell_settings` writes them now (runs saved before it left out the seed count)."""
    if isinstance(settings, dict) and isinstance(settings.get("doer_plan"), dict):
        settings = {**settings, "doer_plan": {k: v for k, v in settings["doer_plan"].items() if k != "seeds"}}
    return settings


def cell_path(cells_dir: Path, cell: Cell) -> Path:
    """Where a finished run is stored."""
    return record_path(cells_dir, cell.key)


def _read_run(plan: Plan, cells_dir: Path, cell: Cell, quiet: bool = False) -> dict[str, Any] | None:
    """The stored run of ``cell`` when it was run with the plan's settings (None otherwise)."""
    return read_record(cell_path(cells_dir, cell), cell_settings(plan, cell), _comparable_settings, quiet)


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
    return claim(locks_dir, cell.key)


def lock_holder_alive(locks_dir: Path, cell: Cell) -> bool | None:
    """Whether the process holding ``cell``'s lock still runs (None: no lock; True when its pid is unreadable)."""
    return lock_holder_alive_by_key(locks_dir, cell.key)


__all__ = [
    "RESULTS_DIR",
    "cell_path",
    "cell_settings",
    "claim_cell",
    "commit_run",
    "dependency",
    "load_finished",
    "lock_holder_alive",
    "matched_steps",
]
