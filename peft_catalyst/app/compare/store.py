"""The resumable record store of a comparison: one JSON per finished run, reused only while the settings that decide
its result match; locks that let worker processes share the runs, and a git commit per finished run.

Shared by ``peft-catalyst compare`` and the benchmark's plans (``benchmarks/compare``), which key runs their own way.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peft_catalyst.history import write_json_atomic

logger = logging.getLogger(__name__)


def record_path(directory: Path, key: str) -> Path:
    """Where the finished run ``key`` is stored."""
    return directory / f"{key}.json"


def read_record(
    path: Path,
    settings: Any,
    comparable: Callable[[Any], Any] | None = None,
    quiet: bool = False,
) -> dict[str, Any] | None:
    """The record at ``path`` when it was run with ``settings`` (None otherwise: missing, unreadable or other
    settings). ``comparable`` maps a stored ``settings`` to today's form before the comparison (older formats)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        if not quiet:
            logger.warning("ignoring unreadable %s (%s): it will be run again", path, exc)
        return None
    stored = data.get("settings") if isinstance(data, dict) else None
    if (comparable(stored) if comparable is not None else stored) != settings:
        if not quiet:
            logger.warning("%s was run with other settings: it will be run again", path.name)
        return None
    return data


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """Store a finished run (atomically: a run cut short never leaves half a record)."""
    write_json_atomic(path, record)
    return path


def claim(locks_dir: Path, key: str) -> bool:
    """Atomically claim run ``key`` for this worker (False when another worker holds it); the lock holds our pid."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(locks_dir / f"{key}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    return True


def lock_holder_alive(locks_dir: Path, key: str) -> bool | None:
    """Whether the process holding ``key``'s lock still runs (None: no lock; True when its pid is unreadable)."""
    path = locks_dir / f"{key}.lock"
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
    error = ""
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


__all__ = ["claim", "commit_run", "lock_holder_alive", "read_record", "record_path", "write_record"]
