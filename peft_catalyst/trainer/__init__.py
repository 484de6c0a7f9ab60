"""The Trainer side of peft-catalyst: arguments (``catalyst_config``) beside the trainer that reads them."""

from .catalyst_config import CatalystTrainingArguments
from .catalyst_trainer import CatalystTrainer, split_catalyst_dataset

__all__ = ["CatalystTrainer", "CatalystTrainingArguments", "split_catalyst_dataset"]
