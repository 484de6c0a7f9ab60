"""Running a comparison's missing runs in order, each stored as it finishes: a run that needs another's result
(matched ``single`` after its ``catalyst`` run) waits for it, and worker processes can share the list by claiming
runs one by one (a dependency held by a dead worker is taken over).

Shared by ``peft-catalyst compare`` and the benchmark's plans; a run is anything with a ``key``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from peft_catalyst.app.compare.store import claim, lock_holder_alive

logger = logging.getLogger(__name__)


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


J = TypeVar("J", bound=Keyed)


def run_pending(
    pending: list[J],
    run: Callable[[J, Any], None],
    *,
    dependency: Callable[[J], J | None] = lambda job: None,
    needs: Callable[[J], Any] = lambda job: None,
    locks: Path | None = None,
    finished: Callable[[J], bool] = lambda job: False,
    poll_s: float = 10.0,
    desc: str = "runs",
) -> int:
    """Run ``pending`` in order with ``run(job, needed)``, which trains and stores one run; returns how many ran.

    ``dependency(job)``: the run whose result ``job`` needs first (None: none); ``needs(job)``: that result as
    ``job`` takes it (None while the dependency has not finished). A job waits for its dependency, running the
    others meanwhile. With ``locks`` (a folder shared by worker processes) each job is first claimed, so that one
    worker only runs it; ``finished(job)`` then tells a job another worker finished meanwhile.
    """
    from tqdm.auto import tqdm

    pending = list(pending)
    done = 0
    bar = tqdm(total=len(pending), desc=f"{desc} (pid {os.getpid()})" if locks else desc, unit="run")
    while pending:
        blocked = False
        for job in list(pending):
            needed = None
            dep = dependency(job)
            if dep is not None:
                needed = needs(job)
                if needed is None:
                    if any(p.key == dep.key for p in pending):
                        blocked = True  # its dependency runs first (in this process)
                        continue
                    holder = lock_holder_alive(locks, dep.key) if locks is not None else None
                    if holder:
                        blocked = True  # another worker runs it: wait, doing other runs meanwhile
                        continue
                    if holder is False:  # its worker died: take the dependency over
                        (locks / f"{dep.key}.lock").unlink(missing_ok=True)
                        pending.insert(pending.index(job), dep)
                        bar.total += 1
                        blocked = True
                        break
                    logger.error("%s needs %s, which is neither finished nor planned: skipped", job.key, dep.key)
                    pending.remove(job)
                    bar.update()
                    continue
            if locks is not None and not claim(locks, job.key):
                pending.remove(job)  # another worker has it
                bar.update()
                continue
            pending.remove(job)
            if locks is not None and finished(job):
                bar.update()
                continue
            bar.set_postfix_str(job.key)
            run(job, needed)
            done += 1
            bar.update()
            break  # rescan from the top: the plan's order, and dependencies that just finished
        else:
            if not pending or not blocked:
                break
            time.sleep(poll_s)
    bar.close()
    return done


__all__ = ["run_pending"]
