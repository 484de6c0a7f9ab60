"""``rounds.restarts.reset_optimizer_state`` on plain torch optimizers, in each ``catalyst_restart_optimizer``
mode, the trust region after a restart and the follow-up it leaves in the round record. Accelerate's wrapper is
covered by tests/test_trainer.py (a restart inside CatalystTrainer), DeepSpeed ZeRO-3 by tests/test_distributed.py."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from peft_catalyst.history import read_history
from peft_catalyst.mentors import RandomMentor
from peft_catalyst.projection import get_soft_prompt, vocabulary_words
from peft_catalyst.records import HISTORY_FORMAT, Decision, FollowUp, History, RoundRecord, Trigger
from peft_catalyst.rounds.restarts import embedding_scale, project_to_radius_, reset_optimizer_state, restarted_state
from tests import tiny


def _stepped():
    prompt, other = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))
    optimizer = torch.optim.AdamW([prompt, other], lr=0.1)
    (prompt.sum() + other.sum()).backward()
    optimizer.step()
    return prompt, other, optimizer


def test_reset_empties_the_parameters_state_only():
    prompt, other, optimizer = _stepped()
    result = reset_optimizer_state(optimizer, prompt)
    assert result and result.done and result.reason == ""
    assert optimizer.state[prompt] == {} and "exp_avg" in optimizer.state[other]
    optimizer.step()  # Adam starts the emptied state afresh
    assert float(optimizer.state[prompt]["step"]) == 1.0 and float(optimizer.state[other]["step"]) == 2.0


def test_reset_before_any_step_and_of_a_parameter_the_optimizer_does_not_hold():
    prompt = torch.nn.Parameter(torch.randn(2))
    optimizer = torch.optim.SGD([prompt], lr=0.1)
    assert reset_optimizer_state(optimizer, prompt)  # nothing to forget yet
    stranger = reset_optimizer_state(optimizer, torch.nn.Parameter(torch.randn(2)))
    assert not stranger and "does not hold this parameter" in stranger.reason
    missing = reset_optimizer_state(None, prompt)
    assert not missing and "no optimizer" in missing.reason


# ----------------------------------------------------------------------------------------------------------------
# What a restart keeps (catalyst_restart_optimizer), the trust region, the follow-up in the round record
# ----------------------------------------------------------------------------------------------------------------


def _restart_move(mode: str) -> float:
    """How far one step after a restart in ``mode`` moves the prompt (same gradient before and after)."""
    prompt, other, optimizer = _stepped()
    reset_optimizer_state(optimizer, prompt, mode)
    before = prompt.detach().clone()
    optimizer.zero_grad()
    (prompt.sum() + other.sum()).backward()
    optimizer.step()
    return float((prompt.detach() - before).abs().max())


def test_keep_second_moment_zeroes_the_first_moment_and_keeps_the_rest():
    prompt, other, optimizer = _stepped()
    kept = {k: v.clone() for k, v in optimizer.state[prompt].items()}
    assert reset_optimizer_state(optimizer, prompt, "keep_second_moment")
    state = optimizer.state[prompt]
    assert torch.equal(state["exp_avg"], torch.zeros_like(kept["exp_avg"])) and kept["exp_avg"].abs().sum() > 0
    assert torch.equal(state["exp_avg_sq"], kept["exp_avg_sq"]) and torch.equal(state["step"], kept["step"])
    assert state["exp_avg"] is not kept["exp_avg"] and "exp_avg" in optimizer.state[other]
    # A full reset's first Adam step is sign-like (the lr per coordinate, whatever the gradient's scale); with the
    # second moment and the step kept, the first step is a fraction of it (m is rebuilt from zero, not bias-inflated).
    assert _restart_move("reset") == pytest.approx(0.1, rel=0.05)  # lr 0.1 (AdamW's weight decay adds a little)
    assert _restart_move("keep_second_moment") < 0.6 * _restart_move("reset")


def test_keep_leaves_the_state_and_an_unknown_mode_is_refused():
    prompt, _, optimizer = _stepped()
    kept = {k: v.clone() for k, v in optimizer.state[prompt].items()}
    result = reset_optimizer_state(optimizer, prompt, "keep")
    assert result and "kept" in result.reason
    assert all(torch.equal(optimizer.state[prompt][k], v) for k, v in kept.items())
    with pytest.raises(ValueError, match="keep_second_moment"):
        reset_optimizer_state(optimizer, prompt, "forget")
    assert restarted_state(optimizer.state[prompt], "reset") == {}
    copy = restarted_state(optimizer.state[prompt], "keep")
    assert copy["exp_avg"] is not optimizer.state[prompt]["exp_avg"]
    assert torch.equal(copy["exp_avg"], optimizer.state[prompt]["exp_avg"])


def test_project_to_radius_pulls_far_rows_onto_the_sphere_and_leaves_near_rows():
    center = torch.zeros(3, 4)
    param = torch.nn.Parameter(torch.tensor([[3.0, 4.0, 0, 0], [0.1, 0, 0, 0], [0, 0, 0, 10.0]]))
    assert project_to_radius_(param, center, 1.0) == 2
    norms = (param.detach() - center).norm(dim=-1)
    assert norms.tolist() == pytest.approx([1.0, 0.1, 1.0])
    torch.testing.assert_close(param.detach()[0], torch.tensor([0.6, 0.8, 0.0, 0.0]))  # same direction
    assert project_to_radius_(param, center, 1.0) == 0


def test_restart_settings_are_validated(tmp_path):
    with pytest.raises(ValueError, match="catalyst_restart_optimizer must be one of"):
        tiny.catalyst_args(tmp_path, catalyst_restart_optimizer="forget")
    with pytest.raises(ValueError, match="catalyst_restart_radius must be > 0"):
        tiny.catalyst_args(tmp_path, catalyst_restart_radius=0.0)
    with pytest.raises(ValueError, match="catalyst_restart_radius_steps must be >= 1"):
        tiny.catalyst_args(tmp_path, catalyst_restart_radius_steps=0)


class _StateProbe(TrainerCallback):
    """Copies of the prompt and its optimizer state after every step (Adam updates its tensors in place)."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, {}

    def on_step_end(self, args, state, control, **kwargs):
        weight = get_soft_prompt(self.trainer.model).weight
        opt_state = self.trainer.optimizer.optimizer.state.get(weight, {})
        self.steps[state.global_step] = {
            "weight": weight.detach().clone(),
            "state": {k: v.clone() for k, v in opt_state.items()},
        }


def test_a_restart_keeps_v_holds_the_trust_region_and_records_its_follow_up(tmp_path):
    tok = tiny.bpe_tokenizer()
    model = tiny.catalyst_model(tok, init_scale=50.0)  # a blown-up prompt: any text wins the round at step 3
    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path / "out",
        RandomMentor(vocabulary_words(tok), seed=0),
        model=model,
        catalyst_rounds=1,
        catalyst_restart_optimizer="keep_second_moment",
        catalyst_restart_radius=0.5,
        catalyst_restart_radius_steps=3,
        catalyst_restart_followup=True,
    )
    probe = _StateProbe(trainer)
    trainer.add_callback(probe)
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.restarted and record.step == 3
    at = probe.steps[3]["state"]  # after the round (the probe runs after the catalyst callback)
    assert not at["exp_avg"].any() and at["exp_avg_sq"].any() and float(at["step"]) == 3.0  # v and step kept
    start = probe.steps[3]["weight"]
    radius = 0.5 * embedding_scale(model)
    moved = [float((probe.steps[s]["weight"] - start).norm(dim=-1).max()) for s in range(4, 10)]
    assert max(moved[:3]) <= radius * (1 + 1e-5)  # steps 4-6: within the radius of the restart point
    assert moved[-1] > radius  # the region is released after 3 steps (lr 0.05 moves tiny embeddings far)
    # The follow-up: the restart point's score, then 1, 2 and 5 steps on (10 and 20 fall after the last step, 9).
    assert [f.steps for f in record.followup] == [0, 1, 2, 5]
    assert record.followup[0].score == record.candidates[record.winner].score
    assert all(f.score is not None and f.score > 0 for f in record.followup)
    assert read_history(tmp_path / "out").rounds[0].followup == record.followup  # written and read back


def test_history_of_format_4_reads_without_a_follow_up():
    old = {
        "format": 4,
        "summary": {"rounds": 1},
        "rounds": [{"round": 1, "step": 3, "trigger": "schedule", "decision": "accepted", "winner": 0}],
    }
    history = History.from_dict(json.loads(json.dumps(old)))
    assert history.rounds[0].followup == [] and history.format == HISTORY_FORMAT > 4
    followup = [FollowUp(0, 0.5, 0.6), FollowUp(5, None)]
    record = RoundRecord(1, 3, Trigger.SCHEDULE, Decision.ACCEPTED, followup=followup)
    assert RoundRecord.from_dict(json.loads(json.dumps(record.to_dict()))).followup == record.followup


@pytest.mark.parametrize("ratio", [1.0, 1e-6])
def test_the_loss_guard_refuses_starts_whose_training_loss_is_worse(tmp_path, ratio):
    """The blown-up prompt's loss is far above any text's: a ratio of 1 takes the restart, 1e-6 refuses all."""
    tok = tiny.bpe_tokenizer()
    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path / "out",
        RandomMentor(vocabulary_words(tok), seed=0),
        model=tiny.catalyst_model(tok, init_scale=50.0),
        catalyst_rounds=1,
        catalyst_restart_loss_ratio=ratio,
    )
    trainer.train()
    (record,) = trainer.catalyst_history
    assert all(c.loss < record.current.loss for c in record.candidates)
    if ratio == 1.0:
        assert record.restarted and not any("loss guard" in note for note in record.notes)
    else:
        assert record.decision is Decision.KEPT
        assert any(note.startswith("loss guard: 2 of 2 start(s) refused") for note in record.notes)
    with pytest.raises(ValueError, match="catalyst_restart_loss_ratio must be > 0"):
        tiny.catalyst_args(tmp_path, catalyst_restart_loss_ratio=0)
