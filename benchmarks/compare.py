"""Does the mentor help? The catalyst against the right baselines, with seeds, spread and paired intervals (issue 7).

Methods, all with the same optimizer steps, learning rate, prompt length, data order and seeds within a cell:

    single-random    plain prompt tuning from PEFT's RANDOM init (no rounds)
    single-text      plain prompt tuning from the TEXT init of the task's manual prompt (no rounds)
    random-restarts  rounds on the catalyst schedule whose candidates are random vocabulary words, scored and selected
                     like the mentor's (elitist: the current prompt competes)
    llm-only         mentor rounds, the soft prompt never gets a gradient update (only restarts change it); the mentor
                     sees the best prompts scored so far. MiniLM's new classification head still trains on the same
                     steps; for SmolLM2 (nothing else to train) the rounds run back to back, one lr-0 step apart
    blind            catalyst schedule, restart from the mentor's first candidate unscored (the research code)
    catalyst         ours: every candidate and the current prompt scored on the catalyst split, the best kept

Every method is compared with the better ``single`` of its cell (higher mean test accuracy over seeds): the paired
difference over seeds with a 95% paired-t interval (bootstrap percentile interval alongside). Each finished run
(task, doer, method, seed) is one JSON under ``benchmarks/results/compare/cells/<plan>/`` and is skipped on rerun.

    python -m benchmarks.compare --dry-run     # print the plan and its time estimate
    python -m benchmarks.compare --quick       # about 10 minutes: Rotten Tomatoes, both doers, 1 seed, tiny budget
    python -m benchmarks.compare               # the full grid (about 2.5 hours on 2 CPU cores), resumable
    python -m benchmarks.compare --report-only # rebuild the report from the finished runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peft_catalyst.records import RoundRecord, ScoredPrompt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.stats import mean_std, paired_difference  # noqa: E402

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).parent / "results" / "compare"
METHODS = ("single-random", "single-text", "random-restarts", "llm-only", "blind", "catalyst")
SINGLE_METHODS = ("single-random", "single-text")
ROUND_METHODS = ("random-restarts", "llm-only", "blind", "catalyst")
LLM_METHODS = ("llm-only", "blind", "catalyst")
#: Bump when the meaning of a cell's result changes: finished cells with another version are run again.
BENCH_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoerPlan:
    """Budget and schedule of one doer: the same for every method and seed of its cells."""

    doer: str
    seeds: int
    max_steps: int
    batch_size: int
    rounds: int
    stage_steps: int
    train_size: int
    catalyst_size: int
    test_size: int
    learning_rate: float = 3e-2
    num_virtual_tokens: int = 8
    num_candidates: int = 4
    trajectory_points: int = 4
    eval_batch_size: int = 32
    max_length: int = 128
    #: A local model directory instead of the packaged doer named ``doer`` (tests, or your own doer).
    model_path: str | None = None


@dataclass(frozen=True)
class Plan:
    """What to run: tasks x doers x methods x seeds."""

    name: str
    tasks: tuple[str, ...]
    doers: tuple[DoerPlan, ...]
    methods: tuple[str, ...] = METHODS
    restart_init: str = "random"

    def doer(self, name: str) -> DoerPlan:
        """The budget of doer ``name``."""
        return next(d for d in self.doers if d.doer == name)

    def cells(self) -> list[Cell]:
        """Every run, seed by seed and within a seed cheapest doer first, so that a run cut short has whole seeds
        of every doer to compare."""
        return [
            Cell(task, d.doer, method, seed)
            for seed in range(max((d.seeds for d in self.doers), default=0))
            for d in self.doers
            if seed < d.seeds
            for task in self.tasks
            for method in self.methods
        ]


@dataclass(frozen=True)
class Cell:
    """One run: a task, a doer, a method and a seed (also the data split's seed)."""

    task: str
    doer: str
    method: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}__{self.doer}__{self.method}__s{self.seed}"


# Full grid, sized to fit 2.5 hours on this project's 2-core machine (--dry-run prints the estimate). That machine
# is about twice as slow as the one the first plan (5 MiniLM / 3 SmolLM2 seeds, about 5 hours here) was sized on,
# hence 2 seeds of each doer: the fewest that give a paired interval. More seeds: --seeds N (finished runs are kept).
FULL_PLAN = Plan(
    name="full",
    tasks=("rotten_tomatoes", "trec"),
    doers=(
        DoerPlan(
            "minilm",
            seeds=2,
            max_steps=120,
            batch_size=16,
            rounds=3,
            stage_steps=30,
            train_size=1000,
            catalyst_size=100,
            test_size=500,
        ),
        DoerPlan(
            "smollm2",
            seeds=2,
            max_steps=30,
            batch_size=8,
            rounds=2,
            stage_steps=10,
            train_size=1000,
            catalyst_size=32,
            test_size=200,
        ),
    ),
)

QUICK_PLAN = Plan(
    name="quick",
    tasks=("rotten_tomatoes",),
    doers=(
        DoerPlan(
            "minilm",
            seeds=1,
            max_steps=24,
            batch_size=16,
            rounds=1,
            stage_steps=12,
            train_size=400,
            catalyst_size=48,
            test_size=200,
        ),
        DoerPlan(
            "smollm2",
            seeds=1,
            max_steps=6,
            batch_size=8,
            rounds=1,
            stage_steps=3,
            train_size=200,
            catalyst_size=16,
            test_size=80,
        ),
    ),
)

# Cost model of one run with ONE torch thread, in seconds, on this project's 2-core machine as measured on 2026-11-30
# (AMD EPYC family 23 model 1; the full plan's own runs): about twice the figures of DESIGN.md section 3 and of the
# first calibration (MiniLM 0.68 s per step at batch 16 on one thread then, 1.32 s now; SmolLM2 7.1 s per step at
# batch 8 and 0.48 s per test example now). Scoring and test evaluation are forward passes: ``forward_per_example``.
COSTS: dict[str, dict[str, float]] = {
    "minilm": {"load": 2.5, "step_per_example": 1.32 / 16, "forward_per_example": 0.045, "frozen_step_ratio": 0.45},
    "smollm2": {"load": 2.0, "step_per_example": 7.1 / 8, "forward_per_example": 0.48, "frozen_step_ratio": 1.0},
}
MENTOR_CALL_S = 36.0  # embedded SmolLM2, 6 samples of <= 24 tokens, 1 thread (twice the 18 s first measured)
USABLE_CANDIDATES = 2.4  # usable candidates per mentor call (benchmarks/results/mentor_yield.json: 2.37)
TWO_THREAD_SPEEDUP = 1.4  # one process on 2 threads vs 1 (0.68 -> 0.47 s per MiniLM step); 2 processes give 2x


def thread_speedup(threads: int) -> float:
    """How much faster one run is with ``threads`` torch threads than with one (2-core machine: at most 1.4)."""
    return TWO_THREAD_SPEEDUP if threads >= 2 else 1.0


def llm_only_schedule(dplan: DoerPlan, prompt_frozen_by_grad: bool) -> tuple[int, int]:
    """``(max_steps, stage_steps)`` of ``llm-only``: the doer's schedule when something besides the prompt trains
    (MiniLM's head), otherwise one lr-0 step per stage (rounds back to back; nothing would learn from more)."""
    if prompt_frozen_by_grad:
        return dplan.max_steps, dplan.stage_steps
    return dplan.rounds + 1, 1


def estimate_cell_seconds(cell: Cell, dplan: DoerPlan, threads: int = 1) -> float:
    """Predicted wall time of one run with ``threads`` torch threads from :data:`COSTS` (load, steps, scoring,
    mentor calls, test evaluation), on a quiet machine."""
    c = COSTS.get(cell.doer, COSTS["minilm"])
    step = c["step_per_example"] * dplan.batch_size
    forward = c["forward_per_example"]
    seconds = c["load"] + forward * dplan.test_size
    steps = dplan.max_steps
    if cell.method == "llm-only":
        steps = dplan.max_steps if cell.doer == "minilm" else dplan.rounds + 1
        step *= c["frozen_step_ratio"] if cell.doer == "minilm" else 1.0
    seconds += steps * step
    if cell.method in ROUND_METHODS:
        trajectory = 1 if cell.method == "llm-only" else min(dplan.trajectory_points, dplan.stage_steps)
        if cell.method == "blind":
            scored = trajectory
        elif cell.method == "random-restarts":
            scored = trajectory + 1 + dplan.num_candidates
        else:
            scored = trajectory + 1 + USABLE_CANDIDATES
        seconds += dplan.rounds * scored * forward * dplan.catalyst_size
        if cell.method in LLM_METHODS:
            seconds += dplan.rounds * MENTOR_CALL_S
    return seconds / thread_speedup(threads)


def plan_lines(plan: Plan, done: set[str], jobs: int = 1, threads: int = 1) -> tuple[list[str], float, float]:
    """The plan with its time estimate for ``jobs`` parallel workers of ``threads`` threads each, on a quiet machine;
    returns ``(lines, total_s, remaining_s)`` (wall-clock seconds)."""
    lines = [
        f"plan '{plan.name}': tasks {', '.join(plan.tasks)}; methods {', '.join(plan.methods)}; "
        f"{jobs} worker(s) x {threads} thread(s)"
    ]
    total = remaining = 0.0
    for d in plan.doers:
        cells = [c for c in plan.cells() if c.doer == d.doer]
        seconds = {c.key: estimate_cell_seconds(c, d, threads) for c in cells}
        doer_total = sum(seconds.values()) / jobs
        doer_left = sum(s for k, s in seconds.items() if k not in done) / jobs
        total, remaining = total + doer_total, remaining + doer_left
        per_method = {m: estimate_cell_seconds(Cell(plan.tasks[0], d.doer, m, 0), d, threads) for m in plan.methods}
        lines.append(
            f"  {d.doer}: {d.seeds} seed(s) x {len(plan.tasks)} task(s) x {len(plan.methods)} methods = {len(cells)} "
            f"runs; {d.max_steps} steps at batch {d.batch_size}, lr {d.learning_rate}, {d.num_virtual_tokens} virtual "
            f"tokens; {d.rounds} round(s) every {d.stage_steps} steps, {d.num_candidates} candidates, "
            f"{d.trajectory_points} trajectory points; splits train {d.train_size} / catalyst {d.catalyst_size} / "
            f"test {d.test_size}"
        )
        lines.append("    est. per run: " + ", ".join(f"{m} {s:.0f} s" for m, s in per_method.items()))
        lines.append(f"    est. {doer_total / 60:.0f} min of wall time ({doer_left / 60:.0f} min left)")
    lines.append(
        f"  estimate: {total / 3600:.2f} h in all, {remaining / 3600:.2f} h left ({len(done)} finished runs skipped), "
        "on a quiet 2-core machine"
    )
    return lines, total, remaining


# ---------------------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------------------


def cell_settings(plan: Plan, cell: Cell) -> dict[str, Any]:
    """Everything that decides a run's result: a finished run is reused only when these match.

    The number of seeds of the plan is not one of them: adding or dropping seeds keeps the runs of the others.
    """
    doer_plan = asdict(plan.doer(cell.doer))
    doer_plan.pop("seeds")
    return {
        "bench_version": BENCH_VERSION,
        "cell": asdict(cell),
        "doer_plan": doer_plan,
        "restart_init": plan.restart_init,
    }


def _comparable_settings(settings: Any) -> Any:
    """Stored settings as :func:`cell_settings` writes them now (runs saved before it left out the seed count)."""
    if isinstance(settings, dict) and isinstance(settings.get("doer_plan"), dict):
        settings = {**settings, "doer_plan": {k: v for k, v in settings["doer_plan"].items() if k != "seeds"}}
    return settings


def _history_rounds(history: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    """The rounds of ``catalyst_history``, compacted: decision, the ranking metric, current and candidate scores
    and losses, the score that decided, race steps, mentor usage.

    Runs stored before the typed records (``BENCH_VERSION`` unchanged) lack ``metric``, the ``score`` fields,
    ``decisive_score`` and ``race_steps``: the report reads those with defaults.
    """

    def scored(p: ScoredPrompt) -> bool:
        return p.score is not None or p.loss is not None

    rounds = []
    for record in history:
        mentor = record.mentor.to_dict() if record.mentor is not None else {}
        current, decisive = record.current, record.decisive
        rounds.append(
            {
                "round": record.round,
                "step": record.step,
                "status": record.decision.value,
                "winner": record.winner,
                "metric": record.metric,
                "higher_is_better": record.higher_is_better,
                "trajectory": [{"text": p.text, "score": p.score, "loss": p.loss} for p in record.trajectory],
                "current": {"text": current.text, "score": current.score, "loss": current.loss}
                if current is not None and scored(current)
                else None,
                "candidates": [
                    {"text": c.text, "score": c.score, "loss": c.loss, "scored": scored(c)} for c in record.candidates
                ],
                "decisive_score": decisive.score if decisive is not None else None,
                "race_steps": record.race_steps,
                "mentor": {
                    k: mentor.get(k)
                    for k in (
                        "latency_s",
                        "prompt_tokens",
                        "completion_tokens",
                        "attempts",
                        "cached",
                        "warning",
                        "error",
                    )
                },
                "prompt_after": record.prompt_after,
            }
        )
    return rounds


def llm_usage(rounds: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """LLM calls (a stricter retry counts), tokens and replayed calls of a run, from its rounds (0 without an LLM)."""
    usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_calls": 0}
    if method not in LLM_METHODS:
        return usage
    for r in rounds:
        m = r["mentor"]
        if m.get("error"):
            usage["calls"] += 1
            continue
        usage["calls"] += int(m.get("attempts") or 1)
        usage["prompt_tokens"] += int(m.get("prompt_tokens") or 0)
        usage["completion_tokens"] += int(m.get("completion_tokens") or 0)
        usage["cached_calls"] += int(bool(m.get("cached")))
    return usage


def embedded_mentor(doer: Any, work_dir: Path, mentor_cache: Path) -> Any:
    """The product's default mentor for ``doer``: the embedded SmolLM2 behind the sqlite reply cache."""
    from peft_catalyst.app.runner import MentorArguments, build_mentor

    args = MentorArguments(mentor="smollm2", mentor_cache=str(mentor_cache))
    shared = (doer.model.get_base_model(), doer.tokenizer) if doer.name == "smollm2" else None
    return build_mentor(args, output_dir=str(work_dir), shared=shared)


def run_cell(
    plan: Plan,
    cell: Cell,
    work_dir: Path,
    mentor_cache: Path,
    llm_factory: Callable[[Any, Path, Path], Any] = embedded_mentor,
) -> dict[str, Any]:
    """Train one (task, doer, method, seed) with the product's runner pieces and return its result record.

    ``llm_factory(doer, run_dir, mentor_cache)`` builds the LLM mentor of ``llm-only``, ``blind`` and ``catalyst``.
    """
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from benchmarks.baselines import FrozenPromptTrainer, HistoryMentor, freeze_soft_prompt
    from peft_catalyst.app.runner import DataArguments, ModelArguments, build_doer
    from peft_catalyst.app.tasks import evaluate_accuracy
    from peft_catalyst.mentors import RandomMentor
    from peft_catalyst.projection import soft_prompt_text, vocabulary_words
    from peft_catalyst.trainer import CatalystTrainer, CatalystTrainingArguments

    d = plan.doer(cell.doer)
    started, cpu_started = time.perf_counter(), time.process_time()
    out = work_dir / cell.key
    out.mkdir(parents=True, exist_ok=True)
    init = (
        "text" if cell.method == "single-text" else "random" if cell.method == "single-random" else plan.restart_init
    )
    set_seed(cell.seed)  # the prompt init and MiniLM's new head: identical across the methods of a seed
    doer = build_doer(
        ModelArguments(
            model=cell.doer if d.model_path is None else "minilm",
            model_name_or_path=d.model_path,
            num_virtual_tokens=d.num_virtual_tokens,
            prompt_init=init,
            max_length=d.max_length,
        ),
        DataArguments(
            dataset=cell.task,
            split_seed=cell.seed,
            train_size=d.train_size,
            catalyst_size=d.catalyst_size,
            test_size=d.test_size,
        ),
    )
    initial_prompt = soft_prompt_text(doer.model, doer.tokenizer)
    max_steps, stage_steps, rounds, selection = d.max_steps, d.stage_steps, d.rounds, "best"
    trainer_cls = CatalystTrainer
    mentor = None
    notes: list[str] = []
    trainer_ref: list[Any] = []
    if cell.method in SINGLE_METHODS:
        rounds = 0
    elif cell.method == "random-restarts":
        mentor = RandomMentor(vocabulary_words(doer.tokenizer), seed=cell.seed)
    else:
        llm = llm_factory(doer, out, mentor_cache)
        mentor = llm
        if cell.method == "blind":
            selection = "first"
        elif cell.method == "llm-only":
            by_grad = freeze_soft_prompt(doer.model)
            max_steps, stage_steps = llm_only_schedule(d, by_grad)
            trainer_cls = FrozenPromptTrainer
            mentor = HistoryMentor(llm, lambda: trainer_ref[0].catalyst_history, max_points=d.trajectory_points)
            notes.append(
                "prompt frozen by requires_grad, the head trains"
                if by_grad
                else "nothing else trains: one lr-0 step per stage"
            )
    args = CatalystTrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=d.batch_size,
        per_device_eval_batch_size=d.eval_batch_size,
        learning_rate=d.learning_rate,
        seed=cell.seed,
        logging_steps=max(1, max_steps // 5),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        catalyst_rounds=rounds,
        catalyst_stage_steps=stage_steps,
        catalyst_num_candidates=d.num_candidates,
        catalyst_trajectory_points=d.trajectory_points,
        catalyst_selection=selection,
        catalyst_metric="label_loss",  # as the product's default (runner.embedded_defaults)
    )
    trainer = trainer_cls(
        model=doer.model,
        args=args,
        mentor=mentor,
        catalyst_dataset=doer.spec.datasets["catalyst"],
        **doer.spec.trainer_kwargs(),
    )
    trainer.remove_callback(PrinterCallback)
    trainer_ref.append(trainer)
    loaded = time.perf_counter()
    trainer.train()
    trained = time.perf_counter()
    test = evaluate_accuracy(doer.model, doer.spec, "test", batch_size=d.eval_batch_size)
    evaluated = time.perf_counter()
    if mentor is not None:
        mentor.close()
    rounds_done = _history_rounds(trainer.catalyst_history)
    run_summary = trainer.catalyst_summary()
    timings = {k: round(v, 2) for k, v in run_summary.seconds.items()}
    train_loss = next((e["train_loss"] for e in reversed(trainer.state.log_history) if "train_loss" in e), None)
    return {
        "settings": cell_settings(plan, cell),
        "task": cell.task,
        "doer": cell.doer,
        "method": cell.method,
        "seed": cell.seed,
        "init": init,
        "optimizer_steps": max_steps,
        "gradient_steps": {
            "stages": run_summary.stage_steps,
            "races": run_summary.race_steps,
            "total": run_summary.total_steps,
        },
        "notes": notes,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_examples": test["num_examples"],
        "train_loss": train_loss,
        "prompts": {"initial": initial_prompt, "final": soft_prompt_text(doer.model, doer.tokenizer)},
        "rounds": rounds_done,
        "llm": llm_usage(rounds_done, cell.method),
        "seconds": {
            "total": round(evaluated - started, 2),
            "cpu": round(time.process_time() - cpu_started, 2),
            "setup": round(loaded - started, 2),
            "train": round(trained - loaded, 2),
            "test_eval": round(evaluated - trained, 2),
            **{f"catalyst_{k}": v for k, v in timings.items()},
        },
        "estimated_seconds": round(estimate_cell_seconds(cell, d), 1),
        "threads": _torch_threads(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------------------------


def cell_path(cells_dir: Path, cell: Cell) -> Path:
    """Where a finished run is stored."""
    return cells_dir / f"{cell.key}.json"


def load_finished(plan: Plan, cells_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished runs of ``plan`` whose stored settings match the plan's (others are run again)."""
    finished = {}
    for cell in plan.cells():
        path = cell_path(cells_dir, cell)
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("ignoring unreadable %s (%s): it will be run again", path, exc)
            continue
        if _comparable_settings(data.get("settings")) == cell_settings(plan, cell):
            finished[cell.key] = data
        else:
            logger.warning("%s was run with other settings: it will be run again", path.name)
    return finished


# ---------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------


def summarize(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per (task, doer): accuracy mean/std per method, paired differences against the better single, round counts,
    LLM usage and wall time; plus, per method, the paired differences pooled over every (cell, seed)."""
    cells_out = []
    pooled: dict[str, list[float]] = {m: [] for m in plan.methods}
    # Against single-random, the start every restart method shares (same init, head and data order per seed).
    pooled_start: dict[str, list[float]] = {m: [] for m in ROUND_METHODS if m in plan.methods}
    for d in plan.doers:
        for task in plan.tasks:
            runs = {
                m: {
                    s: results[Cell(task, d.doer, m, s).key]
                    for s in range(d.seeds)
                    if Cell(task, d.doer, m, s).key in results
                }
                for m in plan.methods
            }
            methods_out: dict[str, Any] = {}
            for m, by_seed in runs.items():
                accs = [by_seed[s]["test_accuracy"] for s in sorted(by_seed)]
                mean, std = mean_std(accs)
                methods_out[m] = {
                    "seeds": sorted(by_seed),
                    "accuracy": accs,
                    "mean": mean,
                    "std": std,
                    **_rounds_summary(list(by_seed.values()), m),
                }
            singles = [m for m in SINGLE_METHODS if m in methods_out and methods_out[m]["accuracy"]]
            best = max(singles, key=lambda m: methods_out[m]["mean"]) if singles else None
            if best is not None:
                for m, by_seed in runs.items():
                    common = sorted(set(by_seed) & set(runs[best]))
                    if m == best or not common:
                        continue
                    a = [by_seed[s]["test_accuracy"] for s in common]
                    b = [runs[best][s]["test_accuracy"] for s in common]
                    methods_out[m]["vs_best_single"] = paired_difference(a, b).to_dict()
                    pooled[m].extend(x - y for x, y in zip(a, b))
            for m in pooled_start:
                common = sorted(set(runs[m]) & set(runs.get("single-random", {})))
                pooled_start[m].extend(
                    runs[m][s]["test_accuracy"] - runs["single-random"][s]["test_accuracy"] for s in common
                )
            cells_out.append({"task": task, "doer": d.doer, "best_single": best, "methods": methods_out})

    def pool(diffs_by_method: dict[str, list[float]]) -> dict[str, Any]:
        return {m: paired_difference(d, [0.0] * len(d)).to_dict() for m, d in diffs_by_method.items() if d}

    return {
        "cells": cells_out,
        "pooled_vs_best_single": pool(pooled),
        "pooled_vs_single_random": pool(pooled_start),
    }


def _rounds_summary(runs: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Round decisions, 'current beat every candidate', LLM usage and wall time, totalled over a method's runs."""
    statuses: dict[str, int] = {}
    accepted: dict[str, int] = {}
    gaps = []  # best candidate's catalyst loss minus the current prompt's (> 0: the current prompt was better)
    for run in runs:
        for r in run["rounds"]:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            if r["status"] in ("accepted", "blind") and r["winner"] is not None:
                text = r["candidates"][r["winner"]]["text"]
                accepted[text] = accepted.get(text, 0) + 1
            losses = [c["loss"] for c in r["candidates"] if c["scored"] and c["loss"] is not None]
            if losses and r["current"] and r["current"]["loss"] is not None and math.isfinite(min(losses)):
                gaps.append(min(losses) - r["current"]["loss"])
    scored = statuses.get("accepted", 0) + statuses.get("kept", 0)
    n = max(1, len(runs))
    llm = {
        k: sum(run["llm"][k] for run in runs) for k in ("calls", "prompt_tokens", "completion_tokens", "cached_calls")
    }
    walls = [run["seconds"]["total"] for run in runs]
    # runs stored before race steps were counted trained exactly their optimizer steps
    steps = [run.get("gradient_steps", {}).get("total", run.get("optimizer_steps")) for run in runs]
    steps = [s for s in steps if s is not None]
    mentor_s = [run["seconds"].get("catalyst_mentor", 0.0) for run in runs]
    return {
        "runs": len(runs),
        "round_status": statuses,
        "current_beat_all": {"kept": statuses.get("kept", 0), "scored_rounds": scored}
        if method in ROUND_METHODS and method != "blind"
        else None,
        "llm_per_run": {k: v / n for k, v in llm.items()},
        "llm_total": llm,
        "wall_s_per_run": sum(walls) / n if walls else None,
        "gradient_steps_per_run": sum(steps) / len(steps) if steps else None,
        "mentor_s_per_run": sum(mentor_s) / n if mentor_s else None,
        "best_candidate_minus_current_loss": {"mean": mean_std(gaps)[0], "rounds": len(gaps)} if gaps else None,
        "accepted_texts": dict(sorted(accepted.items(), key=lambda kv: -kv[1])),
    }


def _fmt_diff(diff: dict[str, Any] | None, reference: bool = False) -> str:
    if not diff:
        return "(reference)" if reference else "-"
    mean, (low, high) = diff["mean"], diff["t_ci"]
    if low is None or not math.isfinite(low if low is not None else math.nan):
        return f"{100 * mean:+.1f} (n={diff['n']})"
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] ({diff['wins']}/{diff['ties']}/{diff['losses']})"


def _fmt_pct(mean: float, std: float) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None and math.isfinite(std) else "")


def _pooled_table(pooled: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows of pooled paired differences (the single methods left out: a reference in some cells)."""
    lines = ["| method | pairs | Δ points [95% CI] | wins/ties/losses |", "|---|---|---|---|"]
    for m, diff in pooled.items():
        if m in SINGLE_METHODS:
            continue
        low, high = diff["t_ci"]
        ci = f"[{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and math.isfinite(low) else "-"
        lines.append(
            f"| {m} | {diff['n']} | {100 * diff['mean']:+.1f} {ci} | {diff['wins']}/{diff['ties']}/{diff['losses']} |"
        )
    return lines


def _incomplete_line(plan: Plan, missing: Sequence[str]) -> str:
    """A warning that names the runs a report lacks, by doer and seed."""
    missing_set = set(missing)
    groups: dict[tuple[str, int], int] = {}
    for cell in plan.cells():
        if cell.key in missing_set:
            groups[(cell.doer, cell.seed)] = groups.get((cell.doer, cell.seed), 0) + 1
    parts = ", ".join(f"{doer} seed {seed} ({n} run{'s' if n > 1 else ''})" for (doer, seed), n in groups.items())
    planned = len(plan.cells())
    return (
        f"**Incomplete grid: {planned - len(missing_set)} of {planned} planned runs finished**; missing: {parts}. "
        "Rerun the same command to finish it (finished runs are kept)."
    )


def markdown(plan: Plan, summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report as Markdown: the table, the pooled differences, definitions and the exact setup."""
    lines = [
        f"# Does the mentor help? Method comparison (plan '{plan.name}')",
        "",
        "Test accuracy in % (mean ± sample std over seeds). Δ: paired difference against the better `single` of the "
        "cell (higher mean), in points, with a 95% paired-t interval over seeds and wins/ties/losses. "
        "Kept: rounds where the current prompt beat every scored candidate / rounds with scored candidates. "
        "LLM calls and tokens (prompt + completion) per run; wall time per run in seconds.",
        "",
        "| task | doer | method | seeds | accuracy | Δ vs best single [95% CI] (w/t/l) | kept | LLM calls | tokens "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if meta.get("missing_runs"):
        lines[1:1] = ["", _incomplete_line(plan, meta["missing_runs"])]
    for c in summary["cells"]:
        for m, r in c["methods"].items():
            if not r["runs"]:
                continue
            name = f"**{m}**" if m == c["best_single"] else m
            kept = r["current_beat_all"]
            kept_s = f"{kept['kept']}/{kept['scored_rounds']}" if kept else "-"
            llm = r["llm_per_run"]
            tokens = f"{llm['prompt_tokens']:.0f} + {llm['completion_tokens']:.0f}" if llm["calls"] else "-"
            diff = _fmt_diff(r.get("vs_best_single"), m == c["best_single"])
            lines.append(
                f"| {c['task']} | {c['doer']} | {name} | {r['runs']} | {_fmt_pct(r['mean'], r['std'])} | {diff} | "
                f"{kept_s} | {llm['calls']:.1f} | {tokens} | {r['wall_s_per_run']:.0f} |"
            )
    lines += [
        "",
        "Pooled over every (cell, seed) pair, Δ vs the better single of its cell (95% paired-t interval):",
        "",
    ]
    lines += _pooled_table(summary["pooled_vs_best_single"])
    lines += [
        "",
        "Pooled Δ vs `single-random`, the start every restart method shares (same init, head and data order per "
        "seed): what the rounds themselves add or cost (95% paired-t interval):",
        "",
        *_pooled_table(summary["pooled_vs_single_random"]),
    ]
    lines += ["", "## Methods", ""] + [f"- {line}" for line in METHOD_DEFINITIONS] + [""]
    lines += ["## Setup", "", f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- git: {meta['git']}"]
    lines.append(f"- machine: {meta['machine']['description']}")
    lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()))
    t = meta["timing"]
    elapsed = t["elapsed_s_this_command"]
    lines.append(
        f"- time: {t['runs']} runs; their wall times sum to {t['run_wall_s_sum'] / 60:.1f} min (estimated "
        f"{t['run_estimated_s_sum'] / 60:.1f} min), {t['workers']} worker(s) x {t['threads_per_worker']} thread(s)"
        + (f"; this command took {elapsed / 60:.1f} min" if elapsed is not None else "")
    )
    lines += ["- plan and estimate (quiet machine):", "", "```text", *meta["plan_lines"], "```"]
    lines.append(
        "- statistics: paired over seeds (the data split's seed is the run's seed, so each seed has its own "
        "train/catalyst/test split shared by every method); the better single is picked by its test mean, which "
        "favours the baseline. Bootstrap percentile intervals (10,000 resamples) are in the JSON."
    )
    return "\n".join(lines) + "\n"


METHOD_DEFINITIONS = [
    "`single-random` / `single-text`: plain prompt tuning (no rounds) from PEFT's RANDOM init / from the TEXT init "
    "of the task's manual prompt.",
    "`random-restarts`: the catalyst schedule, but each round's candidates are k strings of random vocabulary words "
    "(alphabetic tokens that are their own single-token encoding), scored with the current prompt on the catalyst "
    "split and selected like ours; no LLM.",
    "`llm-only`: the soft prompt gets no gradient update; it changes only when a round accepts a mentor candidate "
    "(scored and selected like ours). MiniLM's new classification head still trains on the same optimizer steps (the "
    "prompt frozen by requires_grad); SmolLM2 has nothing else to train, so its rounds run back to back, one lr-0 "
    "step apart. With no gradient trajectory, the mentor is shown the best prompts scored so far (OPRO-style).",
    "`blind`: the catalyst schedule, restarting from the mentor's first usable candidate without scoring "
    "(`catalyst_selection='first'`, the research code's behaviour).",
    "`catalyst`: ours (`catalyst_selection='best'`): every candidate and the current prompt scored on the catalyst "
    "split, the best kept; optimizer state reset and learning rate re-warmed after a restart.",
    "Restart methods start from the same init as `single-random` (same seed: same prompt, head and data order).",
]


def plot(summary: dict[str, Any], path: Path) -> None:
    """Two rows per cell: accuracy per method (seeds as dots, mean ± std), and Δ vs the better single with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in summary["cells"] if any(r["runs"] for r in c["methods"].values())]
    if not cells:
        return
    fig, axes = plt.subplots(2, len(cells), figsize=(4.2 * len(cells), 7.5), squeeze=False)
    for j, c in enumerate(cells):
        methods = [m for m, r in c["methods"].items() if r["runs"]]
        top, bottom = axes[0][j], axes[1][j]
        for i, m in enumerate(methods):
            r = c["methods"][m]
            color = "tab:red" if m == "catalyst" else "tab:blue" if m in SINGLE_METHODS else "tab:gray"
            top.scatter([i] * len(r["accuracy"]), [100 * a for a in r["accuracy"]], s=12, color=color, alpha=0.6)
            std = r["std"] if r["std"] is not None and math.isfinite(r["std"]) else 0.0
            top.errorbar(i, 100 * r["mean"], yerr=100 * std, fmt="_", color="black", capsize=4, markersize=14)
            diff = r.get("vs_best_single")
            if diff:
                low, high = diff["t_ci"]
                if low is not None and math.isfinite(low):
                    bottom.errorbar(
                        i,
                        100 * diff["mean"],
                        yerr=[[100 * (diff["mean"] - low)], [100 * (high - diff["mean"])]],
                        fmt="o",
                        color=color,
                        capsize=4,
                    )
                else:
                    bottom.plot(i, 100 * diff["mean"], "o", color=color)
        for ax in (top, bottom):
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels(methods, rotation=40, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        bottom.axhline(0.0, color="black", lw=0.8)
        top.set_title(f"{c['task']} / {c['doer']}", fontsize=10)
        top.set_ylabel("test accuracy (%)")
        bottom.set_ylabel(f"Δ vs {c['best_single']} (points, 95% CI)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment(argv: Sequence[str], jobs: int = 1, threads: int = 1) -> dict[str, Any]:
    """The exact command, package versions, git commit and machine description."""
    import importlib.metadata as md

    packages = {}
    for name in ("peft-catalyst", "torch", "transformers", "peft", "accelerate", "datasets", "numpy", "tokenizers"):
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
    try:
        git = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        git = None
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = math.nan
    return {
        "command": " ".join(["python -m benchmarks.compare", *argv]),
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


def write_report(
    plan: Plan,
    results: dict[str, dict[str, Any]],
    out_dir: Path,
    argv: Sequence[str],
    jobs: int = 1,
    threads: int = 1,
    elapsed_s: float | None = None,
) -> dict[str, Path]:
    """Write ``<plan>.json``, ``<plan>.md`` and ``<plan>.png`` into ``out_dir``; returns their paths.

    ``elapsed_s``: wall time of the command that ran the missing runs (None: a report of earlier runs only).
    """
    summary = summarize(plan, results)
    meta = environment(argv, jobs, threads)
    meta["plan_lines"] = plan_lines(plan, set(), jobs, threads)[0]
    runs = list(results.values())
    meta["missing_runs"] = [cell.key for cell in plan.cells() if cell.key not in results]
    meta["timing"] = {
        "runs": len(runs),
        "planned_runs": len(plan.cells()),
        "run_wall_s_sum": round(sum(r["seconds"]["total"] for r in runs), 1),
        "run_cpu_s_sum": round(sum(r["seconds"].get("cpu", 0.0) for r in runs), 1),
        "run_estimated_s_sum": round(sum(r["estimated_seconds"] for r in runs), 1),
        "elapsed_s_this_command": None if elapsed_s is None else round(elapsed_s, 1),
        "workers": jobs,
        "threads_per_worker": threads,
    }
    from peft_catalyst.history import write_json_atomic  # lazily, like every peft_catalyst import here

    paths = {ext: out_dir / f"{plan.name}.{ext}" for ext in ("json", "md", "png")}
    write_json_atomic(
        paths["json"],
        {
            "benchmark": "compare",
            "bench_version": BENCH_VERSION,
            **meta,
            "plan": {
                "name": plan.name,
                "tasks": plan.tasks,
                "methods": plan.methods,
                "restart_init": plan.restart_init,
                "doers": [asdict(d) for d in plan.doers],
            },
            "method_definitions": METHOD_DEFINITIONS,
            "summary": summary,
            "runs": [
                {k: r[k] for k in ("task", "doer", "method", "seed", "test_accuracy", "prompts", "llm", "seconds")}
                | {"round_status": [x["status"] for x in r["rounds"]]}
                for r in results.values()
            ],
        },
    )
    paths["md"].write_text(markdown(plan, summary, meta), encoding="utf-8")
    try:
        plot(summary, paths["png"])
    except ImportError as exc:
        logger.warning("%s not written: %s (pip install matplotlib)", paths["png"], exc)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------------


def select_plan(args: argparse.Namespace) -> Plan:
    """The full or quick plan, narrowed by --tasks/--doers/--methods and resized by --seeds."""
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    doers = tuple(
        dataclasses.replace(d, seeds=args.seeds if args.seeds is not None else d.seeds)
        for d in plan.doers
        if not args.doers or d.doer in args.doers
    )
    return dataclasses.replace(
        plan,
        tasks=tuple(args.tasks or plan.tasks),
        doers=doers,
        methods=tuple(m for m in METHODS if not args.methods or m in args.methods),
        restart_init=args.restart_init,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs of the plan, then write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the 10-minute plan (1 task, 1 seed, tiny budget)")
    parser.add_argument("--tasks", nargs="+", choices=["rotten_tomatoes", "trec", "sms_spam"])
    parser.add_argument("--doers", nargs="+", choices=["minilm", "smollm2"])
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument("--seeds", type=int, help="seeds per doer (default: the plan's: full 2, quick 1)")
    parser.add_argument("--restart-init", choices=["random", "text"], default="random", help="init of restart methods")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="parallel worker processes (default 2: on 2 cores, two 1-thread workers beat one 2-thread process)",
    )
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: cores / jobs)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimate, run nothing")
    parser.add_argument("--report-only", action="store_true", help="write the report from finished runs only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --jobs
    args = parser.parse_args(argv)
    jobs = 1 if args.worker else max(1, args.jobs)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("transformers", "peft", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import datasets
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    torch.set_num_threads(threads)

    plan = select_plan(args)
    if args.worker:
        run_cells(plan, args.output_dir, claim=True)
        return 0
    paths = run_plan(
        plan,
        args.output_dir,
        argv,
        dry_run=args.dry_run,
        report_only=args.report_only,
        jobs=jobs,
        threads=threads,
    )
    return 0 if paths or args.dry_run else 1


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
            run_cells(plan, output_dir, llm_factory=llm_factory)
        finished = load_finished(plan, cells_dir)
    elapsed = None if report_only else time.perf_counter() - started
    paths = write_report(plan, finished, output_dir, argv, jobs, threads, elapsed)
    print(paths["md"].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in paths.values()), flush=True)
    return paths


def _run_workers(argv: Sequence[str], jobs: int, threads: int) -> bool:
    """Start ``jobs`` worker processes on the same plan (they claim runs one by one); True when all succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "benchmarks.compare", *argv, "--worker", "--threads", str(threads)]
    workers = [subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parent.parent) for _ in range(jobs)]
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


def claim_cell(locks_dir: Path, cell: Cell) -> bool:
    """Atomically claim a run for this worker (False when another worker holds it)."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(locks_dir / f"{cell.key}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def run_cells(
    plan: Plan,
    output_dir: Path,
    *,
    claim: bool = False,
    llm_factory: Callable[[Any, Path, Path], Any] = embedded_mentor,
) -> int:
    """Run the plan's missing runs in order, saving each as it finishes; with ``claim``, only the runs this worker
    claims first (several workers share the list). Returns the number of runs done."""
    from tqdm.auto import tqdm

    from peft_catalyst.history import write_json_atomic

    cells_dir = output_dir / "cells" / plan.name
    todo = [c for c in plan.cells() if c.key not in load_finished(plan, cells_dir)]
    done = 0
    bar = tqdm(todo, desc=f"runs (pid {os.getpid()})" if claim else "runs", unit="run")
    for cell in bar:
        if claim and (not claim_cell(cells_dir / "locks", cell) or cell_path(cells_dir, cell).is_file()):
            continue
        bar.set_postfix_str(cell.key)
        cache = output_dir / "cells" / f"mentor_cache_{cell.method}.sqlite"
        record = run_cell(plan, cell, cells_dir / "runs", cache, llm_factory)
        write_json_atomic(cell_path(cells_dir, cell), record)
        done += 1
        tqdm.write(
            f"{cell.key}: test accuracy {record['test_accuracy']:.3f}; {record['seconds']['total']:.0f} s "
            f"(estimated {record['estimated_seconds']:.0f} s); rounds {[r['status'] for r in record['rounds']] or '-'}"
        )
    return done


if __name__ == "__main__":
    sys.exit(main())
