"""benchmarks/refactor_fingerprint.py without its runs: what it removes before hashing, and what --compare says."""

from __future__ import annotations

import json

from benchmarks import refactor_fingerprint as fp


def test_timing_fields_paths_and_addresses_are_removed_before_hashing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    record = {
        "summary": {"seconds": {"rounds": 2.5}, "mentor_usage": {"latency_s": 0.1, "calls": 2}},
        "log_history": [{"eval_runtime": 0.3, "eval_samples_per_second": 9.0, "catalyst/mentor_latency_s": 0.2,
                         "eval_loss": 0.69, "step": 3}],
        "best_model_checkpoint": f"{out}/checkpoint-3",
        "mentor_base_url": "http://127.0.0.1:4242/v1",
    }  # fmt: skip
    path = out / "trainer_state.json"
    path.write_text(json.dumps(record))
    replacements = {str(out): "<output_dir>", "http://127.0.0.1:4242/v1": "<mentor_base_url>"}
    scrubbed = fp._scrub(record, replacements)
    assert scrubbed == {
        "summary": {"mentor_usage": {"calls": 2}},
        "log_history": [{"eval_loss": 0.69, "step": 3}],
        "best_model_checkpoint": "<output_dir>/checkpoint-3",
        "mentor_base_url": "<mentor_base_url>",
    }
    slower = {**record, "summary": {"seconds": {"rounds": 9.0}, "mentor_usage": {"latency_s": 3.0, "calls": 2}}}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(slower))
    assert fp._hash_json(path, replacements) == fp._hash_json(other, replacements)
    changed = {**record, "log_history": [{**record["log_history"][0], "eval_loss": 0.7}]}
    other.write_text(json.dumps(changed))
    assert fp._hash_json(path, replacements) != fp._hash_json(other, replacements)


def test_compare_names_what_differs_and_exits_1(tmp_path, capsys):
    card = "# t\n\n## a\nx\n### How to load\ny\n"
    a = {"setups": {"best": {"args": ["--x"], "files": {"README.md": "1", "h.json": "2"},
                             "card_sections": fp.card_sections(card)}}}  # fmt: skip
    b = json.loads(json.dumps(a))
    b["setups"]["best"]["files"]["h.json"] = "3"
    b["setups"]["best"]["card_sections"] = fp.card_sections(card.replace("y", "z"))
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert fp.main(["--compare", str(pa), str(pa)]) == 0
    assert capsys.readouterr().out.startswith("identical")
    assert fp.main(["--compare", str(pa), str(pb)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "best: file h.json differs",
        "best: card section ### How to load differs",
    ]
