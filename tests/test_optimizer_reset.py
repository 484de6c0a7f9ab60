"""``peft_catalyst.sharding.reset_optimizer_state`` on plain torch optimizers. Accelerate's wrapper is covered by
tests/test_trainer.py (a restart inside CatalystTrainer), DeepSpeed ZeRO-3 by tests/test_distributed.py."""

from __future__ import annotations

import torch

from peft_catalyst.sharding import reset_optimizer_state


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
