"""Benchmark v3's answer in one table: each regime's headline contrasts and mentor-vs-random counts, and the same
pooled over the regimes, read from the regimes' finished reports (``<plan>.json``) so nothing is run again.

    python -m benchmarks.compare.pooled                       # v3-stall + v3-plateau -> results/compare/v3.md/.json
    python -m benchmarks.compare.pooled v3-stall v3-plateau --name v3

Paired differences pool as pairs (one per task and seed, each regime's own), so the pooled interval is a paired-t
interval over every pair of every regime; counts pool as wins and rounds, with a Wilson interval.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.compare.formats import fmt_count, fmt_diff
from benchmarks.compare.store import RESULTS_DIR
from peft_catalyst.app.compare.stats import binomial_interval, paired_difference
from peft_catalyst.history import write_json_atomic

V3_REGIMES = ("v3-stall", "v3-plateau")


def _load(results_dir: Path, name: str) -> dict[str, Any]:
    path = results_dir / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"no report {path}: run `python -m benchmarks.compare --plan {name} --report-only` first")
    return json.loads(path.read_text())


def _contrasts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Contrast name -> its headline entry (each v3 regime has one start: RANDOM or TEXT init)."""
    out: dict[str, dict[str, Any]] = {}
    for by_name in report["summary"]["headline"].values():
        out.update(by_name)
    return out


def pool(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per contrast and per mentor method: each regime's figures as reported, and the pool over all regimes."""
    contrasts: dict[str, Any] = {}
    for regime, report in reports.items():
        for name, entry in _contrasts(report).items():
            row = contrasts.setdefault(name, {"what": entry.get("what"), "regimes": {}, "pairs": []})
            row["regimes"][regime] = entry["pooled"]
            row["pairs"] += [{"regime": regime, **p} for p in entry.get("pairs", [])]
    for row in contrasts.values():
        diffs = [p["difference"] for p in row["pairs"]]
        row["pooled"] = paired_difference(diffs, [0.0] * len(diffs)).to_dict() if diffs else None
    counts: dict[str, Any] = {}
    for regime, report in reports.items():
        for method, entry in report["summary"].get("beat_random", {}).items():
            for kind in ("race", "screening"):
                c = entry["pooled"][kind]
                for name in (method, "all"):  # "all": every mentor method together, the primary statistic
                    row = counts.setdefault(name, {}).setdefault(kind, {"regimes": {}, "wins": 0, "rounds": 0})
                    at = row["regimes"].setdefault(regime, {"wins": 0, "rounds": 0})
                    for k in ("wins", "rounds"):
                        at[k] += c[k]
                        row[k] += c[k]
    every = counts.pop("all", None)
    if every is not None and len(counts) > 1:  # last, and only where it adds to a single method's row
        counts["all"] = every
    for by_kind in counts.values():
        for row in by_kind.values():
            row["ci95"] = list(binomial_interval(row["wins"], row["rounds"]))
    incomplete = {r: len(rep.get("missing_runs") or []) for r, rep in reports.items() if rep.get("missing_runs")}
    return {"regimes": list(reports), "incomplete": incomplete, "contrasts": contrasts, "beat_random": counts}


def _table(head: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    """A markdown table: the head row, the rule, the rows."""
    return ["| " + " | ".join(r) + " |" for r in (head, ["---"] * len(head), *rows)]


def pooled_lines(pooled: dict[str, Any]) -> list[str]:
    """The markdown of the pooled answer: contrasts per regime and pooled, then the mentor-vs-random counts."""
    regimes = pooled["regimes"]
    lines = [f"# Does the mentor help? Benchmark v3, {' + '.join(regimes)} pooled", ""]
    for regime, missing in pooled["incomplete"].items():
        lines += [f"**{regime} is incomplete: {missing} planned run(s) missing.**", ""]
    diffs = [
        [f"`{name}`", *(fmt_diff(row["regimes"].get(r)) for r in regimes), fmt_diff(row["pooled"])]
        for name, row in pooled["contrasts"].items()
    ]
    counts = [
        [method, kind, *(fmt_count(row["regimes"].get(r, {"wins": 0, "rounds": 0})) for r in regimes), fmt_count(row)]
        for method, by_kind in pooled["beat_random"].items()
        for kind, row in by_kind.items()
    ]
    return [
        *lines,
        "Test accuracy differences in points, paired per (regime, task, seed): mean [95% paired-t interval] "
        "(wins/ties/losses). Each regime's report has the per-task tables and every run.",
        "",
        *_table(["contrast", *regimes, "pooled"], diffs),
        "",
        "Rounds where the mentor's best prompt beat the best random control, over every round where both competed: "
        "wins/rounds = share [95% Wilson interval].",
        "",
        *_table(["method", "where", *regimes, "pooled"], counts),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``<name>.json`` and ``<name>.md`` beside the regimes' reports and print the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("regimes", nargs="*", default=list(V3_REGIMES), help="report names to pool (default: v3's)")
    parser.add_argument("--name", default="v3", help="name of the pooled report (default v3)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the reports are")
    args = parser.parse_args(argv)
    pooled = pool({name: _load(args.results_dir, name) for name in args.regimes})
    md = "\n".join(pooled_lines(pooled)) + "\n"
    write_json_atomic(args.results_dir / f"{args.name}.json", pooled)  # NaN (one pair, no interval) -> null
    (args.results_dir / f"{args.name}.md").write_text(md, encoding="utf-8")
    print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
