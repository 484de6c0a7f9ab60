"""Upstream warnings that no user of this package can act on: silenced by exact message, in this one place.

Importing ``peft_catalyst`` changes no warning filter. :func:`apply` installs them for the whole process; the command
line and the examples call it first thing, and a script may too (``peft_catalyst.quiet.apply()``), so all print the
same. Where the cause can be fixed it is fixed instead (pinned memory without an accelerator, a prompt adapter's
export); each filter names the upstream code that warns and why the warning says nothing actionable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["UPSTREAM_WARNINGS", "UpstreamWarning", "apply", "has_accelerator", "no_pin_memory_without_accelerator"]


@dataclass(frozen=True)
class UpstreamWarning:
    """One upstream warning, matched as ``warnings.filterwarnings`` does (message regex, category, module)."""

    message: str
    category: type[Warning]
    module: str
    why: str


#: Filtered for the whole process by :func:`apply`.
UPSTREAM_WARNINGS = (
    UpstreamWarning(
        message=r"`is_gradient_checkpointing` is deprecated and will be removed in v6\.",
        category=FutureWarning,
        module=r"transformers\.modeling_utils",
        why="PEFT 0.21 reads transformers 5's deprecated property whenever it wraps a model (PEFT's code, not yours)",
    ),
)

#: PEFT's save asks whether the base model's vocabulary changed; offline, or for a base that is not a folder, it cannot
#: look and warns. A prompt-learning adapter never changes the vocabulary, so the assumption it states is right.
_VOCABULARY_CHECK = UpstreamWarning(
    message=r"Could not find a config file in .* - will assume that the vocabulary was not modified\.",
    category=UserWarning,
    module=r"peft\.utils\.save_and_load",
    why="a prompt-learning adapter never modifies the vocabulary",
)


def apply() -> None:
    """Install the process-wide filters, and let DeepSpeed know there is no accelerator before it looks (idempotent).

    DeepSpeed (when installed, imported by transformers and accelerate) warns "Setting accelerator to CPU" when it
    finds none; ``DS_ACCELERATOR=cpu`` is what it would choose anyway, said before it is imported (so call this
    before training starts).
    """
    for entry in UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=entry.message, category=entry.category, module=entry.module)
    if "deepspeed" not in sys.modules and "DS_ACCELERATOR" not in os.environ and not has_accelerator():
        os.environ["DS_ACCELERATOR"] = "cpu"


@contextlib.contextmanager
def saving_prompt_adapter(model: Any) -> Iterator[None]:
    """Around PEFT's ``save_pretrained`` of ``model``: no vocabulary-check warning when its adapter is a prompt."""
    config = getattr(model, "active_peft_config", None)
    if not getattr(config, "is_prompt_learning", False):
        yield
        return
    with warnings.catch_warnings():
        entry = _VOCABULARY_CHECK
        warnings.filterwarnings("ignore", message=entry.message, category=entry.category, module=entry.module)
        yield


def has_accelerator() -> bool:
    """True when torch sees an accelerator (CUDA, MPS, XPU, ...) that pinned memory would help."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def no_pin_memory_without_accelerator(args: Any) -> None:
    """Turn ``dataloader_pin_memory`` off where there is no accelerator: pinning does nothing there, and torch warns
    about it for every dataloader."""
    if getattr(args, "dataloader_pin_memory", False) and not has_accelerator():
        args.dataloader_pin_memory = False
