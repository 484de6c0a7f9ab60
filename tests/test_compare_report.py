"""benchmarks/compare_report.py rebuilds a comparison's report from its records with today's report code."""

from __future__ import annotations

import json

from benchmarks import compare_report


def _record(method: str, seed: int, initial: float, kept: float) -> dict:
    return {
        "method": method, "seed": seed, "test_accuracy": kept, "initial_test_accuracy": initial,
        "final_step_test_accuracy": kept, "kept_step": 10, "steps": {"main": 10, "race": 0, "total": 10},
        "rounds": {"rounds": 1, "accepted": 0, "kept": 1, "skipped": 0},
        "llm": {"calls": 1 if method == "catalyst" else 0, "prompt_tokens": 5, "completion_tokens": 2},
        "beat_random": {"screening": [0, 0], "race": [0, 0]}, "wall_s": 3.0, "finished_at": "2026-12-07T05:00:00",
    }  # fmt: skip


def test_a_folder_of_records_gets_todays_report_with_its_meta(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    for seed, (initial, kept) in {42: (0.5, 0.6), 43: (0.5, 0.55)}.items():
        for method in ("catalyst", "random", "single"):
            record = _record(method, seed, initial, kept + (0.01 if method == "catalyst" else 0.0))
            (records / f"{method}__seed{seed}.json").write_text(json.dumps(record))
    settings = {"data": {"dataset": "rotten_tomatoes"}, "model": {"model": "minilm"}}
    (tmp_path / "comparison.json").write_text(json.dumps({"settings": settings, "seeds": [42, 43, 44]}))
    assert compare_report.main([str(tmp_path)]) == 0
    md = (tmp_path / "compare.md").read_text()
    assert "Task `rotten_tomatoes`, doer `minilm`." in md and "2 of 3 seeds finished" in md
    assert "| catalyst | 2 | 50.0 | 58.5 | 58.5 | 2 of 2 |" in md
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["summary"]["contrasts"]["catalyst - single"]["difference"]["n"] == 2 and report["report_by"]
    assert "matched to `catalyst` by **gradient steps**" in md  # no single record says otherwise


def test_single_matched_by_compute_is_read_from_its_records(tmp_path):
    """An unfinished comparison's meta file has no ``match``: the ``single`` records' settings say how."""
    records = tmp_path / "records"
    records.mkdir()
    for method in ("catalyst", "random", "single"):
        record = _record(method, 42, 0.5, 0.6)
        record["settings"] = {"method": method, "seed": 42, "matched_steps": 10 if method == "single" else None}
        if method == "single":
            record["settings"]["match"] = "compute"
        (records / f"{method}__seed42.json").write_text(json.dumps(record))
    (tmp_path / "comparison.json").write_text(json.dumps({"settings": {}, "seeds": [42]}))
    assert compare_report.main([str(tmp_path)]) == 0
    md = (tmp_path / "compare.md").read_text()
    assert "matched to `catalyst` by **compute**" in md and "by **gradient steps**" not in md
