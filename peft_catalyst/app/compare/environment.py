"""What a comparison's report says about where it ran: the exact command, package versions, git commit, machine."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PACKAGES = ("peft-catalyst", "torch", "transformers", "peft", "accelerate", "datasets", "numpy", "tokenizers")


def environment(command: str, jobs: int = 1, threads: int = 1, git_dir: Path | None = None) -> dict[str, Any]:
    """The command, package versions, the git commit of ``git_dir`` (None: not asked) and the machine; ``jobs``
    worker processes (or launched processes) of ``threads`` torch threads each."""
    import importlib.metadata as md

    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    packages["python"] = platform.python_version()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = None
    if git_dir is not None:
        try:
            git = subprocess.run(
                ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=git_dir
            ).stdout.strip()
        except OSError:
            git = None
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = math.nan
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git,
        "packages": packages,
        "machine": {
            "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "workers": jobs,
            "torch_threads_per_worker": threads,
            "memory_gb": round(memory_gb, 1),
            "platform": platform.platform(),
            "description": f"{cpu}, {os.cpu_count()} cores ({jobs} worker(s) x {threads} torch thread(s)), "
            f"{memory_gb:.0f} GB RAM, "
            f"{platform.system()} {platform.release()}",
        },
    }


__all__ = ["environment"]
