"""A classifier's class names saved beside its prompt adapter, so a pipeline loaded from the folder speaks in words.

PEFT saves no config of the base model, and a base model such as the packaged MiniLM knows no class names: without
this, ``peft_catalyst.pipeline`` answers ``LABEL_0``/``LABEL_1``. :class:`~peft_catalyst.CatalystTrainer` writes them
when it saves; :func:`peft_catalyst.pipeline` reads them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["LABELS_CONFIG", "save_label_names", "saved_label_names"]


#: Where the class names of a classifier are saved beside its adapter: a transformers ``config.json`` of the base
#: model whose ``id2label``/``label2id`` name the task's classes (PEFT saves no base-model config of its own).
LABELS_CONFIG = "config.json"


def save_label_names(model: Any, directory: str | os.PathLike[str]) -> Path | None:
    """Write the base model's config (with its ``id2label``/``label2id``) beside the adapter in ``directory``.

    Only for a model whose labels have names other than transformers' defaults (``LABEL_0``, ...): then
    :func:`peft_catalyst.pipeline` loaded from the folder answers with the class names. Returns the file, or None.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if not _named(getattr(config, "id2label", None)):
        return None
    config.save_pretrained(directory)
    return Path(directory) / LABELS_CONFIG


def saved_label_names(adapter: str, **hub_kwargs: Any) -> dict[str, Any]:
    """``{"id2label": ..., "label2id": ...}`` saved beside an adapter (folder or Hub id) by :func:`save_label_names`;
    {} when none. ``hub_kwargs``: ``revision``, ``token``."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(adapter, **hub_kwargs)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    id2label = {int(i): str(name) for i, name in (getattr(config, "id2label", None) or {}).items()}
    if not _named(id2label):
        return {}
    return {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}


def _named(id2label: dict | None) -> bool:
    """True when the labels have names other than transformers' defaults (``LABEL_0``, ``LABEL_1``, ...)."""
    return bool(id2label) and any(str(name) != f"LABEL_{int(i)}" for i, name in id2label.items())
