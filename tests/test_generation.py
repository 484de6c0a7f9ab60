"""Cached generation of prompt-tuned causal LMs equals greedy decoding without cache; left padding changes nothing.

The fix is a method of CATALYST's model class: a CATALYST adapter has it, a plain PROMPT_TUNING adapter gets it from
``apply_catalyst_fixes`` only (``peft_catalyst.pipeline`` calls it); importing peft_catalyst gives it to no one
(tests/test_import.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model

from peft_catalyst import CatalystConfig
from peft_catalyst.tuners.catalyst import apply_catalyst_fixes
from tests import tiny
from tests.testing_utils import GENERATION_STEPS as STEPS
from tests.testing_utils import greedy_by_forward


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _model(tok, arch: str, method: str):
    base = tiny.tiny_llama(tok) if arch == "llama" else tiny.tiny_gpt2(tok)
    cls = CatalystConfig if method == "catalyst" else PromptTuningConfig
    pm = get_peft_model(base, cls(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():  # a soft prompt far from init, so that a wrong injection shows in the tokens
        pm.prompt_encoder["default"].embedding.weight.normal_(std=2.0)
    if method == "prompt_tuning":
        apply_catalyst_fixes(pm)  # on request: PEFT's own class keeps PEFT's generation
    return pm.eval()


def _generate(pm, ids, mask, **kwargs):
    out = pm.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, **kwargs
    )
    return out[:, -STEPS:]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["catalyst", "prompt_tuning"])
def test_cached_generate_equals_uncached_greedy(tok, arch, method):
    pm = _model(tok, arch, method)
    for text in ["the movie was great", "who wrote the book"]:
        ids = tok([text], return_tensors="pt")["input_ids"]
        reference = greedy_by_forward(pm, ids, STEPS)
        assert len(set(reference[0].tolist())) >= 4, "degenerate model: the test could not tell right from wrong"
        mask = torch.ones_like(ids)
        assert torch.equal(_generate(pm, ids, mask, use_cache=True), reference)
        assert torch.equal(_generate(pm, ids, mask, use_cache=False), reference)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_left_padded_batch_generates_what_each_row_generates_alone(tok, arch):
    pm = _model(tok, arch, "catalyst")
    tok.padding_side = "left"
    texts = ["the movie was great and the acting", "a bad plot", "who"]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()
    together = _generate(pm, batch["input_ids"], batch["attention_mask"])
    for row, text in enumerate(texts):
        alone = tok([text], return_tensors="pt")
        assert torch.equal(together[row], _generate(pm, alone["input_ids"], alone["attention_mask"])[0]), text
    tok.padding_side = "right"


def test_vanilla_peft_cached_generation_is_still_wrong_upstream(tok, tmp_path):
    """Canary: without peft_catalyst, PEFT 0.21 + transformers 5.x re-injects the prompt at every decode step.

    If this starts passing upstream, CatalystPeftModelForCausalLM.prepare_inputs_for_generation
    (peft_catalyst/tuners/catalyst/peft_model.py) may be obsolete: check and retire it (this test then documents the
    fix instead).
    """
    tiny.tiny_gpt2(tok).save_pretrained(tmp_path / "gpt2")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from peft import PromptTuningConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        torch.manual_seed(0)
        pm = get_peft_model(AutoModelForCausalLM.from_pretrained({str(tmp_path / "gpt2")!r}),
                            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
        with torch.no_grad():
            pm.prompt_encoder["default"].embedding.weight.normal_(std=2.0)
        ids = torch.tensor([[5, 9, 30, 41, 7]])
        assert pm.base_model.config.initializer_range >= 0.2
        kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, min_new_tokens=10,
                  do_sample=False)
        cached, uncached = pm.generate(use_cache=True, **kw), pm.generate(use_cache=False, **kw)
        assert "peft_catalyst" not in sys.modules
        print("EQUAL" if torch.equal(cached, uncached) else "DIFFERENT")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "DIFFERENT"


@pytest.mark.slow
def test_smollm2_prompt_tuned_generation_cached_equals_uncached_and_padding_is_harmless(smollm2):
    """The packaged SmolLM2 (a fresh copy from the converted cache, so the session fixture stays untouched)."""
    from peft_catalyst import set_soft_prompt_from_text
    from peft_catalyst.app.assets import load_smollm2

    model, tok = load_smollm2()
    pm = get_peft_model(model, CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)).eval()
    set_soft_prompt_from_text(pm, tok, "Answer with one word, positive or negative:")
    texts = ["Review: a wonderful, moving film.\nSentiment:", "Review: dull.\nSentiment:"]
    alone = []
    for text in texts:
        enc = tok([text], return_tensors="pt")
        cached = pm.generate(**enc, max_new_tokens=12, do_sample=False, use_cache=True)
        uncached = pm.generate(**enc, max_new_tokens=12, do_sample=False, use_cache=False)
        assert torch.equal(cached, uncached)
        alone.append(cached[0, enc["input_ids"].shape[1] :])
    tok.padding_side = "left"
    batch = tok(texts, return_tensors="pt", padding=True)
    together = pm.generate(**batch, max_new_tokens=12, do_sample=False)[:, batch["input_ids"].shape[1] :]
    tok.padding_side = "right"
    for row, expected in zip(together, alone):
        n = min(len(expected), len(row))
        assert torch.equal(row[:n], expected[:n])
