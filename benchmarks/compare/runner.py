"""Running a plan: its missing runs in order (or in worker processes that claim them one by one), each saved as it
finishes, then the report (the scheduling itself: :mod:`peft_catalyst.app.compare.schedule`)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.compare.methods import Cell
from benchmarks.compare.plans import Plan, plan_lines
from benchmarks.compare.report import write_report
from benchmarks.compare.report_v4 import write_report_v4
from benchmarks.compare.run import embedded_mentor, run_cell
from benchmarks.compare.store import _read_run, cell_path, dependency, load_finished, matched_steps
from peft_catalyst.app.compare.schedule import run_pending
from peft_catalyst.app.compare.store import commit_run, write_record

logger = logging.getLogger(__name__)


def run_plan(
    plan: Plan,
    output_dir: Path,
    argv: Sequence[str] = (),
    *,
    dry_run: bool = False,
    report_only: bool = False,
    jobs: int = 1,
    threads: int = 1,
    llm_factory: Callable[[Any, Path, Path], Any] = embedded_mentor,
    commit_each: bool = False,
) -> dict[str, Path]:
    """Print the plan, run its missing runs (each saved as it finishes; ``jobs`` > 1: in worker processes), and
    write the report; returns the report's paths (empty after a dry run or when a worker failed)."""
    started = time.perf_counter()
    cells_dir = output_dir / "cells" / plan.name
    finished = load_finished(plan, cells_dir)
    lines, _, _ = plan_lines(plan, set(finished), jobs, threads)
    print("\n".join(lines), flush=True)
    if dry_run:
        return {}
    if not report_only:
        shutil.rmtree(cells_dir / "locks", ignore_errors=True)  # claims of an interrupted run
        if jobs > 1:
            if not _run_workers(argv, jobs, threads):
                return {}
        else:
            run_cells(plan, output_dir, llm_factory=llm_factory, commit_each=commit_each)
        finished = load_finished(plan, cells_dir)
    elapsed = None if report_only else time.perf_counter() - started
    writer = write_report_v4 if plan.version >= 4 else write_report  # v4 has a report of its own
    paths = writer(plan, finished, output_dir, argv, jobs, threads, elapsed)
    print(paths["md"].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in paths.values()), flush=True)
    return paths


def _run_workers(argv: Sequence[str], jobs: int, threads: int) -> bool:
    """Start ``jobs`` worker processes on the same plan (they claim runs one by one); True when all succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "benchmarks.compare", *argv, "--worker", "--threads", str(threads)]
    workers = [subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[2]) for _ in range(jobs)]
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait()
        logger.error("interrupted: finished runs are kept; rerun the same command to resume")
        raise
    if any(codes):
        logger.error("worker exit codes %s: finished runs are kept; rerun the same command to resume", codes)
        return False
    return True


def run_cells(
    plan: Plan,
    output_dir: Path,
    *,
    claim: bool = False,
    llm_factory: Callable[[Any, Path, Path], Any] = embedded_mentor,
    commit_each: bool = False,
    poll_s: float = 10.0,
) -> int:
    """Run the plan's missing runs in order, saving each as it finishes; with ``claim``, only the runs this worker
    claims first (several workers share the list). A run that needs another's result (single-matched after
    catalyst-race) waits for it, running other runs meanwhile; a dependency held by a dead worker is taken over
    (:func:`peft_catalyst.app.compare.schedule.run_pending`). ``commit_each``: git-commit each finished run's file
    (only that file). Returns the number of runs done."""
    from tqdm.auto import tqdm

    cells_dir = output_dir / "cells" / plan.name
    finished = load_finished(plan, cells_dir)
    uncommitted: list[Path] = []
    # One reply cache per plan: LLM methods of a seed that start alike ask the same first question.
    cache = output_dir / "cells" / f"mentor_cache_{plan.name}.sqlite"

    def run_one(cell: Cell, steps: int | None) -> None:
        record = run_cell(plan, cell, cells_dir / "runs", cache, llm_factory, matched_steps=steps)
        path = write_record(cell_path(cells_dir, cell), record)
        if commit_each:
            commit_run(path, f"benchmark {plan.name}: {cell.key}", uncommitted)
        tqdm.write(
            f"{cell.key}: test accuracy {record['test_accuracy']:.3f}; {record['seconds']['total']:.0f} s "
            f"(estimated {record['estimated_seconds']:.0f} s); "
            f"gradient steps {record['gradient_steps']['total']}; "
            f"rounds {[r['status'] for r in record['rounds']] or '-'}"
        )

    return run_pending(
        [c for c in plan.cells() if c.key not in finished],
        run_one,
        dependency=lambda cell: dependency(plan, cell),
        needs=lambda cell: matched_steps(plan, cells_dir, cell),
        locks=cells_dir / "locks" if claim else None,
        finished=lambda cell: _read_run(plan, cells_dir, cell, quiet=True) is not None,
        poll_s=poll_s,
    )
