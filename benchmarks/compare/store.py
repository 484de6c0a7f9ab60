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
    doer_plan = asdict(plan.budget(cell))
    doer_plan.pop("seeds")
    for key in _OPTIONAL_DOER_FIELDS:
        if doer_plan.get(key) in (None, ()):
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
        if method["match"] == "steps":  # a field added with v4
            method.pop("match")
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
    """The optimizer steps ``cell`` (a method with ``matched_to``) trains, from the same seed's run it is matched to
    as stored (None while that run is not finished): its total gradient steps (stages + races) when matched by
    steps; matched by compute (v4), the steps that buy its tuning compute (:func:`compute_steps`)."""
    dep = dependency(plan, cell)
    if dep is None:
        return None
    record = _read_run(plan, cells_dir, dep, quiet=True)
    if record is None:
        return None
    spec = plan.spec(cell.method)
    if spec.match == "compute":
        return compute_steps(record, own_initial_round=bool(dict(spec.trainer).get("catalyst_initial_round")))
    return int(record["gradient_steps"]["total"])


def compute_steps(record: dict[str, Any], own_initial_round: bool = False) -> int:
    """The gradient steps of plain training that buy a finished run's tuning compute (stages + races + screening,
    forward-equivalent tokens) at that run's own tokens per step: ``peft-catalyst compare --match compute``'s rule
    (:func:`peft_catalyst.app.compare.runs.compute_matched_steps`). ``own_initial_round``: the method screens its
    own start at step 0 first (``screened-init``), so the run's initial round (``initial_round_compute``, counted
    when it ended) is left out of what the steps buy."""
    from peft_catalyst.app.compare.runs import compute_matched_steps

    compute = dict(record.get("compute") or {})
    if own_initial_round and compute.get("tuning") is not None:
        initial = record.get("initial_round_compute") or {}
        compute["tuning"] -= sum(int(initial.get(part) or 0) for part in ("screening", "races"))
    return compute_matched_steps(
        {
            "method": record["method"],
            "seed": record["seed"],
            "compute": compute,
            "steps": {"main": record["gradient_steps"]["stages"]},
        }
    )


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
    "compute_steps",
    "dependency",
    "load_finished",
    "lock_holder_alive",
    "matched_steps",
]
