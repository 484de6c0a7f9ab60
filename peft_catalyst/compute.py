"""Counting the doer's compute where the work happens, in forward-equivalent tokens (:class:`~.records.Compute`).

The main loop's training steps and ``Trainer.evaluate`` are counted by
:class:`~peft_catalyst.trainer.CatalystMixin` (its ``training_step`` and ``evaluation_loop`` see every batch), the
rounds' scorings by :class:`~peft_catalyst.rounds.scoring.PromptScorer`, the race arms' training by
:class:`~peft_catalyst.rounds.race.RaceRunner`. A batch's tokens are summed over all processes as they are counted
(one small all-reduce per batch, as ``Trainer`` does for ``num_input_tokens_seen``), so every process holds the run's
count. Knows nothing of rounds or mentors.

``Trainer``'s own ``include_num_input_tokens_seen="non_padding"`` counts the same non-padding tokens of the main loop,
but it is off by default, leaves out the virtual tokens and sees neither the rounds nor the evaluation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from peft_catalyst.records import COMPUTE_PARTS, SCORE_FACTOR, TRAIN_FACTOR, Compute


def batch_tokens(inputs: Any, virtual_tokens: int, pad_token_id: int | None = None) -> int:
    """Tokens the doer processes for ``inputs`` (one collated batch) on this process: the non-padding tokens of its
    main input (the ``attention_mask``'s ones; else the ``input_ids`` that are not ``pad_token_id``; else every
    position) plus ``virtual_tokens`` per row. 0 for a batch without such a tensor."""
    if not isinstance(inputs, Mapping):  # a dict or a BatchEncoding
        return 0
    mask, ids = inputs.get("attention_mask"), inputs.get("input_ids")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        rows, real = mask.shape[0], int(mask.sum())
    elif isinstance(ids, torch.Tensor) and ids.dim() >= 1:
        rows = ids.shape[0] if ids.dim() > 1 else 1
        real = int((ids != pad_token_id).sum()) if pad_token_id is not None else ids.numel()
    elif isinstance(inputs.get("inputs_embeds"), torch.Tensor):
        embeds = inputs["inputs_embeds"]
        rows, real = embeds.shape[0], embeds.shape[0] * embeds.shape[1]
    else:
        return 0
    return real + rows * virtual_tokens


class CountedBatches:
    """``batches`` (a dataloader) with ``count`` called on each batch as it is handed out; length, ``dataset`` and
    every other attribute are the dataloader's."""

    def __init__(self, batches: Any, count: Callable[[Any], None]) -> None:
        self._batches, self._count = batches, count

    def __iter__(self) -> Iterator[Any]:
        for batch in self._batches:
            self._count(batch)
            yield batch

    def __len__(self) -> int:
        return len(self._batches)  # a TypeError for an iterable dataloader, as has_length expects

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batches, name)


class ComputeMeter:
    """The run's compute so far, per part of :data:`~peft_catalyst.records.COMPUTE_PARTS`.

    Args:
        virtual_tokens: the soft prompt's length (added once per row and prompt).
        pad_token_id: the padding id, for batches without an ``attention_mask``.
        reduce: sums a count over all processes (None: one process).

    ``hooked``: the trainer counts its own training and evaluation batches (:class:`CatalystMixin`); without it the
    record has None for ``stages`` and ``evaluation``. While :meth:`counted_elsewhere` holds, the trainer's hooks
    count nothing (a race calls ``training_step`` and counts those batches itself); :meth:`as_part` books every
    count to one part (a race's scorings go to ``races``).
    """

    def __init__(
        self, virtual_tokens: int, pad_token_id: int | None = None, reduce: Callable[[int], int] | None = None
    ) -> None:
        self.virtual_tokens = virtual_tokens
        self.pad_token_id = pad_token_id
        self.reduce = reduce
        self.hooked = False
        self.parts: dict[str, int] = dict.fromkeys(COMPUTE_PARTS, 0)
        self.scoring_passes = 0
        self._elsewhere = 0
        self._part: str | None = None

    def reset(self) -> None:
        """A fresh run: nothing counted."""
        self.parts = dict.fromkeys(COMPUTE_PARTS, 0)
        self.scoring_passes = 0

    def tokens(self, inputs: Any) -> int:
        """:func:`batch_tokens` of ``inputs``, summed over all processes (every process must call it)."""
        count = batch_tokens(inputs, self.virtual_tokens, self.pad_token_id)
        return self.reduce(count) if self.reduce is not None else count

    def add(self, part: str, tokens: int, factor: int) -> None:
        """Book ``tokens`` at ``factor`` forward-equivalents each to ``part`` (or to the part :meth:`as_part` set)."""
        self.parts[self._part or part] += int(tokens) * factor

    def train(self, inputs: Any, part: str, prompts: int = 1) -> None:
        """A training forward and backward over ``inputs``, once per prompt (arms trained together)."""
        self.add(part, self.tokens(inputs) * prompts, TRAIN_FACTOR)

    def score(self, inputs: Any, part: str, prompts: int = 1) -> None:
        """A forward pass over ``inputs``, once per prompt (prompts scored together)."""
        self.add(part, self.tokens(inputs) * prompts, SCORE_FACTOR)

    def hook_train(self, inputs: Any) -> None:
        """The trainer's training step on ``inputs``: a stage's, unless counted elsewhere."""
        if not self._elsewhere:
            self.train(inputs, "stages")

    def hook_predict(self, inputs: Any) -> None:
        """The trainer's prediction step on ``inputs``: an evaluation's, unless counted elsewhere."""
        if not self._elsewhere:
            self.score(inputs, "evaluation")

    @contextlib.contextmanager
    def counted_elsewhere(self) -> Iterator[None]:
        """The trainer's own hooks count nothing in this block (its caller counts those batches)."""
        self._elsewhere += 1
        try:
            yield
        finally:
            self._elsewhere -= 1

    @contextlib.contextmanager
    def as_part(self, part: str) -> Iterator[None]:
        """Book every count in this block to ``part`` (the outermost setting wins)."""
        if part not in self.parts:
            raise ValueError(f"unknown compute part {part!r}; one of {COMPUTE_PARTS}")
        outer = self._part
        self._part = outer or part
        try:
            yield
        finally:
            self._part = outer

    def record(self, gradient_steps: int = 0) -> Compute:
        """The counts as a :class:`~peft_catalyst.records.Compute` (``stages``/``evaluation`` None unhooked)."""
        parts = self.parts
        return Compute(
            stages=parts["stages"] if self.hooked else None,
            races=parts["races"],
            screening=parts["screening"],
            evaluation=parts["evaluation"] if self.hooked else None,
            gradient_steps=gradient_steps,
            scoring_passes=self.scoring_passes,
        )

    def to_dict(self) -> dict[str, int]:
        """The counts a checkpoint carries (see :meth:`load`)."""
        return {**self.parts, "scoring_passes": self.scoring_passes}

    def load(self, data: dict[str, Any] | None) -> None:
        """Continue from the counts a checkpoint carried (a resumed run counts as if it had not stopped)."""
        data = data or {}
        self.parts = {part: int(data.get(part) or 0) for part in COMPUTE_PARTS}
        self.scoring_passes = int(data.get("scoring_passes") or 0)


__all__ = ["ComputeMeter", "CountedBatches", "batch_tokens"]
