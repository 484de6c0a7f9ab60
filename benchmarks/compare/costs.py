"""The cost model of a run: predicted wall time from calibrated per-step, per-example and per-call figures, the
expected shape of a race, and what a test split resolves."""

from __future__ import annotations

import math

from benchmarks.compare.methods import Cell, DoerPlan, MethodSpec, method_spec

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


def c_call(doer: str) -> float:
    """Seconds of one mentor call beside ``doer`` (:data:`COSTS`)."""
    return COSTS.get(doer, COSTS["minilm"]).get("mentor_call_s", MENTOR_CALL_S)


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
    first-rung budget of ``steps`` (as ``rounds.race``: every rung scores its arms, the best 1/eta go on)."""
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
    spec: MethodSpec | None = None,
) -> float:
    """Predicted wall time of one run with ``threads`` torch threads from :data:`COSTS` (load, gradient steps,
    scoring, race steps, mentor calls, test evaluation), on this machine type's slow end.

    ``matched_steps``: single-matched's step count when known (else the expected one of catalyst-race);
    ``shared_first_call``: the first mentor call is a cache hit (:meth:`Plan.shares_first_call`); ``spec``: the
    method's settings (default: the shared table's, :func:`method_spec`)."""
    spec = spec or method_spec(cell.method)
    if spec.trainer:
        seconds = _estimate_v3(cell, dplan, spec, threads, matched_steps)
        if shared_first_call and spec.mentor.startswith("llm"):
            seconds -= c_call(cell.doer) * EVIDENCE_CALL_FACTOR / thread_speedup(threads)
        return seconds
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


#: Plans from v3 on (benchmarks/results/mentor_yield_screen_n4.json, SmolLM2 mentor, N=4, one thread): a mentor call
#: with evidence took 10.0 s against 8.5 s without; 2.6 of 4 prompts asked were usable.
EVIDENCE_CALL_FACTOR = 10.0 / 8.5
USABLE_RATE = 2.6 / 4


def v3_round(dplan: DoerPlan, spec: MethodSpec, initial: bool = False) -> dict[str, float]:
    """Expected cost of one round of a method with trainer settings (plans from v3 on): ``scorings`` (untrained
    catalyst-split passes: trajectory, screening of the mentor's prompts and of the random controls, race rungs),
    ``race_steps`` (gradient steps of all arms) and ``mentor_calls`` (0 for random candidates)."""
    t = dict(spec.trainer)
    asked = t.get("catalyst_num_samples") or dplan.num_candidates
    usable = asked * (USABLE_RATE if spec.mentor.startswith("llm") else 1.0)
    controls = t.get("catalyst_race_controls", 0) if spec.selection == "race" else 0
    scorings = 0.0 if initial else float(min(dplan.trajectory_points, dplan.stage_steps))
    if asked > dplan.num_candidates:  # screening: every usable prompt, and as many random controls
        scorings += usable + (max(asked, controls) if controls else 0)
    kept = min(dplan.num_candidates, usable)
    alphas = t.get("catalyst_blend_alphas", (0.3, 0.6))
    shapes = len(alphas) if t.get("catalyst_restart") == "blend" else 1
    race_steps = 0.0
    if spec.selection == "race":
        # kept is fractional: interpolate the race between its neighbouring whole arm counts
        low = math.floor(kept)
        shape_low = race_shape(1 + (low + controls) * shapes, dplan.race_steps or 0, dplan.race_eta or 2)
        shape_high = race_shape(1 + (low + 1 + controls) * shapes, dplan.race_steps or 0, dplan.race_eta or 2)
        frac = kept - low
        race_steps = shape_low[0] + frac * (shape_high[0] - shape_low[0])
        scorings += shape_low[1] + frac * (shape_high[1] - shape_low[1])
    else:
        scorings += 1 + kept * shapes
    calls = 1.0 if spec.mentor.startswith("llm") else 0.0
    return {"scorings": scorings, "race_steps": race_steps, "mentor_calls": calls}


def v3_expected_total_steps(dplan: DoerPlan, spec: MethodSpec) -> float:
    """Expected gradient steps in all (stages + races) of a round method with trainer settings: what a matched
    single trains before its catalyst run has finished."""
    t = dict(spec.trainer)
    races = dplan.rounds * v3_round(dplan, spec)["race_steps"]
    if t.get("catalyst_initial_round"):
        races += v3_round(dplan, spec, initial=True)["race_steps"]
    return dplan.max_steps + races


def _estimate_v3(
    cell: Cell, dplan: DoerPlan, spec: MethodSpec, threads: int, matched_steps: int | None
) -> float:
    """:func:`estimate_cell_seconds` for a method with trainer settings: screening, random controls in the race,
    restart shapes, an initial round, evidence in the mentor's request, and a validation curve."""
    c = COSTS.get(cell.doer, COSTS["minilm"])
    scale = TASK_SCALE.get(cell.task, 1.0)
    step = c["step_per_example"] * dplan.batch_size * scale
    forward = c["forward_per_example"] * scale
    t = dict(spec.trainer)
    seconds = c["load"] + forward * dplan.test_size
    if not spec.rounds:  # single: the matched method's settings tell its expected budget
        round_spec = MethodSpec(spec.name, spec.base, spec.init, "llm", "race", trainer=spec.trainer)
        steps = matched_steps if matched_steps is not None else v3_expected_total_steps(dplan, round_spec)
        seconds += steps * step
        if dplan.curve_points:
            seconds += dplan.curve_points * forward * (dplan.validation_size or 300)
        return seconds / thread_speedup(threads)
    call = c.get("mentor_call_s", MENTOR_CALL_S)
    if t.get("catalyst_mentor_examples", 3) or t.get("catalyst_mentor_errors", 3):
        call *= EVIDENCE_CALL_FACTOR
    rounds = [v3_round(dplan, spec)] * dplan.rounds
    if t.get("catalyst_initial_round"):
        rounds.append(v3_round(dplan, spec, initial=True))
    seconds += dplan.max_steps * step
    for r in rounds:
        seconds += r["race_steps"] * step + r["scorings"] * forward * dplan.catalyst_size + r["mentor_calls"] * call
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


# Plans from v4 on: rounds that draw from catalyst_proposers and screen by successive halving, selection "best", every
# method evaluated on validation every ``eval_every`` steps, plain methods matched by forward-equivalent compute.


def v4_round_rows(dplan: DoerPlan, spec: MethodSpec, initial: bool = False) -> float:
    """Expected catalyst-split rows (examples x prompts) one round of a v4 method scores: its proposers' prompts
    screened (``halving`` or ``full``; the mentor's at :data:`USABLE_RATE`), the winner and the incumbent on the
    whole split, and in a later round the trajectory points."""
    from peft_catalyst.rounds.screening import halving_rungs

    t = dict(spec.trainer)
    counts = _proposer_counts(t.get("catalyst_proposers"))
    prompts = sum(n * (USABLE_RATE if name == "mentor" else 1.0) for name, n in counts.items()) or dplan.num_candidates
    split = dplan.catalyst_size
    if t.get("catalyst_screen_schedule") == "halving" and prompts > 1:
        rows = float(sum(n * size for n, size in halving_rungs(round(prompts), 1, split, 16)))
    else:
        rows = prompts * split
    rows += split  # the incumbent, scored beside the winner
    if not initial:
        rows += min(dplan.trajectory_points, dplan.stage_steps) * split
    return rows


def _proposer_counts(value: object) -> dict[str, int]:
    """``catalyst_proposers`` as name -> count (``"mentor=2,labels=2"`` or a dict; {} for None)."""
    if isinstance(value, dict):
        return {str(k): int(v) for k, v in value.items()}
    if not value:
        return {}
    return {name.strip(): int(n) for name, n in (part.split("=") for part in str(value).split(","))}


def v4_expected_steps(dplan: DoerPlan, spec: MethodSpec, matched: MethodSpec | None = None) -> float:
    """Expected main-loop steps of a v4 method: the plan's for a round method; for one matched by compute, the steps
    that buy its matched run's expected tuning compute (a catalyst-split row costs about a third of a training row,
    rows of the two splits taken as alike in length), less its own initial round's when it has one."""
    if matched is None:
        return float(dplan.max_steps)
    t = dict(matched.trainer)
    rounds = t.get("catalyst_rounds", dplan.rounds)
    rows = rounds * v4_round_rows(dplan, matched) + v4_round_rows(dplan, matched, initial=True)
    if dict(spec.trainer).get("catalyst_initial_round"):
        rows -= v4_round_rows(dplan, spec, initial=True)
    return dplan.max_steps + rows / (3 * dplan.batch_size)


def estimate_v4_seconds(
    cell: Cell,
    dplan: DoerPlan,
    spec: MethodSpec,
    matched: MethodSpec | None = None,
    threads: int = 1,
    matched_steps: int | None = None,
    shared_first_call: bool = False,
) -> float:
    """Predicted wall time of a v4 run from :data:`COSTS`: load, main-loop steps (a matched method's actual count
    when known, else :func:`v4_expected_steps`), the rounds' scoring and mentor calls, the validation evaluations and
    the test evaluation."""
    c = COSTS.get(cell.doer, COSTS["minilm"])
    scale = TASK_SCALE.get(cell.task, 1.0)
    step = c["step_per_example"] * dplan.batch_size * scale
    forward = c["forward_per_example"] * scale
    steps = matched_steps if matched_steps is not None else v4_expected_steps(dplan, spec, matched)
    seconds = c["load"] + forward * dplan.test_size + steps * step
    if dplan.eval_every:
        seconds += (steps // dplan.eval_every + 2) * forward * (dplan.validation_size or 300)
    if spec.rounds:
        t = dict(spec.trainer)
        later = t.get("catalyst_rounds", dplan.rounds)
        rows = later * v4_round_rows(dplan, spec)
        calls = 0.0
        if t.get("catalyst_initial_round"):
            rows += v4_round_rows(dplan, spec, initial=True)
            calls += 1
        seconds += rows * forward
        if spec.mentor.startswith("llm"):
            calls += later
            calls -= 1 if shared_first_call else 0
            seconds += calls * c.get("mentor_call_s", MENTOR_CALL_S) * EVIDENCE_CALL_FACTOR
    return seconds / thread_speedup(threads)
