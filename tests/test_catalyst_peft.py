"""CATALYST behaves like a built-in PEFT method: create, forward, train, save, load (fresh process), all task types."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from peft import (
    AutoPeftModelForCausalLM,
    PeftConfig,
    PeftModel,
    PromptTuningConfig,
    get_peft_model,
)
from peft.utils import PeftType

from peft_catalyst import CatalystConfig, CatalystEmbedding
from tests import tiny


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


BUILDERS = {
    "CAUSAL_LM": tiny.tiny_llama,
    "SEQ_CLS": tiny.tiny_bert_seq_cls,
    "SEQ_2_SEQ_LM": tiny.tiny_t5,
    "TOKEN_CLS": tiny.tiny_bert_token_cls,
}


def _batch(tok, task_type: str) -> dict:
    enc = tok(["the movie was great", "a bad plot"], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if task_type == "CAUSAL_LM":
        batch["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    elif task_type == "SEQ_CLS":
        batch["labels"] = torch.tensor([1, 0])
    elif task_type == "SEQ_2_SEQ_LM":
        batch["labels"] = tok(["positive", "negative"], padding=True, return_tensors="pt")["input_ids"]
    else:
        batch["labels"] = torch.randint(0, 3, enc["input_ids"].shape)
    return batch


def test_peft_type_registered():
    assert PeftType.CATALYST == "CATALYST"
    assert PeftType("CATALYST") is PeftType.CATALYST
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.CATALYST] is CatalystConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.CATALYST] is CatalystEmbedding
    assert issubclass(CatalystConfig, PromptTuningConfig)
    assert CatalystConfig(num_virtual_tokens=4).peft_type is PeftType.CATALYST
    # Registering again (as importing twice would) changes nothing.
    from peft_catalyst.tuners.catalyst import register, setup_prompt_encoder

    register(CatalystConfig, CatalystEmbedding, setup_prompt_encoder)
    assert list(PeftType).count(PeftType.CATALYST) == 1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"projection_metric": "manhattan"}, "projection_metric"),
        ({"projection_vocab": "ascii"}, "projection_vocab"),
        ({"projection_vocab": []}, "projection_vocab"),
        ({"projection_vocab": [3, -1]}, "projection_vocab"),
        ({"projection_vocab": [1.5]}, "projection_vocab"),
        ({"task_description": 3}, "task_description"),
        ({"num_virtual_tokens": 0}, "num_virtual_tokens"),
        ({"num_virtual_tokens": None}, "num_virtual_tokens"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    args = {"num_virtual_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=field):
        CatalystConfig(**args)


def test_config_normalises_values():
    cfg = CatalystConfig(num_virtual_tokens=4, projection_metric="L2", projection_vocab=[5, 3, 5])
    assert cfg.projection_metric == "l2"
    assert cfg.projection_vocab == [3, 5]


@pytest.mark.parametrize("task_type", list(BUILDERS))
def test_every_task_type_trains_saves_and_reloads(task_type, tok, tmp_path):
    model = BUILDERS[task_type](tok)
    cfg = CatalystConfig(task_type=task_type, num_virtual_tokens=4, task_description="classify reviews")
    pm = get_peft_model(model, cfg)
    assert isinstance(pm.prompt_encoder["default"], CatalystEmbedding)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert any("prompt_encoder" in n for n in trainable)
    batch = _batch(tok, task_type)

    # forward with labels: a finite loss whose gradient reaches the soft prompt
    pm.train()
    out = pm(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grad = pm.prompt_encoder["default"].embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0

    # forward without labels
    pm.eval()
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    if task_type == "SEQ_2_SEQ_LM":
        no_labels["decoder_input_ids"] = torch.zeros((2, 1), dtype=torch.long)
    with torch.no_grad():
        logits = pm(**no_labels).logits
    assert torch.isfinite(logits).all()

    pm.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "CATALYST" and saved["task_description"] == "classify reviews"
    loaded_cfg = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded_cfg, CatalystConfig) and loaded_cfg.task_description == "classify reviews"

    reloaded = PeftModel.from_pretrained(BUILDERS[task_type](tok), tmp_path)
    reloaded.eval()
    assert isinstance(reloaded.prompt_encoder["default"], CatalystEmbedding)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**no_labels).logits, logits, rtol=0, atol=0)


def test_seq2seq_generate(tok):
    pm = get_peft_model(tiny.tiny_t5(tok), CatalystConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3))
    pm.eval()
    enc = tok(["the movie was great"], return_tensors="pt")
    out = pm.generate(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=5, do_sample=False
    )
    assert out.shape[0] == 1 and 1 < out.shape[1] <= 6
    # The generated tokens are those of greedy decoding through the prompt-tuned forward.
    dec = torch.full((1, 1), tok.pad_token_id)
    for _ in range(out.shape[1] - 1):
        with torch.no_grad():
            logits = pm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=dec).logits
        dec = torch.cat([dec, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, dec)


@pytest.mark.parametrize("init", ["RANDOM", "SAMPLE_VOCAB", "TEXT"])
def test_peft_init_options_keep_working(init, tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    kwargs = {}
    if init == "TEXT":
        kwargs = {"prompt_tuning_init_text": "the movie was great", "tokenizer_name_or_path": str(tmp_path / "tok")}
    model = tiny.tiny_llama(tok)
    pm = get_peft_model(
        model, CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prompt_tuning_init=init, **kwargs)
    )
    weight = pm.prompt_encoder["default"].embedding.weight
    vocab = model.get_input_embeddings().weight
    rows_in_vocab = [bool((vocab == row).all(-1).any()) for row in weight]
    if init == "RANDOM":
        assert not any(rows_in_vocab)
    else:
        assert all(rows_in_vocab)
    if init == "TEXT":  # PEFT's TEXT init: with special tokens, repeated/cut (its behaviour, kept as is)
        ids = tok("the movie was great")["input_ids"]
        torch.testing.assert_close(weight, vocab[(ids * 4)[:4]])


def test_load_adapter_and_auto_classes_in_fresh_process(tok, tmp_path):
    """Save here; load in a new interpreter through load_adapter and the AutoPeftModel classes."""
    base_dir, lm_dir, cls_dir, cls_base = (tmp_path / p for p in ("base", "lm", "cls", "clsbase"))
    model = tiny.tiny_llama(tok)
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    pm = get_peft_model(model, CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_()
    pm.save_pretrained(lm_dir)
    enc = tok(["the movie was great"], return_tensors="pt")
    with torch.no_grad():
        expected_lm = pm(**enc).logits

    clf = tiny.tiny_bert_seq_cls(tok)
    clf.save_pretrained(cls_base)
    pc = get_peft_model(clf, CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4))
    pc.save_pretrained(cls_dir)
    with torch.no_grad():
        expected_cls = pc(**enc).logits
    torch.save({"enc": dict(enc), "lm": expected_lm, "cls": expected_cls}, tmp_path / "expected.pt")

    script = textwrap.dedent(
        f"""
        import torch, peft_catalyst
        from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, PeftModel
        from transformers import AutoModelForCausalLM
        exp = torch.load({str(tmp_path / "expected.pt")!r})
        m = AutoPeftModelForCausalLM.from_pretrained({str(lm_dir)!r}).eval()
        torch.testing.assert_close(m(**exp["enc"]).logits, exp["lm"], rtol=0, atol=0)
        c = AutoPeftModelForSequenceClassification.from_pretrained({str(cls_dir)!r}).eval()
        torch.testing.assert_close(c(**exp["enc"]).logits, exp["cls"], rtol=1e-5, atol=1e-7)
        base = AutoModelForCausalLM.from_pretrained({str(base_dir)!r})
        pm = PeftModel.from_pretrained(base, {str(lm_dir)!r}, adapter_name="first")
        pm.load_adapter({str(lm_dir)!r}, adapter_name="second")
        pm.set_adapter("second")
        pm.eval()
        assert type(pm.prompt_encoder["second"]).__name__ == "CatalystEmbedding"
        torch.testing.assert_close(pm(**exp["enc"]).logits, exp["lm"], rtol=0, atol=0)
        print("OK")
        """
    )
    # base_model_name_or_path must point at the saved base for AutoPeftModel to find it
    for d, b in ((lm_dir, base_dir), (cls_dir, cls_base)):
        cfg = json.loads((d / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(b)
        (d / "adapter_config.json").write_text(json.dumps(cfg))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_without_extension_loading_fails_with_keyerror(tok, tmp_path):
    """Documents why the portable export exists: plain PEFT cannot read a CATALYST adapter."""
    model = tiny.tiny_llama(tok)
    get_peft_model(model, CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)).save_pretrained(tmp_path)
    script = f"from peft import PeftConfig; PeftConfig.from_pretrained({str(tmp_path)!r})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "CATALYST" in result.stderr


def test_autopeft_reads_catalyst_config_type(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    tiny.tiny_llama(tok).save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")  # sets name_or_path, which PEFT records
    pm = get_peft_model(model, CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    assert pm.peft_config["default"].base_model_name_or_path == str(tmp_path / "base")
    pm.save_pretrained(tmp_path / "ad")
    loaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "ad")
    assert isinstance(loaded.peft_config["default"], CatalystConfig)
    with pytest.raises(ValueError):  # PEFT's own rule: prompt-learning adapters cannot be loaded as trainable
        AutoPeftModelForCausalLM.from_pretrained(tmp_path / "ad", is_trainable=True)
