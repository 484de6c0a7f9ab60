"""How long ``peft-catalyst train --help`` takes to print (the short help, read without importing the package), and
``--help-all`` (every option: the package and transformers are imported and the full parser is built).

Each command runs in a fresh process, as a user runs it; the median of ``--repeats`` runs is printed and written to
``benchmarks/results/cli_help_time.json``.

    python -m benchmarks.cli_help_time [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "cli_help_time.json"
COMMANDS = {
    "train --help": [sys.executable, str(ROOT / "peft_catalyst_cli.py"), "train", "--help"],  # the console script
    "train --help-all": [sys.executable, str(ROOT / "peft_catalyst_cli.py"), "train", "--help-all"],
    # The same short help through the package (what the console script ran before): the cost of importing it.
    "train --help, importing the package": [sys.executable, "-m", "peft_catalyst.app.cli", "train", "--help"],
}


def time_command(command: list[str], repeats: int) -> dict[str, float]:
    """Wall seconds of ``repeats`` fresh runs of ``command`` (after one untimed run that warms the file cache)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, capture_output=True, check=True, cwd=ROOT, env=env)
    seconds, lines = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
        seconds.append(time.perf_counter() - start)
        lines = len(done.stdout.splitlines())
    return {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3), "lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {name: time_command(command, args.repeats) for name, command in COMMANDS.items()}
    for name, result in results.items():
        print(f"peft-catalyst {name}: {result['median_s']:.2f} s median (max {result['max_s']:.2f} s over "
              f"{args.repeats} runs), {result['lines']} lines")  # fmt: skip
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
        "repeats": args.repeats,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
