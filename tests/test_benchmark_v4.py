"""Benchmark v4 (issue 34): the plan's methods and their trainer settings, compute matching, the report on hand-made
records (best PEFT start by validation, contrasts, proposer wins rebuilt round by round), the dry run, and every
method end to end on a tiny BERT doer with a scripted mentor."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from benchmarks import compare
from benchmarks.compare.formats import fmt_diff
from benchmarks.compare.report_v4 import (
    README_BEGIN,
    README_END,
    best_peft_starts,
    proposer_wins,
    readme_headline_v4,
    summarize_v4,
    write_readme_headline,
)
from benchmarks.generated_block import block_of
from peft_catalyst.app.compare.stats import cluster_bootstrap_ratio
from peft_catalyst.history import write_json_atomic
from peft_catalyst.records import TRAIN_FACTOR
from tests import docs_support, tiny
from tests.testing_utils import ScriptedMentor

PLAN = compare.V4_PLAN


def test_the_v4_methods_map_to_their_trainer_settings():
    assert PLAN.methods == compare.V4_METHODS and PLAN.tasks == ("rotten_tomatoes", "trec")
    spec = {m: PLAN.spec(m) for m in PLAN.methods}
    assert [spec[m].init for m in ("peft-random", "peft-sample-vocab", "peft-text")] == ["random", "vocab", "text"]
    for m in ("peft-random", "peft-sample-vocab", "peft-text"):  # plain tuning, matched by compute to catalyst
        assert not spec[m].rounds and spec[m].mentor == "none" and not spec[m].trainer
        assert (spec[m].matched_to, spec[m].match) == ("catalyst", "compute")
    t = {m: dict(spec[m].trainer) for m in compare.V4_PLAN.methods if spec[m].rounds}
    mix, no_mentor = compare.V4_RECIPE.mix(True), compare.V4_RECIPE.mix(False)
    assert mix == "mentor=2,labels=2,examples=2,sample_vocab=1,current=1"
    assert no_mentor == "labels=4,examples=2,sample_vocab=1,current=1"  # the mentor's 2 go to labels
    for m in ("screened-init", "screened-init-mentor", "catalyst", "catalyst-no-mentor"):
        assert spec[m].selection == "best" and spec[m].init == "text", m
        assert t[m]["catalyst_initial_round"] is True and t[m]["catalyst_screen_schedule"] == "halving", m
        assert t[m]["catalyst_restart_loss_ratio"] == 1.0, m
        assert t[m]["catalyst_proposers"] == (mix if m in ("screened-init-mentor", "catalyst") else no_mentor), m
        assert spec[m].mentor == ("llm" if "mentor" in t[m]["catalyst_proposers"] else "none"), m
    for m in ("screened-init", "screened-init-mentor"):  # the initial round alone, then plain tuning
        assert t[m]["catalyst_rounds"] == 0 and (spec[m].matched_to, spec[m].match) == ("catalyst", "compute")
    for m in ("catalyst", "catalyst-no-mentor"):
        assert "catalyst_rounds" not in t[m] and spec[m].matched_to is None
    # every method but catalyst depends on it; catalyst runs first in each (task, seed)
    assert PLAN.run_order("trec", "smollm2")[:2] == ["catalyst", "catalyst-no-mentor"]
    d = PLAN.doers[0]
    assert d.seeds >= 5 and d.keep_best and d.keep_best_metric == "label_loss"
    rt, trec = PLAN.budget(compare.Cell("rotten_tomatoes", "smollm2", "catalyst", 0)), d.for_task("trec")
    assert (rt.max_steps, rt.batch_size) == (160, 8) and trec.max_steps == 320 and trec.eval_every == 50
    assert rt.rounds * rt.stage_steps < rt.max_steps and trec.rounds * trec.stage_steps < trec.max_steps
    # the recipe is one constant: another mix changes every method of ours, and their stored settings
    other = compare.v4_specs(dataclasses.replace(compare.V4_RECIPE, proposers=(("mentor", 4), ("vocab", 4))))
    assert dict(other[5].trainer)["catalyst_proposers"] == "mentor=4,vocab=4"
    assert dict(other[3].trainer)["catalyst_proposers"] == "vocab=4,labels=4"


def test_earlier_plans_keep_their_stored_settings():
    """The fields v4 added (per-task budgets, match, eval schedule) stay out of earlier plans' stored settings."""
    settings = compare.cell_settings(compare.V3_PLATEAU_PLAN, compare.Cell("trec", "smollm2", "single-matched", 0))
    assert "match" not in settings["method"] and "task_overrides" not in settings["doer_plan"]
    assert "eval_every" not in settings["doer_plan"]
    v4 = compare.cell_settings(PLAN, compare.Cell("trec", "smollm2", "peft-random", 0))
    assert v4["method"]["match"] == "compute" and v4["doer_plan"]["max_steps"] == 320
    assert "task_overrides" not in v4["doer_plan"]


def _catalyst_record(plan, cell, stages, screening, races, main, initial):
    return {
        "settings": compare.cell_settings(plan, cell),
        "method": cell.method,
        "seed": cell.seed,
        "task": cell.task,
        "gradient_steps": {"stages": main, "races": 0, "total": main},
        "compute": {"stages": stages, "races": races, "screening": screening, "tuning": stages + races + screening},
        "initial_round_compute": initial,
    }


def test_compute_matching_gives_plain_tuning_the_difference_as_steps(tmp_path):
    cells_dir = tmp_path / "cells"
    cat = compare.Cell("rotten_tomatoes", "smollm2", "catalyst", 2)
    per_step = 8 * 40  # tokens of one training step of 8 rows
    stages = 160 * TRAIN_FACTOR * per_step
    record = _catalyst_record(PLAN, cat, stages, screening=30_000, races=0, main=160, initial={"screening": 9_000})
    plain = compare.Cell("rotten_tomatoes", "smollm2", "peft-text", 2)
    screened = compare.Cell("rotten_tomatoes", "smollm2", "screened-init", 2)
    assert compare.matched_steps(PLAN, cells_dir, plain) is None  # waits for its catalyst run
    write_json_atomic(compare.cell_path(cells_dir, cat), record)
    steps = compare.matched_steps(PLAN, cells_dir, plain)
    assert steps == round(160 + 30_000 / (TRAIN_FACTOR * per_step)) == 191  # the extra compute as training steps
    # screened-init spends its own initial round first: that round's compute is not bought twice
    assert compare.matched_steps(PLAN, cells_dir, screened) == round(160 + 21_000 / (TRAIN_FACTOR * per_step))
    assert compare.dependency(PLAN, plain) == cat
    # the rule is compare --match compute's
    from peft_catalyst.app.compare.runs import compute_matched_steps

    assert steps == compute_matched_steps({"method": "catalyst", "seed": 2, **record, "steps": {"main": 160}})


def test_cluster_bootstrap_ratio_resamples_whole_clusters():
    low, high = cluster_bootstrap_ratio([1, 1, 1, 1], [2, 2, 2, 2])
    assert low == high == 0.5  # every cluster alike: no spread
    low, high = cluster_bootstrap_ratio([0, 4], [4, 4])
    assert low == 0.0 and high == 1.0  # two clusters that disagree: the interval spans both
    assert all(math.isnan(x) for x in cluster_bootstrap_ratio([1], [2]))
    with pytest.raises(ValueError, match="one numerator and one denominator"):
        cluster_bootstrap_ratio([1, 2], [3])


def test_the_readme_headline_is_the_committed_v4s():
    """Once the grid is committed: the README's v4 headline is :func:`readme_headline_v4` of the committed runs."""
    if not (compare.RESULTS_DIR / "v4.md").is_file():
        pytest.skip("benchmark v4 has not been run yet (no benchmarks/results/compare/v4.md)")
    readme = docs_support.README.read_text(encoding="utf-8")
    shown = block_of(readme, README_BEGIN, README_END, "README.md")
    finished = compare.load_finished(PLAN, compare.RESULTS_DIR / "cells" / "v4")
    assert shown == readme_headline_v4(PLAN, summarize_v4(PLAN, finished)), (
        "the README's v4 headline is not the committed runs': python -m benchmarks.compare --plan v4 --report-only "
        "--readme"
    )


# ------------------------------------------------------------------------------------------ report on hand-made runs


def _run(task, method, seed, test, validation, rounds=()):
    return {
        "task": task,
        "doer": "smollm2",
        "method": method,
        "seed": seed,
        "test_accuracy": test,
        "kept_validation_accuracy": validation,
        "gradient_steps": {"stages": 100, "races": 0, "total": 100},
        "compute": {"stages": 3000, "races": 0, "screening": 0 if method.startswith("peft") else 500,
                    "evaluation": 50, "tuning": 3000 + (0 if method.startswith("peft") else 500)},  # fmt: skip
        "seconds": {"total": 10.0},
        "rounds": list(rounds),
        "curve": [],
    }


def _round(trigger, screening, selection, proposers):
    return {"trigger": trigger, "step": 0 if trigger == "initial" else 50, "proposers": proposers,
            "wins": {"screening": screening, "selection": selection}}  # fmt: skip


MIX = {"mentor": 2, "labels": 2, "examples": 2, "sample_vocab": 1, "current": 1}


def _hand_made():
    """Two tasks x 2 seeds. On trec, peft-random has the best test accuracy but peft-text the best validation: the
    best PEFT start must be peft-text. Rounds: catalyst's initial round won by labels (both seeds of rt), later
    rounds kept the incumbent."""
    plan = dataclasses.replace(PLAN, doers=(dataclasses.replace(PLAN.doers[0], seeds=2),))
    acc = {  # method -> task -> [(test, validation) per seed]
        "peft-random": {"rotten_tomatoes": [(0.70, 0.70), (0.72, 0.70)], "trec": [(0.80, 0.50), (0.82, 0.52)]},
        "peft-sample-vocab": {"rotten_tomatoes": [(0.60, 0.60), (0.62, 0.60)], "trec": [(0.40, 0.40), (0.42, 0.40)]},
        "peft-text": {"rotten_tomatoes": [(0.75, 0.80), (0.77, 0.80)], "trec": [(0.60, 0.70), (0.62, 0.72)]},
        "screened-init": {"rotten_tomatoes": [(0.78, 0.8), (0.79, 0.8)], "trec": [(0.65, 0.7), (0.66, 0.7)]},
        "screened-init-mentor": {"rotten_tomatoes": [(0.78, 0.8), (0.80, 0.8)], "trec": [(0.64, 0.7), (0.66, 0.7)]},
        "catalyst": {"rotten_tomatoes": [(0.80, 0.8), (0.81, 0.8)], "trec": [(0.70, 0.7), (0.60, 0.7)]},
        "catalyst-no-mentor": {"rotten_tomatoes": [(0.79, 0.8), (0.81, 0.8)], "trec": [(0.68, 0.7), (0.61, 0.7)]},
    }
    results = {}
    for method, by_task in acc.items():
        for task, values in by_task.items():
            for seed, (test, validation) in enumerate(values):
                rounds = []
                if method == "catalyst":
                    first = "labels" if task == "rotten_tomatoes" else "mentor"
                    rounds = [_round("initial", first, first, MIX), _round("schedule", "current", "current", MIX)]
                run = _run(task, method, seed, test, validation, rounds)
                results[compare.Cell(task, "smollm2", method, seed).key] = run
    return plan, results


def test_the_report_picks_the_best_peft_start_on_validation_and_pairs_the_contrasts():
    plan, results = _hand_made()
    best = best_peft_starts(plan, results)
    assert best["trec"]["method"] == "peft-text"  # validation 0.71 beats peft-random's 0.51; test would say random
    assert best["trec"]["test"]["peft-random"] > best["trec"]["test"]["peft-text"]
    assert best["rotten_tomatoes"]["method"] == "peft-text"
    summary = summarize_v4(plan, results)
    c = summary["contrasts"]["catalyst - best-peft"]
    assert {p["reference"] for p in c["pairs"]} == {"peft-text"} and c["pooled"]["n"] == 4
    assert c["by_task"]["trec"]["mean"] == pytest.approx((0.10 - 0.02) / 2)
    assert c["pooled"]["mean"] == pytest.approx((0.05 + 0.04 + 0.10 - 0.02) / 4)
    assert (c["pooled"]["wins"], c["pooled"]["ties"], c["pooled"]["losses"]) == (3, 0, 1)
    assert len(c["pooled"]["t_ci"]) == 2 and len(c["pooled"]["bootstrap_ci"]) == 2
    mentor = summary["contrasts"]["catalyst - catalyst-no-mentor"]
    assert mentor["pooled"]["mean"] == pytest.approx((0.01 + 0.0 + 0.02 - 0.01) / 4)
    assert set(summary["contrasts"]) == {f"{a} - {b}" for a, b, _ in compare.V4_CONTRASTS}
    compute = summary["compute"]["trec"]
    assert compute["peft-text"]["tuning_vs_catalyst"]["mean"] == pytest.approx(3000 / 3500)


def test_the_readme_headline_is_the_summary_in_one_table():
    plan, results = _hand_made()
    summary = summarize_v4(plan, results)
    block = readme_headline_v4(plan, summary)
    lines = block.splitlines()
    assert lines[0].startswith("**Benchmark v4**") and README_BEGIN not in block and README_END not in block
    assert "`benchmarks/results/compare/v4.md`" in block and "2 seeds per task" in block
    assert "rotten_tomatoes `peft-text`, trec `peft-text`" in block  # chosen on validation, not peft-random's test
    rows = {line.split(" | ")[0].strip("|` "): line for line in lines if line.startswith("| `")}
    assert list(rows) == list(plan.methods)
    assert "| 80.5 | 65.0 | " + fmt_diff(summary["contrasts"]["catalyst - best-peft"]["pooled"]) in rows["catalyst"]
    # no contrast with itself; the tuning compute each method was given, then the steps it bought
    assert rows["peft-text"].startswith("| `peft-text` | 76.0 | 61.0 |  | 3.00k / 3.00k | 100 / 100 |")
    assert "| 3.50k / 3.50k | 100 / 100 |" in rows["catalyst"]
    assert "the validation curves: `benchmarks/results/compare/v4.png`" in block
    mentor = summary["contrasts"]["catalyst - catalyst-no-mentor"]["pooled"]
    assert f"`catalyst - catalyst-no-mentor` {fmt_diff(mentor)}" in block


def test_the_readme_headline_is_written_between_its_markers_and_nowhere_else(tmp_path):
    plan, results = _hand_made()
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{README_BEGIN}\nold figures\n{README_END}\n\n## Next\n", encoding="utf-8")
    write_readme_headline(plan, results, readme)
    page = readme.read_text(encoding="utf-8")
    assert block_of(page, README_BEGIN, README_END) == readme_headline_v4(plan, summarize_v4(plan, results))
    assert page.startswith("# Title\n\nintro\n\n" + README_BEGIN + "\n**Benchmark v4**")
    assert page.endswith(f"{README_END}\n\n## Next\n") and "old figures" not in page
    write_readme_headline(plan, results, readme)
    assert readme.read_text(encoding="utf-8") == page  # rewriting is a no-op
    readme.write_text("# Title\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs the marker lines"):
        write_readme_headline(plan, results, readme)
    assert readme.read_text(encoding="utf-8") == "# Title\n"  # a page without the markers is left as it was


@pytest.mark.parametrize(
    "argv",
    [["--plan", "v4", "--tasks", "trec"], ["--plan", "v4", "--quick"], ["--plan", "v3-stall"],
     ["--plan", "v4", "--output-dir", "elsewhere"]],
)  # fmt: skip
def test_the_readme_headline_is_written_only_from_the_whole_committed_plan(argv, capsys):
    from benchmarks.compare.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--readme"])
    assert exit_.value.code == 2 and "--readme writes the committed v4 plan's headline" in capsys.readouterr().err


def test_proposer_wins_are_rebuilt_round_by_round_with_a_cluster_interval():
    plan, results = _hand_made()
    wins = proposer_wins(plan, results, methods=["catalyst"], resamples=2000)["catalyst"]
    initial = wins["initial"]["selection"]
    assert initial["rounds"] == 4 and initial["clusters"] == 4
    assert initial["proposers"]["labels"]["wins"] == 2 and initial["proposers"]["mentor"]["wins"] == 2
    assert initial["proposers"]["labels"]["draw_share"] == pytest.approx(2 / 8)
    low, high = initial["proposers"]["labels"]["ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0
    later = wins["later"]["selection"]["proposers"]
    assert later["current"]["wins"] == 4 and later["current"]["ci95"] == [1.0, 1.0]
    assert wins["any"]["screening"]["rounds"] == 8
    md = compare.report_v4.markdown_v4(plan, summarize_v4(plan, results), _meta(plan, results))
    assert "| catalyst | initial | selection | 4 | " in md and "| 2 = 50% [" in md
    assert "| `catalyst - best-peft` |" in md and "best PEFT start of each task" in md


def _meta(plan, results):
    return {
        "missing_runs": [],
        "timing": {"planned_runs": len(plan.cells()), "runs": len(results), "run_wall_s_sum": 0.0,
                   "run_estimated_s_sum": 0.0, "workers": 1, "threads_per_worker": 1, "elapsed_s_this_command": None},
        "command": "x", "date": "d", "git": "g", "machine": {"description": "m"}, "packages": {}, "plan_lines": [],
    }  # fmt: skip


def test_the_dry_run_prints_the_plan_and_its_estimate(tmp_path, capsys):
    # run_plan, the command's --dry-run path, not compare.main: main sets the process's logging for a long run
    # (transformers' verbosity to error), which would silence later tests' expected transformers warnings.
    from benchmarks.compare.runner import run_plan

    assert run_plan(compare.PLANS["v4"], tmp_path, ["--plan", "v4", "--dry-run"], dry_run=True) == {}
    out = capsys.readouterr().out
    assert "plan 'v4'" in out and "smollm2 / trec: 5 seed(s), 35 runs; 320 steps" in out
    assert "proposers mentor=2,labels=2,examples=2,sample_vocab=1,current=1" in out
    assert "estimate: " in out and " h in all" in out
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


# ------------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module", params=["bert", "llama"])
def tiny_doer_dir(request, tmp_path_factory):
    """A tiny doer of each kind: a sequence classifier (a head) and a causal LM answering with label words (as
    SmolLM2 does in the plan)."""
    tok = tiny.bpe_tokenizer()
    path = tmp_path_factory.mktemp(f"tiny_{request.param}")
    model = tiny.tiny_bert_seq_cls(tok, num_labels=2) if request.param == "bert" else tiny.tiny_llama(tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _scripted_llm(doer, run_dir, mentor_cache):
    return ScriptedMentor(["1. the movie was great\n2. a terrible film", "1. an excellent story\n2. bad acting"])


def test_every_v4_method_runs_matched_by_compute_and_reports(tiny_doer_dir, tmp_path):
    doer = dataclasses.replace(
        compare.V4_QUICK_PLAN.doers[0], doer="tiny", model_path=str(tiny_doer_dir), max_steps=6, batch_size=4,
        train_size=32, catalyst_size=8, validation_size=8, test_size=16, num_virtual_tokens=6, eval_batch_size=16,
        max_length=64, eval_every=3,
    )  # fmt: skip
    plan = dataclasses.replace(compare.V4_QUICK_PLAN, name="smoke4", doers=(doer,), wall_budget_s=None)
    paths = compare.run_plan(plan, tmp_path, ["--smoke4"], llm_factory=_scripted_llm)
    runs = {
        r["method"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "cells" / "smoke4").glob("*.json"))
    }
    assert set(runs) == set(compare.V4_METHODS)
    inits = {m: runs[m]["prompts"]["initial"] for m in runs}
    assert inits["peft-random"] != inits["peft-sample-vocab"] != inits["peft-text"]  # three PEFT starts
    assert inits["peft-text"] == inits["catalyst"] == inits["screened-init"]  # ours start from the manual prompt
    cat = runs["catalyst"]
    assert [r["trigger"] for r in cat["rounds"]] == ["initial", "schedule"]
    assert cat["rounds"][0]["proposers"].get("current") == 1 and "selection" in cat["rounds"][0]["wins"]
    assert {c["proposer"] for c in cat["rounds"][0]["candidates"]} >= {"labels", "examples", "sample_vocab"}
    assert cat["initial_round_compute"]["screening"] > 0 and cat["compute"]["tuning"] > cat["compute"]["stages"]
    assert cat["llm"]["calls"] == 2 and runs["catalyst-no-mentor"]["llm"]["calls"] == 0
    assert "mentor" not in runs["catalyst-no-mentor"]["rounds"][0]["proposers"]
    for m in ("screened-init", "screened-init-mentor"):
        assert [r["trigger"] for r in runs[m]["rounds"]] == ["initial"], m  # no later round
    expected = compare.compute_steps(cat)
    for m in ("peft-random", "peft-sample-vocab", "peft-text"):
        r = runs[m]
        assert not r["rounds"] and r["optimizer_steps"] == expected == r["gradient_steps"]["stages"], m
        assert r["matched_to"] == {"method": "catalyst", "total_steps": expected, "match": "compute"}
        assert r["compute"]["screening"] == 0 and r["compute"]["tuning"] == r["compute"]["stages"] > 0
        assert [p["step"] for p in r["curve"]][:2] == [0, 3] and r["kept_validation_accuracy"] is not None
    assert expected > cat["gradient_steps"]["stages"]  # the rounds' screening bought extra steps
    assert runs["screened-init"]["optimizer_steps"] == compare.compute_steps(cat, own_initial_round=True)
    report = json.loads(paths["json"].read_text())
    summary = report["summary"]
    assert summary["best_peft"]["rotten_tomatoes"]["method"] in compare.V4_PEFT_STARTS
    assert "catalyst - best-peft" in summary["contrasts"] and summary["proposer_wins"]["catalyst"]["initial"]
    assert summary["compute"]["rotten_tomatoes"]["peft-text"]["tuning_vs_catalyst"]["mean"] == pytest.approx(1, 0.3)
    md = paths["md"].read_text()
    assert "## Rounds won per proposer" in md and "## Validation curves: flat or not" in md
    assert "rotten_tomatoes / peft-text" in md and paths["png"].is_file()


def test_report_only_reproduces_the_committed_v4_tables(tmp_path):
    """Once the grid is committed: its stored runs give the committed v4.md tables row for row, and the proposer
    counts are the rounds' own ``wins`` summed."""
    committed = compare.RESULTS_DIR / "v4.md"
    if not committed.is_file():
        pytest.skip("benchmark v4 has not been run yet (no benchmarks/results/compare/v4.md)")
    finished = compare.load_finished(PLAN, compare.RESULTS_DIR / "cells" / "v4")
    paths = compare.write_report_v4(PLAN, finished, tmp_path, ["--report-only"], jobs=2, threads=1)
    table = [line for line in paths["md"].read_text().splitlines() if line.startswith("| ")]
    assert table and table == [line for line in committed.read_text().splitlines() if line.startswith("| ")]
    counted: dict[str, int] = {}
    for run in finished.values():
        if run["method"] in ("catalyst", "catalyst-no-mentor"):
            for r in run["rounds"]:
                if "selection" in r["wins"]:
                    counted[r["wins"]["selection"]] = counted.get(r["wins"]["selection"], 0) + 1
    rows = json.loads(paths["json"].read_text())["summary"]["proposer_wins"]["all"]["any"]["selection"]["proposers"]
    assert {p: row["wins"] for p, row in rows.items() if row["wins"]} == counted
