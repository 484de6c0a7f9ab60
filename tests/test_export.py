"""The portable export loads in plain PEFT, in a process that never imports peft_catalyst, with identical logits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import get_peft_model

from peft_catalyst import CatalystConfig, export_prompt_tuning, set_soft_prompt_from_text
from tests import tiny


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


@pytest.mark.parametrize("task_type", ["CAUSAL_LM", "SEQ_CLS"])
def test_export_loads_without_peft_catalyst(task_type, tok, tmp_path):
    build = tiny.tiny_llama if task_type == "CAUSAL_LM" else tiny.tiny_bert_seq_cls
    base = build(tok)
    base.save_pretrained(tmp_path / "base")
    pm = get_peft_model(
        build(tok), CatalystConfig(task_type=task_type, num_virtual_tokens=5, task_description="sentiment")
    )
    set_soft_prompt_from_text(pm, tok, "the movie was great")
    if task_type == "SEQ_CLS":  # the trained head (modules_to_save) must travel too
        with torch.no_grad():
            for p in pm.base_model.classifier.modules_to_save["default"].parameters():
                p.add_(0.5)
    pm.eval()
    enc = tok(["a terrible film", "an excellent story"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = pm(**enc).logits
    torch.save({"enc": dict(enc), "logits": expected}, tmp_path / "expected.pt")

    out = export_prompt_tuning(pm, tmp_path / "portable")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING"
    assert "task_description" not in config and "projection_metric" not in config
    assert (out / "adapter_model.safetensors").exists()

    auto = "AutoModelForCausalLM" if task_type == "CAUSAL_LM" else "AutoModelForSequenceClassification"
    script = textwrap.dedent(
        f"""
        import sys, torch
        from peft import PeftModel, PeftConfig
        from transformers import {auto} as Auto
        exp = torch.load({str(tmp_path / "expected.pt")!r})
        assert type(PeftConfig.from_pretrained({str(out)!r})).__name__ == "PromptTuningConfig"
        model = PeftModel.from_pretrained(Auto.from_pretrained({str(tmp_path / "base")!r}), {str(out)!r}).eval()
        with torch.no_grad():
            logits = model(**exp["enc"]).logits
        assert "peft_catalyst" not in sys.modules
        torch.testing.assert_close(logits, exp["logits"], rtol=1e-6, atol=1e-7)
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_export_rejects_non_prompt_models(tok, tmp_path):
    with pytest.raises(ValueError, match="get_peft_model"):
        export_prompt_tuning(tiny.tiny_llama(tok), tmp_path)
