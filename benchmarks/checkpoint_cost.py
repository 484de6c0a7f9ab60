"""What the default checkpoint at each round boundary costs: the size of one ``checkpoint-N/`` and the seconds one
save takes, per packaged model, from a short real ``peft-catalyst train`` run with the default save settings.

The default jobs save at every round boundary and at the end (``--save_steps`` = ``--catalyst_stage_steps``), the
newest kept (``--save_total_limit 1``): SmolLM2 60 steps / 20 = 3 saves, MiniLM 150 / 30 = 5. Prints one line per
model and writes ``benchmarks/results/checkpoint_cost.json``.

    python -m benchmarks.checkpoint_cost [--models smollm2 minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "checkpoint_cost.json"
SHORT = ["--mentor", "none", "--catalyst_rounds", "0", "--max_steps", "4", "--catalyst_stage_steps", "2",
         "--train_size", "32", "--catalyst_size", "8", "--validation_size", "8", "--test_size", "8",
         "--plot", "false", "--disable_tqdm", "true"]  # fmt: skip


def measure(model: str) -> dict[str, float]:
    """Seconds per save and bytes of the kept checkpoint of a 4-step run that saves at steps 2 and 4."""
    from peft_catalyst.app.cli import main
    from peft_catalyst.trainer import CatalystTrainer

    seconds: list[float] = []
    save = CatalystTrainer._save_checkpoint

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return save(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    CatalystTrainer._save_checkpoint = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            if main(["train", "--model", model, *SHORT, "--output_dir", str(out)]) != 0:
                raise SystemExit(f"the {model} run failed")
            (checkpoint,) = out.glob("checkpoint-*")
            files = {p.name: p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()}
    finally:
        CatalystTrainer._save_checkpoint = save
    return {
        "saves": len(seconds),
        "seconds_per_save": round(sum(seconds) / len(seconds), 3),
        "checkpoint_bytes": sum(files.values()),
        "largest_files": dict(sorted(files.items(), key=lambda kv: -kv[1])[:4]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2", "minilm"])
    args = parser.parse_args()
    results = {model: measure(model) for model in args.models}
    for model, r in results.items():
        print(f"{model}: one checkpoint {r['checkpoint_bytes'] / 2**20:.2f} MiB, {r['seconds_per_save']:.2f} s per "
              f"save (mean of {r['saves']})")  # fmt: skip
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
        "arguments": SHORT,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
