"""``CatalystMixin`` and ``CatalystTrainer``: LLM-guided restarts in ``Trainer``, ``SFTTrainer`` or ``Seq2SeqTrainer``.

The rounds themselves live in :class:`~peft_catalyst.trainer.CatalystCallback` (the schedule) and
:mod:`peft_catalyst.rounds.engine` (one round). The mixin adds what a callback cannot do, and builds the callback:

- the soft prompt gets an optimizer parameter group of its own, so a re-warm-up after a restart scales it alone;
- the training loss of every optimizer step is summed over its micro-batches for the trajectory and plateaus;
- ``train(resume_from_checkpoint=...)`` restores the schedule, history and trajectory from that checkpoint;
- ``save_model()`` writes a complete adapter folder (``portable/``, history, the peft-catalyst model card), and
  ``create_model_card()`` builds that card for the stock ``Trainer.push_to_hub``.

``class CatalystSFTTrainer(CatalystMixin, SFTTrainer): pass`` is all it takes for another trainer class.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from peft_catalyst.compat.transformers import FolderSaveHook
from peft_catalyst.compute import CountedBatches
from peft_catalyst.hub import finish_adapter_folder, set_base_model
from peft_catalyst.labels import save_label_names
from peft_catalyst.mentors import Mentor
from peft_catalyst.model_card import latest_eval_metrics, read_card, write_model_card
from peft_catalyst.projection import get_soft_prompt
from peft_catalyst.quiet import saving_prompt_adapter
from peft_catalyst.records import History, RoundRecord, RunSummary
from peft_catalyst.rounds.restarts import isolate_param_group
from peft_catalyst.rounds.scoring import ScoreFunction

from .catalyst_arguments import CatalystArguments, CatalystTrainingArguments
from .catalyst_callback import CatalystCallback, split_catalyst_dataset

logger = logging.getLogger(__name__)


class CatalystMixin(FolderSaveHook):
    """Mix in before a ``Trainer`` class to run LLM-guided rounds: ``class T(CatalystMixin, SFTTrainer): pass``.

    Extra keyword arguments (everything else goes to the trainer class):
        mentor: a :class:`~peft_catalyst.mentors.Mentor`; ``None`` runs plain prompt tuning.
        catalyst_args: the ``catalyst_*`` settings (:class:`CatalystArguments`); default: taken from ``args`` when
            its class carries them (e.g. :class:`CatalystTrainingArguments`), else the defaults.
        catalyst_dataset: the held-out split candidates are scored on (default: carved from the prepared
            ``train_dataset``, see :class:`CatalystCallback`).
        score_fn: rank prompts by your own function (see :class:`CatalystCallback`).
    """

    def __init__(
        self,
        *args: Any,
        mentor: Mentor | None = None,
        catalyst_args: CatalystArguments | None = None,
        catalyst_dataset: Any = None,
        score_fn: ScoreFunction | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._saved_history: History | None = None  # the history save_model() wrote, for create_model_card()
        self.catalyst = CatalystCallback(
            mentor, args=catalyst_args, catalyst_dataset=catalyst_dataset, score_fn=score_fn
        ).attach(self)
        self.catalyst.compute.hooked = True  # training_step and prediction_step below count the trainer's batches

    # ------------------------------------------------------------------------------------------------------------
    @property
    def mentor(self) -> Mentor | None:
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
        """As the trainer, sum the micro-batch losses of the optimizer step for the trajectory, and count the
        micro-batch's compute (a stage's; a race arm's step is counted by the race)."""
        self.catalyst.compute.hook_train(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.catalyst.add_step_loss(float(loss))
        return loss

    def evaluation_loop(self, dataloader, *args: Any, **kwargs: Any):
        """As the trainer (``evaluate``/``predict``), counting each batch's compute as evaluation as it is handed out.
        Not ``prediction_step``: overriding it would make the rounds score prompts one at a time
        (:func:`~peft_catalyst.rounds.multi_prompt.trainer_unsupported_reason`), and the scorer calls it too."""
        return super().evaluation_loop(CountedBatches(dataloader, self.catalyst.compute.hook_predict), *args, **kwargs)

    def saving_folder(self):
        """Write a model folder without PEFT's vocabulary-check warning, which a prompt adapter does not need."""
        return saving_prompt_adapter(self.accelerator.unwrap_model(self.model))

    def saved_folder(self, output_dir: str) -> None:
        """Add the class names of a classifier (``id2label``) to a written folder, so a pipeline speaks in words."""
        save_label_names(self.accelerator.unwrap_model(self.model), output_dir)

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

    # ------------------------------------------------------------------------------------------------------------
    # Saving and the model card
    # ------------------------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        """As the trainer, then complete the folder as every peft-catalyst adapter folder: ``portable/`` (the same
        soft prompt as a plain PEFT ``PROMPT_TUNING`` adapter), ``catalyst_history.json`` and the peft-catalyst model
        card instead of PEFT's empty template. Call it on every process, as ``Trainer.save_model``. Checkpoints
        (``checkpoint-N/``) are saved as by the trainer alone."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        # A checkpoint is resume state, not a published adapter (and Trainer would load a portable/ there as a second
        # adapter when resuming).
        checkpoint = Path(output_dir).name.startswith(f"{PREFIX_CHECKPOINT_DIR}-")
        ours = None if checkpoint else read_card(output_dir)  # PEFT's save_pretrained edits a README it finds
        super().save_model(output_dir, *args, **kwargs)  # through saving_folder: no vocabulary-check warning
        if checkpoint:
            return
        self._saved_history = self.catalyst.history_record()  # every process: reading the prompt may be collective
        finish_adapter_folder(
            self.accelerator.unwrap_model(self.model),
            output_dir,
            history=self._saved_history,
            existing_card=ours,
            is_main_process=self.args.should_save,
            **self._card_kwargs(self._saved_history, {}),
        )

    def create_model_card(
        self,
        model_name: str | None = None,
        *,
        metrics: Mapping[str, Any] | None = None,
        base_model: str | None = None,
        tags: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write the peft-catalyst model card as ``README.md`` in ``output_dir`` (what ``Trainer.push_to_hub`` calls
        before it uploads that folder, as in TRL's trainers). The card is the one :meth:`save_model` writes.

        Args:
            model_name: accepted for ``Trainer.push_to_hub``; the card's title is the Hub repository's name.
            metrics: the card's evaluation table (default: the last evaluation's metrics).
            base_model: the base model's Hub id, when ``base_model_name_or_path`` is a local path; also written
                into the folder's adapter configs so that ``AutoPeftModel*`` finds it.
            tags: extra Hub tags.
            kwargs: :func:`peft_catalyst.model_card.build_model_card` options (``task_name``, ``license``,
                ``language``, ...); ``Trainer.create_model_card``'s other arguments are ignored.
        """
        if not self.is_world_process_zero():
            return
        history, self._saved_history = self._saved_history, None  # what save_model() just wrote, used once
        if history is None:  # e.g. TRL's trainers write the card at every checkpoint, from the main process only
            sharded = self.is_deepspeed_enabled or self.is_fsdp_enabled  # reading the prompt would be collective
            history = self.catalyst.history_record(final_prompt=not sharded)
        out = Path(self.args.output_dir)
        if base_model:
            set_base_model(out, base_model)
        card_kwargs = {k: v for k, v in kwargs.items() if k in _CARD_OPTIONS}
        write_model_card(
            self.accelerator.unwrap_model(self.model),
            out,
            history=history,
            metrics=metrics if metrics is not None else latest_eval_metrics(self.state.log_history),
            repo_id=card_kwargs.pop("repo_id", None) or getattr(self, "hub_model_id", None),
            base_model=base_model,
            tags=[tags] if isinstance(tags, str) else tags,
            **self._card_kwargs(history, card_kwargs),
        )

    def _card_kwargs(self, history: History, given: dict[str, Any]) -> dict[str, Any]:
        """What the card says about scoring, the final prompt and secrets to mask, unless the caller says otherwise."""
        summary = history.summary
        mentor = self.catalyst.mentor
        defaults = {
            "score_metric": summary.metric,
            "greater_is_better": summary.higher_is_better,
            "final_prompt": summary.final_prompt,
            "secrets": mentor.secrets() if mentor is not None and hasattr(mentor, "secrets") else [],
        }
        return {**defaults, **given}


#: What :meth:`CatalystMixin.create_model_card` passes on to the card builder.
_CARD_OPTIONS = ("repo_id", "task_name", "score_metric", "greater_is_better", "final_prompt", "license", "language")


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
