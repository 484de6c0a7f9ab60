"""The method-comparison benchmark: statistics on known inputs, the baselines' mentors and frozen prompt, and the
whole machinery (every method, resume, report) end to end on a tiny BERT doer with a scripted mentor."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import DataCollatorForLanguageModeling

from benchmarks import compare
from benchmarks.baselines import FrozenPromptTrainer, HistoryMentor, freeze_soft_prompt
from peft_catalyst import CatalystConfig, CatalystTrainer, CatalystTrainingArguments
from peft_catalyst.app.compare.stats import bootstrap_ci, mean_std, paired_difference, paired_t_ci, t_quantile
from peft_catalyst.history import write_json_atomic
from peft_catalyst.mentors import ChatMentor, Completion, MentorRequest, RandomMentor, TrajectoryPoint
from peft_catalyst.projection import get_soft_prompt, read_soft_prompt, text_to_token_ids, vocabulary_words
from peft_catalyst.records import Decision, RoundRecord, ScoredPrompt, Trigger
from tests import tiny

# ------------------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(
    "df, expected",  # two-sided 95% critical values of Student's t (any statistics table)
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706), (9, 2.2622), (30, 2.0423), (100, 1.9840)],
)
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_t_quantile_other_levels_and_bad_input():
    assert t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-4)
    assert t_quantile(0.995, 10) == pytest.approx(3.1693, abs=1e-4)
    assert t_quantile(0.5, 3) == 0.0
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)


def test_paired_t_ci_on_known_differences():
    # d = 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t(0.975, 4) = 2.7764 -> 3 -+ 1.9632
    low, high = paired_t_ci([1, 2, 3, 4, 5])
    assert low == pytest.approx(1.03676, abs=1e-4) and high == pytest.approx(4.96324, abs=1e-4)
    assert all(math.isnan(x) for x in paired_t_ci([0.3]))


def test_bootstrap_ci_known_cases():
    assert bootstrap_ci([0.02] * 5) == pytest.approx((0.02, 0.02))
    low, high = bootstrap_ci([1, 2, 3, 4, 5], seed=0)
    assert (low, high) == bootstrap_ci([1, 2, 3, 4, 5], seed=0)  # seeded
    # Resampled means of 1..5 lie on a grid of 1/5 between 1 and 5; the percentile interval sits inside the t one.
    assert 1.0 <= low < 3.0 < high <= 5.0 and 1.03676 < low and high < 4.96324
    assert low == pytest.approx(1.8, abs=0.2) and high == pytest.approx(4.2, abs=0.2)
    assert all(math.isnan(x) for x in bootstrap_ci([1.0]))


def test_paired_difference_counts_and_spread():
    diff = paired_difference([0.60, 0.62, 0.61, 0.70], [0.59, 0.62, 0.63, 0.60])
    assert diff.n == 4 and (diff.wins, diff.ties, diff.losses) == (2, 1, 1)
    assert diff.mean == pytest.approx((0.01 + 0.0 - 0.02 + 0.10) / 4)
    assert diff.std == pytest.approx(mean_std([0.01, 0.0, -0.02, 0.10])[1])
    assert diff.t_ci[0] < diff.mean < diff.t_ci[1]
    assert json.loads(json.dumps(diff.to_dict()))["t_ci"] == list(diff.t_ci)
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])


# ------------------------------------------------------------------------------------------------------ baselines


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


class RecordingMentor(ChatMentor):
    """A real Mentor (parsing, filters, usage) whose backend returns fixed numbered lists in turn, keeping requests."""

    def __init__(self, *replies: str):
        super().__init__(strict_retry=False)
        self.replies, self.requests, self.name = replies, [], "scripted"

    def complete(self, messages, request):
        reply = self.replies[min(len(self.requests), len(self.replies) - 1)]
        self.requests.append(request)
        return Completion(texts=[reply], model="scripted", prompt_tokens=11, completion_tokens=7)

    def cache_identity(self):
        return {"backend": "scripted", "model": "scripted"}


def _round(index: int, current: ScoredPrompt, *candidates: ScoredPrompt, **kw) -> RoundRecord:
    return RoundRecord(
        round=index, step=5 * index, trigger=Trigger.SCHEDULE, decision=Decision.KEPT, current=current,
        candidates=list(candidates), **kw,
    )  # fmt: skip


def test_history_mentor_shows_the_best_prompts_scored_so_far():
    inner = RecordingMentor("1. rate the review\n2. is it positive")
    history = [
        _round(
            1,
            ScoredPrompt("zz qq", token_ids=[1], score=0.9, loss=0.3),
            ScoredPrompt("good or bad", token_ids=[2], score=0.5, loss=0.2),
            ScoredPrompt("broken", token_ids=[3], score=float("inf"), loss=float("inf")),
            ScoredPrompt("unusable", error="tokenises to nothing"),
            ScoredPrompt("movie mood", token_ids=[4], score=0.7, loss=0.1),
        ),
        _round(2, ScoredPrompt("good or bad", 0.45, 0.2, token_ids=[2]), ScoredPrompt("xx", 2.0, token_ids=[5])),
    ]
    mentor = HistoryMentor(inner, lambda: history, max_points=3)
    request = MentorRequest("Classify review sentiment", [TrajectoryPoint("good or bad", 0.45, 0.2)], 2, 4)
    proposal = mentor.propose(request)
    sent = inner.requests[-1].trajectory
    # ranked by the score (lower is better here), not by the loss; the best score of a text is kept
    assert [(p.text, p.score, p.loss) for p in sent] == [
        ("good or bad", 0.45, 0.2), ("movie mood", 0.7, 0.1), ("zz qq", 0.9, 0.3)
    ]  # fmt: skip
    assert proposal.candidates == ["rate the review", "is it positive"]
    assert mentor.usage is inner.usage and mentor.usage.prompt_tokens == 11
    # A metric where higher is better ranks the other way.
    higher = MentorRequest("Classify review sentiment", [], 2, 4, metric="accuracy", higher_is_better=True)
    assert [p.text for p in mentor.with_history(higher).trajectory] == ["xx", "zz qq", "movie mood"]


def _causal_dataset(tok, n=24):
    texts = [tiny.CORPUS[i % 8] for i in range(n)]
    return Dataset.from_dict({"text": texts}).map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])


def _causal_args(tmp_path, **kwargs):
    return CatalystTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        catalyst_rounds=0,
        **kwargs,
    )


def test_frozen_prompt_trainer_leaves_a_lone_prompt_bit_for_bit(tok, tmp_path):
    model = get_peft_model(tiny.tiny_llama(tok), CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert not freeze_soft_prompt(model)  # nothing else trains: it stays a parameter, the lr does the freezing
    before = read_soft_prompt(model)
    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    FrozenPromptTrainer(
        model=model, args=_causal_args(tmp_path), train_dataset=_causal_dataset(tok), data_collator=collator
    ).train()
    assert torch.equal(read_soft_prompt(model), before)
    CatalystTrainer(  # the same run with the ordinary trainer moves the prompt: the test can fail
        model=model, args=_causal_args(tmp_path), train_dataset=_causal_dataset(tok), data_collator=collator
    ).train()
    assert not torch.equal(read_soft_prompt(model), before)


# ------------------------------------------------------------------------------------------------ end to end


def _scripted_llm(doer, run_dir, mentor_cache):
    return RecordingMentor(
        "1. the movie was great\n2. a terrible film\n3. a good ending", "1. an excellent story\n2. bad acting"
    )


@pytest.fixture(scope="module")
def tiny_doer_dir(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("tiny_bert")
    tiny.tiny_bert_seq_cls(tok, num_labels=2).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _plan(model_dir) -> compare.Plan:
    doer = compare.DoerPlan(
        "tiny",
        seeds=2,
        max_steps=6,
        batch_size=4,
        rounds=2,
        stage_steps=2,
        train_size=32,
        catalyst_size=8,
        test_size=16,
        num_virtual_tokens=4,
        num_candidates=3,
        trajectory_points=2,
        eval_batch_size=16,
        max_length=64,  # + 4 virtual tokens within the tiny BERT's 128 positions
        model_path=str(model_dir),
    )
    return compare.Plan(name="smoke", tasks=("rotten_tomatoes",), doers=(doer,))


def test_every_method_runs_resumes_and_reports(tiny_doer_dir, tok, tmp_path, monkeypatch, capsys):
    plan = _plan(tiny_doer_dir)
    paths = compare.run_plan(plan, tmp_path, ["--smoke"], llm_factory=_scripted_llm)
    runs = {
        (r["method"], r["seed"]): r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "cells" / "smoke").glob("*.json"))
    }
    assert set(runs) == {(m, s) for m in compare.METHODS for s in (0, 1)}

    for seed in (0, 1):
        by = {m: runs[(m, seed)] for m in compare.METHODS}
        # Same seed: same init (prompt) for single-random and every restart method; the text init differs.
        inits = {by[m]["prompts"]["initial"] for m in ("single-random", *compare.ROUND_METHODS)}
        assert len(inits) == 1 and by["single-text"]["prompts"]["initial"] not in inits
        assert all(not by[m]["rounds"] for m in compare.SINGLE_METHODS)
        assert [r["status"] for r in by["blind"]["rounds"]] == ["blind", "blind"]
        first = tok.decode(text_to_token_ids(tok, "the movie was great", 4))
        assert by["blind"]["rounds"][0]["prompt_after"] == first  # the first candidate, unscored
        for m in ("random-restarts", "llm-only", "catalyst"):
            assert len(by[m]["rounds"]) == 2 and {r["status"] for r in by[m]["rounds"]} <= {"accepted", "kept"}
            assert all(c["scored"] for r in by[m]["rounds"] for c in r["candidates"])
            for r in by[m]["rounds"]:  # the ranking metric and the score that decided
                assert r["metric"] == "label_loss" and r["higher_is_better"] is False and r["race_steps"] == 0
                taken = r["candidates"][r["winner"]] if r["status"] == "accepted" else r["current"]
                assert r["decisive_score"] == taken["score"] is not None
        for m in compare.METHODS:  # no race: the gradient steps are the main loop's
            steps = by[m]["gradient_steps"]
            assert steps == {"stages": by[m]["optimizer_steps"], "races": 0, "total": by[m]["optimizer_steps"]}
        assert by["random-restarts"]["llm"]["calls"] == 0 and by["catalyst"]["llm"]["calls"] == 2
        assert by["catalyst"]["llm"]["prompt_tokens"] == 22
        # llm-only: the prompt moves only by restarts, so it ends as the last accepted text (or its init).
        llm_only = by["llm-only"]
        accepted = [r["prompt_after"] for r in llm_only["rounds"] if r["status"] == "accepted"]
        assert llm_only["prompts"]["final"] == (accepted[-1] if accepted else llm_only["prompts"]["initial"])
        assert llm_only["notes"] == ["prompt frozen by requires_grad, the head trains"]
        assert all(0.0 <= by[m]["test_accuracy"] <= 1.0 for m in compare.METHODS)

    report = json.loads(paths["json"].read_text())
    cell = report["summary"]["cells"][0]
    assert cell["best_single"] in compare.SINGLE_METHODS
    best = cell["methods"][cell["best_single"]]
    for m in compare.METHODS:
        if m == cell["best_single"]:
            assert "vs_best_single" not in cell["methods"][m]
            continue
        diff = cell["methods"][m]["vs_best_single"]
        expected = [a - b for a, b in zip(cell["methods"][m]["accuracy"], best["accuracy"])]
        assert diff["n"] == 2 and diff["mean"] == pytest.approx(sum(expected) / 2)
    assert cell["methods"]["catalyst"]["current_beat_all"]["scored_rounds"] == 4
    # Pooled against single-random, the shared start of the restart methods: the same paired differences.
    start = cell["methods"]["single-random"]["accuracy"]
    for m in compare.ROUND_METHODS:
        expected = [a - b for a, b in zip(cell["methods"][m]["accuracy"], start)]
        pooled = report["summary"]["pooled_vs_single_random"][m]
        assert pooled["n"] == 2 and pooled["mean"] == pytest.approx(sum(expected) / 2)
    assert set(report["summary"]["pooled_vs_single_random"]) == set(compare.ROUND_METHODS)
    assert cell["methods"]["blind"]["current_beat_all"] is None
    assert sum(cell["methods"]["blind"]["accepted_texts"].values()) == 4  # 2 seeds x 2 blind restarts
    assert cell["methods"]["catalyst"]["best_candidate_minus_current_loss"]["rounds"] == 4
    assert cell["methods"]["catalyst"]["llm_per_run"]["calls"] == 2.0
    assert report["machine"]["cpu_count"] >= 1 and report["packages"]["torch"]
    assert "--smoke" in report["command"]
    md = paths["md"].read_text()
    assert "| rotten_tomatoes | tiny | catalyst | 2 |" in md and "Δ vs best single" in md
    assert "Incomplete grid" not in md and report["missing_runs"] == []
    assert paths["png"].stat().st_size > 1000

    # Resume: every run is found finished and nothing is trained again.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(compare.runner, "run_cell", no_training)
    compare.run_plan(plan, tmp_path, [], llm_factory=_scripted_llm)
    assert "12 finished runs skipped" in capsys.readouterr().out

    # A report of a grid cut short says which runs it lacks.
    finished = compare.load_finished(plan, tmp_path / "cells" / "smoke")
    partial = {k: v for k, v in finished.items() if k != "rotten_tomatoes__tiny__blind__s1"}
    paths = compare.write_report(plan, partial, tmp_path / "partial", [])
    assert json.loads(paths["json"].read_text())["missing_runs"] == ["rotten_tomatoes__tiny__blind__s1"]
    assert "**Incomplete grid: 11 of 12 planned runs finished**; missing: tiny seed 1 (1 run)." in (
        paths["md"].read_text()
    )


def _same_figures(new, old, path: str = "") -> bool:
    """Equal up to float round-off (scipy's t quantile differs from the old hand-written one in the 14th digit);
    bootstrap intervals are resampled by scipy since, so only their presence is compared."""
    if isinstance(new, dict) and isinstance(old, dict):
        assert new.keys() == old.keys(), path
        return all(_same_figures(new[k], old[k], f"{path}.{k}") for k in new if "boot" not in k)
    if isinstance(new, list) and isinstance(old, list):
        assert len(new) == len(old), path
        return all(_same_figures(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(new, old)))
    if isinstance(new, float) and isinstance(old, (int, float)):
        assert new == pytest.approx(old, rel=1e-9, abs=1e-12), path
        return True
    assert new == old, path
    return True


def test_report_only_reads_the_committed_runs(tmp_path):
    """The committed runs, stored before the typed records (no metric, scores or gradient steps in their rounds),
    make the same report as the one committed with them."""
    plan, cells_dir = compare.FULL_PLAN, compare.RESULTS_DIR / "cells" / "full"
    finished = compare.load_finished(plan, cells_dir)
    assert len(finished) == len(plan.cells())
    paths = compare.write_report(plan, finished, tmp_path, ["--report-only"], jobs=2, threads=1)
    report = json.loads(paths["json"].read_text())
    committed = json.loads((compare.RESULTS_DIR / "full.json").read_text())
    for new, old in zip(report["summary"]["cells"], committed["summary"]["cells"], strict=True):
        for method, stats in new["methods"].items():
            runs = [finished[compare.Cell(new["task"], new["doer"], method, s).key] for s in stats["seeds"]]
            steps = stats.pop("gradient_steps_per_run")  # old runs: their optimizer steps (no races then)
            assert steps == pytest.approx(sum(r["optimizer_steps"] for r in runs) / len(runs))
            assert stats.pop("race_steps_per_run") == 0  # added with v2: no races in the first grid
            restarted = sum(x["status"] in ("accepted", "blind") for r in runs for x in r["rounds"])
            assert stats.pop("restarted_per_run") == pytest.approx(restarted / len(runs))
            assert _same_figures(stats, old["methods"][method])
    assert _same_figures(report["summary"]["pooled_vs_best_single"], committed["summary"]["pooled_vs_best_single"])
    table = [line for line in paths["md"].read_text().splitlines() if line.startswith("| ")]
    committed_md = (compare.RESULTS_DIR / "full.md").read_text().splitlines()
    assert table and table == [line for line in committed_md if line.startswith("| ")]


def test_changed_settings_are_not_reused(tiny_doer_dir, tmp_path):
    plan = _plan(tiny_doer_dir)
    cell = plan.cells()[0]
    path = compare.cell_path(tmp_path / "cells" / "smoke", cell)
    write_json_atomic(path, {"settings": compare.cell_settings(plan, cell), "test_accuracy": 0.5})
    assert cell.key in compare.load_finished(plan, tmp_path / "cells" / "smoke")
    other = compare.Plan(
        name="smoke", tasks=plan.tasks, doers=(dataclasses.replace(plan.doers[0], max_steps=8),)
    )
    assert cell.key not in compare.load_finished(other, tmp_path / "cells" / "smoke")


def test_runs_survive_a_change_of_seed_count(tiny_doer_dir, tmp_path):
    """A run's result does not depend on how many seeds the plan has: more seeds later reuse the finished ones,
    also those saved when the seed count was still part of the stored settings."""
    plan = _plan(tiny_doer_dir)
    cells_dir = tmp_path / "cells" / "smoke"
    first, second = plan.cells()[0], plan.cells()[1]
    write_json_atomic(compare.cell_path(cells_dir, first), {"settings": compare.cell_settings(plan, first)})
    old = compare.cell_settings(plan, second)
    old["doer_plan"]["seeds"] = plan.doers[0].seeds  # the earlier format
    write_json_atomic(compare.cell_path(cells_dir, second), {"settings": old})
    more = dataclasses.replace(plan, doers=(dataclasses.replace(plan.doers[0], seeds=5),))
    assert {first.key, second.key} <= set(compare.load_finished(more, cells_dir))


def test_cells_run_seed_by_seed_across_doers():
    """A run cut short has whole seeds of every doer: seed 0 of both doers comes before seed 1 of either."""
    order = [(c.seed, c.doer) for c in compare.FULL_PLAN.cells()]
    assert order == sorted(order, key=lambda sd: sd[0]) and order[0][1] == "minilm"
    per_doer = {d.doer: d.seeds for d in compare.FULL_PLAN.doers}
    methods, tasks = len(compare.FULL_PLAN.methods), len(compare.FULL_PLAN.tasks)
    for doer, seeds in per_doer.items():
        assert sum(d == doer for _, d in order) == seeds * methods * tasks


def test_plans_fit_their_budgets():
    # The default: two 1-thread workers on the 2-core machine.
    for quick in (compare.QUICK_PLAN, compare.V2_QUICK_PLAN):
        _, total, _ = compare.plan_lines(quick, set(), jobs=2, threads=1)
        assert total <= 10 * 60
    _, full_total, _ = compare.plan_lines(compare.FULL_PLAN, set(), jobs=2, threads=1)
    assert full_total <= 2.5 * 3600
    _, serial, _ = compare.plan_lines(compare.FULL_PLAN, set(), jobs=1, threads=2)
    assert serial == pytest.approx(2 * full_total / compare.TWO_THREAD_SPEEDUP)
    # v2: 5 MiniLM / 3 SmolLM2 seeds in about 2.5 h (issue 14).
    v2 = compare.V2_PLAN
    assert {d.doer: d.seeds for d in v2.doers} == {"minilm": 5, "smollm2": 3}
    assert v2.wall_budget_s == 2.5 * 3600
    lines, total, _ = compare.plan_lines(v2, set(), jobs=2, threads=1)
    assert total <= v2.wall_budget_s * compare.BUDGET_SLACK
    assert any("fits the budget of about 2.5 h" in line for line in lines)
    # A larger plan says what does not fit, and the seeds that do are whole seeds of both doers.
    bigger = v2.with_seeds({"minilm": 8, "smollm2": 5})
    lines, total, _ = compare.plan_lines(bigger, set(), jobs=2, threads=1)
    fit = compare.seeds_that_fit(bigger, bigger.wall_budget_s, jobs=2, threads=1)
    assert total > bigger.wall_budget_s and all(n >= 2 for n in fit.values())
    assert any("DOES NOT FIT" in line and "minilm 8, smollm2 5" in line for line in lines)
    part_plan = dataclasses.replace(bigger.with_seeds(fit), wall_budget_s=None)
    _, part, _ = compare.plan_lines(part_plan, set(), 2, 1)
    assert part <= bigger.wall_budget_s
    # Both doers have seeds to pair (a paired interval needs two), on both tasks of the issue.
    assert all(d.seeds >= 2 for d in compare.FULL_PLAN.doers)
    assert set(compare.FULL_PLAN.tasks) == {"rotten_tomatoes", "trec"}
    for d in compare.FULL_PLAN.doers + compare.QUICK_PLAN.doers:
        assert d.rounds * d.stage_steps < d.max_steps  # a final gradient stage follows the last round


def test_llm_methods_of_a_seed_share_their_first_mentor_call():
    # catalyst-race runs first; catalyst-best and blind start alike (same init, data, seed), so their first request is
    # the one catalyst-race already made: the plan's shared cache answers it and the estimate does not count it.
    v2 = compare.V2_PLAN
    cell = lambda m: compare.Cell("rotten_tomatoes", "minilm", m, 0)  # noqa: E731
    assert v2.run_order("rotten_tomatoes", "minilm")[0] == "catalyst-race"
    assert [m for m in v2.cell_methods("rotten_tomatoes", "minilm") if v2.shares_first_call(cell(m))] == [
        "catalyst-best",
        "blind",
    ]  # not catalyst-race@random (another init), not the random or single methods
    d = v2.doer("minilm")
    alone = compare.estimate_cell_seconds(cell("blind"), d)
    assert v2.estimate(cell("blind")) == pytest.approx(alone - compare.COSTS["minilm"]["mentor_call_s"])
    assert v2.estimate(cell("catalyst-race")) == pytest.approx(compare.estimate_cell_seconds(cell("catalyst-race"), d))


def test_text_candidates_fit_the_prompt(tok):
    # The benchmark's random-restart texts become exactly num_virtual_tokens ids, like the trainer writes them.
    text = RandomMentor(vocabulary_words(tok), seed=0).propose(MentorRequest("t", [], 1, 4)).candidates[0]
    assert len(text_to_token_ids(tok, text, 4)) == 4


def test_llm_only_schedule():
    d = compare.FULL_PLAN.doer("smollm2")
    assert compare.llm_only_schedule(d, prompt_frozen_by_grad=True) == (d.max_steps, d.stage_steps)
    assert compare.llm_only_schedule(d, prompt_frozen_by_grad=False) == (d.rounds + 1, 1)


def test_soft_prompt_frozen_by_grad_when_a_head_trains(tok):
    model = get_peft_model(tiny.tiny_bert_seq_cls(tok), CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4))
    assert freeze_soft_prompt(model)
    assert not get_soft_prompt(model).weight.requires_grad
    assert any(p.requires_grad for p in model.parameters())


def test_a_run_is_claimed_by_one_worker_only(tmp_path):
    cell = compare.Cell("trec", "minilm", "catalyst", 3)
    assert compare.claim_cell(tmp_path / "locks", cell)
    assert not compare.claim_cell(tmp_path / "locks", cell)
    assert compare.claim_cell(tmp_path / "locks", compare.Cell("trec", "minilm", "catalyst", 4))


# ------------------------------------------------------------------------------------------------------ v2


def test_v2_methods_build_the_right_trainer_settings():
    plan = compare.V2_PLAN
    expected = {  # method: (init, mentor, selection)
        "single-random": ("random", "none", None),
        "single-text": ("text", "none", None),
        "single-matched": ("text", "none", None),
        "random-race": ("text", "random", "race"),
        "catalyst-race": ("text", "llm", "race"),
        "catalyst-best": ("text", "llm", "best"),
        "blind": ("text", "llm", "first"),
        "catalyst-race@random": ("random", "llm", "race"),
        "random-race@random": ("random", "random", "race"),
    }
    methods = plan.cell_methods("rotten_tomatoes", "minilm")
    assert set(methods) == set(expected)  # single-random is the RANDOM-init single; no single-matched@random
    expected["single-matched@random"] = ("random", "none", None)  # still a valid method name
    assert plan.cell_methods("trec", "minilm") == plan.cell_methods("trec", "smollm2") == compare.V2_METHODS
    for m, (init, mentor, selection) in expected.items():
        spec = plan.spec(m)
        assert (spec.init, spec.mentor, spec.selection) == (init, mentor, selection), m
    assert plan.spec("single-matched").matched_to == "catalyst-race"
    assert plan.spec("single-matched@random").matched_to == "catalyst-race@random"
    # The first grid's names keep their meaning (its restart methods from the RANDOM init).
    full = compare.FULL_PLAN
    assert (full.spec("catalyst").init, full.spec("catalyst").selection) == ("random", "best")
    assert full.spec("llm-only").frozen_prompt and full.spec("random-restarts").mentor == "random"
    # Runs carry the method's settings, so a changed meaning reruns them; the first grid's settings are unchanged.
    cell = compare.Cell("trec", "minilm", "catalyst-race", 0)
    settings = compare.cell_settings(plan, cell)
    assert settings["bench_version"] == 2 and settings["method"]["selection"] == "race"
    assert settings["doer_plan"]["race_steps"] == plan.doer("minilm").race_steps
    old = compare.cell_settings(full, compare.Cell("trec", "minilm", "catalyst", 0))
    assert old["bench_version"] == 1 and "method" not in old and "race_steps" not in old["doer_plan"]
    # single-matched runs after catalyst-race in every cell (it needs that run's step count).
    for task in plan.tasks:
        order = [c.method for c in plan.cells() if c.task == task and c.doer == "minilm" and c.seed == 0]
        assert order.index("catalyst-race") < order.index("single-matched")
    # ... also with RANDOM-init copies of it, which a plan may add.
    extra = dataclasses.replace(plan, random_init_methods=("catalyst-race", "single-matched"))
    order = extra.run_order("rotten_tomatoes", "minilm")
    assert order.index("catalyst-race@random") < order.index("single-matched@random")


def test_race_shape_matches_the_library():
    from peft_catalyst.rounds.engine import _race_total_steps

    for arms in range(1, 7):
        for steps in (1, 3, 4):
            assert compare.race_shape(arms, steps)[0] == _race_total_steps(arms, steps, 2)
    assert compare.race_shape(4, 3) == (4 * 3 + 2 * 6, 4 + 2)


def _v2_plan(model_dir, seeds=2) -> compare.Plan:
    base = _plan(model_dir)
    doer = dataclasses.replace(base.doers[0], seeds=seeds, race_steps=1, race_eta=2, race_margin=0.0)
    return compare.Plan(
        name="smoke2",
        tasks=("rotten_tomatoes",),
        doers=(doer,),
        methods=compare.V2_METHODS,
        restart_init="text",
        version=2,
        random_init_cells=(("rotten_tomatoes", "tiny"),),
        random_init_methods=("catalyst-race", "single-matched"),
    )


def test_v2_runs_single_matched_at_catalyst_race_steps_and_reports(tiny_doer_dir, tok, tmp_path, monkeypatch):
    plan = _v2_plan(tiny_doer_dir, seeds=1)
    paths = compare.run_plan(plan, tmp_path, ["--smoke2"], llm_factory=_scripted_llm)
    cells_dir = tmp_path / "cells" / "smoke2"
    runs = {r["method"]: r for r in (json.loads(p.read_text()) for p in cells_dir.glob("*.json"))}
    assert set(runs) == set(plan.cell_methods("rotten_tomatoes", "tiny"))
    for suffix in ("", "@random"):
        race, matched = runs["catalyst-race" + suffix], runs["single-matched" + suffix]
        total = race["gradient_steps"]["total"]
        assert race["gradient_steps"]["races"] == sum(r["race_steps"] for r in race["rounds"]) > 0
        assert total == race["gradient_steps"]["stages"] + race["gradient_steps"]["races"]
        assert matched["optimizer_steps"] == matched["gradient_steps"]["total"] == total
        assert matched["matched_to"] == {"method": "catalyst-race" + suffix, "total_steps": total}
        assert not matched["rounds"] and matched["init"] == race["init"]
        assert matched["prompts"]["initial"] == race["prompts"]["initial"]  # same init per seed
    assert runs["catalyst-race"]["init"] == "text" and runs["catalyst-race@random"]["init"] == "random"
    assert runs["single-text"]["prompts"]["initial"] == runs["catalyst-race"]["prompts"]["initial"]
    assert runs["single-random"]["prompts"]["initial"] == runs["catalyst-race@random"]["prompts"]["initial"]
    assert runs["random-race"]["gradient_steps"]["races"] > 0 and runs["random-race"]["llm"]["calls"] == 0
    assert all(r["status"] == "blind" for r in runs["blind"]["rounds"])
    report = json.loads(paths["json"].read_text())
    assert set(report["summary"]["headline"]) == {"text init", "random init"}
    assert "catalyst-race@random - single-matched@random" in report["summary"]["headline"]["random init"]
    per = report["summary"]["per_method"]["tiny"]
    assert per["single-matched"]["gradient_steps_per_run"] == runs["catalyst-race"]["gradient_steps"]["total"]
    assert "## Headline contrasts" in paths["md"].read_text()

    # A catalyst-race rerun with another step count makes its single-matched stale: it is run again.
    race_path = compare.cell_path(cells_dir, compare.Cell("rotten_tomatoes", "tiny", "catalyst-race", 0))
    data = json.loads(race_path.read_text())
    data["gradient_steps"]["total"] += 1
    write_json_atomic(race_path, data)
    finished = compare.load_finished(plan, cells_dir)
    assert "rotten_tomatoes__tiny__single-matched__s0" not in finished
    assert "rotten_tomatoes__tiny__catalyst-race__s0" in finished
    seen = []

    def fake_run_cell(plan_, cell, work_dir, cache, llm_factory, matched_steps=None):
        seen.append((cell.method, matched_steps))
        return {**runs[cell.method], "matched_to": {"method": "catalyst-race", "total_steps": matched_steps}}

    monkeypatch.setattr(compare.runner, "run_cell", fake_run_cell)
    compare.run_cells(plan, tmp_path, llm_factory=_scripted_llm)
    assert seen == [("single-matched", data["gradient_steps"]["total"])]


def test_single_matched_waits_for_catalyst_race_of_another_worker(tiny_doer_dir, tmp_path, monkeypatch):
    """Two workers share the list: the one that reaches single-matched first runs the other runs meanwhile, then
    waits for catalyst-race; a dependency whose worker died is taken over."""
    plan = dataclasses.replace(_v2_plan(tiny_doer_dir, seeds=1), random_init_methods=())
    cells_dir = tmp_path / "cells" / plan.name
    race = compare.Cell("rotten_tomatoes", "tiny", "catalyst-race", 0)
    # A dead worker holds catalyst-race: pid of a finished child process.
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (cells_dir / "locks").mkdir(parents=True)
    (cells_dir / "locks" / f"{race.key}.lock").write_text(child.stdout.strip())
    assert compare.lock_holder_alive(cells_dir / "locks", race) is False
    order = []

    def fake_run_cell(plan_, cell, work_dir, cache, llm_factory, matched_steps=None):
        order.append((cell.method, matched_steps))
        steps = {"stages": 6, "races": 5, "total": 11} if cell.method == "catalyst-race" else None
        return {
            "settings": compare.cell_settings(plan_, cell),
            "test_accuracy": 0.5,
            "seconds": {"total": 1.0},
            "estimated_seconds": 1.0,
            "gradient_steps": steps or {"stages": matched_steps or 6, "races": 0, "total": matched_steps or 6},
            "rounds": [],
            "matched_to": {"method": "catalyst-race", "total_steps": matched_steps} if matched_steps else None,
        }

    monkeypatch.setattr(compare.runner, "run_cell", fake_run_cell)
    assert compare.run_cells(plan, tmp_path, claim=True, poll_s=0.01) == len(plan.cells())
    assert order[-1] == ("single-matched", 11) and ("catalyst-race", None) in order


def _synthetic_run(plan, task, doer, method, seed, accuracy, races=0):
    return {
        "settings": compare.cell_settings(plan, compare.Cell(task, doer, method, seed)),
        "task": task,
        "doer": doer,
        "method": method,
        "seed": seed,
        "test_accuracy": accuracy,
        "optimizer_steps": 10,
        "gradient_steps": {"stages": 10, "races": races, "total": 10 + races},
        "rounds": [{"status": "accepted", "winner": 0, "candidates": [{"text": "x", "loss": None, "scored": True}],
                    "current": None}] if races else [],
        "llm": {"calls": 2 if method.startswith("catalyst") else 0, "prompt_tokens": 5, "completion_tokens": 1,
                "cached_calls": 0},
        "seconds": {"total": 3.0},
        "estimated_seconds": 3.0,
    }  # fmt: skip


def test_headline_contrasts_on_synthetic_records():
    doers = tuple(
        compare.DoerPlan(name, seeds=3, max_steps=10, batch_size=4, rounds=1, stage_steps=5, train_size=8,
                         catalyst_size=4, test_size=8, race_steps=1)
        for name in ("minilm", "smollm2")
    )  # fmt: skip
    plan = compare.Plan(
        name="synthetic",
        tasks=("rotten_tomatoes", "trec"),
        doers=doers,
        methods=compare.V2_METHODS,
        restart_init="text",
        version=2,
        random_init_cells=(("rotten_tomatoes", "minilm"),),
        random_init_methods=("catalyst-race", "random-race", "single-matched"),
    )
    # catalyst-race = 0.70 + seed/100 everywhere; random-race 0.02 lower; single-matched 0.01 lower except seed 2,
    # where it ties; single-text is the better single on rotten_tomatoes, single-random on trec.
    base = {"catalyst-race": 0.70, "random-race": 0.68, "single-matched": 0.69, "catalyst-best": 0.6, "blind": 0.5}
    results = {}
    for d in doers:
        for task in plan.tasks:
            singles = {"single-text": 0.72, "single-random": 0.60} if task == "rotten_tomatoes" else {
                "single-text": 0.60, "single-random": 0.66}  # fmt: skip
            for seed in range(3):
                for m in plan.cell_methods(task, d.doer):
                    acc = singles.get(m) or base[m.partition("@")[0]]
                    acc += seed / 100
                    if m.startswith("single-matched") and seed == 2:
                        acc = base["catalyst-race"] + seed / 100
                    run = _synthetic_run(plan, task, d.doer, m, seed, acc, races=4 if "race" in m else 0)
                    results[compare.Cell(task, d.doer, m, seed).key] = run
    summary = compare.summarize(plan, results)
    text = summary["headline"]["text init"]
    mentor = text["catalyst-race - random-race"]
    assert mentor["pooled"]["n"] == 12 and mentor["pooled"]["mean"] == pytest.approx(0.02)
    assert (mentor["pooled"]["wins"], mentor["pooled"]["ties"], mentor["pooled"]["losses"]) == (12, 0, 0)
    assert mentor["by_doer"]["minilm"]["n"] == mentor["by_doer"]["smollm2"]["n"] == 6
    matched = text["catalyst-race - single-matched"]["pooled"]
    assert (matched["wins"], matched["ties"], matched["losses"]) == (8, 4, 0)
    assert matched["mean"] == pytest.approx(0.01 * 8 / 12)
    assert matched["t_ci"][0] < matched["mean"] < matched["t_ci"][1]
    better = text["catalyst-race - better-single"]
    refs = {(p["task"], p["reference"]) for p in better["pairs"]}
    assert refs == {("rotten_tomatoes", "single-text"), ("trec", "single-random")}
    # rotten_tomatoes: 0.70 - 0.72; trec: 0.70 - 0.66 -> pooled mean +0.01, 6 losses and 6 wins
    assert better["pooled"]["mean"] == pytest.approx(0.01)
    assert (better["pooled"]["wins"], better["pooled"]["losses"]) == (6, 6)
    random_init = summary["headline"]["random init"]
    assert random_init["catalyst-race@random - random-race@random"]["pooled"]["n"] == 3
    assert random_init["catalyst-race@random - better-single"]["pooled"]["mean"] == pytest.approx(-0.02)
    costs = summary["per_method"]["minilm"]
    assert costs["catalyst-race"]["race_steps_per_run"] == 4 and costs["catalyst-race"]["gradient_steps_per_run"] == 14
    assert costs["catalyst-race"]["restarted_per_run"] == 1 and costs["catalyst-race"]["llm_calls_per_run"] == 2
    assert costs["single-text"]["race_steps_per_run"] == 0 and costs["single-text"]["tokens_per_run"] == 6
    meta = {"command": "x", "date": "d", "git": "g", "machine": {"description": "m"}, "packages": {},
            "timing": {"runs": 1, "run_wall_s_sum": 1, "run_estimated_s_sum": 1, "elapsed_s_this_command": None,
                       "workers": 1, "threads_per_worker": 1}, "plan_lines": [], "missing_runs": []}  # fmt: skip
    md = compare.markdown(plan, summary, meta)
    assert "| text init | `catalyst-race - random-race` | 12 | +2.0 [+2.0, +2.0] | 12/0/0 |" in md


def test_commit_each_commits_only_that_run(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "bench@example.org")
    git("config", "user.name", "bench")
    (tmp_path / ".gitignore").write_text("cells/*\n")  # ignored, as benchmarks/results/*/cells/* is
    (tmp_path / "other.txt").write_text("staged by someone else\n")
    git("add", ".gitignore", "other.txt")
    run = tmp_path / "cells" / "v2" / "a.json"
    run.parent.mkdir(parents=True)
    run.write_text("{}")
    assert compare.commit_run(run, "benchmark v2: a")
    assert git("log", "-1", "--format=%s").strip() == "benchmark v2: a"
    assert git("show", "--name-only", "--format=", "HEAD").split() == ["cells/v2/a.json"]
    assert "other.txt" in git("diff", "--cached", "--name-only")  # still staged, not swept in


def test_report_only_reproduces_the_committed_v2_tables(tmp_path):
    """v2's stored runs give the committed v2.md tables row for row (the settings of v2's runs did not change when
    methods gained trainer settings for v3)."""
    plan, cells_dir = compare.V2_PLAN, compare.RESULTS_DIR / "cells" / "v2"
    finished = compare.load_finished(plan, cells_dir)
    assert len(finished) == len(plan.cells())
    paths = compare.write_report(plan, finished, tmp_path, ["--report-only"], jobs=2, threads=1)
    table = [line for line in paths["md"].read_text().splitlines() if line.startswith("| ")]
    committed = (compare.RESULTS_DIR / "v2.md").read_text().splitlines()
    assert table and table == [line for line in committed if line.startswith("| ")]


# ------------------------------------------------------------------------------------------------------ v3


def _v3_plan(model_dir) -> compare.Plan:
    base = _plan(model_dir)
    doer = dataclasses.replace(base.doers[0], seeds=1, rounds=1, stage_steps=3, num_candidates=2, race_steps=1,
                               race_eta=2, race_margin=0.0, validation_size=8, curve_points=2)  # fmt: skip
    return dataclasses.replace(
        compare.V3_STALL_PLAN, name="smoke3", tasks=("rotten_tomatoes",), doers=(doer,),
        specs=compare.v3_specs("random", samples=3, controls=1), wall_budget_s=None,
    )  # fmt: skip


def test_v3_methods_run_with_random_controls_and_report_the_mentor_vs_random_count(tiny_doer_dir, tmp_path):
    plan = _v3_plan(tiny_doer_dir)
    paths = compare.run_plan(plan, tmp_path, ["--smoke3"], llm_factory=_scripted_llm)
    runs = {
        r["method"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "cells" / "smoke3").glob("*.json"))
    }
    assert set(runs) == set(compare.V3_METHODS)
    assert len({r["prompts"]["initial"] for r in runs.values()}) == 1  # one init per seed
    for m in ("catalyst", "random", "catalyst-blend", "catalyst-partial"):
        rounds = runs[m]["rounds"]
        assert [r["round"] for r in rounds] == [0, 1], m  # the initial round, then the scheduled one
        assert runs[m]["beat_random"]["race"][1] == 2, m  # a random control raced in both
        assert runs[m]["beat_random"]["screening"][1] >= 1, m  # screened against as many controls
    assert [r["round"] for r in runs["catalyst-race"]["rounds"]] == [1]  # v2's rule: no initial round, no screening
    assert runs["catalyst-race"]["beat_random"]["screening"] == [0, 0]
    assert runs["catalyst-race"]["beat_random"]["race"][1] == 1
    matched = runs["single-matched"]
    assert matched["optimizer_steps"] == runs["catalyst"]["gradient_steps"]["total"] and not matched["rounds"]
    assert [p["step"] for p in matched["curve"]] and all(0 <= p["accuracy"] <= 1 for p in matched["curve"])
    assert runs["random"]["llm"]["calls"] == 0 and runs["catalyst"]["llm"]["calls"] == 2
    settings = compare.cell_settings(plan, compare.Cell("rotten_tomatoes", "tiny", "catalyst-blend", 0))
    assert ["catalyst_restart", "blend"] in settings["method"]["trainer"]
    report = json.loads(paths["json"].read_text())
    pooled = report["summary"]["beat_random"]["catalyst"]["pooled"]["race"]
    assert (pooled["wins"], pooled["rounds"]) == (runs["catalyst"]["beat_random"]["race"][0], 2)
    assert set(report["summary"]["beat_random"]) == {"catalyst", "catalyst-blend", "catalyst-partial", "catalyst-race"}
    assert "catalyst - random" in report["summary"]["headline"]["random init"]
    cell = report["summary"]["cells"][0]  # no single-random / single-text in v3: the cell's single is single-matched
    assert cell["best_single"] == "single-matched" and cell["methods"]["catalyst"]["vs_best_single"]["n"] == 1
    md = paths["md"].read_text()
    assert "## Mentor against random controls (the primary statistic)" in md and "## Validation curve" in md
    assert "| catalyst | race | " in md


def test_validation_curve_pairs_seeds_by_evaluation_index():
    """Matched runs evaluate every max_steps // curve_points steps, so seeds evaluate at different steps (22 vs 23):
    the curve averages the k-th evaluations, over the evaluations every run has."""
    from benchmarks.compare.summary import validation_curves

    def run(seed, steps, accuracies):
        curve = [{"step": s, "accuracy": a, "loss": 1.0 - a} for s, a in zip(steps, accuracies)]
        return {"task": "trec", "method": "single-matched", "seed": seed, "curve": curve}

    results = {
        "a": run(0, [23, 46, 69], [0.2, 0.6, 0.8]),
        "b": run(1, [22, 44, 66, 88], [0.4, 0.6, 0.6, 0.9]),  # one evaluation more: dropped
    }
    curve = validation_curves(compare.V3_PLATEAU_PLAN, results)["trec"]["single-matched"]
    assert [p["step"] for p in curve] == [22, 45, 68]
    assert [p["seeds"] for p in curve] == [2, 2, 2]
    assert [round(p["accuracy"], 6) for p in curve] == [0.3, 0.6, 0.7]


def test_pooled_report_pools_pairs_and_counts_over_regimes(tmp_path):
    """The pooled v3 answer: a contrast's pairs of every regime in one paired interval, the mentor-vs-random counts
    summed per method and over all methods, and a regime with missing runs said so."""
    from benchmarks.compare import pooled

    def report(init, diffs, counts, missing=()):
        pairs = [{"task": "trec", "seed": s, "difference": d} for s, d in enumerate(diffs)]
        entry = paired_difference(diffs, [0.0] * len(diffs)).to_dict()
        beat = {
            m: {"pooled": {k: {"wins": w, "rounds": n} for k, (w, n) in zip(("race", "screening"), c)}}
            for m, c in counts.items()
        }
        headline = {init: {"catalyst - random": {"what": "w", "pooled": entry, "pairs": pairs}}}
        return {"missing_runs": list(missing), "summary": {"headline": headline, "beat_random": beat}}

    write_json_atomic(tmp_path / "a.json", report("random init", [0.01, -0.03, 0.0], {"catalyst": [(1, 3), (0, 3)]}))
    write_json_atomic(
        tmp_path / "b.json",
        report("text init", [0.04, 0.02], {"catalyst": [(2, 2), (1, 2)], "catalyst-blend": [(1, 4), (0, 0)]}, ["x"]),
    )
    assert pooled.main(["a", "b", "--name", "ab", "--results-dir", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "ab.json").read_text())
    row = out["contrasts"]["catalyst - random"]
    assert [p["regime"] for p in row["pairs"]] == ["a", "a", "a", "b", "b"]
    assert row["pooled"]["n"] == 5 and math.isclose(row["pooled"]["mean"], 0.008)
    assert (row["pooled"]["wins"], row["pooled"]["ties"], row["pooled"]["losses"]) == (3, 1, 1)
    race = out["beat_random"]["catalyst"]["race"]
    assert (race["wins"], race["rounds"]) == (3, 5) and 0 < race["ci95"][0] < 0.6 < race["ci95"][1] < 1
    every = out["beat_random"]["all"]["race"]
    assert (every["wins"], every["rounds"]) == (4, 9) and every["regimes"]["b"] == {"wins": 3, "rounds": 6}
    md = (tmp_path / "ab.md").read_text()
    assert "**b is incomplete: 1 planned run(s) missing.**" in md
    line = next(x for x in md.splitlines() if x.startswith("| `catalyst - random` |"))
    assert line.startswith("| `catalyst - random` | -0.7 [") and line.endswith(" (3/1/1) |") and "| +0.8 [" in line
    assert "| all | race | 1/3 = 33% [6, 79] | 3/6 = 50% [19, 81] | 4/9 = 44% [19, 73] |" in md
    with pytest.raises(SystemExit, match="--plan c --report-only"):
        pooled.main(["c", "--results-dir", str(tmp_path)])


def test_v3_plans_fit_their_stretch():
    """The stall regime fits one stretch of about 3 h (2 workers x 1 thread); each regime has the seeds, tasks and
    methods of the issue; the plateau regime runs a task at a time."""
    stall, plateau = compare.V3_STALL_PLAN, compare.V3_PLATEAU_PLAN
    lines, total, _ = compare.plan_lines(stall, set(), jobs=2, threads=1)
    assert total <= stall.wall_budget_s <= 3 * 3600 and any("fits the budget" in line for line in lines)
    assert stall.tasks == ("rotten_tomatoes", "trec", "sms_spam") and stall.doers[0].seeds >= 5
    assert plateau.tasks == ("rotten_tomatoes", "trec") and plateau.doers[0].seeds >= 3
    assert stall.restart_init == "random" and plateau.doers[0].curve_points
    for plan in (stall, plateau):
        assert plan.methods == compare.V3_METHODS and plan.doers[0].doer == "smollm2"
        assert all(dict(plan.spec(m).trainer).get("catalyst_race_controls", 0) >= 1 for m in plan.methods)
        d = plan.doers[0]
        assert d.rounds * d.stage_steps < d.max_steps
        # catalyst, catalyst-blend and catalyst-partial ask the same first question: the shared cache answers it
        cells = [compare.Cell(plan.tasks[0], "smollm2", m, 0) for m in plan.methods]
        assert [c.method for c in cells if plan.shares_first_call(c)] == ["catalyst-blend", "catalyst-partial"]
