"""What a round costs against a gradient stage, prompts one at a time vs K at a time, for MiniLM and SmolLM2.

One run per doer, selection and variant, each in a fresh process (so its peak memory is its own): a stage of
``catalyst_stage_steps`` optimizer steps at the command line's defaults, then one round whose candidates come from the
random mentor (instant, so the mentor's latency is not measured), then one more step. The variants differ only in
``catalyst_score_batch_size``: 1 handles prompts one at a time (``sequential``, the default on CPU), 128 shares
passes (``batched``, the default on a GPU). They run interleaved (sequential, batched, for each setting in turn), so
a machine whose load changes during the benchmark touches both alike; the load average is printed beside each row.
``--restarts full blend partial`` measures each restart shape (``catalyst_restart``) in turn: a blended round races
or scores every proposal and control once per alpha (2 by default), a partial round once.

Per run: the stage's wall time, the round's wall time and its multiple of the stage's, the seconds spent scoring and
racing, peak RSS of the process and the round's own peak above the RSS it started at (sampled every 5 ms), and on a
GPU the round's peak allocated memory.

    python -m benchmarks.race_cost [--doers minilm smollm2] [--selections best race] [--race-steps 2] [--threads 2]
        [--restarts full blend partial] [--variants sequential batched] [--results PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from peft_catalyst.trainer.catalyst_arguments import SCORE_BATCH_SIZE_DEFAULT

RESULTS = Path(__file__).parent / "results" / "race_cost.json"
VARIANTS = {"sequential": 1, "batched": SCORE_BATCH_SIZE_DEFAULT}  # catalyst_score_batch_size of each variant


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler:
    """The process's resident set size, sampled every ``interval`` seconds on a thread while running."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval, self.samples, self._stop = interval, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), _rss_mib()))
            time.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> float:
        return max((rss for t, rss in self.samples if start <= t <= end), default=float("nan"))


def measure_round(
    model: Any,
    tok: Any,
    spec: Any,
    *,
    stage_steps: int,
    train_batch: int,
    eval_batch: int,
    learning_rate: float,
    selection: str,
    race_steps: int,
    score_batch_size: int | None,
    num_candidates: int = 4,
    trajectory_points: int = 4,
    metric: str = "label_loss",
    bf16: bool = False,
    seed: int = 0,
    restart: str = "full",
) -> dict[str, Any]:
    """One stage and one round of ``model`` on ``spec``; seconds, steps and memory of each."""
    from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
    from peft_catalyst.mentors import RandomMentor
    from peft_catalyst.projection import vocabulary_words

    cuda = torch.cuda.is_available()
    extra = {} if score_batch_size is None else {"catalyst_score_batch_size": score_batch_size}
    with tempfile.TemporaryDirectory() as out:
        args = CatalystTrainingArguments(
            output_dir=out,
            max_steps=stage_steps + 1,
            per_device_train_batch_size=train_batch,
            per_device_eval_batch_size=eval_batch,
            learning_rate=learning_rate,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            seed=seed,
            disable_tqdm=True,
            use_cpu=not cuda,
            bf16=bf16,
            catalyst_rounds=1,
            catalyst_stage_steps=stage_steps,
            catalyst_num_candidates=num_candidates,
            catalyst_trajectory_points=trajectory_points,
            catalyst_metric=metric,
            catalyst_selection=selection,
            catalyst_race_steps=race_steps,
            catalyst_restart=restart,
            **extra,
        )
        trainer = CatalystTrainer(
            model=model,
            args=args,
            mentor=RandomMentor(vocabulary_words(tok), seed=seed),
            catalyst_dataset=spec.datasets["catalyst"],
            **spec.trainer_kwargs(),
        )
        engine = trainer.catalyst.engine
        window: dict[str, float] = {}
        run = engine.run

        def timed_run(*a: Any, **kw: Any):
            window["start"], window["rss"] = time.perf_counter(), _rss_mib()
            if cuda:
                torch.cuda.synchronize()
                window["gpu_base"] = torch.cuda.memory_allocated() / 2**20
                torch.cuda.reset_peak_memory_stats()
            try:
                return run(*a, **kw)
            finally:
                if cuda:
                    torch.cuda.synchronize()
                    window["gpu_peak"] = torch.cuda.max_memory_allocated() / 2**20
                window["end"] = time.perf_counter()

        engine.run = timed_run
        with _RssSampler() as sampler:
            started = time.perf_counter()
            trainer.train()
            total = time.perf_counter() - started
    (record,) = trainer.catalyst_history
    timings = trainer.catalyst_summary().seconds
    train_s = total - timings["rounds"]
    stage_s = train_s * stage_steps / (stage_steps + 1)
    row = {
        "selection": selection,
        "restart": restart,
        "race_arms": len(record.race.arms) if record.race else None,
        "race_steps_setting": race_steps,
        "score_batch_size": engine.scorer.batch_size,
        "stage_steps": stage_steps,
        "stage_s": round(stage_s, 2),
        "round_s": round(record.seconds, 2),
        "round_x_stage": round(record.seconds / stage_s, 2) if stage_s else None,
        "scoring_s": round(timings["scoring"], 2),
        "race_s": round(timings.get("race", 0.0), 2),
        "round_race_steps": record.race_steps,
        "prompts_scored": engine.scorer.calls,
        "race_batched": record.race.batched if record.race else None,
        "decision": record.decision.value,
        "notes": record.notes,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "round_rss_start_mib": round(window["rss"], 1),
        "round_rss_peak_mib": round(sampler.peak(window["start"], window["end"]), 1),
    }
    if cuda:
        row["round_gpu_base_mib"] = round(window["gpu_base"], 1)
        row["round_gpu_peak_mib"] = round(window["gpu_peak"], 1)
    return row


def measure(
    doer: str,
    selection: str,
    race_steps: int,
    score_batch_size: int | None,
    stage_steps: int | None = None,
    catalyst_size: int | None = None,
    seed: int = 0,
    restart: str = "full",
) -> dict:
    """One stage and one round at the command line's defaults for ``doer`` (catalyst split of 64 examples).

    ``stage_steps`` shortens the measured stage; its per-step time is then scaled to the default stage's length
    (``stage_s``), against which the round is compared. ``catalyst_size`` scores on the first examples of the
    catalyst split only (a reduced round: scoring costs in proportion).
    """
    from benchmarks.trainer_overhead import setup_doer
    from peft_catalyst.app.runner import embedded_defaults

    defaults = embedded_defaults(doer, None, "rotten_tomatoes")
    default_stage = defaults["catalyst_stage_steps"]
    torch.manual_seed(seed)  # the doer's new classification head is drawn from the global RNG: same in every run
    model, tok, spec, _ = setup_doer(doer, seed)
    if catalyst_size:
        spec.datasets["catalyst"] = spec.datasets["catalyst"].select(range(catalyst_size))
    row = measure_round(
        model,
        tok,
        spec,
        stage_steps=stage_steps or default_stage,
        train_batch=defaults["per_device_train_batch_size"],
        eval_batch=defaults["per_device_eval_batch_size"],
        learning_rate=defaults["learning_rate"],
        selection=selection,
        race_steps=race_steps,
        score_batch_size=score_batch_size,
        num_candidates=defaults["catalyst_num_candidates"],
        trajectory_points=defaults["catalyst_trajectory_points"],
        metric=defaults["catalyst_metric"],
        seed=seed,
        restart=restart,
    )
    if stage_steps and stage_steps != default_stage:
        row["measured_stage_steps"], row["measured_stage_s"] = stage_steps, row["stage_s"]
        row["stage_steps"], row["stage_s"] = default_stage, round(row["stage_s"] * default_stage / stage_steps, 2)
        row["round_x_stage"] = round(row["round_s"] / row["stage_s"], 2)
    return {"doer": doer, "catalyst_size": len(spec.datasets["catalyst"]), **row}


def scoring_alone(doer: str = "smollm2", prompts: int = 5, examples: int = 32, repeats: int = 3) -> dict:
    """Scoring only, in this one process: ``prompts`` prompts on ``examples`` catalyst examples, one at a time and in
    shared passes, alternating ``repeats`` times (best of each), so the machine's load touches both alike."""
    from benchmarks.trainer_overhead import setup_doer
    from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
    from peft_catalyst.app.runner import embedded_defaults
    from peft_catalyst.projection import get_soft_prompt
    from peft_catalyst.rounds.scoring import PromptScorer

    defaults = embedded_defaults(doer, None, "rotten_tomatoes")
    torch.manual_seed(0)
    model, tok, spec, _ = setup_doer(doer, 0)
    split = spec.datasets["catalyst"].select(range(examples))
    vocab, weight = model.word_embeddings.weight, get_soft_prompt(model).weight
    generator = torch.Generator().manual_seed(0)
    picks = [torch.randint(len(vocab), (weight.shape[0],), generator=generator) for _ in range(prompts - 1)]
    candidates = [weight.detach().clone()] + [vocab[ids].detach().clone() for ids in picks]
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as out:
        args = CatalystTrainingArguments(
            output_dir=out,
            per_device_eval_batch_size=defaults["per_device_eval_batch_size"],
            use_cpu=not torch.cuda.is_available(),
            report_to=[],
            catalyst_rounds=0,
        )
        trainer = CatalystTrainer(model=model, args=args, catalyst_dataset=split, **spec.trainer_kwargs())
        scorers = {
            name: PromptScorer(trainer, split, metric=defaults["catalyst_metric"], batch_size=size)
            for name, size in VARIANTS.items()
        }
        for repeat in range(repeats):
            for name in VARIANTS if repeat % 2 == 0 else reversed(VARIANTS):
                started = time.perf_counter()
                scorers[name].score_prompts(candidates)
                seconds[name].append(round(time.perf_counter() - started, 2))
    return {"doer": doer, "prompts": prompts, "examples": examples, "seconds": seconds}


def _in_child(spec: dict, threads: int) -> dict:
    """``measure(**spec)`` in a fresh Python process (its own peak RSS), with the load average around it."""
    before = os.getloadavg()[0]
    command = [sys.executable, "-m", "benchmarks.race_cost", "--child", json.dumps(spec), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({spec}):\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["load_before"], row["load_after"] = round(before, 2), round(os.getloadavg()[0], 2)
    return row


def _print_row(row: dict, variant: str) -> None:
    print(
        f"{row['doer']:8s} {row['selection']:4s} {row.get('restart', 'full'):7s} {variant:10s} | "
        f"stage {row['stage_s']:6.1f} s | round "
        f"{row['round_s']:6.1f} s ({row['round_x_stage']:.2f}x stage; scoring {row['scoring_s']:.1f} s for "
        f"{row['prompts_scored']} prompts, race {row['race_s']:.1f} s / {row['round_race_steps']} steps) | peak RSS "
        f"{row['peak_rss_mib']:.0f} MiB, round peak {row['round_rss_peak_mib']:.0f} MiB from "
        f"{row['round_rss_start_mib']:.0f} | load {row['load_before']:.1f}-{row['load_after']:.1f} | "
        f"{row['decision']}",
        flush=True,
    )


def _compare(rows: list[dict]) -> None:
    """Sequential vs batched per setting: the speed-ups of scoring, race and round."""
    print("\nsetting       | scoring s seq -> batched | race s seq -> batched | round x stage seq -> batched")
    by = {(r["doer"], r["selection"], r["restart"], r["variant"]): r for r in rows}
    for doer, selection, restart in dict.fromkeys((r["doer"], r["selection"], r["restart"]) for r in rows):
        seq, bat = by.get((doer, selection, restart, "sequential")), by.get((doer, selection, restart, "batched"))
        if not seq or not bat:
            continue

        print(
            f"{doer:8s} {selection:4s} | {seq['scoring_s']:6.1f} -> {bat['scoring_s']:6.1f} "
            f"({_ratio(seq, bat, 'scoring_s')}) | {seq['race_s']:6.1f} -> {bat['race_s']:6.1f} "
            f"({_ratio(seq, bat, 'race_s')}) | {seq['round_x_stage']:.2f} -> {bat['round_x_stage']:.2f}"
        )


def _ratio(seq: dict, bat: dict, key: str) -> str:
    return f"{seq[key] / bat[key]:.2f}x" if bat[key] else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doers", nargs="+", default=["minilm", "smollm2"], choices=["minilm", "smollm2"])
    parser.add_argument("--selections", nargs="+", default=["best", "race"], choices=["best", "race"])
    parser.add_argument("--race-steps", type=int, default=2, help="catalyst_race_steps of the race rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--stage-steps",
        type=int,
        help="measure a shorter stage and scale its per-step time to the default stage (the round is unchanged)",
    )
    parser.add_argument("--catalyst-size", type=int, help="score on this many catalyst examples (default: all 64)")
    parser.add_argument("--restarts", nargs="+", default=["full"], choices=["full", "blend", "partial"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the rows go (JSON)")
    parser.add_argument("--no-save", action="store_true", help="do not write the results file")
    parser.add_argument(
        "--scoring-alone", action="store_true", help="time scoring only: 5 SmolLM2 prompts, 32 examples, alternating"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(a.threads)
    if a.child:
        logging.basicConfig(level=logging.ERROR)
        print(json.dumps(measure(**json.loads(a.child))), flush=True)
        return
    if a.scoring_alone:
        logging.basicConfig(level=logging.ERROR)
        result = scoring_alone()
        best = {name: min(values) for name, values in result["seconds"].items()}
        print(json.dumps(result), f"\nbest of each: {best}; shared passes {best['sequential'] / best['batched']:.2f}x")
        return
    rows = []
    for doer in a.doers:
        for selection in a.selections:
            steps = a.race_steps if selection == "race" else 0
            for restart in a.restarts:
                for variant in a.variants:
                    spec = {"doer": doer, "selection": selection, "race_steps": steps}
                    spec["score_batch_size"], spec["restart"] = VARIANTS[variant], restart
                    spec["stage_steps"], spec["catalyst_size"] = a.stage_steps, a.catalyst_size
                    row = {"variant": variant, **_in_child(spec, a.threads)}
                    rows.append(row)
                    _print_row(row, variant)
                    if not a.no_save:  # after every row: a long benchmark keeps what it measured
                        _save(rows, a.threads, a.results)
    _compare(rows)
    if not a.no_save:
        print(f"written: {a.results}")


def _save(rows: list[dict], threads: int, path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
