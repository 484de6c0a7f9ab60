"""TRL trainer internals (verified on TRL 1.16.0). TRL is not imported: the functions receive the trainer."""

from __future__ import annotations

import copy
import inspect
from typing import Any

VERIFIED = "trl 1.16.0"

#: Running metrics TRL's trainers accumulate in ``compute_loss`` and average and clear at each ``log`` (entropy,
#: token accuracy, token count): ``SFTTrainer._metrics`` and ``_total_train_tokens`` (verified on TRL 1.16.0).
RUNNING_METRIC_ATTRIBUTES = ("_metrics", "_total_train_tokens")


def saved_running_metrics(trainer: Any) -> dict[str, Any]:
    """Deep copies of the trainer's running metrics (those of :data:`RUNNING_METRIC_ATTRIBUTES` it has)."""
    names = [name for name in RUNNING_METRIC_ATTRIBUTES if hasattr(trainer, name)]
    return {name: copy.deepcopy(getattr(trainer, name)) for name in names}


def restore_running_metrics(trainer: Any, saved: dict[str, Any]) -> None:
    """Put back what :func:`saved_running_metrics` copied."""
    for name, value in saved.items():
        setattr(trainer, name, value)


def can_prepare_dataset(trainer: Any) -> bool:
    """Whether the trainer tokenizes raw datasets itself, as TRL's ``SFTTrainer._prepare_dataset`` does."""
    return callable(getattr(trainer, "_prepare_dataset", None))


def prepare_dataset(trainer: Any, dataset: Any, *, packing: bool, dataset_name: str) -> Any:
    """``dataset`` tokenized as the TRL trainer prepares its own data, without a formatting function.

    Calls ``trainer._prepare_dataset`` with its arguments bound by name (TRL 1.16.0: ``dataset, processing_class,
    args, packing, formatting_func, dataset_name``), so a release that reorders them still works; one that adds a
    required parameter raises a ``TypeError`` that says what to do instead.
    """
    prepare = trainer._prepare_dataset
    known = {
        "dataset": dataset,
        "processing_class": trainer.processing_class,
        "args": trainer.args,
        "packing": packing,
        "formatting_func": None,
        "dataset_name": dataset_name,
    }
    params = inspect.signature(prepare).parameters
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    unknown = [n for n, p in params.items() if n not in known and p.kind in named and p.default is p.empty]
    if unknown or any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params.values()):
        raise TypeError(
            f"{type(trainer).__name__}._prepare_dataset{inspect.signature(prepare)} is not the TRL 1.16 shape "
            f"peft-catalyst knows (it cannot fill {unknown or 'positional-only parameters'}): pass catalyst_dataset= "
            "already tokenized (with input_ids)."
        )
    return prepare(**{name: value for name, value in known.items() if name in params})
