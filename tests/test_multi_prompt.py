"""The multi-prompt forward against PEFT's own forward, prompt by prompt, for every supported task type."""

from __future__ import annotations

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model

from peft_catalyst import CatalystConfig
from peft_catalyst.projection import get_soft_prompt, write_soft_prompt_
from peft_catalyst.rounds.multi_prompt import model_loss, multi_prompt_forward, unsupported_reason
from peft_catalyst.tuners.catalyst.peft_model import apply_catalyst_fixes
from tests import tiny

TEXTS = ["the movie was great", "a terrible film with a boring plot and bad acting", "hello lunch"]


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _batch(tok, task: str) -> dict:
    enc = tok(TEXTS, padding=True, return_tensors="pt")  # right padding, as scoring uses
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if task == "CAUSAL_LM":
        batch["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    elif task == "SEQ_CLS":
        batch["labels"] = torch.tensor([1, 0, 1])
        batch["token_type_ids"] = torch.zeros_like(enc["input_ids"])  # PEFT pads these for the virtual tokens
    elif task == "TOKEN_CLS":
        batch["labels"] = (enc["input_ids"] % 3).masked_fill(enc["attention_mask"] == 0, -100)
    else:
        target = tok(["positive", "negative words", "no"], padding=True, return_tensors="pt")
        batch["labels"] = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
    return batch


MODELS = {
    "CAUSAL_LM": [tiny.tiny_llama, tiny.tiny_gpt2],
    "SEQ_CLS": [tiny.tiny_bert_seq_cls],
    "TOKEN_CLS": [tiny.tiny_bert_token_cls],
    "SEQ_2_SEQ_LM": [tiny.tiny_t5],
}
CASES = [(task, b, kind) for task, builds in MODELS.items() for b in builds for kind in ("catalyst", "vanilla")]


def _peft(tok, task, build, kind):
    base = build(tok)
    if kind == "catalyst":
        config = CatalystConfig(task_type=task, num_virtual_tokens=4, task_description="t")
    else:
        config = PromptTuningConfig(task_type=task, num_virtual_tokens=4)
    torch.manual_seed(1)
    model = get_peft_model(base, config).eval()
    if kind != "catalyst":  # as CatalystTrainer/CatalystCallback give a PROMPT_TUNING model it trains (PEFT 0.21's
        apply_catalyst_fixes(model)  # token-classification forward does not pad labels for the virtual tokens)
    return model


@pytest.mark.parametrize(("task", "build", "kind"), CASES, ids=[f"{t}-{b.__name__}-{k}" for t, b, k in CASES])
def test_each_prompt_matches_peft_forward_with_that_prompt(tok, task, build, kind):
    model = _peft(tok, task, build, kind)
    assert unsupported_reason(model) is None
    weight = get_soft_prompt(model).weight
    torch.manual_seed(2)
    prompts = torch.randn(3, *weight.shape) * 0.5
    prompts.requires_grad_(True)
    batch = _batch(tok, task)
    result = multi_prompt_forward(model, prompts, batch)
    sum(result.losses).backward()
    for k in range(3):
        write_soft_prompt_(model, prompts[k].detach())
        model.zero_grad()
        reference = model(**batch)
        reference.loss.backward()
        ours = result.outputs[k]
        assert type(ours) is type(reference)
        torch.testing.assert_close(ours.loss, reference.loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.logits, reference.logits, rtol=1e-5, atol=1e-5)
        # each prompt's gradient is its own loss's gradient, as in a forward with that prompt alone
        torch.testing.assert_close(prompts.grad[k], weight.grad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(result.outputs[0].logits, result.outputs[1].logits)


def test_the_models_own_prompt_is_untouched_and_kwargs_pass_through(tok):
    model = _peft(tok, "CAUSAL_LM", tiny.tiny_llama, "catalyst")
    before = get_soft_prompt(model).weight.detach().clone()
    batch = _batch(tok, "CAUSAL_LM")
    labels = batch.pop("labels")
    prompts = torch.stack([before, before * 2])
    keep = torch.tensor([-3, -1])  # 1-D and not per example: passed through, not repeated
    result = multi_prompt_forward(model, prompts, {**batch, "logits_to_keep": keep, "use_cache": False})
    assert all(loss is None for loss in result.losses)
    assert result.outputs[0].logits.shape == (3, 2, len(tok))
    assert torch.equal(get_soft_prompt(model).weight, before) and "get_prompt" not in vars(model)
    full = model(**batch).logits
    torch.testing.assert_close(result.outputs[0].logits, full[:, keep], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model_loss(model, result.outputs[0].logits, labels)


def test_bad_prompts_and_models_are_refused_with_a_clear_line(tok):
    model = _peft(tok, "SEQ_CLS", tiny.tiny_bert_seq_cls, "catalyst")
    with pytest.raises(ValueError, match="soft prompt's shape"):
        multi_prompt_forward(model, torch.zeros(2, 3, 5), _batch(tok, "SEQ_CLS"))
    assert "no PEFT adapter" in unsupported_reason(tiny.tiny_bert_seq_cls(tok))
