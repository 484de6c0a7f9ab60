"""``run.png``: the training loss with the mentor rounds marked, and the ranking score that decided each round."""

from __future__ import annotations

import math
import os
from typing import Any

from peft_catalyst.records import Decision, RoundRecord

STATUS_COLORS = {
    Decision.ACCEPTED: "tab:green",
    Decision.BLIND: "tab:green",
    Decision.KEPT: "tab:gray",
    Decision.SKIPPED: "tab:red",
}


def score_axis_label(history: list[RoundRecord]) -> str:
    """The round panel's y label: the ranking metric and its direction (shared by the rounds that scored)."""
    scored = [r for r in history if r.decision is not Decision.SKIPPED] or history
    kinds = {(r.metric, r.higher_is_better) for r in scored}
    if len(kinds) != 1:
        return "catalyst-split ranking score"
    metric, higher = kinds.pop()
    return f"catalyst-split {metric} ({'higher' if higher else 'lower'} is better)"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def plot_run(log_history: list[dict[str, Any]], history: list[RoundRecord], path: str | os.PathLike) -> None:
    """Two panels: loss per logged step with a line per round (colour = decision); per round the ranking score of
    the current prompt and of every candidate, and the score that decided (the prompt the round left in place)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=[3, 2])
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    if points:
        steps, losses = zip(*points)
        top.plot(steps, losses, color="tab:blue", label="training loss")
        top.legend(loc="upper right")
    for record in history:
        top.axvline(record.step, color=STATUS_COLORS.get(record.decision, "black"), linestyle="--", alpha=0.7)
        race = f", race {record.race_steps} steps" if record.race_steps else ""
        top.annotate(  # inside the frame: right of its line, a little below the top, on a pale box
            f"round {record.round}: {record.decision.value}{race}",
            (record.step, 0.97),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.7},
        )
    race_steps = sum(r.race_steps for r in history)
    main_steps = max((h["step"] for h in log_history if "step" in h), default=0)
    top.set_ylabel("training loss")
    title = "Soft prompt tuning with mentor rounds"
    if race_steps:  # the races train off the main loop: their steps are not on the x axis
        title += f" (gradient steps: {main_steps} in the stages + {race_steps} in the races)"
    top.set_title(title, fontsize=10)

    labelled: set[str] = set()

    def label(name: str) -> str | None:  # one legend entry per kind of marker
        if name in labelled:
            return None
        labelled.add(name)
        return name

    for record in history:
        step = record.step
        if record.current is not None and _finite(record.current.score):
            bottom.scatter(
                [step], [record.current.score], marker="s", color="tab:blue", zorder=3, label=label("current prompt")
            )
        for i, cand in enumerate(record.candidates):
            if not _finite(cand.score):
                continue
            if record.decision is Decision.ACCEPTED and record.winner == i and record.race is None:
                continue  # drawn below as the score that decided
            bottom.scatter(
                [step], [cand.score], marker="o", s=30, color="tab:orange", zorder=2, label=label("candidate")
            )
        decisive = record.decisive
        if decisive is not None and _finite(decisive.score):
            restarted = record.decision.restarted
            name = "restart taken (its score)" if restarted else "prompt kept (its score)"
            if record.race is not None:
                name += ", after the race"
            bottom.scatter(
                [step],
                [decisive.score],
                marker="*",
                s=140,
                color="tab:green" if restarted else "tab:gray",
                edgecolors="black",
                linewidths=0.5,
                zorder=4,
                label=label(name),
            )
    bottom.set_xlabel("optimizer step")
    bottom.set_ylabel(score_axis_label(history))
    if labelled:
        bottom.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
