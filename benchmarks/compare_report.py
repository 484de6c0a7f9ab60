"""Rebuild the report of a ``peft-catalyst compare`` folder from its records with this checkout's report code, e.g.
for records that an older commit wrote (a comparison that ran from a frozen worktree): ``compare.md``, ``compare.json``
and ``compare.png`` are written beside the records, the older report's meta (command, seeds, machine, packages) kept.

    python -m benchmarks.compare_report FOLDER [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from peft_catalyst.app.compare.report import write_report
from peft_catalyst.app.compare.runs import stored_job_settings

REPORT_KEYS = ("headline", "summary", "runs")  # what write_report derives; everything else of compare.json is meta


def rebuild(folder: Path, out: Path | None = None) -> dict[str, Path]:
    """Write the report of ``folder`` (holding ``records/`` and the ``compare.json`` or ``comparison.json`` the
    command wrote) into ``out`` (default: ``folder``); returns the written paths."""
    records = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "records").glob("*.json"))}
    if not records:
        raise SystemExit(f"{folder}/records holds no record: nothing to report")
    meta: dict = {}
    for name in ("compare.json", "comparison.json"):
        if (folder / name).is_file():
            meta = {k: v for k, v in json.loads((folder / name).read_text(encoding="utf-8")).items()
                    if k not in REPORT_KEYS}  # fmt: skip
            break
    settings = meta.get("settings") or {}
    meta.setdefault("task", (settings.get("data") or {}).get("dataset") or "?")
    meta.setdefault("doer", (settings.get("model") or {}).get("model") or "?")
    seeds = sorted({r["seed"] for r in records.values()})
    finished = [s for s in seeds if sum(r["seed"] == s for r in records.values()) == 3]
    meta.setdefault("command", "peft-catalyst compare")
    meta.setdefault("date", max(r.get("finished_at", "") for r in records.values())[:10] or "?")
    meta.setdefault("machine", {"description": "see the records"})
    meta.setdefault("packages", {})
    meta["seeds"] = meta.get("seeds") if isinstance(meta.get("seeds"), int) else len(meta.get("seeds") or seeds)
    meta["seeds_finished"] = len(finished)
    # How single was matched: its records say (an unfinished comparison's meta file has no "match" yet), read as the
    # command reads a stored run's settings (a single stored before --match existed was matched by steps).
    singles = [r.get("settings") or {} for r in records.values() if r.get("method") == "single"]
    matches = {stored_job_settings(settings).get("match") for settings in singles}
    matches.discard(None)
    if len(matches) == 1:
        meta["match"] = matches.pop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    meta["report_by"] = commit.stdout.strip() or "?"
    target = out or folder
    target.mkdir(parents=True, exist_ok=True)
    return write_report(target, records, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    for path in rebuild(args.folder, args.out).values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
