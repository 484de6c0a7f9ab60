"""The report of ``peft-catalyst compare``: ``compare.json``, ``compare.md`` and ``compare.png`` in the output
directory, and the one headline line the command prints."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from peft_catalyst.app.compare.runs import COMPUTE_TOLERANCE, LEGACY_MATCH, METHODS
from peft_catalyst.app.compare.summary import CONTRASTS, summarize
from peft_catalyst.history import write_json_atomic
from peft_catalyst.records import TRAIN_FACTOR, tokens_text

logger = logging.getLogger(__name__)

REPORT_NAME = "compare"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def format_difference(diff: dict[str, Any] | None) -> str:
    """``+1.2 points [-0.5, +2.9] (w/t/l 3/0/2)``: a paired difference of accuracies, in points."""
    if not diff:
        return "no common seed"
    low, high = diff["t_ci"]
    ci = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if _finite(low) and _finite(high) else " [interval needs 2 seeds]"
    return f"{100 * diff['mean']:+.1f} points{ci} (w/t/l {diff['wins']}/{diff['ties']}/{diff['losses']})"


def format_beat_random(beat: dict[str, Any]) -> str:
    """``mentor beat random in 7 of 12 race rounds (58%, 95% CI 32-81%)``, or why it was never compared."""
    kind = beat["primary"]
    if kind is None:
        return (
            "mentor vs random: no round compared them (random controls need --catalyst_selection race and "
            "--catalyst_race_controls 1 or more)"
        )
    b = beat[kind]
    low, high = b["ci95"]
    return (
        f"mentor beat random in {b['wins']} of {b['rounds']} {kind} rounds "
        f"({100 * b['share']:.0f}%, 95% CI {100 * low:.0f}-{100 * high:.0f}%)"
    )


def format_costs(costs: dict[str, Any]) -> str:
    """``single 30 steps, 1.2M forward-equivalent tokens, 0 LLM calls, 0 LLM tokens, 12 s | ...`` per run of each
    method (the forward-equivalent tokens are the tuning compute, where counted)."""
    parts = []
    for m in METHODS:
        c = costs.get(m)
        if c:
            compute = f"{tokens_text(round(c['compute']))} forward-equivalent tokens, " if c.get("compute") else ""
            parts.append(
                f"{m} {c['steps']:.0f} steps, {compute}{c['llm_calls']:.1f} LLM calls, {c['tokens']:.0f} LLM tokens, "
                f"{c['wall_s']:.0f} s"
            )
    return "per run: " + " | ".join(parts)


def format_compute(compute: dict[str, Any] | None) -> str:
    """``""`` when every seed's methods spent equal compute, else ``"UNEQUAL COMPUTE: ..."`` naming the gradient
    steps per run of each method (averaged over the seeds that differ), or their tuning compute in
    forward-equivalent tokens when ``single`` was matched by compute."""
    if not compute or compute["equal"]:
        return ""
    unequal = compute["unequal"]
    seeds = f"{len(unequal)} seed{'s' if len(unequal) != 1 else ''}"
    if all("compute" in u for u in unequal):  # matched by compute
        tokens = {m: [u["compute"][m] for u in unequal if u["compute"].get(m) is not None] for m in METHODS}
        shown = ", ".join(f"{m} {tokens_text(round(sum(v) / len(v)))}" for m, v in tokens.items() if v)
        return f"UNEQUAL COMPUTE in {seeds} (compute per run: {shown})"  # forward-equivalent tokens, see compare.md
    steps = {m: [u["steps"][m] for u in unequal if m in u["steps"]] for m in METHODS}
    shown = ", ".join(f"{m} {sum(v) / len(v):.0f}" for m, v in steps.items() if v)
    return f"UNEQUAL COMPUTE in {seeds} (gradient steps per run: {shown})"


def match_text(match: str) -> str:
    """How ``single`` was matched to ``catalyst``, in a sentence of ``compare.md``."""
    if match == "compute":
        return (
            "`single` is matched to `catalyst` by **compute** (`--match compute`): it trains the gradient steps that "
            "the same seed's `catalyst` run's tuning compute buys, steps = (stages + races + screening in "
            f"forward-equivalent tokens) / ({TRAIN_FACTOR} x `catalyst`'s training tokens per step), a trained token "
            f"counting {TRAIN_FACTOR} forward-equivalents and a scored one 1; flagged when its own tuning compute "
            f"is more than {100 * COMPUTE_TOLERANCE:.0f}% and one training step off."
        )
    return (
        "`single` is matched to `catalyst` by **gradient steps** (`--match steps`, the default): it trains as many as "
        "the same seed's `catalyst` run counted (stages + races); the rounds' scoring passes are not matched (see the "
        "forward-equivalent tokens below, and `--match compute`)."
    )


def headline(summary: dict[str, Any]) -> str:
    """The short line the command prints: both contrasts, the pooled mentor-vs-random count, and a flag when the
    methods trained unequal gradient steps (the details and the costs are in ``compare.md``)."""
    contrasts = "; ".join(
        f"{a} - {b}: {_short_difference(summary['contrasts'][f'{a} - {b}']['difference'])}" for a, b, _ in CONTRASTS
    )
    beat = summary["beat_random"]
    kind = beat["primary"]
    if kind is None:
        mentor = "mentor vs random: not compared"
    else:
        b = beat[kind]
        mentor = f"mentor beat random in {b['wins']} of {b['rounds']} {kind} rounds"
    flag = format_compute(summary.get("compute"))
    matched = f"single matched by {summary.get('match', LEGACY_MATCH)}"
    return f"{contrasts}; {mentor}; {matched}" + (f"; {flag}" if flag else "")


def _short_difference(diff: dict[str, Any] | None) -> str:
    """``+1.2 points [-0.5, +2.9]``: the paired difference and its interval, without the wins/ties/losses."""
    return format_difference(diff).split(" (w/t/l", 1)[0]


def kept_table(kept: dict[str, Any]) -> list[str]:
    """Markdown lines: per method, test accuracy of the start, of the prompt kept by validation (the saved adapter)
    and of the last step, averaged over seeds, and in how many seeds the kept prompt was at least the start."""
    rows = [(m, kept[m]) for m in METHODS if kept.get(m) and kept[m]["seeds"]]
    if not rows:
        return []
    lines = [
        "",
        "The prompt each run kept (best on validation, the start included: what the saved adapter holds) against "
        "the prompt it started from and its last step's, test accuracy %, mean over seeds:",
        "",
        "| method | seeds | initial | kept | final step | kept >= initial |",
        "|---|---|---|---|---|---|",
    ]
    for m, k in rows:
        mean, n = k["mean"], len(k["seeds"])
        lines.append(
            f"| {m} | {n} | {100 * mean['initial']:.1f} | {100 * mean['kept']:.1f} | {100 * mean['final']:.1f} "
            f"| {k['kept_at_least_initial']} of {n} |"
        )
    lines += ["", "| seed | " + " | ".join(f"{m}: initial / kept (step) / final" for m, _ in rows) + " |"]
    lines.append("|---|" + "---|" * len(rows))
    for seed in sorted({r["seed"] for _, k in rows for r in k["seeds"]}):
        cells = []
        for _, k in rows:
            r = next((r for r in k["seeds"] if r["seed"] == seed), None)
            cells.append(
                f"{100 * r['initial']:.1f} / {100 * r['kept']:.1f} ({r['kept_step']}) / {100 * r['final']:.1f}"
                if r
                else "-"
            )
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The report as Markdown: the headline contrasts, the mentor-vs-random counts, per-method costs and accuracy,
    the definitions and the exact setup."""
    lines = [
        "# Does the mentor help? `peft-catalyst compare`",
        "",
        f"Task `{meta.get('task', '?')}`, doer `{meta.get('doer', '?')}`.",
        "",
    ]
    compute = summary.get("compute")
    if compute and not compute["equal"]:
        lines += [
            f"**{format_compute(compute)}.** The contrasts below compare runs that spent different compute: "
            "`random`'s race takes as many arms as it has candidates, and the mentor may give fewer usable ones"
            + ("; `single`'s batches differ in length from `catalyst`'s" if summary.get("match") == "compute" else "")
            + ". Read the differences with that in mind (gradient steps per run):",
            "",
            "| seed | " + " | ".join(METHODS) + " |",
            "|---|" + "---|" * len(METHODS),
        ]
        for u in compute["unequal"]:
            lines.append(f"| {u['seed']} | " + " | ".join(str(u["steps"].get(m, "-")) for m in METHODS) + " |")
        lines.append("")
    lines += [match_text(summary.get("match", LEGACY_MATCH)), ""]
    lines += [
        f"{meta['seeds_finished']} of {meta['seeds']} seeds finished. Test accuracy differences in points, paired "
        "per seed (same split, init and data order), mean [95% paired-t interval] (wins/ties/losses).",
        "",
        "| contrast | seeds | Δ test accuracy | what it measures |",
        "|---|---|---|---|",
    ]
    for a, b, _ in CONTRASTS:
        what = summary["contrasts"][f"{a} - {b}"]["what"]  # single's depends on how it was matched
        diff = summary["contrasts"][f"{a} - {b}"]["difference"]
        lines.append(f"| `{a} - {b}` | {diff['n'] if diff else 0} | {format_difference(diff)} | {what} |")
    beat = summary["beat_random"]
    lines += [
        "",
        "Mentor against random, pooled over every round of the `catalyst` runs where both competed (the best mentor "
        "prompt against the best random control; 95% Wilson interval):",
        "",
        "| where | mentor won | rounds | share [95% CI] |",
        "|---|---|---|---|",
    ]
    for kind in ("screening", "race"):
        b = beat[kind]
        share = f"{100 * b['share']:.0f}% [{100 * b['ci95'][0]:.0f}, {100 * b['ci95'][1]:.0f}]" if b["rounds"] else "-"
        lines.append(f"| {kind} | {b['wins']} | {b['rounds']} | {share} |")
    lines += kept_table(summary.get("kept") or {})
    lines += [
        "",
        "Per run, averaged over seeds:",
        "",
        f"{format_costs(summary['costs'])}",
        "",
        "| method | runs | test accuracy % (mean ± std) | gradient steps (race) | forward-equivalent tokens: "
        "tuning (with evaluation) | restarts | LLM calls | LLM tokens | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        c, acc = summary["costs"][m], summary["methods"][m]
        if not c:
            continue
        std = f" ± {100 * acc['std']:.1f}" if _finite(acc["std"]) else ""
        fe = "not counted"
        if c.get("compute") is not None:
            fe = tokens_text(round(c["compute"]))
            fe += f" ({tokens_text(round(c['compute_total']))})" if c.get("compute_total") is not None else ""
        lines.append(
            f"| {m} | {c['runs']} | {100 * acc['mean']:.1f}{std} | {c['steps']:.0f} ({c['race_steps']:.0f}) | "
            f"{fe} | {c['restarts']:.1f} | {c['llm_calls']:.1f} | {c['tokens']:.0f} | {c['wall_s']:.0f} |"
        )
    lines += [
        "",
        "## Methods",
        "",
        "- `catalyst`: the configuration as given, with its mentor.",
        "- `random`: the same rounds (screening, anchoring, restart shapes, race, initial round) with "
        "`--mentor random` (random vocabulary words of the doer's tokenizer, seeded per seed), as many per round as "
        "the same seed's `catalyst` run got usable candidates from its mentor, so that both race the same arms.",
        "- `single`: plain prompt tuning, no rounds, for as many gradient steps as the same seed's `catalyst` run "
        "counted in all (stages + races), or, matched by compute, as its forward-equivalent tokens buy (see above); "
        "its learning-rate schedule spans those steps.",
        f"- forward-equivalent tokens: the doer's compute, {TRAIN_FACTOR} per trained token (forward and backward) "
        "and 1 per scored one, non-padding tokens plus the virtual tokens; tuning = stages + races + screening, "
        "evaluation = validation and keep-best evaluations (each run's `metrics.json`, `catalyst.compute`).",
        "",
        "## Setup",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']['description']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()),
        "- every run's folder (adapter, `catalyst_history.json`, `metrics.json`): `runs/<method>__seed<seed>/`; its "
        "record: `records/<method>__seed<seed>.json`",
    ]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, title: str | None = None) -> None:
    """Left: test accuracy per method, one line per seed. Right: the paired differences with their intervals.
    ``title``: what was compared (task and doer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    methods = summary["methods"]
    seeds = sorted({s for m in METHODS for s in methods[m]["seeds"]})
    for seed in seeds:
        xs = [i for i, m in enumerate(METHODS) if seed in methods[m]["seeds"]]
        ys = [100 * methods[METHODS[i]]["accuracy"][methods[METHODS[i]]["seeds"].index(seed)] for i in xs]
        left.plot(xs, ys, "o-", alpha=0.6, label=f"seed {seed}")
    left.set_xticks(range(len(METHODS)), METHODS)
    left.set_ylabel("test accuracy (%)")
    left.grid(axis="y", alpha=0.3)
    if len(seeds) <= 8:
        left.legend(fontsize=7)
    names = [f"{a} - {b}" for a, b, _ in CONTRASTS]
    for i, name in enumerate(names):
        diff = summary["contrasts"][name]["difference"]
        if not diff:
            continue
        mean, (low, high) = 100 * diff["mean"], diff["t_ci"]
        if _finite(low) and _finite(high):
            right.errorbar(i, mean, yerr=[[mean - 100 * low], [100 * high - mean]], fmt="o", capsize=5)
        else:
            right.plot(i, mean, "o")
        right.scatter([i] * len(diff["pairs"]), [100 * p["difference"] for p in diff["pairs"]], s=10, alpha=0.5)
    right.axhline(0.0, color="black", lw=0.8)
    right.set_xlim(-0.5, len(names) - 0.5)
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("Δ test accuracy (points, 95% CI)")
    right.grid(axis="y", alpha=0.3)
    flag = format_compute(summary.get("compute"))
    if title or flag:
        fig.suptitle("\n".join(t for t in (title, flag) if t), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, records: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Path]:
    """Write ``compare.json``, ``compare.md`` and ``compare.png`` (when matplotlib is installed) into ``out``."""
    summary = summarize(records, meta.get("match", LEGACY_MATCH))
    paths = {ext: out / f"{REPORT_NAME}.{ext}" for ext in ("json", "md", "png")}
    write_json_atomic(
        paths["json"],
        {
            **meta,
            "headline": headline(summary),
            "summary": summary,
            "runs": sorted(records.values(), key=lambda r: (r["seed"], METHODS.index(r["method"]))),
        },
    )
    paths["md"].write_text(markdown(summary, meta), encoding="utf-8")
    try:
        title = f"peft-catalyst compare: task {meta.get('task', '?')}, doer {meta.get('doer', '?')}"
        plot(summary, paths["png"], title=title)
    except ImportError as exc:
        logger.warning("%s not written: %s (pip install matplotlib)", paths["png"], exc)
        del paths["png"]
    return paths


__all__ = [
    "REPORT_NAME",
    "format_compute",
    "format_difference",
    "headline",
    "markdown",
    "match_text",
    "plot",
    "write_report",
]
