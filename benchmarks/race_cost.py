"""What a race round costs against a gradient stage, at the command line's defaults, for MiniLM and SmolLM2.

One run per doer and setting: a stage of ``catalyst_stage_steps`` optimizer steps, then one round whose candidates
come from the random mentor (instant, so the mentor's latency is not measured), then one more step. Prints the
stage's wall time and steps beside the round's: its race steps (all arms together), its wall time and how that
splits into training and scoring, for ``catalyst_selection="best"`` and for races of several first-rung budgets.

    python -m benchmarks.race_cost [--doers minilm smollm2] [--race-steps 2 4 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.trainer_overhead import setup_doer

RESULTS = Path(__file__).parent / "results" / "race_cost.json"


def measure(doer: str, selection: str, race_steps: int, seed: int = 0) -> dict:
    """One stage and one round at the command line's defaults for ``doer``; seconds and steps of each."""
    from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
    from peft_catalyst.app.runner import embedded_defaults
    from peft_catalyst.mentors import RandomMentor
    from peft_catalyst.projection import vocabulary_words

    defaults = embedded_defaults(doer, None, "rotten_tomatoes")
    stage = defaults["catalyst_stage_steps"]
    model, tok, spec, _ = setup_doer(doer, seed)
    with tempfile.TemporaryDirectory() as out:
        args = CatalystTrainingArguments(
            output_dir=out,
            max_steps=stage + 1,
            per_device_train_batch_size=defaults["per_device_train_batch_size"],
            per_device_eval_batch_size=defaults["per_device_eval_batch_size"],
            learning_rate=defaults["learning_rate"],
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            seed=seed,
            disable_tqdm=True,
            use_cpu=True,
            catalyst_rounds=1,
            catalyst_stage_steps=stage,
            catalyst_num_candidates=defaults["catalyst_num_candidates"],
            catalyst_trajectory_points=defaults["catalyst_trajectory_points"],
            catalyst_metric=defaults["catalyst_metric"],
            catalyst_selection=selection,
            catalyst_race_steps=race_steps,
        )
        trainer = CatalystTrainer(
            model=model,
            args=args,
            mentor=RandomMentor(vocabulary_words(tok), seed=seed),
            catalyst_dataset=spec.datasets["catalyst"],
            **spec.trainer_kwargs(),
        )
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    (record,) = trainer.catalyst_history
    timings = trainer.catalyst_summary().seconds
    train_s = total - timings["rounds"]
    return {
        "doer": doer,
        "selection": selection,
        "race_steps_setting": race_steps,
        "stage_steps": stage,
        "stage_s": round(train_s * stage / (stage + 1), 2),
        "round_race_steps": record.race_steps,
        "round_s": round(record.seconds, 2),
        "round_race_s": round(timings.get("race", 0.0), 2),
        "round_scorings": sum(len(r.scores) for r in record.race.rungs) if record.race else len(record.candidates) + 1,
        "arms": len(record.race.arms) if record.race else None,
        "decision": record.decision.value,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doers", nargs="+", default=["minilm", "smollm2"], choices=["minilm", "smollm2"])
    parser.add_argument("--race-steps", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/race_cost.json")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(a.threads)
    rows = []
    for doer in a.doers:
        settings = [("best", 0)] + [("race", s) for s in a.race_steps]
        for selection, steps in settings:
            row = measure(doer, selection, steps)
            rows.append(row)
            ratio_steps = row["round_race_steps"] / row["stage_steps"]
            ratio_s = row["round_s"] / row["stage_s"] if row["stage_s"] else float("nan")
            print(
                f"{doer:8s} {selection:4s} race_steps={steps:<2d} | stage: {row['stage_steps']} steps "
                f"{row['stage_s']:7.1f} s | round: {row['round_race_steps']:3d} race steps ({ratio_steps:.2f}x), "
                f"{row['round_s']:7.1f} s ({ratio_s:.2f}x; race {row['round_race_s']:.1f} s), "
                f"{row['round_scorings']} scorings, {row['decision']}",
                flush=True,
            )
    if not a.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        data = {"machine": {"cpus": os.cpu_count(), "threads": a.threads, "python": platform.python_version()}}
        RESULTS.write_text(json.dumps({**data, "rows": rows}, indent=2) + "\n")
        print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
