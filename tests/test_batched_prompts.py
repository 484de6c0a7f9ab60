"""Prompts handled K at a time: scoring in shared passes and race arms trained together, against one at a time.

Real tiny models: the BERT classifier of tests/tiny.py (its head trains, so its races stay sequential) and a tiny
Llama label-word classifier on the packaged task, wired as the command line wires SmolLM2 (``compute_loss_func``,
``logits_to_keep``): the prompt is its only trainable parameter.
"""

from __future__ import annotations

import json

import pytest
import torch

from peft_catalyst import CatalystArguments, Decision
from peft_catalyst.mentors import CachedMentor
from peft_catalyst.projection import get_soft_prompt
from peft_catalyst.rounds.scoring import PromptScorer
from tests import tiny
from tests.testing_utils import TWO_CANDIDATES as REPLY
from tests.testing_utils import ScriptedMentor, StopAt, causal_race, causal_trainer, comparable, trainable


def _prompts(trainer, count: int) -> list[torch.Tensor]:
    weight = get_soft_prompt(trainer.model).weight
    generator = torch.Generator().manual_seed(3)
    scale = float(trainer.model.word_embeddings.weight.std())
    return [torch.randn(weight.shape, generator=generator) * scale for _ in range(count)]


def _bert(tmp_path, **kwargs):
    tok = tiny.bpe_tokenizer()
    return tiny.catalyst_trainer(tok, tmp_path, ScriptedMentor([REPLY]), **kwargs)


def _causal(tmp_path, **kwargs):
    trainer, _ = causal_trainer(tmp_path, ScriptedMentor([REPLY]), catalyst_size=12, **kwargs)
    return trainer


def _rows_seen(trainer) -> list[int]:
    """Rows of every forward through the base model (the stacked batch of a shared pass)."""
    rows: list[int] = []
    base = trainer.model.get_base_model()
    base.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["inputs_embeds"].shape[0]), with_kwargs=True)
    return rows


@pytest.mark.parametrize(
    ("build", "metric"), [(_bert, "accuracy"), (_bert, "loss"), (_causal, "label_loss"), (_causal, "loss")]
)
def test_shared_passes_give_the_numbers_of_one_prompt_at_a_time(tmp_path, build, metric):
    trainer = build(tmp_path, per_device_eval_batch_size=4)
    split = trainer.catalyst_dataset
    prompts = _prompts(trainer, 5)
    before = get_soft_prompt(trainer.model).weight.detach().clone()
    alone = PromptScorer(trainer, split, metric=metric, batch_size=1)
    assert "one prompt" in alone.sequential_reason()
    expected = alone.score_prompts(prompts)
    shared = PromptScorer(trainer, split, metric=metric, batch_size=9)  # 2 prompts x 4 rows per pass: 2 + 2 + 1
    assert shared.sequential_reason() is None and shared.prompts_per_pass() == 2
    rows = _rows_seen(trainer)
    got = shared.score_prompts(prompts)
    assert max(rows) <= 9 and 8 in rows  # the budget bounds every pass; prompts did share passes
    assert len(rows) == 3 * -(-len(split) // 4)  # three passes over the split's batches
    for a, b in zip(got, expected, strict=True):
        assert a.value == pytest.approx(b.value, rel=1e-5, abs=1e-6)
        assert a.loss == pytest.approx(b.loss, rel=1e-5, abs=1e-6)
        assert a.metrics == pytest.approx(b.metrics, rel=1e-5, abs=1e-6)
    assert len({round(s.loss, 6) for s in got}) == 5  # five different prompts, five different losses
    assert torch.equal(get_soft_prompt(trainer.model).weight, before) and shared.calls == 5


def test_out_of_memory_in_a_shared_pass_retries_smaller_and_the_round_goes_on(tmp_path):
    trainer = _bert(tmp_path, catalyst_rounds=1, per_device_eval_batch_size=4, catalyst_score_batch_size=16)
    base = trainer.model.get_base_model()

    def small_device(module, args, kwargs):
        if kwargs["inputs_embeds"].shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test device of 8 rows)")

    base.register_forward_pre_hook(small_device, with_kwargs=True)
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.decision in (Decision.ACCEPTED, Decision.KEPT) and all(c.finite for c in record.candidates)
    assert any("out of memory with 3 prompts" in n and "retried with 1" in n for n in record.notes), record.notes
    history = json.loads((tmp_path / "catalyst_history.json").read_text())
    assert history["rounds"][0]["notes"] == record.notes
    scorer = trainer.catalyst.engine.scorer
    fallback = scorer.score_prompts(_prompts(trainer, 3))
    reference = PromptScorer(trainer, trainer.catalyst_dataset, batch_size=1).score_prompts(_prompts(trainer, 3))
    assert [s.loss for s in fallback] == pytest.approx([s.loss for s in reference], rel=1e-5)


def test_a_score_batch_size_below_one_is_refused_and_the_default_depends_on_the_device():
    with pytest.raises(ValueError, match="catalyst_score_batch_size must be >= 1"):
        CatalystArguments(catalyst_score_batch_size=0)
    default = CatalystArguments()
    assert default.score_batch_size(torch.device("cpu")) == 1 and default.score_batch_size(torch.device("cuda")) == 128
    assert CatalystArguments(catalyst_score_batch_size=32).score_batch_size(torch.device("cpu")) == 32
    with pytest.raises(ValueError, match="catalyst_score_batch_size must be >= 1"):
        PromptScorer(trainer=None, dataset=None, batch_size=0)


def test_arms_trained_together_reach_the_decision_and_state_of_arms_trained_in_turn(tmp_path):
    turns = causal_race(tmp_path / "turns", catalyst_score_batch_size=1)  # the default on CPU
    together = causal_race(tmp_path / "together", catalyst_score_batch_size=128)  # the default on a GPU
    for a, b in zip(turns.catalyst_history, together.catalyst_history, strict=True):
        assert not a.race.batched and b.race.batched
        assert any("arms trained one at a time (catalyst_score_batch_size=1" in n for n in a.notes)
        assert not any("one at a time" in n for n in b.notes), b.notes
        assert (a.decision, a.winner, a.race.winner) == (b.decision, b.winner, b.race.winner)
        assert [r.arms for r in a.race.rungs] == [r.arms for r in b.race.rungs] and a.race.steps == b.race.steps
        for rung_a, rung_b in zip(a.race.rungs, b.race.rungs, strict=True):
            assert [s.loss for s in rung_a.scores] == pytest.approx([s.loss for s in rung_b.scores], rel=1e-4)
    assert len(turns.catalyst_history[0].race.arms) == 4  # incumbent, two candidates, one control
    x, y = trainable(turns.model), trainable(together.model)
    assert all(torch.allclose(x[n], y[n], rtol=1e-4, atol=1e-5) for n in x)
    assert together.catalyst_summary().total_steps == turns.catalyst_summary().total_steps


def test_blended_arms_trained_together_match_blended_arms_trained_in_turn(tmp_path):
    """catalyst_restart="blend" under the batched race: each proposal and control races at 0.3 and 0.6."""
    kwargs = {"catalyst_restart": "blend", "catalyst_rounds": 1, "max_steps": 5}
    turns = causal_race(tmp_path / "turns", catalyst_score_batch_size=1, **kwargs)
    together = causal_race(tmp_path / "together", catalyst_score_batch_size=128, **kwargs)
    (a,), (b,) = turns.catalyst_history, together.catalyst_history
    assert not a.race.batched and b.race.batched
    assert [(x.kind, x.shape) for x in a.race.arms] == [(x.kind, x.shape) for x in b.race.arms]
    assert [x.shape.alpha for x in b.race.arms[1:]] == [0.3, 0.6] * 3  # two candidates, one control
    assert (a.decision, a.winner, a.race.winner, a.shape) == (b.decision, b.winner, b.race.winner, b.shape)
    for rung_a, rung_b in zip(a.race.rungs, b.race.rungs, strict=True):
        assert [s.loss for s in rung_a.scores] == pytest.approx([s.loss for s in rung_b.scores], rel=1e-4)
    x, y = trainable(turns.model), trainable(together.model)
    assert all(torch.allclose(x[n], y[n], rtol=1e-4, atol=1e-5) for n in x)


def test_arms_train_together_in_passes_of_the_budget(tmp_path):
    """With 4 arms and room for 2 batches of 4 rows per pass, every race step is two stacked passes of 8 rows."""
    trainer = _causal(
        tmp_path,
        catalyst_rounds=1,
        catalyst_selection="race",
        catalyst_race_steps=1,
        catalyst_race_controls=1,
        max_steps=4,
        catalyst_score_batch_size=8,
        per_device_eval_batch_size=3,  # scoring passes of 2 prompts x 3 rows: only race passes hold 8 rows
    )
    rows = _rows_seen(trainer)
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.race.batched and max(rows) <= 8 and rows.count(8) > 0
    assert record.race.steps == 4 * 1 + 2 * 2


def test_a_trainable_head_keeps_the_race_sequential_and_says_so(tmp_path, caplog):
    trainer = _bert(tmp_path, catalyst_selection="race", catalyst_race_steps=1)
    with caplog.at_level("INFO", logger="peft_catalyst.rounds.engine"):
        trainer.train()
    first, second = trainer.catalyst_history
    for record in (first, second):
        assert not record.race.batched
        assert any("classification head" in n for n in record.notes)
    said = [r for r in caplog.records if "classification head" in r.getMessage()]
    assert len(said) == 1  # once in the log, in every round record


def test_resume_after_a_race_with_arms_trained_together_ends_like_an_uninterrupted_run(tmp_path):
    cache = tmp_path / "mentor.sqlite"
    replies = ["1. who wrote the book\n2. a terrible film", "1. a good ending\n2. a boring plot"]
    common = dict(
        save_strategy="steps",
        save_steps=4,
        max_steps=9,
        catalyst_rounds=2,
        catalyst_stage_steps=3,
        catalyst_selection="race",
        catalyst_race_steps=2,
        catalyst_race_controls=1,
        catalyst_rewarmup_steps=6,  # a re-warm-up still running at the checkpoint
        catalyst_score_batch_size=128,
    )
    full, _ = causal_trainer(
        tmp_path / "full", CachedMentor(ScriptedMentor(replies), cache, mode="use"), catalyst_size=12, **common
    )
    full.train()
    assert all(r.race.batched for r in full.catalyst_history)

    def resumable():
        trainer, _ = causal_trainer(
            tmp_path / "resumed", CachedMentor(None, cache, mode="strict"), catalyst_size=12, **common
        )
        return trainer

    interrupted = resumable()
    interrupted.add_callback(StopAt(4))
    interrupted.train()
    assert interrupted.state.global_step == 4 and len(interrupted.catalyst_history) == 1
    resumed = resumable()
    resumed.train(resume_from_checkpoint=True)
    assert comparable(resumed.catalyst_history) == comparable(full.catalyst_history)
    a, b = trainable(resumed.model), trainable(full.model)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_metrics_that_read_the_model_see_the_prompt_being_scored(tmp_path):
    """compute_metrics runs with each prompt written into the model, as when that prompt is scored alone."""
    trainer = _bert(tmp_path)
    weight = get_soft_prompt(trainer.model).weight
    trainer.compute_metrics = lambda pred: {"prompt_norm": float(weight.norm())}
    prompts = _prompts(trainer, 3)
    scorer = PromptScorer(trainer, trainer.catalyst_dataset, metric="prompt_norm", batch_size=64)
    assert scorer.sequential_reason() is None
    scores = scorer.score_prompts(prompts)
    assert [s.value for s in scores] == pytest.approx([float(p.norm()) for p in prompts], rel=1e-6)
