"""Scoring prompts on the held-out catalyst split: the ranking value, its direction and the user's hook.

Knows nothing of mentors or rounds: it scores the soft prompt the model holds, or several given prompts at a time
(:mod:`.multi_prompt`), with a host ``Trainer``'s own evaluation pieces, and says which of two scores is
better.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.trainer_pt_utils import nested_concat, nested_detach, nested_numpify
from transformers.trainer_utils import EvalPrediction

from peft_catalyst.compat.transformers import num_items_in_batch, prepare_inputs
from peft_catalyst.compute import ComputeMeter
from peft_catalyst.projection import get_soft_prompt, read_soft_prompt, write_soft_prompt_
from peft_catalyst.records import ScoredPrompt, is_better
from peft_catalyst.rounds.multi_prompt import trainer_losses, trainer_unsupported_reason

logger = logging.getLogger(__name__)


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


def example_order(size: int, seed: int) -> list[int]:
    """A fixed seeded order of a split's ``size`` examples: a subset of ``n`` examples is its first ``n`` entries, so
    subsets of one seed nest (successive halving scores survivors on a superset of what they were first scored on).
    Uses its own generator: no global random state is touched."""
    return [int(i) for i in np.random.default_rng(seed).permutation(size)]


ScoreFunction = Callable[[EvalPrediction], float]
"""A user's ranking function: gets the catalyst split's predictions, labels and per-batch losses, returns a number."""


@dataclass
class Score:
    """What :class:`PromptScorer` measured of one prompt on the catalyst split: the ranking value, the mean loss,
    any task metrics and, when asked, per-example predictions.

    A measurement, not a record: it holds no prompt text and is never written anywhere. A round copies ``value``,
    ``loss`` and ``metrics`` into the prompt's :class:`~peft_catalyst.records.ScoredPrompt` (the type the history,
    the mentor and the card read) and uses ``predictions`` for the errors it shows the mentor.

    ``predictions``: the predicted class id of every catalyst example, in the order of
    :attr:`PromptScorer.scored_dataset`, when the scorer was asked for them and the predictions are class scores
    (``(examples, classes)``); None otherwise (regression, generation, or not asked).
    """

    value: float
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    predictions: tuple[int, ...] | None = None

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)

    def prompt(self, text: str, token_ids: Sequence[int] | None = None, **details: Any) -> ScoredPrompt:
        """The record of ``text`` (and its ``token_ids``) scored with this measurement; ``details``: the record's
        other keyword fields (``step``, ``train_loss``)."""
        ids = list(token_ids) if token_ids is not None else None
        return ScoredPrompt(text, self.value, self.loss, token_ids=ids, metrics=dict(self.metrics), **details)

    def fill(self, prompt: ScoredPrompt) -> None:
        """Write this measurement's value, loss and metrics into ``prompt``."""
        prompt.score, prompt.loss, prompt.metrics = self.value, self.loss, dict(self.metrics)


class PromptScorer:
    """Scores soft prompts on the catalyst split, through a host ``Trainer``'s own pieces.

    The host's eval collator, ``prediction_step`` and ``accelerator`` are used, so the split is batched, sharded and
    gathered exactly as ``Trainer.evaluate`` would do it. The ranking value is, in order of precedence: ``score_fn``
    (a :data:`ScoreFunction`), the loss when ``metric == "loss"``, else ``compute_metrics()[metric]``. Logits are
    gathered only when the ranking value needs them (``score_fn`` or a metric other than the loss).

    :meth:`score_prompts` scores several prompts at a time, each on every example of a batch, in passes of at most
    ``batch_size`` rows (examples x prompts; :mod:`.multi_prompt`): the same numbers as one at a time
    within float tolerance. A pass that runs out of memory is retried with fewer prompts (noted in :attr:`events`).

    ``score_prompts(prompts, examples=n)`` scores on the first ``n`` examples of a fixed seeded order of the split
    (:func:`example_order`; a view of the dataset, not a copy), as successive-halving screening does.
    :attr:`example_scorings` counts the (examples x prompts) rows scored on this process, whole split or not: the
    forward-pass cost of scoring.

    ``predictions=True`` also keeps each example's predicted class (the argmax of the logits after the trainer's
    ``preprocess_logits_for_metrics``) in :attr:`Score.predictions`, from the same pass (only the argmax is kept
    when the ranking does not need the logits themselves): where the predictions are not ``(examples, classes)``
    scores, there are none.
    """

    def __init__(
        self,
        trainer: Any,
        dataset: Any,
        metric: str = "loss",
        higher_is_better: bool = False,
        score_fn: ScoreFunction | None = None,
        batch_size: int = 1,
        predictions: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"catalyst_score_batch_size must be >= 1 (got {batch_size}).")
        self.trainer = trainer
        self.dataset = dataset
        self.metric = metric
        self.higher_is_better = higher_is_better
        self.score_fn = score_fn
        self.batch_size = batch_size
        self.predictions = predictions
        self.seconds = 0.0
        self.calls = 0
        self.example_scorings = 0  # rows (examples x prompts) scored on this process: the forward-pass count
        self.events: list[str] = []  # out-of-memory fallbacks, for the round record
        #: Counts the forward-equivalent tokens of every scoring pass (part ``screening`` unless the caller books
        #: them elsewhere, :meth:`ComputeMeter.as_part`); None: not counted.
        self.meter: ComputeMeter | None = None
        self._dataloader = None
        self._scored_dataset: Any = None
        self._subset_loaders: dict[tuple[int, int], Any] = {}  # (examples, order seed) -> dataloader
        self._reason: str | None | bool = False  # False: not determined yet
        self._bar: Any = None  # the progress bar of the score_prompts call under way

    @property
    def needs_logits(self) -> bool:
        """Whether scoring must gather predictions (a user function or a metric of ``compute_metrics``)."""
        return self.score_fn is not None or self.metric != "loss"

    @property
    def gathers_logits(self) -> bool:
        """Whether the scoring pass returns logits: for the ranking, or for per-example predictions."""
        return self.needs_logits or self.predictions

    @property
    def scored_dataset(self) -> Any:
        """The catalyst split in the order it is scored (longest rows first): :attr:`Score.predictions` index it."""
        self.dataloader()
        return self._scored_dataset

    def worst(self) -> float:
        """The value that loses to every finite score in this direction."""
        return -math.inf if self.higher_is_better else math.inf

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """True when ``a`` beats ``b`` by more than ``margin`` in the ranking direction."""
        return is_better(a, b, self.higher_is_better, margin)

    @property
    def size(self) -> int:
        """Examples in the catalyst split."""
        return len(self.dataset)

    def dataloader(self):
        """The catalyst split's eval dataloader, longest rows first (far less padding; the mean does not change)."""
        if self._dataloader is None:
            self._scored_dataset = sorted_by_length(self.dataset, self._length_column())
            self._dataloader = self.trainer.get_eval_dataloader(self._scored_dataset)
        return self._dataloader

    def subset_dataloader(self, examples: int, seed: int):
        """An eval dataloader over the first ``examples`` of :func:`example_order` (``seed``), longest rows first;
        the whole split's when ``examples`` covers it. A ``datasets.Dataset`` subset is an indices mapping (no copy
        of the data); loaders of the latest order seed are kept for the rungs of a screening."""
        if examples >= self.size:
            return self.dataloader()
        key = (examples, seed)
        if key not in self._subset_loaders:
            if any(s != seed for _, s in self._subset_loaders):
                self._subset_loaders.clear()  # another round's order: the old rungs are not read again
            chosen = sorted(example_order(self.size, seed)[:examples])  # the split's own order, then by length
            if hasattr(self.dataset, "select"):
                subset = self.dataset.select(chosen)
            else:
                subset = torch.utils.data.Subset(self.dataset, chosen)
            self._subset_loaders[key] = self.trainer.get_eval_dataloader(
                sorted_by_length(subset, self._length_column())
            )
        return self._subset_loaders[key]

    def _length_column(self) -> str:
        tok = self.trainer.processing_class
        tok = getattr(tok, "tokenizer", tok)
        return (getattr(tok, "model_input_names", None) or ["input_ids"])[0]

    def sequential_reason(self) -> str | None:
        """Why prompts are scored one at a time (None when :meth:`score_prompts` batches them)."""
        if self._reason is False:
            self._reason = trainer_unsupported_reason(self.trainer)
        if self._reason is None and self.prompts_per_pass() < 2:
            return f"catalyst_score_batch_size={self.batch_size} holds one batch of one prompt"
        return self._reason

    def prompts_per_pass(self) -> int:
        """How many prompts share one pass over a batch of the catalyst split (at least 1)."""
        rows = self.trainer.args.eval_batch_size or 1
        return max(1, self.batch_size // rows)

    def score(self) -> Score:
        """Loss, metrics and ranking value of the model's current soft prompt, over all processes."""
        started = time.perf_counter()
        try:
            return self._score()
        finally:
            self._count_calls(1)
            self.seconds += time.perf_counter() - started

    def score_prompts(
        self, prompts: Sequence[torch.Tensor], examples: int | None = None, order_seed: int = 0
    ) -> list[Score]:
        """Scores of ``prompts`` (full tensors shaped like the soft prompt); the model's soft prompt is unchanged.

        Batched when :meth:`sequential_reason` is None; otherwise each prompt is written into the model and scored.
        ``examples``: score on the first ``examples`` of the split in :func:`example_order` (``order_seed``) instead
        of the whole split (None); such scores carry no per-example predictions.
        """
        started = time.perf_counter()
        subset = examples is not None and examples < self.size
        loader = self.subset_dataloader(examples, order_seed) if subset else self.dataloader()
        batched = len(prompts) > 1 and self.sequential_reason() is None
        passes = math.ceil(len(prompts) / self.prompts_per_pass()) if batched else len(prompts)
        self._bar = self._progress(passes, len(prompts), loader)
        try:
            if batched:
                scores = self._score_in_passes(list(prompts), loader)
            else:
                scores = [self._score_written(p, loader) for p in prompts]
            if subset:  # predictions index the whole split's scored order only
                for score in scores:
                    score.predictions = None
            return scores
        finally:
            self._bar.close()
            self._bar = None
            self._count_calls(len(prompts))
            self.seconds += time.perf_counter() - started

    def _count_calls(self, prompts: int) -> None:
        """``prompts`` prompts scored (:attr:`calls`, and the meter's scoring passes)."""
        self.calls += prompts
        if self.meter is not None:
            self.meter.scoring_passes += prompts

    def _progress(self, passes: int, prompts: int, loader: Any):
        """A bar over the batches of the catalyst split that scoring ``prompts`` in ``passes`` will read (a round's
        scoring can take minutes with a larger doer); shown as the trainer shows its own (``disable_tqdm``, the
        local main process only), and gone when done."""
        from tqdm.auto import tqdm

        try:
            total: int | None = passes * len(loader)
        except TypeError:  # an iterable dataset has no length
            total = None
        args = getattr(self.trainer, "args", None)
        is_main = getattr(self.trainer, "is_local_process_zero", lambda: True)()
        return tqdm(
            total=total,
            desc=f"catalyst: scoring {prompts} prompt{'s' if prompts != 1 else ''}",
            unit="batch",
            leave=False,
            disable=bool(getattr(args, "disable_tqdm", False)) or not is_main or not prompts,
        )

    def _tick(self) -> None:
        """One batch of the catalyst split scored (for the bar of :meth:`score_prompts`, when one is shown)."""
        if self._bar is not None:
            self._bar.update(1)

    # ------------------------------------------------------------------------------------------------------------
    def _score_written(self, prompt: torch.Tensor, loader: Any = None) -> Score:
        saved = read_soft_prompt(self.trainer.model)
        write_soft_prompt_(self.trainer.model, prompt)
        try:
            return self._score(loader)
        finally:
            write_soft_prompt_(self.trainer.model, saved)

    def _score_in_passes(self, prompts: list[torch.Tensor], loader: Any) -> list[Score]:
        """Chunks of :meth:`prompts_per_pass` prompts; a chunk that runs out of memory is halved and retried."""
        per_pass, scores = self.prompts_per_pass(), []
        while len(scores) < len(prompts):
            chunk = prompts[len(scores) : len(scores) + per_pass]
            if len(chunk) == 1:
                scores.append(self._score_written(chunk[0], loader))
                continue
            try:
                scores.extend(self._score_batched(chunk, loader))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory()
                per_pass = len(chunk) // 2
                note = (
                    f"scoring: out of memory with {len(chunk)} prompts in one pass; retried with {per_pass} "
                    "(lower catalyst_score_batch_size)"
                )
                self.events.append(note)
                logger.warning("%s", note)
        return scores

    def _score(self, loader: Any = None) -> Score:
        trainer = self.trainer
        model = trainer.model_wrapped if (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled) else trainer.model
        model.eval()
        tally = _Tally(self)
        meter = self.meter
        for inputs in self.dataloader() if loader is None else loader:
            if meter is not None:
                meter.score(inputs, "screening")
            loss, logits, label = trainer.prediction_step(model, inputs, prediction_loss_only=not self.gathers_logits)
            batch_size = _batch_size(inputs)
            tally.add(loss, logits, label, batch_size)
            self.example_scorings += batch_size
            self._tick()
        return tally.result()

    def _score_batched(self, prompts: list[torch.Tensor], loader: Any = None) -> list[Score]:
        """One pass over the split for all ``prompts``, as ``prediction_step`` computes loss and logits per prompt."""
        trainer = self.trainer
        model = trainer.model
        model.eval()
        weight = get_soft_prompt(model).weight
        stacked = torch.stack([p.to(device=weight.device, dtype=weight.dtype) for p in prompts])
        config = getattr(model, "config", None)  # as prediction_step reads it
        ignore_keys = list(getattr(config, "keys_to_ignore_at_inference", ["cache"]) if config is not None else [])
        tallies = [_Tally(self) for _ in prompts]
        for inputs in self.dataloader() if loader is None else loader:
            batch_size = _batch_size(inputs)
            if self.meter is not None:  # before the batch moves to the device: no synchronization for the count
                self.meter.score(inputs, "screening", prompts=len(prompts))
            inputs = prepare_inputs(trainer, inputs)
            labels = inputs.get("labels")
            if labels is None:
                raise ValueError(NO_LABELS)
            num_items = num_items_in_batch(trainer, [inputs])
            with torch.no_grad(), trainer.compute_loss_context_manager():
                losses, outputs = trainer_losses(trainer, stacked, inputs, num_items)
            self.example_scorings += batch_size * len(prompts)  # counted once the pass ran (not when out of memory)
            for tally, loss, output in zip(tallies, losses, outputs):
                logits, label = None, None
                if self.gathers_logits:
                    logits = nested_detach(tuple(v for k, v in output.items() if k not in ignore_keys + ["loss"]))
                    logits = logits[0] if len(logits) == 1 else logits
                    label = nested_detach(labels)
                tally.add(loss.detach().mean(), logits, label, batch_size)
            self._tick()
        if not self.needs_logits:
            return [tally.result() for tally in tallies]
        # compute_metrics and score_fn run with each prompt in the model, as when it is scored alone (one may read
        # the model, e.g. the prompt's norm)
        saved = read_soft_prompt(model)
        try:
            scores = []
            for prompt, tally in zip(prompts, tallies):
                write_soft_prompt_(model, prompt)
                scores.append(tally.result())
            return scores
        finally:
            write_soft_prompt_(model, saved)


NO_LABELS = "The catalyst split has no labels, so prompts cannot be scored: add a label column."


class _Tally:
    """One prompt's losses and predictions over the split's batches, gathered as ``Trainer.evaluate`` gathers them."""

    def __init__(self, scorer: PromptScorer) -> None:
        self.scorer = scorer
        self.losses: list[torch.Tensor] = []
        self.preds: Any = None
        self.labels: Any = None
        self.classes: list[torch.Tensor] | None = [] if scorer.predictions else None  # per-batch argmax

    def add(self, loss: torch.Tensor | None, logits: Any, label: Any, batch_size: int) -> None:
        if loss is None:
            raise ValueError(NO_LABELS)
        trainer = self.scorer.trainer
        accelerator = trainer.accelerator
        self.losses.append(accelerator.gather_for_metrics(loss.detach().float().reshape(1).repeat(batch_size)))
        if self.scorer.gathers_logits and logits is not None and label is not None:
            if trainer.preprocess_logits_for_metrics is not None:
                logits = trainer.preprocess_logits_for_metrics(logits, label)
            if self.classes is not None:
                scores = logits[0] if isinstance(logits, (tuple, list)) and len(logits) == 1 else logits
                if isinstance(scores, torch.Tensor) and scores.dim() == 2 and scores.shape[1] >= 2:
                    self.classes.append(accelerator.gather_for_metrics(scores.argmax(dim=-1)).cpu())
                else:  # no class scores (regression, generation): no per-example predictions
                    self.classes = None
            if not self.scorer.needs_logits:
                return
            logits = accelerator.pad_across_processes(logits, dim=1, pad_index=-100)
            label = accelerator.pad_across_processes(label, dim=1, pad_index=-100)
            # Batches differ in width (causal-LM labels are as long as their batch): pad while concatenating.
            logits, label = accelerator.gather_for_metrics((logits, label))
            preds, labels = self.preds, self.labels
            self.preds = logits.cpu() if preds is None else nested_concat(preds, logits.cpu(), padding_index=-100)
            self.labels = label.cpu() if labels is None else nested_concat(labels, label.cpu(), padding_index=-100)

    def result(self) -> Score:
        scorer, trainer = self.scorer, self.scorer.trainer
        all_losses = torch.cat(self.losses).cpu()
        mean_loss = float(all_losses.mean()) if torch.isfinite(all_losses).all() else math.inf
        metrics: dict[str, float] = {}
        prediction = None
        if scorer.needs_logits and self.preds is not None:
            prediction = EvalPrediction(
                predictions=nested_numpify(self.preds),
                label_ids=nested_numpify(self.labels),
                losses=all_losses.numpy(),
            )
        if prediction is not None and trainer.compute_metrics is not None:
            result = trainer.compute_metrics(prediction)
            metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float, np.floating))}
        if scorer.score_fn is not None:
            if prediction is None:
                raise ValueError("score_fn needs predictions, but the catalyst split gave no logits and labels.")
            value = float(scorer.score_fn(prediction))
        elif scorer.metric == "loss":
            value = mean_loss
        elif scorer.metric in metrics:
            value = metrics[scorer.metric]
        else:
            raise ValueError(
                f"catalyst_metric={scorer.metric!r} is not among the metrics compute_metrics returns "
                f"({sorted(metrics)}); set catalyst_metric to 'loss' or one of those keys."
            )
        if not math.isfinite(value) or not math.isfinite(mean_loss):
            value = scorer.worst()
        classes = tuple(int(c) for c in torch.cat(self.classes).tolist()) if self.classes else None
        return Score(value=value, loss=mean_loss, metrics=metrics, predictions=classes)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (a device's out-of-memory error, or the CPU allocator's)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_memory() -> None:
    """Return cached device memory after an out-of-memory error, so a smaller retry can fit."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _batch_size(inputs: dict[str, Any]) -> int:
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("Cannot tell the batch size of a catalyst batch: it holds no tensor.")
