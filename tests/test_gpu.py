"""The CUDA path: a CATALYST model trained in bf16 with a round and a restart, projection and restart on CUDA
tensors, cached generation on CUDA equal to greedy decoding without cache.

Marked ``gpu`` and skipped without CUDA, so CPU CI is unchanged: ``pytest -m gpu`` on a machine with a GPU.
"""

from __future__ import annotations

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model

from peft_catalyst import CatalystConfig, Decision, set_soft_prompt_from_text, soft_prompt_text
from peft_catalyst.projection import get_soft_prompt, text_to_token_ids, write_token_ids
from peft_catalyst.rounds.restarts import reset_optimizer_state
from tests import tiny
from tests.testing_utils import GENERATION_STEPS as STEPS
from tests.testing_utils import ScriptedMentor, causal_race, greedy_by_forward

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def test_bf16_catalyst_trainer_on_cuda_runs_a_round_and_restarts_in_place(tok, tmp_path):
    model = tiny.catalyst_model(tok, init_scale=50.0)  # any real text beats this prompt: the round restarts
    mentor = ScriptedMentor(["1. the movie was great\n2. a terrible film"])
    trainer = tiny.catalyst_trainer(
        tok, tmp_path, mentor, model=model, use_cpu=False, bf16=True, catalyst_rounds=1, max_steps=6
    )
    weight = get_soft_prompt(model).weight
    trainer.train()
    assert weight.device.type == "cuda" and get_soft_prompt(model).weight is weight
    (record,) = trainer.catalyst_history
    assert record.decision is Decision.ACCEPTED and record.step == 3
    winner = record.candidates[record.winner]
    assert winner.token_ids == text_to_token_ids(tok, winner.text, 4)
    assert all(c.finite for c in record.candidates)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))


def test_projection_and_restart_on_cuda_tensors(tok):
    model = tiny.catalyst_model(tok).cuda()
    weight = get_soft_prompt(model).weight
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    model(input_ids=torch.tensor([[5, 6, 7]], device="cuda")).logits.sum().backward()
    optimizer.step()
    ids = set_soft_prompt_from_text(model, tok, "the movie was great")
    assert get_soft_prompt(model).weight is weight and weight.device.type == "cuda"
    torch.testing.assert_close(weight.detach(), model.word_embeddings.weight[ids].detach(), rtol=0, atol=0)
    assert soft_prompt_text(model, tok) == tok.decode(ids)  # projection of CUDA tensors, read back as text
    other = text_to_token_ids(tok, "a terrible film", 4)
    write_token_ids(model, other)
    torch.testing.assert_close(weight.detach(), model.word_embeddings.weight[other].detach(), rtol=0, atol=0)
    assert reset_optimizer_state(optimizer, weight) and optimizer.state[weight] == {}


@pytest.mark.parametrize("method", ["catalyst", "prompt_tuning"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cached_generation_on_cuda_equals_greedy_without_cache(tok, arch, method):
    base = tiny.tiny_llama(tok) if arch == "llama" else tiny.tiny_gpt2(tok)
    cls = CatalystConfig if method == "catalyst" else PromptTuningConfig
    pm = get_peft_model(base, cls(task_type="CAUSAL_LM", num_virtual_tokens=4)).cuda().eval()
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_(std=2.0)
    for text in ["the movie was great", "who wrote the book"]:
        ids = tok([text], return_tensors="pt")["input_ids"].cuda()
        reference = greedy_by_forward(pm, ids, STEPS)
        mask = torch.ones_like(ids)
        for use_cache in (True, False):
            out = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=STEPS, min_new_tokens=STEPS,
                              do_sample=False, use_cache=use_cache)  # fmt: skip
            assert torch.equal(out[:, -STEPS:], reference), (text, use_cache)


def test_bf16_race_on_cuda_trains_arms_together_like_one_at_a_time(tmp_path):
    """Shared scoring passes and arms trained together on CUDA in bf16: the scores of one at a time (bf16 noise)."""
    turns = causal_race(tmp_path / "turns", use_cpu=False, bf16=True, catalyst_score_batch_size=1)
    together = causal_race(tmp_path / "together", use_cpu=False, bf16=True)  # the default on a GPU: shared passes
    assert get_soft_prompt(together.model).weight.device.type == "cuda"
    for a, b in zip(turns.catalyst_history, together.catalyst_history, strict=True):
        assert not a.race.batched and b.race.batched
        first_a, first_b = a.race.rungs[0].scores, b.race.rungs[0].scores
        assert [s.loss for s in first_a] == pytest.approx([s.loss for s in first_b], rel=2e-2)
