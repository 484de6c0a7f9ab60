"""Benchmark v3 (issue 22): the SmolLM2 doer with label words, where the prompt's text matters, in the two regimes
where a restart rule can matter. Plans on top of the shared machinery (:mod:`peft_catalyst.app.compare`):

- ``v3-stall``: PEFT's RANDOM init and a short budget, where runs sometimes stall; Rotten Tomatoes, TREC-6 and SMS
  spam, 5 seeds each;
- ``v3-plateau``: the manual prompt's TEXT init trained long enough that plain prompt tuning flattens (its
  validation curve is recorded); Rotten Tomatoes and TREC-6, 3 seeds each.

Methods per cell, paired per seed (same split, init, head and data order), every round method with the same race
rule and random controls in every race, so that the pooled count of rounds where the mentor's best arm beat the
best random control is the primary statistic:

    catalyst          the LLM mentor with the mentor-evidence features: screening (catalyst_num_samples), evidence
                      (labelled examples and errors), an initial round at step 0, the label anchor; full restarts
    random            the same, with random-vocabulary candidates (RandomMentor)
    catalyst-blend    catalyst with blended restarts (incumbent + 0.5 (proposal - incumbent))
    catalyst-partial  catalyst with partial restarts (the proposal's tokens at half the positions)
    catalyst-race     v2's rule, for continuity: the race without screening, evidence, initial round or anchor
    single-matched    plain prompt tuning for as many gradient steps as the same seed's catalyst run counted
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.compare.methods import DoerPlan, MethodSpec
from benchmarks.compare.plans import FULL_PLAN, QUICK_PLAN, V2_PLAN, V2_QUICK_PLAN, Plan

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

#: Every plan by name (``--plan``), and its machinery check (``--quick``).
PLANS = {"full": FULL_PLAN, "v2": V2_PLAN, "v3-stall": V3_STALL_PLAN, "v3-plateau": V3_PLATEAU_PLAN}
QUICK_PLANS = {
    "full": QUICK_PLAN,
    "v2": V2_QUICK_PLAN,
    "v3-stall": V3_STALL_QUICK_PLAN,
    "v3-plateau": V3_PLATEAU_QUICK_PLAN,
}
