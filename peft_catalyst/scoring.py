"""Scoring prompts on the held-out catalyst split: the ranking value, its direction and the user's hook.

Knows nothing of mentors or rounds: it scores whatever soft prompt the model holds, with a host ``Trainer``'s own
evaluation pieces, and says which of two scores is better.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.trainer_pt_utils import nested_concat, nested_numpify
from transformers.trainer_utils import EvalPrediction

from peft_catalyst.records import is_better


def sorted_by_length(dataset: Any, column: str = "input_ids") -> Any:
    """``dataset`` reordered longest row first, so that evaluation batches pad little (ties keep their order).

    A mean over a whole split does not depend on the order, but padding every batch to its longest row does: the
    packaged tasks' texts vary so much in length that batches of 16 in a random order hold about 1.75x their real
    tokens. Longest first surfaces an out-of-memory batch at once. Anything that is not a ``datasets.Dataset`` with
    ``column`` is returned unchanged.
    """
    import datasets

    if not isinstance(dataset, datasets.Dataset) or column not in dataset.column_names:
        return dataset
    lengths = [len(row) for row in dataset[column]]
    return dataset.select(sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True))


ScoreFunction = Callable[[EvalPrediction], float]
"""A user's ranking function: gets the catalyst split's predictions, labels and per-batch losses, returns a number."""


@dataclass
class Score:
    """A prompt's result on the catalyst split: the ranking value, the mean loss and any task metrics."""

    value: float
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


class PromptScorer:
    """Scores whatever soft prompt the model holds on the catalyst split, through a host ``Trainer``'s own pieces.

    The host's eval collator, ``prediction_step`` and ``accelerator`` are used, so the split is batched, sharded and
    gathered exactly as ``Trainer.evaluate`` would do it. The ranking value is, in order of precedence: ``score_fn``
    (a :data:`ScoreFunction`), the loss when ``metric == "loss"``, else ``compute_metrics()[metric]``. Logits are
    gathered only when the ranking value needs them (``score_fn`` or a metric other than the loss).
    """

    def __init__(
        self,
        trainer: Any,
        dataset: Any,
        metric: str = "loss",
        higher_is_better: bool = False,
        score_fn: ScoreFunction | None = None,
    ) -> None:
        self.trainer = trainer
        self.dataset = dataset
        self.metric = metric
        self.higher_is_better = higher_is_better
        self.score_fn = score_fn
        self.seconds = 0.0
        self.calls = 0
        self._dataloader = None

    @property
    def needs_logits(self) -> bool:
        """Whether scoring must gather predictions (a user function or a metric of ``compute_metrics``)."""
        return self.score_fn is not None or self.metric != "loss"

    def worst(self) -> float:
        """The value that loses to every finite score in this direction."""
        return -math.inf if self.higher_is_better else math.inf

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """True when ``a`` beats ``b`` by more than ``margin`` in the ranking direction."""
        return is_better(a, b, self.higher_is_better, margin)

    def dataloader(self):
        """The catalyst split's eval dataloader, longest rows first (far less padding; the mean does not change)."""
        if self._dataloader is None:
            tok = self.trainer.processing_class
            tok = getattr(tok, "tokenizer", tok)
            column = (getattr(tok, "model_input_names", None) or ["input_ids"])[0]
            self._dataloader = self.trainer.get_eval_dataloader(sorted_by_length(self.dataset, column))
        return self._dataloader

    def score(self) -> Score:
        """Loss, metrics and ranking value of the model's current soft prompt, over all processes."""
        started = time.perf_counter()
        try:
            return self._score()
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - started

    def _score(self) -> Score:
        trainer = self.trainer
        accelerator = trainer.accelerator
        model = trainer.model_wrapped if (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled) else trainer.model
        model.eval()
        want_logits = self.needs_logits
        losses, preds, labels = [], None, None
        for inputs in self.dataloader():
            loss, logits, label = trainer.prediction_step(model, inputs, prediction_loss_only=not want_logits)
            if loss is None:
                raise ValueError("The catalyst split has no labels, so prompts cannot be scored: add a label column.")
            batch_size = _batch_size(inputs)
            losses.append(accelerator.gather_for_metrics(loss.detach().float().reshape(1).repeat(batch_size)))
            if want_logits and logits is not None and label is not None:
                if trainer.preprocess_logits_for_metrics is not None:
                    logits = trainer.preprocess_logits_for_metrics(logits, label)
                logits = accelerator.pad_across_processes(logits, dim=1, pad_index=-100)
                label = accelerator.pad_across_processes(label, dim=1, pad_index=-100)
                # Batches differ in width (causal-LM labels are as long as their batch): pad while concatenating.
                logits, label = accelerator.gather_for_metrics((logits, label))
                preds = logits.cpu() if preds is None else nested_concat(preds, logits.cpu(), padding_index=-100)
                labels = label.cpu() if labels is None else nested_concat(labels, label.cpu(), padding_index=-100)
        all_losses = torch.cat(losses).cpu()
        mean_loss = float(all_losses.mean()) if torch.isfinite(all_losses).all() else math.inf
        metrics: dict[str, float] = {}
        prediction = None
        if want_logits and preds is not None:
            prediction = EvalPrediction(
                predictions=nested_numpify(preds), label_ids=nested_numpify(labels), losses=all_losses.numpy()
            )
        if prediction is not None and trainer.compute_metrics is not None:
            result = trainer.compute_metrics(prediction)
            metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float, np.floating))}
        if self.score_fn is not None:
            if prediction is None:
                raise ValueError("score_fn needs predictions, but the catalyst split gave no logits and labels.")
            value = float(self.score_fn(prediction))
        elif self.metric == "loss":
            value = mean_loss
        elif self.metric in metrics:
            value = metrics[self.metric]
        else:
            raise ValueError(
                f"catalyst_metric={self.metric!r} is not among the metrics compute_metrics returns "
                f"({sorted(metrics)}); set catalyst_metric to 'loss' or one of those keys."
            )
        if not math.isfinite(value) or not math.isfinite(mean_loss):
            value = self.worst()
        return Score(value=value, loss=mean_loss, metrics=metrics)


def _batch_size(inputs: dict[str, Any]) -> int:
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("Cannot tell the batch size of a catalyst batch: it holds no tensor.")
