"""How a report writes its two kinds of figure: a paired difference in points and a wins/rounds count, one
definition for every report (v2, v3 and the pooled v3 answer)."""

from __future__ import annotations

import math
from typing import Any

from peft_catalyst.app.compare.stats import binomial_interval


def fmt_diff(diff: dict[str, Any] | None, reference: bool = False) -> str:
    """A paired difference in points: ``+1.2 [-0.3, +2.7] (w/t/l)``, ``+1.2 (n=1)`` without an interval, ``-``."""
    if not diff:
        return "(reference)" if reference else "-"
    mean, (low, high) = diff["mean"], diff["t_ci"]
    if low is None or not math.isfinite(low):
        return f"{100 * mean:+.1f} (n={diff['n']})"
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] ({diff['wins']}/{diff['ties']}/{diff['losses']})"


def fmt_count(count: dict[str, Any]) -> str:
    """Rounds the mentor won: ``wins/rounds = share% [95% Wilson interval]``, ``-`` when none was compared."""
    wins, rounds = count["wins"], count["rounds"]
    if not rounds:
        return "-"
    low, high = binomial_interval(wins, rounds)
    return f"{wins}/{rounds} = {100 * wins / rounds:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"
