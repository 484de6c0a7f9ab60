"""Does the mentor help? The catalyst against the right baselines, with seeds, spread and paired intervals.

Two plans. ``full`` (issue 7, committed under ``results/compare/cells/full/``): the first grid, six methods, restart
methods from PEFT's RANDOM init. ``v2`` (issue 14, the default): seven methods, paired per seed (same split, init,
head and data order), restart methods from the TEXT init of the task's manual prompt in every cell and, in one cell,
also from the RANDOM init (methods suffixed ``@random``):

    single-random    plain prompt tuning from PEFT's RANDOM init (no rounds)
    single-text      plain prompt tuning from the TEXT init of the task's manual prompt (no rounds)
    single-matched   plain prompt tuning from the restart methods' init for as many gradient steps as catalyst-race
                     spent in all on that seed (stages + races; read from that run's record, so it runs after it)
    random-race      the race (catalyst_selection="race") with random-vocabulary candidates (RandomMentor)
    catalyst-race    the race with the LLM mentor's candidates
    catalyst-best    the LLM mentor, elitist selection: candidates scored untrained against the current prompt
    blind            restart from the mentor's first candidate unscored (the research code's rule)

The first plan's ``random-restarts``, ``llm-only`` and ``catalyst`` (= ``catalyst-best`` from RANDOM init) stay
readable. Headline contrasts of v2, each paired over seeds with a 95% interval and wins/ties/losses, pooled and per
doer: catalyst-race - random-race, catalyst-race - single-matched, catalyst-race - the better single of its cell.
Each finished run (task, doer, method, seed) is one JSON under ``benchmarks/results/compare/cells/<plan>/``, written
as it finishes and skipped on rerun.

    python -m benchmarks.compare --dry-run             # print the v2 plan and its time estimate
    python -m benchmarks.compare --quick               # machinery check, under 10 minutes
    python -m benchmarks.compare --plan v2 --commit-each  # the v2 grid, resumable; git-commits each finished run
    python -m benchmarks.compare --plan full --report-only # rebuild the first grid's report from its runs
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
#: The first grid's methods (plan ``full``).
METHODS = ("single-random", "single-text", "random-restarts", "llm-only", "blind", "catalyst")
#: The v2 methods (issue 14), in report order.
V2_METHODS = (
    "single-random",
    "single-text",
    "single-matched",
    "random-race",
    "catalyst-race",
    "catalyst-best",
    "blind",
)
ALL_METHODS = tuple(dict.fromkeys(METHODS + V2_METHODS))
SINGLE_METHODS = ("single-random", "single-text")
ROUND_METHODS = ("random-restarts", "llm-only", "blind", "catalyst")
LLM_METHODS = ("llm-only", "blind", "catalyst", "catalyst-race", "catalyst-best")
#: Suffix of a method run from PEFT's RANDOM init in a plan whose restart methods start from the TEXT init.
RANDOM_INIT_SUFFIX = "@random"
#: Bump when the meaning of a cell's result changes: finished cells with another version are run again. The first
#: plan's runs keep version 1; a plan's ``version`` is the one its runs carry.
BENCH_VERSION = 1


@dataclass(frozen=True)
class MethodSpec:
    """What a method name means for the trainer: its init, mentor, selection rule and step budget."""

    name: str
    base: str
    init: str  # "random" or "text": PEFT's prompt init
    mentor: str  # "none", "random" (RandomMentor), "llm", or "llm+history" (llm-only)
    selection: str | None  # catalyst_selection; None: no rounds
    frozen_prompt: bool = False  # llm-only: the soft prompt gets no gradient update
    matched_to: str | None = None  # single-matched: the method whose total gradient steps it trains

    @property
    def rounds(self) -> bool:
        return self.selection is not None


def method_spec(method: str, restart_init: str = "random") -> MethodSpec:
    """The trainer settings of ``method`` (a name of :data:`ALL_METHODS`, optionally suffixed ``@random``) in a plan
    whose restart methods start from ``restart_init``."""
    base, at, suffix = method.partition("@")
    if at and suffix != "random":
        raise ValueError(f"unknown init suffix in {method!r} (only {RANDOM_INIT_SUFFIX!r})")
    if base not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}")
    init = "random" if at else restart_init
    table: dict[str, tuple[str, str, str | None]] = {
        "single-random": ("random", "none", None),
        "single-text": ("text", "none", None),
        "single-matched": (init, "none", None),
        "random-restarts": (init, "random", "best"),
        "llm-only": (init, "llm+history", "best"),
        "blind": (init, "llm", "first"),
        "catalyst": (init, "llm", "best"),
        "catalyst-best": (init, "llm", "best"),
        "random-race": (init, "random", "race"),
        "catalyst-race": (init, "llm", "race"),
    }
    prompt_init, mentor, selection = table[base]
    if at and base in SINGLE_METHODS:
        raise ValueError(f"{method!r}: the single methods have a fixed init")
    return MethodSpec(
        name=method,
        base=base,
        init=prompt_init,
        mentor=mentor,
        selection=selection,
        frozen_prompt=base == "llm-only",
        matched_to="catalyst-race" + (at + suffix) if base == "single-matched" else None,
    )


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
    #: Race settings of the race methods (catalyst_race_steps / _eta / _margin); None in plans without races. Fields
    #: left None are not part of a run's stored settings, so the first plan's runs stay valid.
    race_steps: int | None = None
    race_eta: int | None = None
    race_margin: float | None = None


#: DoerPlan fields added after the first grid: left out of the stored settings while None.
_OPTIONAL_DOER_FIELDS = ("race_steps", "race_eta", "race_margin")


@dataclass(frozen=True)
class Plan:
    """What to run: tasks x doers x methods x seeds (``DoerPlan.seeds``: the number the plan resumes towards)."""

    name: str
    tasks: tuple[str, ...]
    doers: tuple[DoerPlan, ...]
    methods: tuple[str, ...] = METHODS
    restart_init: str = "random"
    #: Stored in every run's settings (``bench_version``); the first grid's runs carry 1.
    version: int = 1
    #: (task, doer) cells where the restart methods ``random_init_methods`` also run from PEFT's RANDOM init, as
    #: extra methods named ``<method>@random`` (a plan whose restart methods start from the TEXT init).
    random_init_cells: tuple[tuple[str, str], ...] = ()
    random_init_methods: tuple[str, ...] = ()
    #: Wall-clock budget the plan is sized for (seconds); the printed plan says how many seeds fit in it.
    wall_budget_s: float | None = None

    def doer(self, name: str) -> DoerPlan:
        """The budget of doer ``name``."""
        return next(d for d in self.doers if d.doer == name)

    def cell_methods(self, task: str, doer: str) -> tuple[str, ...]:
        """The methods of a (task, doer) cell, in report order: the plan's, plus the RANDOM-init extras there."""
        extra = (task, doer) in self.random_init_cells
        return self.methods + tuple(f"{m}{RANDOM_INIT_SUFFIX}" for m in self.random_init_methods if extra)

    def spec(self, method: str) -> MethodSpec:
        """Trainer settings of ``method`` in this plan."""
        return method_spec(method, self.restart_init)

    def run_order(self, task: str, doer: str) -> list[str]:
        """The cell's methods in the order they run: the methods others depend on first (single-matched needs
        catalyst-race's step count), the dependent ones last, the rest in report order."""
        methods = list(self.cell_methods(task, doer))
        needed = {self.spec(m).matched_to for m in methods} - {None}
        return sorted(methods, key=lambda m: 0 if m in needed else 2 if self.spec(m).matched_to else 1)

    def shares_first_call(self, cell: Cell) -> bool:
        """Whether ``cell``'s first mentor call repeats one an earlier LLM method of its (task, doer, seed) made: the
        same init, data and seed give the same first stage, hence the same request, which the plan's shared mentor
        cache answers (the LLM mentor is seeded per request, so the reply is the one it would have generated)."""
        spec = self.spec(cell.method)
        if spec.mentor != "llm":
            return False
        earlier = self.run_order(cell.task, cell.doer)
        earlier = earlier[: earlier.index(cell.method)] if cell.method in earlier else []
        return any(self.spec(m).mentor == "llm" and self.spec(m).init == spec.init for m in earlier)

    def estimate(self, cell: Cell, threads: int = 1, matched_steps: int | None = None) -> float:
        """Predicted wall time of ``cell`` (:func:`estimate_cell_seconds` with this plan's doer budget)."""
        return estimate_cell_seconds(
            cell, self.doer(cell.doer), threads, matched_steps, shared_first_call=self.shares_first_call(cell)
        )

    def cells(self) -> list[Cell]:
        """Every run, seed by seed and within a seed cheapest doer first, so that a run cut short has whole seeds
        of every doer to compare."""
        return [
            Cell(task, d.doer, method, seed)
            for seed in range(max((d.seeds for d in self.doers), default=0))
            for d in self.doers
            if seed < d.seeds
            for task in self.tasks
            for method in self.run_order(task, d.doer)
        ]

    def with_seeds(self, seeds: dict[str, int]) -> Plan:
        """The plan with ``seeds[doer]`` seeds for the doers named (the others unchanged)."""
        return dataclasses.replace(
            self, doers=tuple(dataclasses.replace(d, seeds=seeds.get(d.doer, d.seeds)) for d in self.doers)
        )


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

# Benchmark v2 (issue 14), sized for about 2.5 h on this project's 2-core machine at its slow end (see COSTS and
# --dry-run), with 5 MiniLM and 3 SmolLM2 seeds. What was cut to get there, and what it costs:
# - batch 8 (MiniLM) and 4 (SmolLM2) instead of 16 and 8, same steps and schedule for every method: each run sees
#   half the training examples, so accuracies sit lower than with the first grid; the contrasts are still between
#   methods given the same examples in the same order.
# - test splits 400 (MiniLM) and 160 (SmolLM2): one run's accuracy is good to about ±2.0 / ±3.2 points (1 SE at 80%),
#   a paired difference on the same examples to about ±1.6 / ±2.5; pooled over seeds and tasks the intervals narrow
#   by sqrt(pairs), and seed-to-seed spread dominates anyway.
# - SmolLM2 ranks prompts on a 16-example catalyst split (was 32 in the first grid): noisier race decisions.
# - no single-matched from the RANDOM init (single-random is the RANDOM-init single at equal optimizer steps).
# Not cut: the mentor (embedded SmolLM2, 6 samples per call), rounds, candidates, trajectory points and race budget.
V2_DOERS = (
    DoerPlan(
        "minilm",
        seeds=5,
        max_steps=90,
        batch_size=8,
        rounds=2,
        stage_steps=30,
        train_size=1000,
        catalyst_size=64,
        test_size=400,
        num_candidates=3,
        trajectory_points=3,
        race_steps=3,
        race_eta=2,
        race_margin=0.0,
    ),
    DoerPlan(
        "smollm2",
        seeds=3,
        max_steps=24,
        batch_size=4,
        rounds=2,
        stage_steps=8,
        train_size=1000,
        catalyst_size=16,
        test_size=160,
        num_candidates=3,
        trajectory_points=3,
        race_steps=1,
        race_eta=2,
        race_margin=0.0,
    ),
)
V2_PLAN = Plan(
    name="v2",
    tasks=("rotten_tomatoes", "trec"),
    doers=V2_DOERS,
    methods=V2_METHODS,
    restart_init="text",
    version=2,
    random_init_cells=(("rotten_tomatoes", "minilm"),),
    random_init_methods=("catalyst-race", "random-race"),
    wall_budget_s=2.5 * 3600,
)
V2_QUICK_PLAN = Plan(
    name="v2-quick",
    tasks=("rotten_tomatoes",),
    doers=(
        dataclasses.replace(
            V2_DOERS[0],
            seeds=1,
            max_steps=12,
            rounds=1,
            stage_steps=6,
            train_size=400,
            catalyst_size=24,
            test_size=64,
            trajectory_points=2,
            race_steps=1,
        ),
        dataclasses.replace(
            V2_DOERS[1],
            seeds=1,
            max_steps=4,
            rounds=1,
            stage_steps=2,
            train_size=200,
            catalyst_size=8,
            test_size=24,
            num_candidates=2,
            trajectory_points=2,
            race_steps=1,
        ),
    ),
    methods=V2_METHODS,
    restart_init="text",
    version=2,
    # no RANDOM-init copies here (tests/test_benchmark_compare.py covers their settings): 14 runs, under 10 minutes
    wall_budget_s=10 * 60,
)
PLANS = {"full": FULL_PLAN, "v2": V2_PLAN}
QUICK_PLANS = {"full": QUICK_PLAN, "v2": V2_QUICK_PLAN}

# Cost model of one run with ONE torch thread, in seconds, on this project's 2-core machine (AMD EPYC family 23 model
# 1), calibrated on the first grid's 48 runs (cells/full/, 2 workers x 1 thread, so the other worker's load is in the
# figures): Rotten Tomatoes, MiniLM 1.6 s per optimizer step at batch 16 and 0.045 s per forward example (test and
# catalyst scoring alike); SmolLM2 7.1 s per step at batch 8 and 0.45 s per forward example; TREC's shorter texts
# cost 0.68 times as much (TASK_SCALE). Mentor calls (embedded SmolLM2, 6 samples of <= 24 tokens) took about 39 s
# beside MiniLM, 31 s when it shares the SmolLM2 doer, while the mentor encoded its prompt once per sample; encoding
# it once per call took a 435-token call from 25.1 s to 10.8 s (one thread, idle machine), hence 0.43 of those.
# A race step costs a gradient step (same batch size), a race
# scoring a catalyst-split forward pass. That machine type varies about twofold; these are its slow end.
COSTS: dict[str, dict[str, float]] = {
    "minilm": {
        "load": 2.5,
        "step_per_example": 1.6 / 16,
        "forward_per_example": 0.045,
        "frozen_step_ratio": 0.45,
        "mentor_call_s": 17.0,
    },
    "smollm2": {
        "load": 2.0,
        "step_per_example": 7.1 / 8,
        "forward_per_example": 0.45,
        "frozen_step_ratio": 1.0,
        "mentor_call_s": 13.0,
    },
}
TASK_SCALE = {"rotten_tomatoes": 1.0, "trec": 0.68}
MENTOR_CALL_S = 36.0  # a doer without its own figure
RACE_STEPS_FALLBACK = 4  # catalyst_race_steps of a race method whose doer plan sets none (the library default)
USABLE_CANDIDATES = 2.4  # usable candidates per mentor call (benchmarks/results/mentor_yield.json: 2.37)
#: Usable mentor candidates per round in the first grid (40 rounds, 4 asked): how many arms an LLM race has.
USABLE_COUNTS = {0: 2, 1: 13, 2: 15, 3: 6, 4: 4}
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


def race_shape(arms: int, steps: int, eta: int = 2) -> tuple[int, int]:
    """``(gradient steps, scorings)`` of a successive-halving race of ``arms`` arms (incumbent included) with a
    first-rung budget of ``steps`` (as ``peft_catalyst.race``: every rung scores its arms, the best 1/eta go on)."""
    total = scorings = 0
    alive, budget = arms, steps
    while alive > 1 and budget > 0:
        total += alive * budget
        scorings += alive
        alive, budget = math.ceil(alive / eta), budget * eta
    return total, scorings


def expected_race(dplan: DoerPlan, mentor: str) -> tuple[float, float]:
    """Expected ``(gradient steps, scorings)`` of one race round: ``num_candidates`` random candidates, or the LLM's
    usable ones (:data:`USABLE_COUNTS`, capped at ``num_candidates``)."""
    steps, eta = dplan.race_steps or 0, dplan.race_eta or 2
    if mentor == "random":
        return tuple(float(x) for x in race_shape(1 + dplan.num_candidates, steps, eta))  # type: ignore[return-value]
    rounds = sum(USABLE_COUNTS.values())
    total = [0.0, 0.0]
    for usable, count in USABLE_COUNTS.items():
        shape = race_shape(1 + min(usable, dplan.num_candidates), steps, eta) if usable else (0, 0)
        total = [t + count * x / rounds for t, x in zip(total, shape)]
    return total[0], total[1]


def expected_usable(dplan: DoerPlan) -> float:
    """Expected usable LLM candidates per round with ``num_candidates`` asked."""
    rounds = sum(USABLE_COUNTS.values())
    return sum(count * min(u, dplan.num_candidates) for u, count in USABLE_COUNTS.items()) / rounds


def expected_total_steps(dplan: DoerPlan, mentor: str = "llm") -> float:
    """Expected gradient steps of a race method in all (stages + races): single-matched's budget before it runs."""
    return dplan.max_steps + dplan.rounds * expected_race(dplan, mentor)[0]


def estimate_cell_seconds(
    cell: Cell,
    dplan: DoerPlan,
    threads: int = 1,
    matched_steps: int | None = None,
    shared_first_call: bool = False,
) -> float:
    """Predicted wall time of one run with ``threads`` torch threads from :data:`COSTS` (load, gradient steps,
    scoring, race steps, mentor calls, test evaluation), on this machine type's slow end.

    ``matched_steps``: single-matched's step count when known (else the expected one of catalyst-race);
    ``shared_first_call``: the first mentor call is a cache hit (:meth:`Plan.shares_first_call`)."""
    spec = method_spec(cell.method)
    c = COSTS.get(cell.doer, COSTS["minilm"])
    scale = TASK_SCALE.get(cell.task, 1.0)
    step = c["step_per_example"] * dplan.batch_size * scale
    forward = c["forward_per_example"] * scale
    scoring = forward * dplan.catalyst_size
    seconds = c["load"] + forward * dplan.test_size
    steps: float = dplan.max_steps
    if spec.frozen_prompt:
        steps = dplan.max_steps if cell.doer == "minilm" else dplan.rounds + 1
        step *= c["frozen_step_ratio"] if cell.doer == "minilm" else 1.0
    if spec.matched_to is not None:
        steps = matched_steps if matched_steps is not None else expected_total_steps(dplan)
    seconds += steps * step
    if spec.rounds:
        trajectory = 1 if spec.frozen_prompt else min(dplan.trajectory_points, dplan.stage_steps)
        per_round = trajectory * scoring
        if spec.selection == "best":
            candidates = (
                dplan.num_candidates if spec.mentor == "random" else min(USABLE_CANDIDATES, expected_usable(dplan))
            )
            per_round += (1 + candidates) * scoring
        elif spec.selection == "race":
            race_steps, race_scorings = expected_race(dplan, spec.mentor)
            per_round += race_steps * step + race_scorings * scoring
        if spec.mentor.startswith("llm"):
            per_round += c.get("mentor_call_s", MENTOR_CALL_S)
        seconds += dplan.rounds * per_round
        if shared_first_call and spec.mentor.startswith("llm"):
            seconds -= c.get("mentor_call_s", MENTOR_CALL_S)
    return seconds / thread_speedup(threads)


def resolution_line(test_size: int) -> str:
    """What ``test_size`` test examples resolve: one standard error of a run's accuracy (at 80%) and of a paired
    accuracy difference of two methods on the same examples (10% of them answered differently)."""
    run_se = 100 * math.sqrt(0.8 * 0.2 / test_size)
    paired_se = 100 * math.sqrt(0.10 / test_size)
    return (
        f"test {test_size}: one run's accuracy ±{run_se:.1f} points (1 SE at 80%); a paired difference on the same "
        f"examples ±{paired_se:.1f} points (1 SE, 10% of examples flip); seeds vary more than that"
    )


#: "About" the wall budget: an estimate within 5% of it fits (the cost model itself is good to about 10%).
BUDGET_SLACK = 1.05


def _wall(seconds: float, jobs: int) -> float:
    return seconds / max(1, jobs)


def seeds_that_fit(plan: Plan, budget_s: float, jobs: int = 1, threads: int = 1) -> dict[str, int]:
    """The most seeds per doer, taken in the order the plan runs them (seed by seed, both doers), whose estimated
    wall time fits ``budget_s``."""
    used, fit = 0.0, {d.doer: 0 for d in plan.doers}
    for seed in range(max((d.seeds for d in plan.doers), default=0)):
        for d in plan.doers:
            if seed >= d.seeds:
                continue
            cost = sum(plan.estimate(c, threads) for c in plan.cells() if c.doer == d.doer and c.seed == seed)
            if used + _wall(cost, jobs) > budget_s:
                return fit
            used += _wall(cost, jobs)
            fit[d.doer] = seed + 1
    return fit


def plan_lines(plan: Plan, done: set[str], jobs: int = 1, threads: int = 1) -> tuple[list[str], float, float]:
    """The plan with its time estimate for ``jobs`` parallel workers of ``threads`` threads each; returns
    ``(lines, total_s, remaining_s)`` (wall-clock seconds)."""
    lines = [
        f"plan '{plan.name}': tasks {', '.join(plan.tasks)}; methods {', '.join(plan.methods)}; "
        f"restart methods from the {plan.restart_init.upper()} init; {jobs} worker(s) x {threads} thread(s)"
    ]
    for task, doer in plan.random_init_cells:
        if task in plan.tasks and any(d.doer == doer for d in plan.doers) and plan.random_init_methods:
            extras = ", ".join(f"{m}{RANDOM_INIT_SUFFIX}" for m in plan.random_init_methods)
            lines.append(f"  also from the RANDOM init in {task} / {doer}: {extras}")
    total = remaining = 0.0
    for d in plan.doers:
        cells = [c for c in plan.cells() if c.doer == d.doer]
        seconds = {c.key: plan.estimate(c, threads) for c in cells}
        doer_total = _wall(sum(seconds.values()), jobs)
        doer_left = _wall(sum(s for k, s in seconds.items() if k not in done), jobs)
        total, remaining = total + doer_total, remaining + doer_left
        methods = plan.cell_methods(plan.tasks[0], d.doer) if plan.tasks else ()
        per_method = {m: plan.estimate(Cell(plan.tasks[0], d.doer, m, 0), threads) for m in methods}
        race = (
            f"; race: first rung {d.race_steps} steps, eta {d.race_eta or 2}, margin {d.race_margin or 0.0}"
            if d.race_steps is not None
            else ""
        )
        lines.append(
            f"  {d.doer}: {d.seeds} seed(s) x {len(plan.tasks)} task(s), {len(cells)} runs; {d.max_steps} steps at "
            f"batch {d.batch_size}, lr {d.learning_rate}, {d.num_virtual_tokens} virtual tokens; {d.rounds} round(s) "
            f"every {d.stage_steps} steps, {d.num_candidates} candidates, {d.trajectory_points} trajectory points"
            f"{race}; splits train {d.train_size} / catalyst {d.catalyst_size} / test {d.test_size}; eval batch "
            f"{d.eval_batch_size}"
        )
        if any(plan.spec(m).selection == "race" for m in methods):
            lines.append(
                f"    expected gradient steps in all: catalyst-race {expected_total_steps(d, 'llm'):.0f}, random-race "
                f"{expected_total_steps(d, 'random'):.0f} (single-matched trains catalyst-race's actual count)"
            )
        lines.append(
            f"    est. per run ({plan.tasks[0] if plan.tasks else '-'}): "
            + ", ".join(f"{m} {s:.0f} s" for m, s in per_method.items())
        )
        lines.append(f"    est. {doer_total / 60:.0f} min of wall time ({doer_left / 60:.0f} min left)")
        lines.append("    resolution: " + resolution_line(d.test_size))
    lines.append(
        f"  estimate: {total / 3600:.2f} h in all, {remaining / 3600:.2f} h left ({len(done)} finished runs skipped), "
        "at the slow end of this 2-core machine type"
    )
    if plan.wall_budget_s is not None:
        budget_h = plan.wall_budget_s / 3600
        if total <= plan.wall_budget_s * BUDGET_SLACK:
            lines.append(f"  fits the budget of about {budget_h:.1f} h")
        else:
            fit = seeds_that_fit(plan, plan.wall_budget_s, jobs, threads)
            part = plan.with_seeds(fit)
            _, part_total, _ = plan_lines(dataclasses.replace(part, wall_budget_s=None), set(), jobs, threads)
            lines.append(
                f"  DOES NOT FIT the {budget_h:.1f} h budget: the first {budget_h:.1f} h finish "
                + ", ".join(f"{doer} {n} seed(s)" for doer, n in fit.items())
                + f" (est. {part_total / 3600:.2f} h; runs go seed by seed, so a cut leaves whole seeds); "
                "rerun the same command to resume towards "
                + ", ".join(f"{d.doer} {d.seeds}" for d in plan.doers)
                + " seeds"
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
    for key in _OPTIONAL_DOER_FIELDS:
        if doer_plan.get(key) is None:
            doer_plan.pop(key, None)
    settings = {
        "bench_version": plan.version if plan.version > 1 else BENCH_VERSION,
        "cell": asdict(cell),
        "doer_plan": doer_plan,
        "restart_init": plan.restart_init,
    }
    if plan.version > 1:
        settings["method"] = asdict(plan.spec(cell.method))
    return settings


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
    if method_spec(method).mentor == "none" or method_spec(method).mentor == "random":
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
    matched_steps: int | None = None,
) -> dict[str, Any]:
    """Train one (task, doer, method, seed) with the product's runner pieces and return its result record.

    ``llm_factory(doer, run_dir, mentor_cache)`` builds the LLM mentor of the LLM methods. ``matched_steps``: the
    optimizer steps of ``single-matched`` (the total gradient steps of the same seed's ``catalyst-race`` run).
    """
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from benchmarks.baselines import FrozenPromptTrainer, HistoryMentor, freeze_soft_prompt
    from peft_catalyst.app.runner import DataArguments, ModelArguments, build_prompt_tuned_model
    from peft_catalyst.app.tasks import evaluate_accuracy
    from peft_catalyst.mentors import RandomMentor
    from peft_catalyst.projection import soft_prompt_text, vocabulary_words
    from peft_catalyst.trainer import CatalystTrainer, CatalystTrainingArguments

    d = plan.doer(cell.doer)
    spec = plan.spec(cell.method)
    if spec.matched_to is not None and matched_steps is None:
        raise ValueError(f"{cell.key} needs the total gradient steps of its {spec.matched_to} run")
    started, cpu_started = time.perf_counter(), time.process_time()
    out = work_dir / cell.key
    out.mkdir(parents=True, exist_ok=True)
    init = spec.init
    set_seed(cell.seed)  # the prompt init and MiniLM's new head: identical across the methods of a seed
    doer = build_prompt_tuned_model(
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
    max_steps, stage_steps, rounds = d.max_steps, d.stage_steps, d.rounds
    selection = spec.selection or "best"
    trainer_cls = CatalystTrainer
    mentor = None
    notes: list[str] = []
    trainer_ref: list[Any] = []
    if not spec.rounds:
        rounds = 0
        if spec.matched_to is not None:
            max_steps = int(matched_steps)  # type: ignore[arg-type]
            notes.append(f"{max_steps} optimizer steps: the total gradient steps of {spec.matched_to}, same seed")
    elif spec.mentor == "random":
        mentor = RandomMentor(vocabulary_words(doer.tokenizer), seed=cell.seed)
    else:
        llm = llm_factory(doer, out, mentor_cache)
        mentor = llm
        if spec.frozen_prompt:
            by_grad = freeze_soft_prompt(doer.model)
            max_steps, stage_steps = llm_only_schedule(d, by_grad)
            trainer_cls = FrozenPromptTrainer
            mentor = HistoryMentor(llm, lambda: trainer_ref[0].catalyst_history, max_points=d.trajectory_points)
            notes.append(
                "prompt frozen by requires_grad, the head trains"
                if by_grad
                else "nothing else trains: one lr-0 step per stage"
            )
    race_kwargs: dict[str, Any] = {}
    if selection == "race":
        race_kwargs = {
            "catalyst_race_steps": d.race_steps if d.race_steps is not None else RACE_STEPS_FALLBACK,
            "catalyst_race_eta": d.race_eta or 2,
            "catalyst_race_margin": d.race_margin or 0.0,
        }
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
        **race_kwargs,
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
        "selection": spec.selection,
        "optimizer_steps": max_steps,
        "gradient_steps": {
            "stages": run_summary.main_steps,
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
        "matched_to": {"method": spec.matched_to, "total_steps": matched_steps} if spec.matched_to else None,
        "estimated_seconds": round(plan.estimate(cell, matched_steps=matched_steps), 1),
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


def _read_run(plan: Plan, cells_dir: Path, cell: Cell, quiet: bool = False) -> dict[str, Any] | None:
    """The stored run of ``cell`` when it was run with the plan's settings (None otherwise)."""
    path = cell_path(cells_dir, cell)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        if not quiet:
            logger.warning("ignoring unreadable %s (%s): it will be run again", path, exc)
        return None
    if _comparable_settings(data.get("settings")) != cell_settings(plan, cell):
        if not quiet:
            logger.warning("%s was run with other settings: it will be run again", path.name)
        return None
    return data


def dependency(plan: Plan, cell: Cell) -> Cell | None:
    """The run whose result ``cell`` needs before it can start (single-matched: the same seed's catalyst-race)."""
    matched = plan.spec(cell.method).matched_to
    return Cell(cell.task, cell.doer, matched, cell.seed) if matched else None


def matched_steps(plan: Plan, cells_dir: Path, cell: Cell) -> int | None:
    """The optimizer steps ``cell`` (single-matched) trains: the total gradient steps (stages + races) of the same
    seed's catalyst-race run as stored; None while that run is not finished."""
    dep = dependency(plan, cell)
    if dep is None:
        return None
    record = _read_run(plan, cells_dir, dep, quiet=True)
    if record is None:
        return None
    return int(record["gradient_steps"]["total"])


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


# ---------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------


def summarize(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per (task, doer): accuracy mean/std per method, paired differences against the better single, round counts,
    LLM usage and wall time; per method, the paired differences pooled over every (cell, seed), against the better
    single and against the single that shares the method's start; for a plan with races, the headline contrasts
    (:func:`headline_contrasts`) and per-doer method costs."""
    cells_out = []
    pooled: dict[str, list[float]] = {}
    # Against the single run from the same start (same init, head and data order per seed): what rounds add or cost.
    pooled_start: dict[str, list[float]] = {}
    for d in plan.doers:
        for task in plan.tasks:
            runs = _cell_runs(plan, results, task, d)
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
            best = _better_single(methods_out)
            if best is not None:
                for m, by_seed in runs.items():
                    common = sorted(set(by_seed) & set(runs[best]))
                    if m == best or not common:
                        continue
                    a = [by_seed[s]["test_accuracy"] for s in common]
                    b = [runs[best][s]["test_accuracy"] for s in common]
                    methods_out[m]["vs_best_single"] = paired_difference(a, b).to_dict()
                    pooled.setdefault(m, []).extend(x - y for x, y in zip(a, b))
            for m in runs:
                spec = plan.spec(m)
                if not spec.rounds:
                    continue
                start = "single-random" if spec.init == "random" else "single-text"
                common = sorted(set(runs[m]) & set(runs.get(start, {})))
                pooled_start.setdefault(m, []).extend(
                    runs[m][s]["test_accuracy"] - runs[start][s]["test_accuracy"] for s in common
                )
            cells_out.append({"task": task, "doer": d.doer, "best_single": best, "methods": methods_out})

    def pool(diffs_by_method: dict[str, list[float]]) -> dict[str, Any]:
        return {m: paired_difference(d, [0.0] * len(d)).to_dict() for m, d in diffs_by_method.items() if d}

    summary: dict[str, Any] = {"cells": cells_out, "pooled_vs_best_single": pool(pooled)}
    if plan.version == 1:
        summary["pooled_vs_single_random"] = pool(pooled_start)
    else:
        summary["pooled_vs_start"] = pool(pooled_start)
        summary["headline"] = headline_contrasts(plan, results)
        summary["per_method"] = per_method_costs(plan, results)
    return summary


def _cell_runs(plan: Plan, results: dict[str, dict[str, Any]], task: str, d: DoerPlan) -> dict[str, dict[int, Any]]:
    """The finished runs of one (task, doer) cell: method -> seed -> record."""
    return {
        m: {
            s: results[Cell(task, d.doer, m, s).key] for s in range(d.seeds) if Cell(task, d.doer, m, s).key in results
        }
        for m in plan.cell_methods(task, d.doer)
    }


def _better_single(methods_out: dict[str, Any]) -> str | None:
    """The single method with the higher mean test accuracy in a cell (None without single runs)."""
    singles = [m for m in SINGLE_METHODS if m in methods_out and methods_out[m]["accuracy"]]
    return max(singles, key=lambda m: methods_out[m]["mean"]) if singles else None


#: The headline contrasts of v2: (method, reference, what it measures). "better-single": the better of
#: single-random / single-text in each cell (higher mean over seeds), at equal optimizer steps.
HEADLINE_CONTRASTS = (
    ("catalyst-race", "random-race", "the mentor's own value: the same race with random-vocabulary candidates"),
    ("catalyst-race", "single-matched", "against plain prompt tuning at equal compute (stages + races)"),
    ("catalyst-race", "better-single", "against the better single of the cell at equal optimizer steps"),
)


def headline_contrasts(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline contrasts, paired over seeds, pooled over every (task, doer, seed) and per doer: mean, 95%
    paired-t and bootstrap intervals, wins/ties/losses. One group per start: the plan's restart init in every cell,
    and the RANDOM init where the plan also runs ``@random`` methods."""
    starts = [("", plan.restart_init)]
    if plan.random_init_methods and plan.restart_init != "random":
        starts.append((RANDOM_INIT_SUFFIX, "random"))
    out: dict[str, Any] = {}
    for suffix, init in starts:
        group: dict[str, Any] = {}
        for method, reference, what in HEADLINE_CONTRASTS:
            a_name = method + suffix
            b_base = reference if reference == "better-single" else reference + suffix
            pairs: list[dict[str, Any]] = []
            for d in plan.doers:
                for task in plan.tasks:
                    methods = plan.cell_methods(task, d.doer)
                    if a_name not in methods:
                        continue
                    runs = _cell_runs(plan, results, task, d)
                    if reference == "better-single":
                        means = {
                            m: mean_std([r["test_accuracy"] for r in runs[m].values()])[0]
                            for m in SINGLE_METHODS
                            if runs.get(m)
                        }
                        if not means:
                            continue
                        b_name = max(means, key=lambda m: means[m])
                    else:
                        b_name = b_base
                        if b_name not in methods:
                            continue
                    for seed in sorted(set(runs[a_name]) & set(runs.get(b_name, {}))):
                        pairs.append(
                            {
                                "task": task,
                                "doer": d.doer,
                                "seed": seed,
                                "reference": b_name,
                                "difference": runs[a_name][seed]["test_accuracy"]
                                - runs[b_name][seed]["test_accuracy"],
                            }
                        )
            if not pairs:
                continue
            diffs = [p["difference"] for p in pairs]
            by_doer = {}
            for d in plan.doers:
                dd = [p["difference"] for p in pairs if p["doer"] == d.doer]
                if dd:
                    by_doer[d.doer] = paired_difference(dd, [0.0] * len(dd)).to_dict()
            group[f"{a_name} - {b_base}"] = {
                "what": what,
                "method": a_name,
                "reference": b_base,
                "pooled": paired_difference(diffs, [0.0] * len(diffs)).to_dict(),
                "by_doer": by_doer,
                "pairs": pairs,
            }
        if group:
            out[f"{init} init"] = group
    return out


def per_method_costs(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per doer and method, averaged over its runs (both tasks): rounds, rounds that restarted, race steps, total
    gradient steps, LLM calls and tokens, wall time."""
    out: dict[str, dict[str, Any]] = {}
    for d in plan.doers:
        methods: dict[str, list[dict[str, Any]]] = {}
        for task in plan.tasks:
            for m, by_seed in _cell_runs(plan, results, task, d).items():
                methods.setdefault(m, []).extend(by_seed.values())
        rows = {}
        for m, runs in methods.items():
            if not runs:
                continue
            n = len(runs)
            rounds = [r["rounds"] for r in runs]
            rows[m] = {
                "runs": n,
                "rounds_per_run": sum(len(x) for x in rounds) / n,
                "restarted_per_run": sum(_restarted(x) for x in rounds) / n,
                "race_steps_per_run": sum(_gradient_steps(r)["races"] for r in runs) / n,
                "gradient_steps_per_run": sum(_gradient_steps(r)["total"] for r in runs) / n,
                "llm_calls_per_run": sum(r["llm"]["calls"] for r in runs) / n,
                "tokens_per_run": sum(r["llm"]["prompt_tokens"] + r["llm"]["completion_tokens"] for r in runs) / n,
                "wall_s_per_run": sum(r["seconds"]["total"] for r in runs) / n,
            }
        out[d.doer] = rows
    return out


def _restarted(rounds: list[dict[str, Any]]) -> int:
    """Rounds that changed the prompt to a candidate (accepted after scoring or a race, or blind)."""
    return sum(r["status"] in ("accepted", "blind") for r in rounds)


def _gradient_steps(run: dict[str, Any]) -> dict[str, int]:
    """A run's gradient steps; runs stored before races were counted trained exactly their optimizer steps."""
    steps = run.get("gradient_steps")
    if steps:
        return steps
    return {"stages": run["optimizer_steps"], "races": 0, "total": run["optimizer_steps"]}


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
        if method_spec(method).rounds and method_spec(method).selection != "first"
        else None,
        "llm_per_run": {k: v / n for k, v in llm.items()},
        "llm_total": llm,
        "wall_s_per_run": sum(walls) / n if walls else None,
        "gradient_steps_per_run": sum(steps) / len(steps) if steps else None,
        "race_steps_per_run": sum(_gradient_steps(run)["races"] for run in runs) / n,
        "restarted_per_run": sum(_restarted(run["rounds"]) for run in runs) / n,
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


def _fmt_ci(diff: dict[str, Any]) -> str:
    low, high = diff["t_ci"]
    ci = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and math.isfinite(low) else ""
    return f"{100 * diff['mean']:+.1f}{ci}"


def markdown_v2(plan: Plan, summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The v2 report: headline contrasts, per-method costs, per-cell table, definitions and the exact setup."""
    doers = [d.doer for d in plan.doers]
    lines = [f"# Does the mentor help? Benchmark {plan.name} (issue 14)", ""]
    if meta.get("missing_runs"):
        lines += [_incomplete_line(plan, meta["missing_runs"]), ""]
    lines += [
        "## Headline contrasts",
        "",
        "Test accuracy differences in points, paired over seeds (same split, init, head and data order), pooled over "
        "every (task, doer, seed) and per doer: mean [95% paired-t interval] (wins/ties/losses). Bootstrap "
        "intervals and every pair are in the JSON.",
        "",
        "| start | contrast | pairs | pooled Δ [95% CI] | w/t/l | "
        + " | ".join(f"{doer} Δ [95% CI] (w/t/l)" for doer in doers)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(doers),
    ]
    for start, group in summary.get("headline", {}).items():
        for name, c in group.items():
            pooled = c["pooled"]
            per = [
                f"{_fmt_ci(c['by_doer'][doer])} ({c['by_doer'][doer]['wins']}/{c['by_doer'][doer]['ties']}/"
                f"{c['by_doer'][doer]['losses']})"
                if doer in c["by_doer"]
                else "-"
                for doer in doers
            ]
            lines.append(
                f"| {start} | `{name}` | {pooled['n']} | {_fmt_ci(pooled)} | "
                f"{pooled['wins']}/{pooled['ties']}/{pooled['losses']} | " + " | ".join(per) + " |"
            )
    lines += [
        "",
        "- `catalyst-race - random-race`: " + HEADLINE_CONTRASTS[0][2] + ".",
        "- `catalyst-race - single-matched`: " + HEADLINE_CONTRASTS[1][2] + ".",
        "- `catalyst-race - better-single`: " + HEADLINE_CONTRASTS[2][2] + " (picked on the test mean, which "
        "favours the baseline).",
        "",
        "## What each method spent",
        "",
        "Per run, averaged over both tasks: rounds, rounds that restarted (a candidate replaced the prompt), race "
        "steps, gradient steps in all (stages + races), LLM calls, tokens (prompt + completion), wall seconds.",
        "",
        "| doer | method | runs | rounds | restarted | race steps | gradient steps | LLM calls | tokens | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for doer, rows in summary.get("per_method", {}).items():
        for m, r in rows.items():
            lines.append(
                f"| {doer} | {m} | {r['runs']} | {r['rounds_per_run']:.1f} | {r['restarted_per_run']:.2f} | "
                f"{r['race_steps_per_run']:.0f} | {r['gradient_steps_per_run']:.0f} | {r['llm_calls_per_run']:.1f} | "
                f"{r['tokens_per_run']:.0f} | {r['wall_s_per_run']:.0f} |"
            )
    lines += [
        "",
        "## Per cell",
        "",
        "Test accuracy in % (mean ± sample std over seeds); Δ vs the better single of the cell (bold), paired.",
        "",
        "| task | doer | method | seeds | accuracy | Δ vs best single [95% CI] (w/t/l) | kept | restarted/run "
        "| race steps/run | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        for m, r in c["methods"].items():
            if not r["runs"]:
                continue
            name = f"**{m}**" if m == c["best_single"] else m
            kept = r["current_beat_all"]
            kept_s = f"{kept['kept']}/{kept['scored_rounds']}" if kept else "-"
            diff = _fmt_diff(r.get("vs_best_single"), m == c["best_single"])
            lines.append(
                f"| {c['task']} | {c['doer']} | {name} | {r['runs']} | {_fmt_pct(r['mean'], r['std'])} | {diff} | "
                f"{kept_s} | {r['restarted_per_run']:.2f} | {r['race_steps_per_run']:.0f} | "
                f"{r['wall_s_per_run']:.0f} |"
            )
    lines += [
        "",
        "Pooled Δ of each round method vs the single run from its own start (`single-text` for the TEXT init, "
        "`single-random` for `@random`), 95% paired-t interval:",
        "",
        *_pooled_table(summary.get("pooled_vs_start", {})),
        "",
        "## Methods",
        "",
        *[f"- {line}" for line in METHOD_DEFINITIONS_V2],
        "",
    ]
    lines += _setup_lines(meta)
    return "\n".join(lines) + "\n"


def _setup_lines(meta: dict[str, Any]) -> list[str]:
    lines = ["## Setup", "", f"- command: `{meta['command']}`", f"- date: {meta['date']}", f"- git: {meta['git']}"]
    lines.append(f"- machine: {meta['machine']['description']}")
    lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()))
    t = meta["timing"]
    elapsed = t["elapsed_s_this_command"]
    lines.append(
        f"- time: {t['runs']} runs; their wall times sum to {t['run_wall_s_sum'] / 60:.1f} min (estimated "
        f"{t['run_estimated_s_sum'] / 60:.1f} min), {t['workers']} worker(s) x {t['threads_per_worker']} thread(s)"
        + (f"; this command took {elapsed / 60:.1f} min" if elapsed is not None else "")
    )
    lines += ["- plan and estimate:", "", "```text", *meta["plan_lines"], "```"]
    lines.append(
        "- statistics: paired over seeds (the data split's seed is the run's seed, so each seed has its own "
        "train/catalyst/test split shared by every method); the better single is picked by its test mean, which "
        "favours the baseline. Bootstrap percentile intervals (10,000 resamples) are in the JSON."
    )
    return lines


def markdown(plan: Plan, summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report as Markdown: the table, the pooled differences, definitions and the exact setup."""
    if plan.version > 1:
        return markdown_v2(plan, summary, meta)
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
    lines += _setup_lines(meta)
    return "\n".join(lines) + "\n"


METHOD_DEFINITIONS_V2 = [
    "`single-random` / `single-text`: plain prompt tuning (no rounds) from PEFT's RANDOM init / from the TEXT init "
    "of the task's manual prompt.",
    "`single-matched`: plain prompt tuning from the restart methods' init for as many gradient steps as the same "
    "seed's `catalyst-race` run spent in all (main-loop steps + race steps, read from its record); the learning-rate "
    "schedule spans those steps.",
    "`random-race`: the catalyst schedule with `catalyst_selection='race'`, candidates from the library's "
    "`RandomMentor` (random vocabulary words): the current prompt and every candidate train the same counted budget "
    "on the same batches (successive halving), the best is kept; no LLM.",
    "`catalyst-race`: the same race with the LLM mentor's candidates (ours).",
    "`catalyst-best`: the LLM mentor with elitist selection (`'best'`): candidates scored untrained against the "
    "trained current prompt, the best kept (the first grid's `catalyst`).",
    "`blind`: restart from the mentor's first usable candidate without scoring (`'first'`, the research code).",
    "Restart methods (and `single-matched`) start from the TEXT init of the manual prompt, like `single-text` (same "
    "seed: same prompt, head and data order); `@random` methods run the same from PEFT's RANDOM init, like "
    "`single-random`. Race steps count as gradient steps; they do not advance the main loop's step.",
]

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
            color = "tab:red" if m.startswith("catalyst") else "tab:blue" if m in SINGLE_METHODS else "tab:gray"
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
                "version": plan.version,
                "random_init_cells": plan.random_init_cells,
                "random_init_methods": plan.random_init_methods,
                "doers": [asdict(d) for d in plan.doers],
            },
            "method_definitions": METHOD_DEFINITIONS if plan.version == 1 else METHOD_DEFINITIONS_V2,
            "summary": summary,
            "runs": [
                {k: r[k] for k in ("task", "doer", "method", "seed", "test_accuracy", "prompts", "llm", "seconds")}
                | {"round_status": [x["status"] for x in r["rounds"]], "gradient_steps": _gradient_steps(r)}
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
    """The plan named by --plan (its quick variant with --quick), narrowed by --tasks/--doers/--methods and resized
    by --seeds."""
    name = getattr(args, "plan", None) or "v2"
    plan = QUICK_PLANS[name] if args.quick else PLANS[name]
    doers = tuple(
        dataclasses.replace(d, seeds=args.seeds if args.seeds is not None else d.seeds)
        for d in plan.doers
        if not args.doers or d.doer in args.doers
    )
    wanted = set(args.methods or ())
    restart_init = args.restart_init or plan.restart_init
    return dataclasses.replace(
        plan,
        tasks=tuple(args.tasks or plan.tasks),
        doers=doers,
        methods=tuple(m for m in plan.methods if not wanted or m in wanted),
        random_init_methods=tuple(
            m for m in plan.random_init_methods if not wanted or m in wanted or f"{m}{RANDOM_INIT_SUFFIX}" in wanted
        ),
        restart_init=restart_init,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs of the plan, then write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--plan", choices=sorted(PLANS), default="v2", help="v2 (issue 14, default) or full (the first grid)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="the plan's machinery check (1 task, 1 seed, tiny budget)"
    )
    parser.add_argument("--tasks", nargs="+", choices=["rotten_tomatoes", "trec", "sms_spam"])
    parser.add_argument("--doers", nargs="+", choices=["minilm", "smollm2"])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=[*ALL_METHODS, *(f"{m}{RANDOM_INIT_SUFFIX}" for m in ALL_METHODS if m not in SINGLE_METHODS)],
    )
    parser.add_argument("--seeds", type=int, help="seeds per doer (default: the plan's: v2 5 and 3, full 2, quick 1)")
    parser.add_argument(
        "--restart-init", choices=["random", "text"], help="init of restart methods (default: the plan's)"
    )
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
    parser.add_argument(
        "--commit-each",
        action="store_true",
        help="git-commit each finished run's JSON as it lands (git add -f + git commit -- <that file> only)",
    )
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
        run_cells(plan, args.output_dir, claim=True, commit_each=args.commit_each)
        return 0
    paths = run_plan(
        plan,
        args.output_dir,
        argv,
        dry_run=args.dry_run,
        report_only=args.report_only,
        jobs=jobs,
        threads=threads,
        commit_each=args.commit_each,
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
    """Atomically claim a run for this worker (False when another worker holds it); the lock holds our pid."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(locks_dir / f"{cell.key}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    return True


def lock_holder_alive(locks_dir: Path, cell: Cell) -> bool | None:
    """Whether the process holding ``cell``'s lock still runs (None: no lock; True when its pid is unreadable)."""
    path = locks_dir / f"{cell.key}.lock"
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
    catalyst-race) waits for it, running other runs meanwhile; a dependency held by a dead worker is taken over.
    ``commit_each``: git-commit each finished run's file (only that file). Returns the number of runs done."""
    from tqdm.auto import tqdm

    from peft_catalyst.history import write_json_atomic

    cells_dir = output_dir / "cells" / plan.name
    locks = cells_dir / "locks"
    finished = load_finished(plan, cells_dir)
    pending = [c for c in plan.cells() if c.key not in finished]
    uncommitted: list[Path] = []
    done = 0
    bar = tqdm(total=len(pending), desc=f"runs (pid {os.getpid()})" if claim else "runs", unit="run")
    while pending:
        blocked = False
        for cell in list(pending):
            steps = None
            dep = dependency(plan, cell)
            if dep is not None:
                steps = matched_steps(plan, cells_dir, cell)
                if steps is None:
                    if any(c.key == dep.key for c in pending):
                        blocked = True  # its dependency runs first (in this process)
                        continue
                    holder = lock_holder_alive(locks, dep) if claim else None
                    if holder:
                        blocked = True  # another worker runs it: wait, doing other runs meanwhile
                        continue
                    if holder is False:  # its worker died: take the dependency over
                        (locks / f"{dep.key}.lock").unlink(missing_ok=True)
                        pending.insert(pending.index(cell), dep)
                        bar.total += 1
                        blocked = True
                        break
                    logger.error("%s needs %s, which is neither finished nor planned: skipped", cell.key, dep.key)
                    pending.remove(cell)
                    bar.update()
                    continue
            if claim and not claim_cell(locks, cell):
                pending.remove(cell)  # another worker has it
                bar.update()
                continue
            pending.remove(cell)
            if claim and _read_run(plan, cells_dir, cell, quiet=True) is not None:
                bar.update()
                continue
            bar.set_postfix_str(cell.key)
            # One reply cache per plan: LLM methods of a seed that start alike ask the same first question.
            cache = output_dir / "cells" / f"mentor_cache_{plan.name}.sqlite"
            record = run_cell(plan, cell, cells_dir / "runs", cache, llm_factory, matched_steps=steps)
            path = cell_path(cells_dir, cell)
            write_json_atomic(path, record)
            if commit_each:
                commit_run(path, f"benchmark {plan.name}: {cell.key}", uncommitted)
            done += 1
            bar.update()
            tqdm.write(
                f"{cell.key}: test accuracy {record['test_accuracy']:.3f}; {record['seconds']['total']:.0f} s "
                f"(estimated {record['estimated_seconds']:.0f} s); "
                f"gradient steps {record['gradient_steps']['total']}; "
                f"rounds {[r['status'] for r in record['rounds']] or '-'}"
            )
            break  # rescan from the top: the plan's order, and dependencies that just finished
        else:
            if not pending:
                break
            if not blocked:
                break
            time.sleep(poll_s)
    bar.close()
    return done


if __name__ == "__main__":
    sys.exit(main())
