"""transformers ``Trainer`` internals (verified on transformers 5.25.0; TRL 1.16.0 for the running metrics)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .trl import restore_running_metrics, saved_running_metrics

VERIFIED = "transformers 5.25.0"


def remove_unused_columns(trainer: Any, dataset: Any, description: str) -> Any:
    """``dataset`` without the columns the model's ``forward`` does not take, as ``Trainer`` prepares its own data.

    Uses ``Trainer._remove_unused_columns(dataset, description=...)`` (verified on transformers 5.25.0).
    """
    return trainer._remove_unused_columns(dataset, description=description)


def collator_with_removed_columns(trainer: Any, collator: Callable, description: str) -> Callable:
    """``collator`` wrapped to drop unused columns, for datasets ``Trainer`` cannot filter up front (not ``datasets``).

    Uses ``Trainer._get_collator_with_removed_columns(collator, description=...)`` (verified on transformers 5.25.0).
    """
    return trainer._get_collator_with_removed_columns(collator, description=description)


def num_items_in_batch(trainer: Any, batches: list[dict[str, Any]]) -> Any:
    """Items in a step's micro-batches, as the trainer counts them to scale the loss; None when it does not count.

    Uses ``Trainer._get_num_items_in_batch(batch_samples, device)`` (verified on transformers 5.25.0).
    """
    count = getattr(trainer, "_get_num_items_in_batch", None)
    return count(batches, trainer.args.device) if count is not None else None


def prepare_inputs(trainer: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` moved to the trainer's device (and dtype), as ``Trainer.training_step`` prepares a batch.

    Uses ``Trainer._prepare_inputs(inputs)`` (verified on transformers 5.25.0).
    """
    return trainer._prepare_inputs(inputs)


@contextlib.contextmanager
def trainer_logging_untouched(trainer: Any) -> Iterator[None]:
    """Leave the trainer's logging state as the block found it.

    Why: a round's scoring passes and race steps are not the main loop's, so the running metrics a TRL trainer
    accumulates in ``compute_loss`` (:data:`~peft_catalyst.compat.trl.RUNNING_METRIC_ATTRIBUTES`) are put back; and
    logging the round must not swallow the step's own log, so ``trainer.control.should_log`` (which the callback
    handler's ``on_log`` clears) is put back too (verified on transformers 5.25.0 and TRL 1.16.0).
    """
    saved = saved_running_metrics(trainer)
    should_log = trainer.control.should_log
    try:
        yield
    finally:
        restore_running_metrics(trainer, saved)
        trainer.control.should_log = should_log


def save_checkpoint(trainer: Any) -> None:
    """Save ``checkpoint-{global_step}`` as the training loop does (adapter, optimizer, scheduler, RNG states,
    ``trainer_state.json``, rotation of old checkpoints), then fire ``on_save`` for every callback.

    Why: keeping the best prompt by validation needs a checkpoint of the prompt a run starts from (step 0), which the
    training loop never saves. Uses ``Trainer._save_checkpoint(model, trial)`` (verified on transformers 5.25.0).
    Call it on every process, as the training loop does.
    """
    trainer._save_checkpoint(trainer.model_wrapped, None)
    trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)


def load_report_adjustment() -> tuple[type, str]:
    """Where a model load settles its missing and unexpected keys before transformers logs its load report.

    ``PreTrainedModel._adjust_missing_and_unexpected_keys(self, loading_info)``, called by
    ``_finalize_model_loading`` before ``log_state_dict_report`` (verified on transformers 5.25.0): returned as
    ``(owner, name)`` for :func:`peft_catalyst.offline_models.use_packaged_models`, which wraps it while switched on.
    """
    from transformers import PreTrainedModel

    return PreTrainedModel, "_adjust_missing_and_unexpected_keys"


class FolderSaveHook:
    """Mix in before a ``Trainer`` class to act around the step of ``save_model`` that writes the model's folder.

    :meth:`saving_folder` (a context manager) wraps the write and :meth:`saved_folder` runs right after it, on every
    process, for checkpoints and final saves alike, and before ``save_model`` pushes to the Hub. Uses
    ``Trainer._save(output_dir, state_dict)``, which every branch of ``Trainer.save_model`` but TPU's calls (verified
    on transformers 5.25.0).
    """

    def saving_folder(self) -> contextlib.AbstractContextManager[Any]:
        """The context the folder is written in (default: none)."""
        return contextlib.nullcontext()

    def saved_folder(self, output_dir: str) -> None:
        """Called after the folder ``output_dir`` is written (default: nothing)."""

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        with self.saving_folder():
            super()._save(output_dir, state_dict)  # type: ignore[misc]
        self.saved_folder(output_dir or self.args.output_dir)  # type: ignore[attr-defined]
