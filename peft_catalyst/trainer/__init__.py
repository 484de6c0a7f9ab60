"""LLM-guided rounds for any ``transformers.Trainer``: the settings, the callback, the mixin and the trainer."""

import sys

from . import catalyst_arguments
from .catalyst_arguments import CatalystArguments, CatalystTrainingArguments
from .catalyst_callback import CatalystCallback, CatalystState, split_catalyst_dataset
from .catalyst_trainer import CatalystMixin, CatalystTrainer

# The settings' module was ``catalyst_config`` (a name that read like the PEFT ``CatalystConfig``): old imports of
# ``peft_catalyst.trainer.catalyst_config`` keep working without a second module.
sys.modules.setdefault(f"{__name__}.catalyst_config", catalyst_arguments)

__all__ = [
    "CatalystArguments",
    "CatalystCallback",
    "CatalystMixin",
    "CatalystState",
    "CatalystTrainer",
    "CatalystTrainingArguments",
    "split_catalyst_dataset",
]
