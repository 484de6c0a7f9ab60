"""Shared pytest fixtures: offline Hub, deterministic seeds, and the packaged SmolLM2 loaded once per session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread per test process (subprocesses inherit it): the tests' models are tiny, and with two OpenMP
# threads on a 2-core machine that is busy with anything else, a tiny forward pass was measured 300 times slower
# (0.38 s instead of 1.2 ms) from spin-waiting threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
if not torch.cuda.is_available():  # DeepSpeed (test extra) picks its CPU accelerator without a warning per process
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same torch RNG state."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct (model, tokenizer), loaded at most once per session (about 30 s cold)."""
    from peft_catalyst.app.assets import load_smollm2

    model, tokenizer = load_smollm2()
    model.eval()
    return model, tokenizer
