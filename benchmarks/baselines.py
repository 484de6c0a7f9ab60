"""The baselines of the method comparison, built from the product's own pieces (no re-implemented training).

- ``random-restarts`` uses the library's :class:`~peft_catalyst.mentors.RandomMentor` (``k`` strings of random
  vocabulary tokens instead of an LLM's; the trainer scores and selects them exactly like an LLM's candidates).
- :class:`HistoryMentor` (``llm-only``): wraps the LLM mentor so that it sees the best prompts scored so far
  (OPRO-style), since without gradient stages there is no trajectory to show it.
- :class:`FrozenPromptTrainer` and :func:`freeze_soft_prompt` (``llm-only``): the soft prompt gets no gradient
  update; it changes only when a round accepts a candidate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from peft_catalyst.mentors import Mentor, MentorProposal, MentorRequest
from peft_catalyst.records import RoundRecord, ScoredPrompt, ranking_key
from peft_catalyst.trainer import CatalystTrainer

logger = logging.getLogger(__name__)

__all__ = ["FrozenPromptTrainer", "HistoryMentor", "freeze_soft_prompt"]


class HistoryMentor(Mentor):
    """``llm-only``: the inner mentor sees the best prompts scored so far instead of a gradient trajectory.

    The trainer's request holds only the current prompt (it does not move between rounds). This wrapper adds every
    finite-scored candidate and current prompt of the earlier rounds (``history()`` returns the trainer's
    ``catalyst_history``, typed :class:`~peft_catalyst.records.RoundRecord` s), keeps the best ranking score per
    text (in the request's direction), and passes the ``max_points`` best on: the OPRO-style memory that makes an
    LLM alone an optimizer. Usage is the inner mentor's (same object).
    """

    def __init__(self, inner: Mentor, history: Callable[[], Sequence[RoundRecord]], max_points: int = 4) -> None:
        super().__init__()
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.inner = inner
        self.history = history
        self.max_points = max_points
        self.name = f"{inner.name}+history"
        self.usage = inner.usage

    def check(self) -> None:
        """Check the inner mentor."""
        self.inner.check()

    def close(self) -> None:
        """Close the inner mentor."""
        self.inner.close()

    def with_history(self, request: MentorRequest) -> MentorRequest:
        """``request`` whose trajectory is the ``max_points`` best-scoring distinct prompts scored so far."""
        best: dict[str, ScoredPrompt] = {}

        def add(text: str, score: float | None, loss: float | None = None) -> None:
            if text.strip() and score is not None and math.isfinite(score):
                if text not in best or request.better(score, best[text].score):
                    best[text] = ScoredPrompt(text, float(score), loss)

        for record in self.history():
            if record.current is not None:
                add(record.current.text, record.current.score, record.current.loss)
            for candidate in record.candidates:
                add(candidate.text, candidate.score, candidate.loss)
        for point in request.trajectory:
            add(point.text, point.score, point.loss)
        points = sorted(best.values(), key=lambda p: ranking_key(p.score, request.higher_is_better))[: self.max_points]
        return dataclasses.replace(request, trajectory=points)

    def propose(self, request: MentorRequest) -> MentorProposal:
        """Ask the inner mentor with the history-augmented request."""
        return self.inner.propose(self.with_history(request))


def freeze_soft_prompt(model: Any) -> bool:
    """Stop gradient updates of the soft prompt; True when it is frozen by ``requires_grad`` (something else trains).

    When nothing else is trainable (a causal LM classifying by label words) the optimizer needs a parameter, so the
    prompt stays a parameter and :class:`FrozenPromptTrainer` gives it a learning rate of zero instead (False).
    """
    from peft_catalyst.projection import get_soft_prompt

    weight = get_soft_prompt(model).weight
    if any(p.requires_grad for p in model.parameters() if p is not weight):
        weight.requires_grad_(False)
        return True
    return False


class FrozenPromptTrainer(CatalystTrainer):
    """``CatalystTrainer`` whose soft-prompt parameter group has learning rate 0: only restarts change the prompt.

    AdamW with ``lr=0`` leaves a parameter bit for bit unchanged (the update and the decoupled weight decay are both
    scaled by ``lr``), and the scheduler and re-warm-up only ever scale that zero.
    """

    def create_optimizer(self, model=None):
        """As ``CatalystTrainer``, then set the prompt group's learning rate to 0 (before the scheduler reads it)."""
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if created:
            from peft_catalyst.projection import get_soft_prompt
            from peft_catalyst.rounds.restarts import param_groups_of

            for _, group in param_groups_of(optimizer, get_soft_prompt(self.model).weight):
                group["lr"] = 0.0
                group["initial_lr"] = 0.0
        return optimizer
