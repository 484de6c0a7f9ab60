"""Benchmark v4's report (issue 34): ours against the best of PEFT's own starts at equal forward-equivalent compute.

From the finished runs of a v4 plan (:data:`benchmarks.compare.plans.V4_PLAN`): the best PEFT start of each task,
chosen on the validation accuracy of the kept prompts (never on test); the contrasts of
:data:`~benchmarks.compare.plans.V4_CONTRASTS` on test accuracy, paired over seeds (95% paired-t and bootstrap
intervals, wins/ties/losses) per task and pooled; the rounds won per proposer, rebuilt round by round from the run
records, with a cluster bootstrap over (task, seed); the compute each method spent (forward-equivalent tokens per
part, gradient steps, wall time); the splits the candidates were judged on; the validation curves that show whether
each task was flat; and a plot. Written as ``<plan>.json``, ``<plan>.md`` and ``<plan>.png``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.compare.formats import fmt_diff
from benchmarks.compare.methods import Cell
from benchmarks.compare.plans import V4_PEFT_STARTS, Plan
from benchmarks.compare.report import (
    _last_quarter,
    _setup_lines,
    evaluated_points,
    last_quarter_change,
    report_meta,
    write_outputs,
)
from benchmarks.compare.summary import validation_curves
from benchmarks.generated_block import replace_block
from peft_catalyst.app.compare.stats import cluster_bootstrap_ratio, mean_std, paired_difference

#: The reference that stands for the best PEFT start of each task in a contrast.
BEST_PEFT = "best-peft"
#: The phases a round is won in (``RoundRecord.wins``): the best screened prompt, and the prompt the round left.
PHASES = ("screening", "selection")

#: How the report's statistics are made, for its setup section.
STATISTICS = (
    "paired over seeds (the data split's seed is the run's seed, so each seed has its own train/catalyst/validation/"
    "test split shared by every method, and every method of a seed sees the same data order); the best PEFT start "
    "is chosen on the validation accuracy of the kept prompts, never on test; pooled intervals over every (task, "
    "seed) pair; bootstrap percentile intervals (10,000 resamples) beside the paired-t ones; proposer shares with a "
    "cluster bootstrap over (task, seed)."
)

METHOD_DEFINITIONS_V4 = [
    "`peft-random` / `peft-sample-vocab` / `peft-text`: plain prompt tuning from PEFT's RANDOM init, its SAMPLE_VOCAB "
    "init (random vocabulary embeddings), and the TEXT init of the task's manual prompt: the starts a user of PEFT "
    "picks instead. Each trains the gradient steps that buy its seed's `catalyst` tuning compute.",
    "`screened-init`: the step-0 round alone (`catalyst_initial_round` with no later round): the recipe's proposers "
    "without the mentor draw prompts, the manual prompt is screened beside them as `current`, successive halving "
    "keeps the best, then plain prompt tuning for the rest of `catalyst`'s compute.",
    "`screened-init-mentor`: the same with the mentor (the embedded SmolLM2) as one proposer among them.",
    "`catalyst`: the whole method: that initial round, then later rounds at every stage's end with the same "
    "proposers, successive-halving screening, `catalyst_selection='best'` and `catalyst_restart_loss_ratio=1.0`.",
    "`catalyst-no-mentor`: the same without the mentor (its prompts drawn by the recipe's `mentor_to` proposer).",
    "Every method keeps its best prompt by validation (the command's rule: label loss, step 0 included), evaluated on "
    "the same schedule, and is tested the same way. The best PEFT start of a task is the one with the highest mean "
    "validation accuracy of its kept prompts over seeds, never chosen on test.",
]


# ------------------------------------------------------------------------------------------------------ statistics


def _runs(plan: Plan, results: dict[str, dict[str, Any]], task: str, method: str) -> dict[int, dict[str, Any]]:
    """Seed -> finished run of ``method`` on ``task`` (every doer of the plan; v4 has one)."""
    out: dict[int, dict[str, Any]] = {}
    for d in plan.doers:
        for seed in range(d.seeds):
            key = Cell(task, d.doer, method, seed).key
            if key in results:
                out[seed] = results[key]
    return out


def best_peft_starts(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task, the PEFT start with the highest mean validation accuracy of its kept prompts (ties: the first of
    :data:`V4_PEFT_STARTS`), with every start's mean validation and test accuracy beside it; test never decides."""
    out: dict[str, dict[str, Any]] = {}
    for task in plan.tasks:
        validation, test = {}, {}
        for m in V4_PEFT_STARTS:
            runs = [r for r in _runs(plan, results, task, m).values() if r.get("kept_validation_accuracy") is not None]
            if runs:
                validation[m] = mean_std([r["kept_validation_accuracy"] for r in runs])[0]
                test[m] = mean_std([r["test_accuracy"] for r in runs])[0]
        if validation:
            best = max(validation, key=lambda m: (validation[m], -V4_PEFT_STARTS.index(m)))
            out[task] = {"method": best, "validation": validation, "test": test}
    return out


def contrasts(plan: Plan, results: dict[str, dict[str, Any]], best: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each contrast of the plan on test accuracy, paired over seeds: per task and pooled over tasks (mean, 95%
    paired-t and bootstrap intervals, wins/ties/losses), with every pair."""
    out: dict[str, Any] = {}
    for method, reference, what in plan.contrasts or ():
        pairs = []
        for task in plan.tasks:
            ref = best.get(task, {}).get("method") if reference == BEST_PEFT else reference
            if ref is None:
                continue
            a, b = _runs(plan, results, task, method), _runs(plan, results, task, ref)
            for s in sorted(set(a) & set(b)):
                difference = a[s]["test_accuracy"] - b[s]["test_accuracy"]
                pairs.append({"task": task, "seed": s, "reference": ref, "difference": difference})
        if not pairs:
            continue
        by_task = {}
        for task in plan.tasks:
            d = [p["difference"] for p in pairs if p["task"] == task]
            if d:
                by_task[task] = paired_difference(d, [0.0] * len(d)).to_dict()
        diffs = [p["difference"] for p in pairs]
        out[f"{method} - {reference}"] = {
            "what": what,
            "method": method,
            "reference": reference,
            "pooled": paired_difference(diffs, [0.0] * len(diffs)).to_dict(),
            "by_task": by_task,
            "pairs": pairs,
        }
    return out


def _where(round_: dict[str, Any]) -> str:
    """``initial`` for the step-0 round, ``later`` for the others."""
    return "initial" if round_.get("trigger") == "initial" or round_.get("step") == 0 else "later"


def proposer_wins(
    plan: Plan, results: dict[str, dict[str, Any]], methods: Sequence[str] | None = None, resamples: int = 10_000
) -> dict[str, Any]:
    """Rounds won per proposer, rebuilt round by round from the runs' round records (``wins``, ``proposers``): per
    method of ours and over all of them (``all``), at the initial round, the later rounds and both (``any``), per
    phase: wins, rounds where the phase happened, the share won with a 95% cluster-bootstrap interval over (task,
    seed) (rounds of one run, and methods that share a seed's cached mentor call, are not independent), and the
    proposer's share of the prompts drawn in those rounds (what it would win if every prompt were alike). ``all``
    pools the methods with later rounds (``catalyst``, ``catalyst-no-mentor``)."""
    methods = [m for m in (methods or plan.methods) if plan.spec(m).rounds]
    # "all": the runs whose rounds are their own; a screened-init run's round 0 repeats its whole-method twin's (same
    # seed, init, draws and cached mentor reply), so it would count that round twice
    pooled = [m for m in methods if plan.spec(m).matched_to is None] or methods
    out: dict[str, Any] = {}
    for name, group in [(m, [m]) for m in methods] + ([("all", pooled)] if len(pooled) > 1 else []):
        table: dict[str, Any] = {}
        for where in ("initial", "later", "any"):
            # cluster (task, seed) -> phase -> {"rounds": n, "wins": {p: n}, "drawn": {p: n}, "drawn_all": n}
            clusters: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
            for task in plan.tasks:
                for m in group:
                    for seed, run in _runs(plan, results, task, m).items():
                        for r in run.get("rounds") or []:
                            if where != "any" and _where(r) != where:
                                continue
                            for phase, winner in (r.get("wins") or {}).items():
                                c = clusters.setdefault((task, seed), {}).setdefault(
                                    phase, {"rounds": 0, "wins": {}, "drawn": {}, "drawn_all": 0}
                                )
                                c["rounds"] += 1
                                c["wins"][winner] = c["wins"].get(winner, 0) + 1
                                for p, n in (r.get("proposers") or {}).items():
                                    c["drawn"][p] = c["drawn"].get(p, 0) + n
                                    c["drawn_all"] += n
            phases: dict[str, Any] = {}
            for phase in PHASES:
                cells = [by_phase[phase] for by_phase in clusters.values() if phase in by_phase]
                rounds = sum(c["rounds"] for c in cells)
                if not rounds:
                    continue
                names = list(dict.fromkeys(p for c in cells for p in [*c["drawn"], *c["wins"]]))
                rows = {}
                for p in names:
                    wins = [c["wins"].get(p, 0) for c in cells]
                    drawn = sum(c["drawn"].get(p, 0) for c in cells)
                    low, high = cluster_bootstrap_ratio(wins, [c["rounds"] for c in cells], resamples=resamples)
                    rows[p] = {
                        "wins": sum(wins),
                        "rounds": rounds,
                        "share": sum(wins) / rounds,
                        "ci95": [low, high],
                        "drawn": drawn,
                        "draw_share": drawn / max(1, sum(c["drawn_all"] for c in cells)),
                    }
                phases[phase] = {"rounds": rounds, "clusters": len(cells), "proposers": rows}
            if phases:
                table[where] = phases
        if table:
            out[name] = table
    return out


def compute_per_method(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task and method, means over seeds: tuning compute (forward-equivalent tokens: stages, races, screening;
    and evaluation), its ratio to the same seed's ``catalyst`` run (mean, min, max), main-loop and total gradient
    steps, wall seconds."""
    out: dict[str, dict[str, Any]] = {}
    for task in plan.tasks:
        catalyst = _runs(plan, results, task, "catalyst")
        rows = {}
        for m in plan.methods:
            runs = _runs(plan, results, task, m)
            if not runs:
                continue
            computes = {s: r.get("compute") or {} for s, r in runs.items()}

            def mean(values: list[Any]) -> float | None:
                values = [v for v in values if v is not None]
                return sum(values) / len(values) if values else None

            ratios = [
                computes[s]["tuning"] / catalyst[s]["compute"]["tuning"]
                for s in runs
                if s in catalyst
                and computes[s].get("tuning") is not None
                and (catalyst[s].get("compute") or {}).get("tuning")
            ]
            rows[m] = {
                "runs": len(runs),
                **{
                    part: mean([c.get(part) for c in computes.values()])
                    for part in ("tuning", "stages", "races", "screening", "evaluation")
                },
                "tuning_vs_catalyst": {"mean": mean(ratios), "min": min(ratios), "max": max(ratios)}
                if ratios
                else None,
                "main_steps": mean([r["gradient_steps"]["stages"] for r in runs.values()]),
                "gradient_steps": mean([r["gradient_steps"]["total"] for r in runs.values()]),
                "wall_s": mean([r["seconds"]["total"] for r in runs.values()]),
                # the mentor's own generation is not the doer's compute: its calls and tokens apart
                "llm_calls": mean([(r.get("llm") or {}).get("calls", 0) for r in runs.values()]),
                "llm_tokens": mean(
                    [
                        (r.get("llm") or {}).get("prompt_tokens", 0) + (r.get("llm") or {}).get("completion_tokens", 0)
                        for r in runs.values()
                    ]
                ),
            }
        out[task] = rows
    return out


def accuracies(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task and method: test accuracy per seed, its mean and std, and the kept prompts' validation accuracy."""
    out: dict[str, dict[str, Any]] = {}
    for task in plan.tasks:
        rows = {}
        for m in plan.methods:
            runs = _runs(plan, results, task, m)
            if runs:
                test = [runs[s]["test_accuracy"] for s in sorted(runs)]
                validation = [
                    r["kept_validation_accuracy"]
                    for r in runs.values()
                    if r.get("kept_validation_accuracy") is not None
                ]
                mean, std = mean_std(test)
                rows[m] = {
                    "seeds": sorted(runs),
                    "test": test,
                    "mean": mean,
                    "std": std,
                    "validation_mean": mean_std(validation)[0] if validation else None,
                }
        out[task] = rows
    return out


def splits(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task: the split sizes, and the screening rungs (prompts x examples) the ``catalyst`` runs' rounds used."""
    out = {}
    for task in plan.tasks:
        for d in plan.doers:
            b = d.for_task(task)
            rungs: dict[str, int] = {}
            for run in _runs(plan, results, task, "catalyst").values():
                for r in run.get("rounds") or []:
                    screening = r.get("screening") or {}
                    shape = " ".join(f"{x['candidates']}x{x['examples']}" for x in screening.get("rungs") or [])
                    if shape:
                        rungs[shape] = rungs.get(shape, 0) + 1
            out[task] = {
                "train": b.train_size,
                "catalyst": b.catalyst_size,
                "validation": b.validation_size,
                "test": b.test_size,
                "screening_rungs": rungs,
            }
    return out


def summarize_v4(plan: Plan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every statistic of the v4 report."""
    best = best_peft_starts(plan, results)
    return {
        "best_peft": best,
        "contrasts": contrasts(plan, results, best),
        "accuracy": accuracies(plan, results),
        "proposer_wins": proposer_wins(plan, results),
        "compute": compute_per_method(plan, results),
        "splits": splits(plan, results),
        "curves": validation_curves(plan, results),
    }


# -------------------------------------------------------------------------------------------------------- markdown


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def _tokens(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def _boot(diff: dict[str, Any] | None) -> str:
    if not diff:
        return "-"
    low, high = diff["bootstrap_ci"]
    return "-" if low is None or not math.isfinite(low) else f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def markdown_v4(plan: Plan, summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The v4 report as Markdown."""
    tasks = plan.tasks
    lines = [f"# Benchmark {plan.name} (issue 34): ours against the best PEFT start at equal compute", ""]
    if meta.get("missing_runs"):
        planned = meta["timing"]["planned_runs"]
        lines += [
            f"**Incomplete grid: {planned - len(meta['missing_runs'])} of {planned} planned runs finished.** Rerun "
            "the same command to finish it (finished runs are kept).",
            "",
        ]
    best = summary["best_peft"]
    lines += [
        "## Headline",
        "",
        "Test accuracy differences in points, paired over seeds (same split and data order): mean [95% paired-t "
        "interval] (wins/ties/losses), per task and pooled over tasks; bootstrap intervals of the pooled mean beside "
        "them. `best-peft`: the best PEFT start of each task by the validation accuracy of its kept prompts ("
        + ", ".join(f"{t}: `{best[t]['method']}`" for t in tasks if t in best)
        + ").",
        "",
        "| contrast | " + " | ".join(tasks) + " | pooled | pooled bootstrap |",
        "|---|" + "---|" * (len(tasks) + 2),
    ]
    for name, c in summary["contrasts"].items():
        cells = [fmt_diff(c["by_task"].get(t)) for t in tasks]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {fmt_diff(c['pooled'])} | {_boot(c['pooled'])} |")
    lines += ["", *[f"- `{a} - {b}`: {what}." for a, b, what in plan.contrasts or ()]]
    lines += [
        "",
        "## Accuracy per method",
        "",
        "Test accuracy % (mean ± std over seeds) and the kept prompts' validation accuracy % (mean), per task.",
        "",
        "| method | " + " | ".join(f"{t} test | {t} validation" for t in tasks) + " |",
        "|---|" + "---|---|" * len(tasks),
    ]
    for m in plan.methods:
        cells = []
        for t in tasks:
            r = summary["accuracy"].get(t, {}).get(m)
            if r is None:
                cells += ["-", "-"]
                continue
            std = f" ± {100 * r['std']:.1f}" if r["std"] is not None and math.isfinite(r["std"]) else ""
            cells += [f"{_pct(r['mean'])}{std} (n={len(r['test'])})", _pct(r["validation_mean"])]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## Rounds won per proposer", "", *_proposer_lines(summary["proposer_wins"])]
    lines += [
        "",
        "## Compute per method",
        "",
        "Means per run: tuning compute in forward-equivalent tokens (a training token 3, a scored token 1: stages + "
        "races + screening), its ratio to the same seed's `catalyst` run (mean, min-max), evaluation (validation and "
        "keep-best) apart, main-loop and total gradient steps, wall seconds, and the mentor's calls and tokens (its "
        "own generation, not counted in the doer's compute; the embedded mentor shares the doer's weights).",
        "",
        "| task | method | runs | tuning | stages | screening | races | vs catalyst | evaluation | main steps | "
        "gradient steps | wall s | LLM calls | LLM tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t, rows in summary["compute"].items():
        for m, r in rows.items():
            ratio = r["tuning_vs_catalyst"]
            ratio_s = f"{ratio['mean']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f})" if ratio else "-"
            lines.append(
                f"| {t} | {m} | {r['runs']} | {_tokens(r['tuning'])} | {_tokens(r['stages'])} | "
                f"{_tokens(r['screening'])} | {_tokens(r['races'])} | {ratio_s} | {_tokens(r['evaluation'])} | "
                f"{r['main_steps']:.0f} | {r['gradient_steps']:.0f} | {r['wall_s']:.0f} | {r['llm_calls']:.1f} | "
                f"{r['llm_tokens']:.0f} |"
            )
    lines += ["", "## Splits", ""]
    for t, s in summary["splits"].items():
        rungs = (
            ", ".join(f"{shape} ({n} round{'' if n == 1 else 's'})" for shape, n in s["screening_rungs"].items())
            or "-"
        )
        lines.append(
            f"- {t}: train {s['train']}, catalyst {s['catalyst']} (every candidate is judged on it), validation "
            f"{s['validation']} (keep-best, the best PEFT start), test {s['test']}; `catalyst`'s screening rungs "
            f"(prompts x examples): {rungs}"
        )
    curves = summary.get("curves") or {}
    if curves:
        lines += [
            "",
            "## Validation curves: flat or not",
            "",
            "Validation accuracy % (and label loss) at each evaluation, mean over seeds (step: accuracy (loss)), with "
            "the change over the last quarter of training (last evaluation minus the one at about three quarters of "
            "the steps), for the plain methods and the screened starts; one validation example is "
            + ", ".join(
                f"{100 / s['validation']:.1f} points on {t}" for t, s in summary["splits"].items() if s["validation"]
            )
            + ".",
            "",
        ]
        for task, by_method in curves.items():
            for m, points in by_method.items():
                if plan.spec(m).rounds and plan.spec(m).matched_to is None:
                    continue  # the plain and screened starts: where tuning alone flattens or not
                shown = evaluated_points(points)
                if not shown:
                    continue
                row = ", ".join(f"{p['step']}: {100 * p['accuracy']:.1f} ({p['loss']:.3f})" for p in shown)
                seeds = max(p["seeds"] for p in shown)
                lines.append(f"- {task} / {m} ({seeds} seed{'s' * (seeds != 1)}): {row}; {_last_quarter(shown)}")
    lines += ["", "## Methods", "", *[f"- {line}" for line in METHOD_DEFINITIONS_V4], ""]
    lines += _setup_lines(meta, STATISTICS)
    return "\n".join(lines) + "\n"


#: The lines around the README's v4 headline; tests/test_benchmark_v4.py holds what sits between them to
#: :func:`readme_headline_v4` of the committed runs.
README_BEGIN = (
    "<!-- benchmark v4 headline: generated by benchmarks.compare.report_v4.readme_headline_v4 from the committed "
    "runs (tests/test_benchmark_v4.py checks it) -->"
)
README_END = "<!-- end of the benchmark v4 headline -->"


def readme_headline_v4(plan: Plan, summary: dict[str, Any], source: str = "benchmarks/results/compare/v4.md") -> str:
    """The README's benchmark headline, from a v4 summary: the setup in a sentence, test accuracy per method and task
    with ours minus the best PEFT start (pooled), the steps and wall time each method's compute bought, the mentor's
    marginal value and how flat plain tuning was; ``source`` names the file its figures come from."""
    tasks = [t for t in plan.tasks if summary["accuracy"].get(t)]
    best, contrast = summary["best_peft"], summary["contrasts"]
    counts = sorted({len(r["test"]) for t in tasks for r in summary["accuracy"][t].values()})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}" if counts else "no"
    s0 = summary["splits"][tasks[0]] if tasks else {}
    per = " / ".join(tasks)
    lines = [
        f"**Benchmark v4** (`{source}`): SmolLM2-135M-Instruct with label words, {seeds} "
        "seeds per task, each method of a seed on the same split and data order and given the same tuning compute "
        f"in forward-equivalent tokens (plain tuning gets the screening's share as extra steps), with the same "
        f"keep-best rule (validation label loss); splits train {s0.get('train')} / catalyst {s0.get('catalyst')} / "
        f"validation {s0.get('validation')} / test {s0.get('test')}. Test accuracy %, mean over seeds, and each of "
        "ours minus the best PEFT start of its task (chosen on validation, never test: "
        + ", ".join(f"{t} `{best[t]['method']}`" for t in tasks if t in best)
        + "), pooled over tasks and seeds: mean [95% paired-t interval] (wins/ties/losses).",
        "",
        f"| method | {' | '.join(tasks)} | minus the best PEFT start | tuning compute, forward-equivalent tokens "
        f"({per}) | gradient steps ({per}) | wall min per run ({per}) |",
        "|---|" + "---|" * (len(tasks) + 4),
    ]
    for m in plan.methods:
        acc = [_pct((summary["accuracy"][t].get(m) or {}).get("mean")) for t in tasks]
        rows = [summary["compute"].get(t, {}).get(m) for t in tasks]
        tuning = " / ".join("-" if r is None else _tokens(r["tuning"]) for r in rows)
        steps = " / ".join("-" if r is None else f"{r['gradient_steps']:.0f}" for r in rows)
        wall = " / ".join("-" if r is None else f"{r['wall_s'] / 60:.0f}" for r in rows)
        diff = contrast.get(f"{m} - {BEST_PEFT}")
        lines.append(
            f"| `{m}` | {' | '.join(acc)} | {fmt_diff(diff['pooled']) if diff else ''} | {tuning} | {steps} | {wall} |"
        )
    ours = [f"{a} - {b}" for a, b, _ in plan.contrasts or () if b != BEST_PEFT and b not in V4_PEFT_STARTS]
    flat = []
    for t in tasks:
        points = evaluated_points((summary.get("curves") or {}).get(t, {}).get(best.get(t, {}).get("method"), []))
        change = last_quarter_change(points)
        if change is not None:
            flat.append(f"{t} (`{best[t]['method']}`, steps {change[0]}-{change[1]}) {change[2]:+.1f} points")
    lines += [
        "",
        "Among ours (the mentor's marginal value), pooled: "
        + "; ".join(f"`{name}` {fmt_diff(contrast[name]['pooled'])}" for name in ours if name in contrast)
        + ". Plain tuning's validation accuracy over the last quarter of its steps: "
        + ("; ".join(flat) or "-")
        + f" (the validation curves: `{Path(source).with_suffix('.png').as_posix()}`).",
    ]
    return "\n".join(lines)


def write_readme_headline(plan: Plan, results: dict[str, dict[str, Any]], readme: Path) -> None:
    """Put :func:`readme_headline_v4` of ``results`` between the README's headline markers (``--readme``)."""
    page = readme.read_text(encoding="utf-8")
    body = readme_headline_v4(plan, summarize_v4(plan, results))
    readme.write_text(replace_block(page, README_BEGIN, README_END, body, str(readme)), encoding="utf-8")


def _proposer_lines(wins: dict[str, Any]) -> list[str]:
    """The table of rounds won per proposer: a row per method, rounds (initial, later) and phase, a column per
    proposer (the table over both kinds of round is in the JSON, ``any``)."""
    names = list(
        dict.fromkeys(
            p
            for table in wins.values()
            for where, phases in table.items()
            for entry in phases.values()
            for p in entry["proposers"]
        )
    )
    lines = [
        "Rebuilt round by round from the runs' round records. Per method (and `all`: `catalyst` and "
        "`catalyst-no-mentor` together; a screened-init run's round 0 repeats theirs), kind of round "
        "and phase (`screening`: the best screened prompt; `selection`: the prompt the round left in place, "
        "`current` when it kept the incumbent): the rounds won by each proposer, their share [95% cluster-bootstrap "
        "interval over (task, seed): rounds of one run and methods that share a seed's mentor call are not "
        "independent], and in brackets the proposer's share of the prompts drawn in those rounds (what it would win "
        "if all prompts were alike).",
        "",
        "| method | rounds | phase | n | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for m, table in wins.items():
        for where in ("initial", "later"):
            for phase, entry in table.get(where, {}).items():
                cells = []
                for p in names:
                    row = entry["proposers"].get(p)
                    if row is None:
                        cells.append("-")
                        continue
                    low, high = row["ci95"]
                    ci = f" [{100 * low:.0f}, {100 * high:.0f}]" if low is not None and math.isfinite(low) else ""
                    cells.append(f"{row['wins']} = {100 * row['share']:.0f}%{ci} ({100 * row['draw_share']:.0f}%)")
                lines.append(f"| {m} | {where} | {phase} | {entry['rounds']} | " + " | ".join(cells) + " |")
    return lines


# ------------------------------------------------------------------------------------------------------------ plot


def plot_v4(plan: Plan, summary: dict[str, Any], path: Path) -> None:
    """Top row: one panel per task (test accuracy per method: seeds as dots, mean ± std) and one of the pooled
    contrasts (mean with its 95% paired-t interval). Bottom row: per task the validation curves of the plain and
    screened starts (flat or not), and each method's tuning compute relative to its seed's ``catalyst`` run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in plan.tasks if summary["accuracy"].get(t)]
    if not tasks:
        return
    fig, axes = plt.subplots(2, len(tasks) + 1, figsize=(4.6 * (len(tasks) + 1), 9.0), squeeze=False)
    for j, task in enumerate(tasks):
        ax, rows = axes[0][j], summary["accuracy"][task]
        methods = [m for m in plan.methods if m in rows]
        for i, m in enumerate(methods):
            r = rows[m]
            color = "tab:blue" if m in V4_PEFT_STARTS else "tab:red"
            ax.scatter([i] * len(r["test"]), [100 * a for a in r["test"]], s=12, color=color, alpha=0.6)
            std = r["std"] if r["std"] is not None and math.isfinite(r["std"]) else 0.0
            ax.errorbar(i, 100 * r["mean"], yerr=100 * std, fmt="_", color="black", capsize=4, markersize=14)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{task}: test accuracy (%)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax = axes[1][j]
        for m, points in (summary.get("curves") or {}).get(task, {}).items():
            if plan.spec(m).rounds and plan.spec(m).matched_to is None:
                continue
            shown = evaluated_points(points)
            if shown:
                ax.plot([p["step"] for p in shown], [100 * p["accuracy"] for p in shown], marker=".", label=m)
        ax.set_title(f"{task}: validation accuracy (%), mean over seeds", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    ax = axes[0][-1]
    names = list(summary["contrasts"])
    for i, name in enumerate(names):
        pooled = summary["contrasts"][name]["pooled"]
        low, high = pooled["t_ci"]
        if low is not None and math.isfinite(low):
            err = [[100 * (pooled["mean"] - low)], [100 * (high - pooled["mean"])]]
            ax.errorbar(100 * pooled["mean"], i, xerr=err, fmt="o", color="tab:red", capsize=4)
        else:
            ax.plot(100 * pooled["mean"], i, "o", color="tab:red")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Δ test accuracy, pooled (points, 95% CI)")
    ax.grid(axis="x", alpha=0.3)
    ax = axes[1][-1]
    for k, task in enumerate(tasks):
        rows = summary["compute"].get(task, {})
        ratios = [(i, rows[m]["tuning_vs_catalyst"]) for i, m in enumerate(plan.methods) if rows.get(m)]
        for i, ratio in ratios:
            if ratio:
                err = [[ratio["mean"] - ratio["min"]], [ratio["max"] - ratio["mean"]]]
                ax.errorbar(
                    i + 0.15 * k,
                    ratio["mean"],
                    yerr=err,
                    fmt="o",
                    color=f"C{k}",
                    capsize=3,
                    label=task if i == ratios[0][0] else None,
                )
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(plan.methods)))
    ax.set_xticklabels(plan.methods, rotation=40, ha="right", fontsize=8)
    ax.set_title("tuning compute / its seed's catalyst run (min-max)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report_v4(
    plan: Plan,
    results: dict[str, dict[str, Any]],
    out_dir: Path,
    argv: Sequence[str],
    jobs: int = 1,
    threads: int = 1,
    elapsed_s: float | None = None,
) -> dict[str, Path]:
    """Write ``<plan>.json``, ``<plan>.md`` and ``<plan>.png`` into ``out_dir``; returns their paths."""
    summary = summarize_v4(plan, results)
    meta = report_meta(plan, results, argv, jobs, threads, elapsed_s)
    return write_outputs(
        out_dir,
        plan.name,
        {
            "benchmark": "compare",
            "bench_version": plan.version,
            **meta,
            "plan": {
                "name": plan.name,
                "tasks": plan.tasks,
                "methods": plan.methods,
                "version": plan.version,
                "doers": [asdict(d) for d in plan.doers],
                "methods_settings": [asdict(plan.spec(m)) for m in plan.methods],
            },
            "method_definitions": METHOD_DEFINITIONS_V4,
            "summary": summary,
            "runs": [
                {
                    k: r.get(k)
                    for k in (
                        "task",
                        "doer",
                        "method",
                        "seed",
                        "test_accuracy",
                        "kept_validation_accuracy",
                        "gradient_steps",
                        "compute",
                        "seconds",
                        "prompts",
                    )
                }
                for r in results.values()
            ],
        },
        markdown_v4(plan, summary, meta),
        lambda png: plot_v4(plan, summary, png),
    )
