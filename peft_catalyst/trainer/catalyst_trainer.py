"""``CatalystMixin`` and ``CatalystTrainer``: LLM-guided restarts in ``Trainer``, ``SFTTrainer`` or ``Seq2SeqTrainer``.

The rounds themselves live in :class:`~peft_catalyst.trainer.CatalystCallback` (the schedule) and
:mod:`peft_catalyst.round` (one round). The mixin adds what a callback cannot do, and builds the callback:

- the soft prompt gets an optimizer parameter group of its own, so a re-warm-up after a restart scales it alone;
- the training loss of every optimizer step is summed over its micro-batches for the trajectory and plateaus;
- ``train(resume_from_checkpoint=...)`` restores the schedule, history and trajectory from that checkpoint.

``class CatalystSFTTrainer(CatalystMixin, SFTTrainer): pass`` is all it takes for another trainer class.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from peft_catalyst.labels import save_label_names
from peft_catalyst.projection import get_soft_prompt
from peft_catalyst.quiet import saving_prompt_adapter
from peft_catalyst.records import RoundRecord, RunSummary
from peft_catalyst.restart import isolate_param_group
from peft_catalyst.scoring import ScoreFunction

from .catalyst_arguments import CatalystArguments, CatalystTrainingArguments
from .catalyst_callback import CatalystCallback, split_catalyst_dataset

logger = logging.getLogger(__name__)


class CatalystMixin:
    """Mix in before a ``Trainer`` class to run LLM-guided rounds: ``class T(CatalystMixin, SFTTrainer): pass``.

    Extra keyword arguments (everything else goes to the trainer class):
        mentor: a mentor (``propose``, ``name``, ``usage``); ``None`` runs plain prompt tuning.
        catalyst_args: the ``catalyst_*`` settings (:class:`CatalystArguments`); default: taken from ``args`` when
            its class carries them (e.g. :class:`CatalystTrainingArguments`), else the defaults.
        catalyst_dataset: the held-out split candidates are scored on (default: carved from the prepared
            ``train_dataset``, see :class:`CatalystCallback`).
        score_fn: rank prompts by your own function (see :class:`CatalystCallback`).
    """

    def __init__(
        self,
        *args: Any,
        mentor: Any = None,
        catalyst_args: CatalystArguments | None = None,
        catalyst_dataset: Any = None,
        score_fn: ScoreFunction | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.catalyst = CatalystCallback(
            mentor, args=catalyst_args, catalyst_dataset=catalyst_dataset, score_fn=score_fn
        ).attach(self)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def mentor(self) -> Any:
        return self.catalyst.mentor

    @property
    def catalyst_dataset(self) -> Any:
        return self.catalyst.catalyst_dataset

    @property
    def catalyst_history(self) -> list[RoundRecord]:
        """The typed records of the rounds so far."""
        return self.catalyst.history

    def catalyst_summary(self) -> RunSummary:
        """Counts over the rounds so far, the mentor's usage and the compute spent (stages + races)."""
        return self.catalyst.summary()

    # ------------------------------------------------------------------------------------------------------------
    def create_optimizer(self, *args: Any, **kwargs: Any):
        """As the trainer, then give the soft prompt a parameter group of its own so a re-warm-up scales it alone."""
        created = self.optimizer is None
        optimizer = super().create_optimizer(*args, **kwargs)
        if created:  # under DeepSpeed too: its optimizer is built from these groups, and a reset then covers `step`
            isolate_param_group(optimizer, get_soft_prompt(self.model).weight)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        """As the trainer, and sum the micro-batch losses of the optimizer step for the trajectory."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not self.catalyst.racing:
            self.catalyst.step_loss = (self.catalyst.step_loss or 0.0) + float(loss)
        return loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """As the trainer, plus the class names of a classifier (``id2label``), so a pipeline speaks in words."""
        with saving_prompt_adapter(self.accelerator.unwrap_model(self.model)):
            super()._save(output_dir, state_dict)
        save_label_names(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """As the trainer; resuming also restores the catalyst history, schedule and current trajectory."""
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool):
            checkpoint = get_last_checkpoint(self.args.output_dir) if checkpoint else None
            if resume_from_checkpoint and checkpoint is None:
                raise ValueError(f"No checkpoint found in output_dir {self.args.output_dir!r} to resume from.")
        self.catalyst.prepare(checkpoint or None)
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """Push the adapter, its portable copy, ``catalyst_history.json`` and a model card in one commit.

        Same arguments as ``Trainer.push_to_hub``, plus ``repo_id``, ``metrics`` and the model-card options of
        :func:`peft_catalyst.push_to_hub`; only the main process pushes (``peft_catalyst.hub.push_trainer_to_hub``).
        """
        from peft_catalyst.hub import push_trainer_to_hub

        return push_trainer_to_hub(self, commit_message, blocking, token, revision, private, **kwargs)


class CatalystTrainer(CatalystMixin, Trainer):
    """A drop-in ``Trainer`` for prompt-tuned models that restarts the soft prompt from an LLM mentor's proposals.

    Args:
        model: a ``PeftModel`` whose active adapter is CATALYST or vanilla PROMPT_TUNING.
        args: :class:`CatalystTrainingArguments` (or any ``TrainingArguments`` with ``catalyst_args=``).
        mentor, catalyst_args, catalyst_dataset, score_fn: see :class:`CatalystMixin`.
        processing_class: the tokenizer (needed to read the soft prompt as text and to tokenize candidates).
        Everything else is passed to ``transformers.Trainer``.
    """

    def __init__(self, model=None, args=None, **kwargs) -> None:
        if args is None:
            args = CatalystTrainingArguments(output_dir="trainer_output")
        super().__init__(model=model, args=args, **kwargs)


__all__ = ["CatalystMixin", "CatalystTrainer", "CatalystTrainingArguments", "split_catalyst_dataset"]
