"""The statistics of a comparison: catalyst - random and catalyst - single paired over seeds, the pooled
mentor-vs-random count over every round where both competed, and what each method cost per run."""

from __future__ import annotations

from typing import Any

from peft_catalyst.app.compare.runs import COMPUTE_TOLERANCE, LEGACY_MATCH, METHODS
from peft_catalyst.app.compare.stats import binomial_interval, mean_std, paired_difference

#: The contrasts of the headline: (method, reference, what it measures).
CONTRASTS = (
    ("catalyst", "random", "the mentor's own value: the same rounds with random-vocabulary candidates"),
    ("catalyst", "single", "the method at equal compute: plain prompt tuning for the same counted gradient steps"),
)
#: What ``catalyst - single`` measures when ``single`` is matched by compute (``--match compute``).
SINGLE_BY_COMPUTE = (
    "the method at equal compute: plain prompt tuning for the training steps that the same forward-equivalent "
    "tokens buy (stages + races + screening)"
)


def by_method(records: dict[str, dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """method -> seed -> record."""
    out: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in METHODS}
    for record in records.values():
        out.setdefault(record["method"], {})[record["seed"]] = record
    return out


def contrast(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """Test accuracy of ``a`` minus ``b`` over the seeds both finished: the paired difference (mean, 95% paired-t
    and bootstrap intervals, wins/ties/losses) and the pairs; None without a common seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    x = [a[s]["test_accuracy"] for s in seeds]
    y = [b[s]["test_accuracy"] for s in seeds]
    return {
        **paired_difference(x, y).to_dict(),
        "pairs": [{"seed": s, "difference": u - v} for s, u, v in zip(seeds, x, y)],
    }


def beat_random(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mentor-vs-random count pooled over ``runs`` (the ``catalyst`` runs), at screening and in the race, each
    with its 95% Wilson interval; ``primary`` is the race's (the later, trained comparison) when any round raced
    random controls, else screening's, else None (no round compared them)."""
    out: dict[str, Any] = {}
    for kind in ("screening", "race"):
        wins = sum(r["beat_random"][kind][0] for r in runs)
        rounds = sum(r["beat_random"][kind][1] for r in runs)
        low, high = binomial_interval(wins, rounds)
        out[kind] = {"wins": wins, "rounds": rounds, "share": wins / rounds if rounds else None, "ci95": [low, high]}
    out["primary"] = "race" if out["race"]["rounds"] else "screening" if out["screening"]["rounds"] else None
    return out


def tuning(record: dict[str, Any]) -> int | None:
    """A run record's tuning compute in forward-equivalent tokens (stages + races + screening); None when not
    counted (a record written before compute was counted)."""
    return (record.get("compute") or {}).get("tuning")


def costs(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per run of one method, averaged: counted gradient steps (stages + races), forward-equivalent tokens (tuning,
    and with evaluation; None when a run did not count them), LLM calls, tokens, wall time."""
    if not runs:
        return None
    n = len(runs)
    tunings = [tuning(r) for r in runs]
    totals = [(r.get("compute") or {}).get("total") for r in runs]
    return {
        "compute": sum(tunings) / n if None not in tunings else None,
        "compute_total": sum(totals) / n if None not in totals else None,
        "runs": n,
        "steps": sum(r["steps"]["total"] for r in runs) / n,
        "race_steps": sum(r["steps"]["race"] for r in runs) / n,
        "llm_calls": sum(r["llm"]["calls"] for r in runs) / n,
        "tokens": sum(r["llm"]["prompt_tokens"] + r["llm"]["completion_tokens"] for r in runs) / n,
        "wall_s": sum(r["wall_s"] for r in runs) / n,
        "restarts": sum(r["rounds"]["accepted"] for r in runs) / n,
    }


def compute(runs: dict[str, dict[int, dict[str, Any]]], match: str = LEGACY_MATCH) -> dict[str, Any]:
    """Whether the methods of each seed spent equal compute: ``unequal`` lists the seeds where they did not, with each
    method's steps (``random``'s race can take more arms than ``catalyst``'s when the mentor gave fewer usable
    candidates). ``single`` is matched to ``catalyst`` by construction: by steps (``match="steps"``: all three must
    have trained the same gradient steps), or by compute (``"compute"``: ``catalyst`` and ``random`` the same steps,
    ``single``'s tuning compute within :data:`COMPUTE_TOLERANCE` or one training step of ``catalyst``'s; those
    seeds' entries also give each method's tuning compute, ``compute``)."""
    unequal = []
    for seed in sorted(set().union(*(set(runs[m]) for m in METHODS))):
        steps = {m: runs[m][seed]["steps"]["total"] for m in METHODS if seed in runs[m]}
        if match != "compute":
            if len(set(steps.values())) > 1:
                unequal.append({"seed": seed, "steps": steps})
            continue
        tokens = {m: tuning(runs[m][seed]) for m in METHODS if seed in runs[m]}
        differs = len({steps[m] for m in ("catalyst", "random") if m in steps}) > 1
        cat, single = tokens.get("catalyst"), tokens.get("single")
        if cat and single is not None:  # allowed: the tolerance, or one step (the steps are rounded)
            record = runs["catalyst"][seed]
            step = (record["compute"].get("stages") or 0) / max(1, record["steps"]["main"])
            differs = differs or abs(single - cat) > max(COMPUTE_TOLERANCE * cat, step)
        if differs:
            unequal.append({"seed": seed, "steps": steps, "compute": tokens})
    return {"equal": not unequal, "unequal": unequal}


def kept(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per method, the test accuracy of the prompt each seed started from (``initial``), of the prompt it kept by
    validation (``kept``, what the saved adapter holds) and of its last step's (``final``), per seed and averaged, and
    in how many seeds the kept prompt was at least as good as the start. Records from before keep-best (no
    ``initial_test_accuracy``) are left out."""
    out: dict[str, Any] = {}
    for m in METHODS:
        seeds = [s for s in sorted(runs[m]) if runs[m][s].get("initial_test_accuracy") is not None]
        rows = [
            {
                "seed": s,
                "initial": runs[m][s]["initial_test_accuracy"],
                "kept": runs[m][s]["test_accuracy"],
                "final": runs[m][s].get("final_step_test_accuracy", runs[m][s]["test_accuracy"]),
                "kept_step": runs[m][s].get("kept_step"),
            }
            for s in seeds
        ]
        mean = {k: (sum(r[k] for r in rows) / len(rows) if rows else None) for k in ("initial", "kept", "final")}
        out[m] = {"seeds": rows, "mean": mean, "kept_at_least_initial": sum(r["kept"] >= r["initial"] for r in rows)}
    return out


def summarize(records: dict[str, dict[str, Any]], match: str = LEGACY_MATCH) -> dict[str, Any]:
    """Everything the report shows, from the finished records; ``match``: how ``single`` was matched to
    ``catalyst`` (``--match``)."""
    runs = by_method(records)
    methods = {}
    for m in METHODS:
        accuracies = [runs[m][s]["test_accuracy"] for s in sorted(runs[m])]
        mean, std = mean_std(accuracies)
        methods[m] = {"seeds": sorted(runs[m]), "accuracy": accuracies, "mean": mean, "std": std}
    return {
        "match": match,
        "methods": methods,
        "contrasts": {
            f"{a} - {b}": {
                "what": SINGLE_BY_COMPUTE if (b == "single" and match == "compute") else what,
                "difference": contrast(runs[a], runs[b]),
            }
            for a, b, what in CONTRASTS
        },
        "beat_random": beat_random(list(runs["catalyst"].values())),
        "costs": {m: costs(list(runs[m].values())) for m in METHODS},
        "compute": compute(runs, match),
        "kept": kept(runs),
    }


__all__ = [
    "CONTRASTS",
    "SINGLE_BY_COMPUTE",
    "beat_random",
    "by_method",
    "compute",
    "contrast",
    "costs",
    "kept",
    "summarize",
    "tuning",
]
