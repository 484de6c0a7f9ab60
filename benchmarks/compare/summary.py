"""The statistics of a grid: per cell and pooled paired differences, the headline contrasts of v2, per-method costs
(the arithmetic itself is :mod:`peft_catalyst.app.compare.stats`)."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.compare.methods import RANDOM_INIT_SUFFIX, SINGLE_METHODS, Cell, DoerPlan, MethodSpec
from benchmarks.compare.plans import Plan
from peft_catalyst.app.compare.stats import mean_std, paired_difference
from peft_catalyst.app.compare.summary import beat_random


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
                    **_rounds_summary(list(by_seed.values()), plan.spec(m)),
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
    if plan.version >= 3:
        summary["beat_random"] = beat_random_by_method(plan, results)
        summary["curves"] = validation_curves(plan, results)
    return summary


def beat_random_by_method(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per LLM round method, the rounds where the mentor's best prompt beat the best random control, pooled over
    every run and per task, at screening and in the race, with Wilson intervals (the primary statistic of v3)."""
    out: dict[str, Any] = {}
    for m in plan.methods:
        spec = plan.spec(m)
        if not spec.rounds or not spec.mentor.startswith("llm"):
            continue
        runs = [r for r in results.values() if r["method"] == m and "beat_random" in r]
        if runs:
            out[m] = {
                "pooled": beat_random(runs),
                "by_task": {t: beat_random([r for r in runs if r["task"] == t]) for t in plan.tasks},
            }
    return out


def validation_curves(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per task and method without rounds, the validation accuracy and loss at each evaluation, averaged over seeds:
    where plain prompt tuning flattens (plans with ``curve_points``).

    Points are paired by their index (the k-th evaluation of each run), not their step: a matched run's evaluation
    interval follows its own step count, so seeds evaluate at slightly different steps (22 vs 23) and grouping by
    step would average nothing. ``step`` is the mean step of the k-th evaluations; only the evaluations every run
    has are kept."""
    out: dict[str, Any] = {}
    for task in plan.tasks:
        for m in plan.methods:
            runs = [r for r in results.values() if r["task"] == task and r["method"] == m and r.get("curve")]
            common = min((len(r["curve"]) for r in runs), default=0)  # a run may log one evaluation more
            points: dict[int, list[dict[str, Any]]] = {}
            for r in runs:
                for k, point in enumerate(sorted(r["curve"], key=lambda p: p["step"])[:common]):
                    points.setdefault(k, []).append(point)
            if points:
                out.setdefault(task, {})[m] = [
                    {
                        "step": round(mean_std([p["step"] for p in ps])[0]),
                        "seeds": len(ps),
                        "accuracy": mean_std([p["accuracy"] for p in ps if p["accuracy"] is not None])[0],
                        "loss": mean_std([p["loss"] for p in ps if p["loss"] is not None])[0],
                    }
                    for _, ps in sorted(points.items())
                ]
    return out


def _cell_runs(plan: Plan, results: dict[str, dict[str, Any]], task: str, d: DoerPlan) -> dict[str, dict[int, Any]]:
    """The finished runs of one (task, doer) cell: method -> seed -> record."""
    return {
        m: {
            s: results[Cell(task, d.doer, m, s).key] for s in range(d.seeds) if Cell(task, d.doer, m, s).key in results
        }
        for m in plan.cell_methods(task, d.doer)
    }


def _better_single(methods_out: dict[str, Any]) -> str | None:
    """The single method with the higher mean test accuracy in a cell; in a cell without single-random /
    single-text (v3), its ``single-matched``; None without single runs."""
    singles = [m for m in SINGLE_METHODS if m in methods_out and methods_out[m]["accuracy"]]
    if not singles and methods_out.get("single-matched", {}).get("accuracy"):
        singles = ["single-matched"]
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
        for method, reference, what in plan.contrasts or HEADLINE_CONTRASTS:
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
            by_doer, by_task = {}, {}
            for d in plan.doers:
                dd = [p["difference"] for p in pairs if p["doer"] == d.doer]
                if dd:
                    by_doer[d.doer] = paired_difference(dd, [0.0] * len(dd)).to_dict()
            for task in plan.tasks:
                dt = [p["difference"] for p in pairs if p["task"] == task]
                if dt:
                    by_task[task] = paired_difference(dt, [0.0] * len(dt)).to_dict()
            group[f"{a_name} - {b_base}"] = {
                "what": what,
                "method": a_name,
                "reference": b_base,
                "pooled": paired_difference(diffs, [0.0] * len(diffs)).to_dict(),
                "by_doer": by_doer,
                "by_task": by_task,
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


def _rounds_summary(runs: list[dict[str, Any]], spec: MethodSpec) -> dict[str, Any]:
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
        if spec.rounds and spec.selection != "first"
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
