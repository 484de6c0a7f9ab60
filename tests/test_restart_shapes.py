"""catalyst_restart: blended and partial starts keep what the stage learned; "full" is the restart as it was.

Races on the tiny BERT classifier of tests/test_race.py (RANDOM prompt scaled x0.001, a good start at step zero).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from peft_catalyst import ArmKind, CatalystArguments, Decision, History, RaceArm, RestartShape, RoundRecord, Trigger
from peft_catalyst.history import read_history
from peft_catalyst.model_card import build_model_card
from peft_catalyst.projection import Projector, get_soft_prompt, read_soft_prompt
from peft_catalyst.rounds.restarts import (
    partial_positions,
    reshape_optimizer_state_,
    reshaped_optimizer_state,
    shaped_start,
)
from peft_catalyst.rounds.scoring import PromptScorer
from tests import tiny
from tests.testing_utils import ScriptedMentor, race_run

# ----------------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"catalyst_restart": "half"}, "catalyst_restart must be one of"),
        ({"catalyst_blend_alphas": [0.3, 0.0]}, r"catalyst_blend_alphas must each be in \(0, 1\]"),
        ({"catalyst_blend_alphas": [1.5]}, r"catalyst_blend_alphas must each be in \(0, 1\]"),
        ({"catalyst_blend_alphas": []}, "needs at least one alpha"),
        ({"catalyst_partial_tokens": 0}, "catalyst_partial_tokens must be >= 1"),
    ],
)
def test_bad_shape_settings_are_a_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CatalystArguments(**kwargs)


def test_partial_tokens_above_the_prompt_length_are_refused_when_the_trainer_is_built(tmp_path):
    tok = tiny.bpe_tokenizer()
    with pytest.raises(ValueError, match="catalyst_partial_tokens must be at most num_virtual_tokens = 4"):
        tiny.catalyst_trainer(
            tok, tmp_path, ScriptedMentor(["1. x"]), catalyst_restart="partial", catalyst_partial_tokens=5
        )
    # the same number is harmless while the restart is not partial
    tiny.catalyst_trainer(tok, tmp_path, ScriptedMentor(["1. x"]), catalyst_partial_tokens=5)


# ----------------------------------------------------------------------------------------------------------------
# The arithmetic, the position rule and the optimizer state
# ----------------------------------------------------------------------------------------------------------------


def test_shaped_starts_are_exactly_the_stated_points():
    generator = torch.Generator().manual_seed(0)
    incumbent, proposal = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    blend = shaped_start(RestartShape("blend", alpha=0.3), incumbent, proposal, num_virtual_tokens=4)
    assert torch.equal(blend, incumbent + 0.3 * (proposal - incumbent))
    # two blocks of 4 virtual tokens (seq2seq): position 1 is rows 1 and 5
    partial = shaped_start(RestartShape("partial", positions=[1, 3]), incumbent, proposal, num_virtual_tokens=4)
    changed = [r for r in range(8) if not torch.equal(partial[r], incumbent[r])]
    assert changed == [1, 3, 5, 7] and all(torch.equal(partial[r], proposal[r]) for r in changed)
    assert torch.equal(shaped_start(RestartShape(), incumbent, proposal, 4), proposal)


def test_partial_positions_are_the_nearest_to_a_token_ties_to_the_earlier():
    nearness = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1])
    assert partial_positions(nearness, 1) == [1]
    assert partial_positions(nearness, 2) == [1, 3]
    assert partial_positions(nearness, 3) == [1, 2, 3]


def test_a_partial_restart_keeps_the_moments_of_untouched_rows_only():
    param = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.randn(4, 3)
    optimizer.step()
    before = {k: v.clone() for k, v in optimizer.state[param].items()}
    assert reshaped_optimizer_state(before, RestartShape("blend", alpha=0.3), 4, param.shape) == {}
    assert reshaped_optimizer_state(before, RestartShape(), 4, param.shape) == {}
    assert reshape_optimizer_state_(optimizer, param, RestartShape("partial", positions=[2]), 4)
    after = optimizer.state[param]
    assert torch.equal(after["step"], before["step"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.count_nonzero(after[key][2]) == 0 and torch.count_nonzero(before[key][2]) > 0
        assert torch.equal(after[key][[0, 1, 3]], before[key][[0, 1, 3]])
    # a state not laid out row by row (Adafactor's factored moments): the caller resets it
    factored = {"step": torch.tensor(3.0), "exp_avg_sq_row": torch.ones(4), "exp_avg_sq_col": torch.ones(3)}
    assert reshaped_optimizer_state(factored, RestartShape("partial", positions=[0]), 4, param.shape) is None


# ----------------------------------------------------------------------------------------------------------------
# Races and rounds
# ----------------------------------------------------------------------------------------------------------------


def _race_starts(monkeypatch, tmp_path, **kwargs):
    """A race judged untrained (``catalyst_race_steps=0``): every arm's start as it was scored, and the trainer."""
    tok = tiny.bpe_tokenizer()
    starts: list[torch.Tensor] = []
    original = PromptScorer.score

    def spy(self, *args, **kw):  # the tiny BERT's head trains: race arms are scored one at a time
        starts.append(read_soft_prompt(self.trainer.model))
        return original(self, *args, **kw)

    monkeypatch.setattr(PromptScorer, "score", spy)
    trainer = race_run(
        tok,
        tmp_path,
        ["the movie was great"],
        catalyst_selection="race",
        catalyst_race_steps=0,
        catalyst_race_controls=1,
        **kwargs,
    )
    return trainer, starts


def _embeddings(trainer, ids) -> torch.Tensor:
    return get_soft_prompt(trainer.model).word_embeddings.weight.detach()[ids]


def test_blended_arms_start_exactly_at_the_stated_point_and_controls_blend_alike(monkeypatch, tmp_path):
    trainer, starts = _race_starts(monkeypatch, tmp_path, catalyst_restart="blend", catalyst_blend_alphas=[0.3, 0.6])
    (record,) = trainer.catalyst_history
    arms = record.race.arms
    assert [(a.kind, a.shape.name, a.shape.alpha) for a in arms[1:]] == [
        (ArmKind.CANDIDATE, "blend", 0.3),
        (ArmKind.CANDIDATE, "blend", 0.6),
        (ArmKind.CONTROL, "blend", 0.3),
        (ArmKind.CONTROL, "blend", 0.6),
    ]
    incumbent = starts[0]
    assert len(starts) == len(arms) == 5 and record.race.rungs[0].arms == [0, 1, 2, 3, 4]
    for arm, start in zip(arms[1:], starts[1:]):
        proposal = _embeddings(trainer, arm.token_ids)
        assert torch.equal(start, incumbent + arm.shape.alpha * (proposal - incumbent))
    if record.restarted:
        assert record.shape == arms[record.race.winner].shape
    # The shape set is in the summary, the history file and the card whatever the round decided (a run whose rounds
    # all kept the prompt still says it was a blend run).
    history = read_history(tmp_path)
    assert trainer.catalyst_summary().restart == history.summary.restart == "blend alpha=0.3, 0.6"
    kept = History(summary=history.summary, rounds=[dataclasses.replace(record, decision=Decision.KEPT, shape=None)])
    card = build_model_card(trainer.model, tiny.bpe_tokenizer(), history=kept)
    assert "restart shape `blend alpha=0.3, 0.6`" in card.text


def test_a_partial_arm_changes_exactly_the_positions_nearest_to_a_token(monkeypatch, tmp_path):
    trainer, starts = _race_starts(monkeypatch, tmp_path, catalyst_restart="partial", catalyst_partial_tokens=2)
    (record,) = trainer.catalyst_history
    incumbent, arms = starts[0], record.race.arms
    # the rule, from the incumbent: the 2 positions whose vectors are nearest to a vocabulary token
    allowed = Projector(trainer.model, tiny.bpe_tokenizer()).allowed_ids  # cosine: the adapter's metric
    vocab = torch.nn.functional.normalize(_embeddings(trainer, allowed), dim=-1)
    nearness = (torch.nn.functional.normalize(incumbent, dim=-1) @ vocab.T).max(-1).values
    expected = sorted(nearness.argsort(descending=True)[:2].tolist())
    assert [a.kind for a in arms[1:]] == [ArmKind.CANDIDATE, ArmKind.CONTROL]
    assert all(a.shape == RestartShape("partial", positions=expected) for a in arms[1:])  # controls alike
    for arm, start in zip(arms[1:], starts[1:]):
        changed = [p for p in range(4) if not torch.equal(start[p], incumbent[p])]
        assert changed == expected
        assert torch.equal(start[expected], _embeddings(trainer, arm.token_ids)[expected])


def test_a_blended_arm_wins_a_race_that_the_full_restart_loses(tmp_path):
    """At equal budget (4 then 8 steps), from the x0.001 incumbent: the full restart from "the movie was great" loses
    (tests/test_race.py), the arm blended 0.3 of the way towards it wins (measured once, deterministic on CPU, by
    0.015 nats)."""
    tok = tiny.bpe_tokenizer()
    common = dict(catalyst_selection="race", catalyst_race_steps=4)
    full = race_run(tok, tmp_path / "full", ["the movie was great"], **common)
    (record,) = full.catalyst_history
    assert record.decision is Decision.KEPT and record.shape is None
    blend = race_run(tok, tmp_path / "blend", ["the movie was great"], catalyst_restart="blend", **common)
    (record,) = blend.catalyst_history
    assert record.decision is Decision.ACCEPTED and record.winner == 0
    assert record.shape == RestartShape("blend", alpha=0.3) == record.race.arms[record.race.winner].shape
    last = record.race.rungs[-1]
    assert last.arms == [0, 1] and last.scores[1].score < last.scores[0].score
    # the record reads the blended prompt as its nearest tokens and names the shape
    history = History.from_dict(json.loads((tmp_path / "blend" / "catalyst_history.json").read_text()))
    assert history.rounds[0].shape == record.shape and history.rounds[0].prompt_after


def test_best_scores_each_shape_and_restarts_at_the_winning_start(monkeypatch, tmp_path):
    tok = tiny.bpe_tokenizer()
    seen: list[list[torch.Tensor]] = []
    original = PromptScorer.score_prompts

    def spy(self, prompts):
        seen.append([p.clone() for p in prompts])
        return original(self, prompts)

    monkeypatch.setattr(PromptScorer, "score_prompts", spy)
    trainer = race_run(
        tok,
        tmp_path,
        ["the movie was great", "who wrote the book"],
        catalyst_restart="blend",
        catalyst_blend_alphas=[0.5, 1.0],
    )
    (record,) = trainer.catalyst_history
    saved, *starts = seen[-1]  # the current prompt, then each candidate in each shape
    assert len(starts) == 4
    for k, start in enumerate(starts):
        candidate, alpha = record.candidates[k // 2], (0.5, 1.0)[k % 2]
        proposal = _embeddings(trainer, candidate.token_ids)
        assert torch.equal(start, saved + alpha * (proposal - saved))
    assert record.decision in (Decision.KEPT, Decision.ACCEPTED)
    assert (record.shape is not None) == record.restarted


# ----------------------------------------------------------------------------------------------------------------
# "full" is the restart as it was; old records read
# ----------------------------------------------------------------------------------------------------------------


def test_full_is_the_default_and_starts_from_the_tokens_with_a_fresh_state(monkeypatch, tmp_path):
    assert CatalystArguments().catalyst_restart == "full"
    trainer, starts = _race_starts(monkeypatch, tmp_path)
    (record,) = trainer.catalyst_history
    assert all(a.shape == RestartShape() for a in record.race.arms)
    for arm, start in zip(record.race.arms[1:], starts[1:]):
        assert torch.equal(start, _embeddings(trainer, arm.token_ids))


def test_records_without_shapes_read_as_full():
    arm = RaceArm(ArmKind.CANDIDATE, "a b", [1, 2], 0, RestartShape("partial", positions=[1]))
    assert RaceArm.from_dict(arm.to_dict()) == arm
    old = {"kind": "candidate", "text": "a b", "token_ids": [1, 2], "candidate": 0}
    assert RaceArm.from_dict(old).shape == RestartShape()
    record = RoundRecord(round=0, step=3, trigger=Trigger.SCHEDULE, decision=Decision.ACCEPTED)
    data = {k: v for k, v in record.to_dict().items() if k != "shape"}
    assert RoundRecord.from_dict(data).shape is None
    record.shape = RestartShape("blend", alpha=0.6)
    assert RoundRecord.from_dict(record.to_dict()).shape == record.shape
    assert record.shape.label == "blend alpha=0.6"
    assert RestartShape("partial", positions=[0, 2]).label == "partial at positions 0, 2"


def test_a_partial_restart_in_a_run_keeps_the_optimizer_rows_it_did_not_write(tmp_path):
    """``"first"`` always restarts: right after the round, the prompt's Adam moments are the incumbent's on the
    untouched positions and zero on the written ones (its step count is kept)."""
    from transformers import TrainerCallback

    tok = tiny.bpe_tokenizer()
    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path,
        ScriptedMentor(["1. who wrote the book"]),
        catalyst_rounds=1,
        catalyst_num_candidates=1,
        catalyst_selection="first",
        catalyst_restart="partial",
        catalyst_partial_tokens=1,
    )
    seen: dict[str, dict] = {}

    class Snapshot(TrainerCallback):
        def __init__(self, name):
            self.name = name

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # the round's step (catalyst_stage_steps=3)
                weight = get_soft_prompt(trainer.model).weight
                held = trainer.optimizer.optimizer.state[weight]  # inside Accelerate's wrapper
                seen[self.name] = {k: v.clone() for k, v in held.items()}
                seen[self.name]["prompt"] = weight.detach().clone()

    trainer.callback_handler.callbacks.insert(0, Snapshot("before"))  # runs before the catalyst callback
    trainer.add_callback(Snapshot("after"))
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.decision is Decision.BLIND and record.shape.name == "partial"
    (written,) = record.shape.positions
    kept = [p for p in range(4) if p != written]
    before, after = seen["before"], seen["after"]
    assert [p for p in range(4) if not torch.equal(before["prompt"][p], after["prompt"][p])] == [written]
    assert torch.equal(after["step"], before["step"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(after[key][kept], before[key][kept])
        assert torch.count_nonzero(after[key][written]) == 0 < torch.count_nonzero(before[key][written])


def test_with_screening_a_candidates_recorded_score_is_its_best_shaped_start(monkeypatch, tmp_path):
    """Screening scores the full replacement; ``best`` then compares shaped starts. The record must show the number
    that was compared (the screening score stays in ``record.screening``), or a candidate better than current on
    paper can stand beside a KEPT decision."""
    tok = tiny.bpe_tokenizer()
    last: list[list[float]] = []
    original = PromptScorer.score_prompts

    def spy(self, prompts):
        scores = original(self, prompts)
        last.append([s.value for s in scores])
        return scores

    monkeypatch.setattr(PromptScorer, "score_prompts", spy)
    texts = ["the movie was great", "who wrote the book", "a fine film indeed"]
    trainer = race_run(
        tok, tmp_path, texts, catalyst_num_candidates=2, catalyst_num_samples=3,
        catalyst_restart="blend", catalyst_blend_alphas=[0.25],
    )  # fmt: skip
    (record,) = trainer.catalyst_history
    current, *shaped = last[-1]  # the current prompt, then each kept candidate's one blended start
    kept = [record.candidates[i] for i in record.screening.kept]
    assert len(kept) == len(shaped) == 2
    assert sorted(c.score for c in kept) == sorted(shaped)
    assert record.current.score == current
    better = [s for s in shaped if s < current]
    assert (record.decision is Decision.ACCEPTED) == bool(better)
