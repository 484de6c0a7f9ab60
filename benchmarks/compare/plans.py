"""The grids: :class:`Plan` (tasks x doers x methods x seeds), the committed plans (the first grid, v2, and v3's
methods and regimes), and the printed plan with its time estimate and the seeds that fit a wall budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from benchmarks.compare.costs import (
    estimate_cell_seconds,
    estimate_v4_seconds,
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

    def budget(self, cell: Cell) -> DoerPlan:
        """The budget of ``cell``: its doer's, with the overrides of its task (:meth:`DoerPlan.for_task`)."""
        return self.doer(cell.doer).for_task(cell.task)

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
        if self.version >= 4:
            spec = self.spec(cell.method)
            matched = self.spec(spec.matched_to) if spec.matched_to else None
            return estimate_v4_seconds(
                cell, self.budget(cell), spec, matched, threads, matched_steps, self.shares_first_call(cell)
            )
        return estimate_cell_seconds(
            cell,
            self.budget(cell),
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


#: Trainer settings that shape a restart or the later rounds, not the mentor's first request.
_RESTART_SETTINGS = ("catalyst_restart", "catalyst_blend_alphas", "catalyst_partial_tokens", "catalyst_rounds")


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


# -------------------------------------------------------------------------------------------------------------------
# Benchmark v3 (issue 22): the SmolLM2 doer with label words, where the prompt's text matters, in the two regimes
# where a restart rule can matter. Plans on top of the shared machinery (:mod:`peft_catalyst.app.compare`):
#
# - ``v3-stall``: PEFT's RANDOM init and a short budget, where runs sometimes stall; Rotten Tomatoes, TREC-6 and SMS
#   spam, 5 seeds each;
# - ``v3-plateau``: the manual prompt's TEXT init trained long enough that plain prompt tuning flattens (its
#   validation curve is recorded); Rotten Tomatoes and TREC-6, 3 seeds each.
#
# Methods per cell, paired per seed (same split, init, head and data order), every round method with the same race
# rule and random controls in every race, so that the pooled count of rounds where the mentor's best arm beat the
# best random control is the primary statistic:
#
#     catalyst          the LLM mentor with the mentor-evidence features: screening (catalyst_num_samples), evidence
#                       (labelled examples and errors), an initial round at step 0, the label anchor; full restarts
#     random            the same, with random-vocabulary candidates (RandomMentor)
#     catalyst-blend    catalyst with blended restarts (incumbent + 0.5 (proposal - incumbent))
#     catalyst-partial  catalyst with partial restarts (the proposal's tokens at half the positions)
#     catalyst-race     v2's rule, for continuity: the race without screening, evidence, initial round or anchor
#     single-matched    plain prompt tuning for as many gradient steps as the same seed's catalyst run counted
# -------------------------------------------------------------------------------------------------------------------

V3_METHODS = ("single-matched", "random", "catalyst", "catalyst-blend", "catalyst-partial", "catalyst-race")

#: The headline contrasts of v3: (method, reference, what it measures).
V3_CONTRASTS = (
    ("catalyst", "random", "the mentor's own value: the same rounds with random-vocabulary candidates"),
    ("catalyst", "single-matched", "the method at equal compute (stages + races)"),
    ("random", "single-matched", "the rounds without the mentor at equal compute: whether restarting itself pays"),
    ("catalyst-blend", "random", "blended restarts against random candidates in the default shape"),
    ("catalyst-partial", "random", "partial restarts against random candidates in the default shape"),
    ("catalyst-race", "random", "v2's race rule against random candidates with the mentor-evidence features"),
    ("catalyst", "catalyst-race", "what the mentor-evidence features add to v2's rule"),
)


def v3_specs(init: str, samples: int, controls: int) -> tuple[MethodSpec, ...]:
    """The v3 methods from the ``init`` start: prompts screened out of ``samples`` asked, ``controls`` random arms in
    every race. ``single-matched`` carries the settings of the run it matches (it has no rounds: they only tell the
    cost model what budget to expect)."""
    evidence = (("catalyst_mentor_examples", 3), ("catalyst_mentor_errors", 3))
    features: tuple[tuple[str, Any], ...] = (
        ("catalyst_num_samples", samples),
        *evidence,
        ("catalyst_initial_round", True),
        ("catalyst_label_anchor", True),
        ("catalyst_race_controls", controls),
    )
    v2_rule: tuple[tuple[str, Any], ...] = (
        ("catalyst_num_samples", None),
        ("catalyst_mentor_examples", 0),
        ("catalyst_mentor_errors", 0),
        ("catalyst_initial_round", False),
        ("catalyst_label_anchor", False),
        ("catalyst_race_controls", controls),
    )

    def race(name: str, mentor: str, trainer: tuple[tuple[str, Any], ...]) -> MethodSpec:
        return MethodSpec(name, name, init, mentor, "race", trainer=trainer)

    return (
        race("catalyst", "llm", features),
        race("random", "random", features),
        race("catalyst-blend", "llm", (*features, ("catalyst_restart", "blend"), ("catalyst_blend_alphas", (0.5,)))),
        race("catalyst-partial", "llm", (*features, ("catalyst_restart", "partial"))),
        race("catalyst-race", "llm", v2_rule),
        MethodSpec("single-matched", "single-matched", init, "none", None, matched_to="catalyst", trainer=features),
    )


def _smollm2(**kwargs: Any) -> DoerPlan:
    base: dict[str, Any] = dict(
        doer="smollm2",
        train_size=1000,
        num_candidates=2,
        trajectory_points=2,
        eval_batch_size=16,
        max_length=96,
        race_steps=1,
        race_eta=2,
        race_margin=0.0,
    )
    return DoerPlan(**{**base, **kwargs})


# Stall regime, sized for about 3 h of wall time on this project's 2-core machine at its slow end (2 workers x 1
# thread; --dry-run prints the estimate; v2 ran in 0.75 of its estimate): 3 tasks x 5 seeds x 6 methods. What was
# cut to get there: batch 4 and 24 steps (RANDOM init: runs stall in their first steps), the initial round and one
# round at step 12, 2 candidates raced of 3 prompts screened, 1 random control per race, a catalyst split of 8 (noisy
# screening and race decisions: the rounds' mentor-vs-random count pools many of them) and a test split of 100 (one
# run's accuracy ±4 points, a paired difference ±3; seeds vary more).
V3_STALL_SAMPLES, V3_STALL_CONTROLS = 3, 1
V3_STALL_PLAN = Plan(
    name="v3-stall",
    tasks=("rotten_tomatoes", "trec", "sms_spam"),
    doers=(_smollm2(seeds=5, max_steps=24, batch_size=4, rounds=1, stage_steps=12, catalyst_size=8, test_size=100),),
    methods=V3_METHODS,
    restart_init="random",
    version=3,
    wall_budget_s=3 * 3600,
    specs=v3_specs("random", V3_STALL_SAMPLES, V3_STALL_CONTROLS),
    contrasts=V3_CONTRASTS,
)

# Plateau regime: the TEXT init trained until single-matched's validation curve flattens (8 points on 100
# validation examples). On a GPU this is minutes; on 2 CPU cores one (task, seed) takes hours (--dry-run), so run it
# a task at a time (--tasks) and let each finished run land (--commit-each).
V3_PLATEAU_SAMPLES, V3_PLATEAU_CONTROLS = 4, 1
V3_PLATEAU_PLAN = Plan(
    name="v3-plateau",
    tasks=("rotten_tomatoes", "trec"),
    doers=(
        _smollm2(
            seeds=3,
            max_steps=160,
            batch_size=8,
            rounds=2,
            stage_steps=50,
            catalyst_size=16,
            test_size=200,
            validation_size=100,
            curve_points=8,
        ),
    ),
    methods=V3_METHODS,
    restart_init="text",
    version=3,
    specs=v3_specs("text", V3_PLATEAU_SAMPLES, V3_PLATEAU_CONTROLS),
    contrasts=V3_CONTRASTS,
)

#: Machinery checks (one task, one seed, a tiny budget): every v3 method runs, in minutes.
V3_STALL_QUICK_PLAN = dataclasses.replace(
    V3_STALL_PLAN,
    name="v3-stall-quick",
    tasks=("rotten_tomatoes",),
    doers=(
        dataclasses.replace(
            V3_STALL_PLAN.doers[0], seeds=1, max_steps=4, rounds=1, stage_steps=2, catalyst_size=6, test_size=16
        ),
    ),
    wall_budget_s=15 * 60,
)
V3_PLATEAU_QUICK_PLAN = dataclasses.replace(
    V3_PLATEAU_PLAN,
    name="v3-plateau-quick",
    tasks=("rotten_tomatoes",),
    doers=(
        dataclasses.replace(
            V3_PLATEAU_PLAN.doers[0],
            seeds=1,
            max_steps=6,
            batch_size=4,
            rounds=1,
            stage_steps=3,
            catalyst_size=6,
            test_size=16,
            validation_size=8,
            curve_points=2,
        ),
    ),
    wall_budget_s=15 * 60,
)

# -------------------------------------------------------------------------------------------------------------------
# Benchmark v4 (issue 34): against the prompt-tuning starts a user picks instead, at equal compute counted in
# forward-equivalent tokens. The SmolLM2 doer with label words; Rotten Tomatoes and TREC-6; 5 seeds, paired (same
# split, data order and, per init, the same prompt). SMS spam is left out: in v3's stall regime every method ended
# at the majority class in 4 of 5 seeds, so it separates no methods at these budgets.
#
#     peft-random           plain prompt tuning from PEFT's RANDOM init (PEFT's default)
#     peft-sample-vocab     plain prompt tuning from PEFT's SAMPLE_VOCAB init (random vocabulary embeddings)
#     peft-text             plain prompt tuning from the TEXT init of the task's manual prompt
#     screened-init         the step-0 round alone (every proposer of the recipe but the mentor), then plain tuning
#     screened-init-mentor  the same with the mentor as one proposer among them
#     catalyst              the whole method: the initial round and later rounds, with the recipe below
#     catalyst-no-mentor    the same without the mentor
#
# Every method of a (task, seed) gets the tuning compute (stages + races + screening, forward-equivalent tokens) of
# that seed's catalyst run: the plain and screened-init methods train the gradient steps that buy it
# (store.matched_steps), so they run after it; catalyst-no-mentor runs catalyst's schedule (its rounds cost about
# the same: as many prompts screened, the same halving; its record says what it spent). Every method keeps its best
# prompt by validation under the command's rule (label loss; step 0 included), evaluated on the same schedule.
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V4Recipe:
    """What "ours" is in benchmark v4, in one place: the proposer mix of every round (with the mentor), where the
    mentor's share goes without it, the start the rounds screen against (``current``), the selection rule and the
    other trainer settings of the rounds."""

    proposers: tuple[tuple[str, int], ...] = (
        ("mentor", 2),
        ("labels", 2),
        ("examples", 2),
        ("sample_vocab", 1),
        ("current", 1),
    )
    #: Without the mentor its prompts come from this proposer instead (label-anchored random words: v3's one gain,
    #: on Rotten Tomatoes at the plateau, was a screened, label-anchored start), so every round screens as many.
    mentor_to: str = "labels"
    #: The init our methods start from, screened as ``current`` at step 0: the manual prompt (``peft-text``'s start).
    init: str = "text"
    selection: str = "best"
    trainer: tuple[tuple[str, Any], ...] = (
        ("catalyst_screen_schedule", "halving"),
        ("catalyst_restart_loss_ratio", 1.0),
    )

    def mix(self, mentor: bool = True) -> str:
        """``catalyst_proposers`` as the command line writes it, with or without the mentor."""
        counts = dict(self.proposers)
        if not mentor:
            counts[self.mentor_to] = counts.get(self.mentor_to, 0) + counts.pop("mentor", 0)
        return ",".join(f"{name}={n}" for name, n in counts.items() if n)


#: The recipe of v4's own methods: change it here (one place) and the plan's runs follow (a changed recipe changes
#: the runs' stored settings, so finished runs are run again).
V4_RECIPE = V4Recipe()

#: The v4 methods in report order (the PEFT starts, then ours).
V4_PEFT_STARTS = ("peft-random", "peft-sample-vocab", "peft-text")
V4_OURS = ("screened-init", "screened-init-mentor", "catalyst", "catalyst-no-mentor")
V4_METHODS = V4_PEFT_STARTS + V4_OURS

#: The contrasts of v4: (method, reference, what it measures); "best-peft" is the best PEFT start of each task,
#: chosen on the validation accuracy of the kept prompts (never on test).
V4_CONTRASTS = (
    *((m, "best-peft", "against the best PEFT start of the task (chosen on validation)") for m in V4_OURS),
    ("screened-init-mentor", "screened-init", "the mentor's marginal value in the step-0 round"),
    ("catalyst", "catalyst-no-mentor", "the mentor's marginal value in the whole method"),
    *((m, "peft-text", "against v3's reference, plain tuning from the manual prompt") for m in V4_OURS),
)


def v4_specs(recipe: V4Recipe = V4_RECIPE) -> tuple[MethodSpec, ...]:
    """The v4 methods under ``recipe``."""
    rounds: tuple[tuple[str, Any], ...] = (("catalyst_initial_round", True), *recipe.trainer)

    def ours(name: str, mentor: bool, later_rounds: bool) -> MethodSpec:
        trainer = (("catalyst_proposers", recipe.mix(mentor)), *rounds)
        if later_rounds:
            return MethodSpec(name, name, recipe.init, "llm" if mentor else "none", recipe.selection, trainer=trainer)
        return MethodSpec(
            name,
            name,
            recipe.init,
            "llm" if mentor else "none",
            recipe.selection,
            matched_to="catalyst",
            match="compute",
            trainer=(*trainer, ("catalyst_rounds", 0)),
        )

    def plain(name: str, init: str) -> MethodSpec:
        return MethodSpec(name, name, init, "none", None, matched_to="catalyst", match="compute")

    return (
        plain("peft-random", "random"),
        plain("peft-sample-vocab", "vocab"),
        plain("peft-text", "text"),
        ours("screened-init", mentor=False, later_rounds=False),
        ours("screened-init-mentor", mentor=True, later_rounds=False),
        ours("catalyst", mentor=True, later_rounds=True),
        ours("catalyst-no-mentor", mentor=False, later_rounds=True),
    )


# Budgets: Rotten Tomatoes 160 steps at batch 8 (v3's plateau: plain tuning's validation accuracy flat over the last
# quarter, 83.3% at steps 136 and 181); TREC-6 had not flattened at 160 (+11.7 points over the last quarter), so it
# trains twice as long, 320 steps with rounds every 100. Catalyst split 100, validation 100, test 500 (the packaged
# test pool) and 2000 training rows (TREC-6 at 320+ steps of 8 would otherwise see each row 3 times). Every method
# is evaluated on validation every 25 (RT) / 50 (TREC-6) steps: the kept prompt's candidates and the curve that
# shows whether each task is flat.
V4_DOER = _smollm2(
    seeds=5,
    max_steps=160,
    batch_size=8,
    rounds=2,
    stage_steps=50,
    train_size=2000,
    catalyst_size=100,
    validation_size=100,
    test_size=500,
    race_steps=None,
    race_eta=None,
    race_margin=None,
    keep_best=True,
    keep_best_metric="label_loss",
    eval_every=25,
    task_overrides=(("trec", (("max_steps", 320), ("stage_steps", 100), ("eval_every", 50))),),
)
V4_PLAN = Plan(
    name="v4",
    tasks=("rotten_tomatoes", "trec"),
    doers=(V4_DOER,),
    methods=V4_METHODS,
    restart_init=V4_RECIPE.init,
    version=4,
    specs=v4_specs(),
    contrasts=V4_CONTRASTS,
)
#: Machinery check: one task, one seed, every v4 method on a tiny budget.
V4_QUICK_PLAN = dataclasses.replace(
    V4_PLAN,
    name="v4-quick",
    tasks=("rotten_tomatoes",),
    doers=(
        dataclasses.replace(
            V4_DOER,
            seeds=1,
            max_steps=6,
            batch_size=4,
            rounds=1,
            stage_steps=3,
            train_size=200,
            catalyst_size=16,
            validation_size=8,
            test_size=16,
            eval_every=3,
            task_overrides=(),
        ),
    ),
    wall_budget_s=20 * 60,
)

#: Every plan by name (``--plan``), and its machinery check (``--quick``).
PLANS = {
    "full": FULL_PLAN,
    "v2": V2_PLAN,
    "v3-stall": V3_STALL_PLAN,
    "v3-plateau": V3_PLATEAU_PLAN,
    "v4": V4_PLAN,
}
QUICK_PLANS = {
    "full": QUICK_PLAN,
    "v2": V2_QUICK_PLAN,
    "v3-stall": V3_STALL_QUICK_PLAN,
    "v3-plateau": V3_PLATEAU_QUICK_PLAN,
    "v4": V4_QUICK_PLAN,
}


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
    for d in plan.doers if plan.version < 4 else ():
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
    if plan.version >= 4:
        more, total, remaining = _v4_lines(plan, done, jobs, threads)
        lines += more
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


def _v4_lines(plan: Plan, done: set[str], jobs: int, threads: int) -> tuple[list[str], float, float]:
    """The v4 part of :func:`plan_lines`: the recipe, and per (doer, task) the budget, the expected steps and the
    estimated time; returns ``(lines, total_s, remaining_s)``."""
    from benchmarks.compare.costs import v4_expected_steps

    def setting(method: str, name: str) -> Any:
        return dict(plan.spec(method).trainer).get(name, "-") if method in plan.methods else "-"

    recipe = dict(plan.spec("catalyst").trainer) if "catalyst" in plan.methods else {}
    lines = [
        f"  ours: proposers {setting('catalyst', 'catalyst_proposers')} (without the mentor: "
        f"{setting('catalyst-no-mentor', 'catalyst_proposers')}); "
        + ", ".join(f"{k}={v}" for k, v in recipe.items() if k != "catalyst_proposers")
        + f"; selection {plan.spec('catalyst').selection if 'catalyst' in plan.methods else '-'}",
        "  equal compute: every method trains the steps that buy its seed's catalyst tuning compute (forward-"
        "equivalent tokens), so it runs after it",
    ]
    total = remaining = 0.0
    for d0 in plan.doers:
        for task in plan.tasks:
            d = d0.for_task(task)
            cells = [c for c in plan.cells() if c.doer == d.doer and c.task == task]
            seconds = {c.key: plan.estimate(c, threads) for c in cells}
            cell_total = _wall(sum(seconds.values()), jobs)
            cell_left = _wall(sum(v for k, v in seconds.items() if k not in done), jobs)
            total, remaining = total + cell_total, remaining + cell_left
            lines.append(
                f"  {d.doer} / {task}: {d.seeds} seed(s), {len(cells)} runs; {d.max_steps} steps at batch "
                f"{d.batch_size}, lr {d.learning_rate}, {d.num_virtual_tokens} virtual tokens; {d.rounds} later "
                f"round(s) every {d.stage_steps} steps; validation every {d.eval_every} steps, keep-best by "
                f"{d.keep_best_metric or 'accuracy'}; splits train {d.train_size} / catalyst {d.catalyst_size} / "
                f"validation {d.validation_size} / test {d.test_size}"
            )
            steps = {}
            for m in plan.methods:
                matched = plan.spec(m).matched_to
                steps[m] = v4_expected_steps(d, plan.spec(m), plan.spec(matched) if matched else None)
            lines.append("    expected main-loop steps: " + ", ".join(f"{m} {v:.0f}" for m, v in steps.items()))
            lines.append(
                "    est. per run: "
                + ", ".join(f"{m} {plan.estimate(Cell(task, d.doer, m, 0), threads):.0f} s" for m in plan.methods)
            )
            lines.append(f"    est. {cell_total / 60:.0f} min of wall time ({cell_left / 60:.0f} min left)")
            lines.append("    resolution: " + resolution_line(d.test_size))
    return lines, total, remaining
