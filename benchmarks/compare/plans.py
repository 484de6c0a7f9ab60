"""The grids: :class:`Plan` (tasks x doers x methods x seeds), the committed plans, and the printed plan with its
time estimate and the seeds that fit a wall budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmarks.compare.costs import (
    estimate_cell_seconds,
    expected_total_steps,
    resolution_line,
    v3_expected_total_steps,
)
from benchmarks.compare.methods import (
    METHODS,
    RANDOM_INIT_SUFFIX,
    V2_METHODS,
    Cell,
    DoerPlan,
    MethodSpec,
    method_spec,
)


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
    #: Methods of this plan's own (from v3 on), looked up before the shared table of :func:`method_spec`.
    specs: tuple[MethodSpec, ...] = ()
    #: The headline contrasts (method, reference, what it measures); None: v2's (``summary.HEADLINE_CONTRASTS``).
    contrasts: tuple[tuple[str, str, str], ...] | None = None

    def doer(self, name: str) -> DoerPlan:
        """The budget of doer ``name``."""
        return next(d for d in self.doers if d.doer == name)

    def cell_methods(self, task: str, doer: str) -> tuple[str, ...]:
        """The methods of a (task, doer) cell, in report order: the plan's, plus the RANDOM-init extras there."""
        extra = (task, doer) in self.random_init_cells
        return self.methods + tuple(f"{m}{RANDOM_INIT_SUFFIX}" for m in self.random_init_methods if extra)

    def spec(self, method: str) -> MethodSpec:
        """Trainer settings of ``method`` in this plan."""
        for spec in self.specs:
            if spec.name == method:
                return spec
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
        return any(self.spec(m).mentor == "llm" and _request(self.spec(m)) == _request(spec) for m in earlier)

    def estimate(self, cell: Cell, threads: int = 1, matched_steps: int | None = None) -> float:
        """Predicted wall time of ``cell`` (:func:`estimate_cell_seconds` with this plan's doer budget)."""
        return estimate_cell_seconds(
            cell,
            self.doer(cell.doer),
            threads,
            matched_steps,
            shared_first_call=self.shares_first_call(cell),
            spec=self.spec(cell.method),
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


#: Trainer settings that shape a restart, not the mentor's first request.
_RESTART_SETTINGS = ("catalyst_restart", "catalyst_blend_alphas", "catalyst_partial_tokens")


def _request(spec: MethodSpec) -> tuple:
    """What decides a method's first mentor request besides the seed: its init and the settings the request reads."""
    return spec.init, tuple((k, v) for k, v in spec.trainer if k not in _RESTART_SETTINGS)


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
        if plan.specs:
            races = [m for m in methods if plan.spec(m).selection == "race"]
            lines.append(
                "    expected gradient steps in all: "
                + ", ".join(f"{m} {v3_expected_total_steps(d, plan.spec(m)):.0f}" for m in races)
                + " (single-matched trains its run's actual count)"
            )
        elif any(plan.spec(m).selection == "race" for m in methods):
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
