"""LLM-guided rounds for any ``transformers.Trainer``: the settings, the callback, the mixin and the trainer."""

from .catalyst_arguments import CatalystArguments, CatalystTrainingArguments
from .catalyst_callback import CatalystCallback, CatalystState, split_catalyst_dataset
from .catalyst_trainer import CatalystMixin, CatalystTrainer

__all__ = [
    "CatalystArguments",
    "CatalystCallback",
    "CatalystMixin",
    "CatalystState",
    "CatalystTrainer",
    "CatalystTrainingArguments",
    "split_catalyst_dataset",
]
