"""Shared pytest fixtures: offline Hub, deterministic seeds, and the packaged SmolLM2 loaded once per session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same torch RNG state."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct (model, tokenizer), loaded at most once per session (about 30 s cold)."""
    from peft_catalyst.assets import load_smollm2

    model, tokenizer = load_smollm2()
    model.eval()
    return model, tokenizer
