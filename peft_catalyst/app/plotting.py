"""``run.png``: the training loss with the mentor rounds marked, and every candidate's score with its fate."""

from __future__ import annotations

import os
from typing import Any

STATUS_COLORS = {"accepted": "tab:green", "blind": "tab:green", "kept": "tab:gray", "skipped": "tab:red"}


def plot_run(log_history: list[dict[str, Any]], history: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Two panels: loss per logged step with a line per round (colour = decision); candidate and current scores."""
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
        status = record["decision"]["status"]
        top.axvline(record["step"], color=STATUS_COLORS.get(status, "black"), linestyle="--", alpha=0.7)
        top.annotate(
            f"round {record['round']}: {status}",
            (record["step"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
        )
    top.set_ylabel("training loss")
    top.set_title("Soft prompt tuning with mentor rounds")

    labelled: set[str] = set()

    def label(name: str) -> str | None:  # one legend entry per kind of marker
        if name in labelled:
            return None
        labelled.add(name)
        return name

    for record in history:
        step, decision = record["step"], record["decision"]
        current = record.get("current", {}).get("loss")
        if current is not None:
            bottom.scatter([step], [current], marker="s", color="tab:blue", zorder=3, label=label("current prompt"))
        for i, cand in enumerate(record.get("candidates", [])):
            if cand.get("loss") is None:
                continue
            if decision.get("accepted") and decision.get("winner") == i:
                bottom.scatter(
                    [step],
                    [cand["loss"]],
                    marker="*",
                    s=140,
                    color="tab:green",
                    zorder=4,
                    label=label("candidate taken"),
                )
            else:
                bottom.scatter(
                    [step],
                    [cand["loss"]],
                    marker="o",
                    s=30,
                    color="tab:orange",
                    zorder=2,
                    label=label("candidate not taken"),
                )
    bottom.set_xlabel("optimizer step")
    bottom.set_ylabel("catalyst-split loss")
    if labelled:
        bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
