"""What a v3 report adds to v2's (:func:`benchmarks.compare.report.markdown_v2`): the contrasts per task, the pooled
mentor-vs-random count (the primary statistic) per method and task, and the validation curve of plain prompt
tuning."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.compare.formats import fmt_count, fmt_diff
from benchmarks.compare.plans import Plan

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


def _last_quarter(points: list[dict[str, Any]]) -> str:
    """The accuracy change from the evaluation at about three quarters of the steps to the last one, as text."""
    if len(points) < 2:
        return "last quarter: -"
    start = points[min(len(points) - 2, round(0.75 * (len(points) - 1)))]
    gain = 100 * (points[-1]["accuracy"] - start["accuracy"])
    return f"last quarter (steps {start['step']}-{points[-1]['step']}): {gain:+.1f} points"


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
                shown = [p for p in points if p["accuracy"] is not None and math.isfinite(p["accuracy"])]
                row = ", ".join(f"{p['step']}: {100 * p['accuracy']:.1f} ({p['loss']:.3f})" for p in shown)
                seeds = max(p["seeds"] for p in shown)
                lines.append(f"- {task} / {m} ({seeds} seed{'s' * (seeds != 1)}): {row}; {_last_quarter(shown)}")
    return lines


__all__ = ["METHOD_DEFINITIONS_V3", "v3_lines"]
