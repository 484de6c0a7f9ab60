"""The report of a grid: ``<plan>.json``, ``<plan>.md`` and ``<plan>.png`` from its finished runs, with the exact
command, package versions and machine."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.compare.formats import fmt_count, fmt_diff
from benchmarks.compare.methods import BENCH_VERSION, SINGLE_METHODS
from benchmarks.compare.plans import Plan, plan_lines
from benchmarks.compare.summary import HEADLINE_CONTRASTS, _gradient_steps, summarize

logger = logging.getLogger(__name__)


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


def _row_start(cell: dict[str, Any], method: str, stats: dict[str, Any]) -> tuple[str, str, str]:
    """A per-cell table row's method name (bold for the cell's better single), rounds kept and Δ vs best single."""
    reference = method == cell["best_single"]
    kept = stats["current_beat_all"]
    kept_s = f"{kept['kept']}/{kept['scored_rounds']}" if kept else "-"
    return f"**{method}**" if reference else method, kept_s, fmt_diff(stats.get("vs_best_single"), reference)


def _fmt_ci(diff: dict[str, Any]) -> str:
    low, high = diff["t_ci"]
    ci = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and math.isfinite(low) else ""
    return f"{100 * diff['mean']:+.1f}{ci}"


# What a v3 report adds to v2's (:func:`markdown_v2`): the contrasts per task, the pooled mentor-vs-random count
# (the primary statistic) per method and task, and the validation curve of plain prompt tuning.


def evaluated_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points of a validation curve that have a finite accuracy (what the curves' text and plots show)."""
    return [p for p in points if p["accuracy"] is not None and math.isfinite(p["accuracy"])]


def last_quarter_change(points: list[dict[str, Any]]) -> tuple[int, int, float] | None:
    """``(first step, last step, points gained)``: the accuracy change from the evaluation at about three quarters of
    the steps to the last one (None: fewer than two evaluations)."""
    if len(points) < 2:
        return None
    start = points[min(len(points) - 2, round(0.75 * (len(points) - 1)))]
    return start["step"], points[-1]["step"], 100 * (points[-1]["accuracy"] - start["accuracy"])


def _last_quarter(points: list[dict[str, Any]]) -> str:
    """:func:`last_quarter_change` as text."""
    change = last_quarter_change(points)
    if change is None:
        return "last quarter: -"
    return f"last quarter (steps {change[0]}-{change[1]}): {change[2]:+.1f} points"


def v3_lines(plan: Plan, summary: dict[str, Any]) -> list[str]:
    """Markdown sections of a v3 report."""
    lines = [
        "",
        "## Per task",
        "",
        "Each contrast per task: Δ test accuracy in points, mean [95% paired-t interval] (w/t/l).",
        "",
        "| contrast | " + " | ".join(plan.tasks) + " |",
        "|---|" + "---|" * len(plan.tasks),
    ]
    for group in summary.get("headline", {}).values():
        for name, c in group.items():
            cells = [fmt_diff(c["by_task"][t]) if t in c.get("by_task", {}) else "-" for t in plan.tasks]
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Mentor against random controls (the primary statistic)",
        "",
        "Rounds where the mentor's best prompt beat the best random control, over every round where both competed: "
        "wins/rounds = share [95% Wilson interval].",
        "",
        "| method | where | pooled | " + " | ".join(plan.tasks) + " |",
        "|---|---|---|" + "---|" * len(plan.tasks),
    ]
    for m, b in summary.get("beat_random", {}).items():
        for kind in ("race", "screening"):
            cells = [fmt_count(b["by_task"][t][kind]) for t in plan.tasks]
            lines.append(f"| {m} | {kind} | {fmt_count(b['pooled'][kind])} | " + " | ".join(cells) + " |")
    curves = summary.get("curves") or {}
    if curves:
        lines += [
            "",
            "## Validation curve of plain prompt tuning",
            "",
            "Validation accuracy % (and loss) at each evaluation (step: accuracy (loss)), mean over seeds: has "
            "`single-matched` flattened? The figure after each curve is the accuracy change over the last quarter "
            "of training (last evaluation minus the one at about three quarters of the steps); on 100 validation "
            "examples one point is 1 example.",
            "",
        ]
        for task, by_method in curves.items():
            for m, points in by_method.items():
                shown = evaluated_points(points)
                row = ", ".join(f"{p['step']}: {100 * p['accuracy']:.1f} ({p['loss']:.3f})" for p in shown)
                seeds = max(p["seeds"] for p in shown)
                lines.append(f"- {task} / {m} ({seeds} seed{'s' * (seeds != 1)}): {row}; {_last_quarter(shown)}")
    return lines


def markdown_v2(plan: Plan, summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The v2 report: headline contrasts, per-method costs, per-cell table, definitions and the exact setup."""
    doers = [d.doer for d in plan.doers]
    issue = "issue 22" if plan.version >= 3 else "issue 14"
    lines = [f"# Does the mentor help? Benchmark {plan.name} ({issue})", ""]
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
    if plan.contrasts:
        lines += ["", *[f"- `{a} - {b}`: {what}." for a, b, what in plan.contrasts]]
        lines += v3_lines(plan, summary)
    else:
        lines += [
            "",
            "- `catalyst-race - random-race`: " + HEADLINE_CONTRASTS[0][2] + ".",
            "- `catalyst-race - single-matched`: " + HEADLINE_CONTRASTS[1][2] + ".",
            "- `catalyst-race - better-single`: " + HEADLINE_CONTRASTS[2][2] + " (picked on the test mean, which "
            "favours the baseline).",
        ]
    lines += [
        "",
        "## What each method spent",
        "",
        "Per run, averaged over its tasks: rounds, rounds that restarted (a candidate replaced the prompt), race "
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
            name, kept_s, diff = _row_start(c, m, r)
            lines.append(
                f"| {c['task']} | {c['doer']} | {name} | {r['runs']} | {_fmt_pct(r['mean'], r['std'])} | {diff} | "
                f"{kept_s} | {r['restarted_per_run']:.2f} | {r['race_steps_per_run']:.0f} | "
                f"{r['wall_s_per_run']:.0f} |"
            )
    if summary.get("pooled_vs_start"):  # v3 has no single-text / single-random: its cells compare to single-matched
        lines += [
            "",
            "Pooled Δ of each round method vs the single run from its own start (`single-text` for the TEXT init, "
            "`single-random` for `@random`), 95% paired-t interval:",
            "",
            *_pooled_table(summary["pooled_vs_start"]),
        ]
    lines += [
        "",
        "## Methods",
        "",
        *[f"- {line}" for line in (METHOD_DEFINITIONS_V3 if plan.version >= 3 else METHOD_DEFINITIONS_V2)],
        "",
    ]
    lines += _setup_lines(meta)
    return "\n".join(lines) + "\n"


def _setup_lines(meta: dict[str, Any], statistics: str | None = None) -> list[str]:
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
        "- statistics: "
        + (
            statistics
            or "paired over seeds (the data split's seed is the run's seed, so each seed has its own "
            "train/catalyst/test split shared by every method); the better single is picked by its test mean, which "
            "favours the baseline. Bootstrap percentile intervals (10,000 resamples) are in the JSON."
        )
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
            name, kept_s, diff = _row_start(c, m, r)
            llm = r["llm_per_run"]
            tokens = f"{llm['prompt_tokens']:.0f} + {llm['completion_tokens']:.0f}" if llm["calls"] else "-"
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

METHOD_DEFINITIONS_V3 = [
    "`catalyst`: the LLM mentor (embedded SmolLM2, sharing the doer's weights) with the mentor-evidence features: "
    "labelled examples and the current prompt's errors in every request, an initial round at step 0, more prompts "
    "asked than raced (`catalyst_num_samples`; the best by untrained score go on), every prompt completed with the "
    "label words (`catalyst_label_anchor`); `catalyst_selection='race'` with random controls in every race; full "
    "restarts.",
    "`random`: the same rounds with random-vocabulary candidates (`RandomMentor`), screened, anchored and raced "
    "alike.",
    "`catalyst-blend` / `catalyst-partial`: `catalyst` with blended restarts (alpha 0.5) / partial restarts (the "
    "proposal's tokens at half the positions, the rest kept).",
    "`catalyst-race`: v2's rule, for continuity: the race without screening, evidence, initial round or anchor "
    "(random controls in its races too).",
    "`single-matched`: plain prompt tuning for as many gradient steps as the same seed's `catalyst` run spent in all "
    "(stages + races, read from its record); with `curve_points`, its validation accuracy along the way.",
    "Every method of a seed starts from the same prompt init, split and data order. Mentor vs random: in every round "
    "of an LLM method, whether the mentor's best prompt beat the best random control, at screening (untrained "
    "label loss) and in the race (the later rung, or the better score on the same rung).",
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
    from peft_catalyst.app.compare.environment import environment as describe

    return describe(" ".join(["python -m benchmarks.compare", *argv]), jobs, threads, git_dir=Path(__file__).parent)


def report_meta(
    plan: Plan,
    results: dict[str, dict[str, Any]],
    argv: Sequence[str],
    jobs: int = 1,
    threads: int = 1,
    elapsed_s: float | None = None,
) -> dict[str, Any]:
    """What every report states besides its figures: the exact command, packages, machine, the plan with its
    estimate, the runs it lacks and the time they took."""
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
    return meta


def write_outputs(
    out_dir: Path, name: str, payload: dict[str, Any], md: str, draw: Callable[[Path], None]
) -> dict[str, Path]:
    """Write a plan's report files into ``out_dir``: ``<name>.json`` (``payload``), ``<name>.md`` and ``<name>.png``
    (``draw``, skipped with a warning without matplotlib); returns their paths. Every plan's report writes
    through it."""
    from peft_catalyst.history import write_json_atomic  # lazily, like every peft_catalyst import here

    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("json", "md", "png")}
    write_json_atomic(paths["json"], payload)
    paths["md"].write_text(md, encoding="utf-8")
    try:
        draw(paths["png"])
    except ImportError as exc:
        logger.warning("%s not written: %s (pip install matplotlib)", paths["png"], exc)
    return paths


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
    if plan.version >= 4:
        raise ValueError(f"plan {plan.name!r} is reported by benchmarks.compare.report_v4.write_report_v4")
    summary = summarize(plan, results)
    meta = report_meta(plan, results, argv, jobs, threads, elapsed_s)
    return write_outputs(
        out_dir,
        plan.name,
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
            "method_definitions": METHOD_DEFINITIONS
            if plan.version == 1
            else METHOD_DEFINITIONS_V2
            if plan.version == 2
            else METHOD_DEFINITIONS_V3,
            "summary": summary,
            "runs": [
                {k: r[k] for k in ("task", "doer", "method", "seed", "test_accuracy", "prompts", "llm", "seconds")}
                | {"round_status": [x["status"] for x in r["rounds"]], "gradient_steps": _gradient_steps(r)}
                for r in results.values()
            ],
        },
        markdown(plan, summary, meta),
        lambda png: plot(summary, png),
    )
