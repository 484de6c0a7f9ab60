"""The baselines of the method comparison, built from the product's own pieces (no re-implemented training).

- :class:`RandomWordsMentor` (``random-restarts``): a mentor that proposes ``k`` strings of random vocabulary tokens
  instead of asking an LLM; the trainer scores and selects them exactly like an LLM's candidates.
- :class:`HistoryMentor` (``llm-only``): wraps the LLM mentor so that it sees the best prompts scored so far
  (OPRO-style), since without gradient stages there is no trajectory to show it.
- :class:`FrozenPromptTrainer` and :func:`freeze_soft_prompt` (``llm-only``): the soft prompt gets no gradient
  update; it changes only when a round accepts a candidate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from peft_catalyst.mentors import Completion, Mentor, MentorProposal, MentorRequest, TrajectoryPoint
from peft_catalyst.records import RoundRecord
from peft_catalyst.trainer import CatalystTrainer

logger = logging.getLogger(__name__)

__all__ = ["FrozenPromptTrainer", "HistoryMentor", "RandomWordsMentor", "freeze_soft_prompt", "vocabulary_words"]


def vocabulary_words(tokenizer: Any) -> list[str]:
    """Alphabetic vocabulary tokens that are their own single-token encoding as a space-separated word.

    For a byte-level BPE (SmolLM2) these are the ``Ġword`` tokens, for WordPiece (MiniLM) the whole-word (non-``##``)
    tokens: a space-joined string of them re-tokenizes to exactly those tokens, so a random restart really starts
    from random vocabulary tokens.
    """
    from peft_catalyst.projection import allowed_token_ids

    allowed = allowed_token_ids(tokenizer, "printable", len(tokenizer)).tolist()
    texts = [t.strip() for t in tokenizer.batch_decode([[i] for i in allowed], skip_special_tokens=True)]
    keep = [(i, t) for i, t in zip(allowed, texts) if t.isascii() and t.isalpha()]
    encoded = tokenizer([" " + t for _, t in keep], add_special_tokens=False)["input_ids"]
    words = sorted({t for (i, t), ids in zip(keep, encoded) if ids == [i]})
    if not words:
        raise ValueError("No single-token alphabetic word in this tokenizer's vocabulary.")
    return words


class RandomWordsMentor(Mentor):
    """``random-restarts``: each round proposes ``num_candidates`` prompts of ``max_words`` random vocabulary words.

    Torch-free like every mentor: it gets the word list (see :func:`vocabulary_words`). Seeded: the same seed gives
    the same proposals round by round. It makes no LLM call; usage records zero tokens.
    """

    backend = "random"

    def __init__(self, words: Sequence[str], seed: int = 0) -> None:
        super().__init__(strict_retry=False)
        if not words:
            raise ValueError("RandomWordsMentor needs a non-empty word list")
        self.words = list(words)
        self.seed = seed
        self.name = "random-words"
        self._rounds = 0

    def cache_identity(self) -> dict[str, Any]:
        """Identity for caches (never cached in practice: it is free)."""
        return {"backend": self.backend, "model": "random-words", "seed": self.seed, "vocabulary": len(self.words)}

    def _complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        raise NotImplementedError("RandomWordsMentor answers in propose()")

    def propose(self, request: MentorRequest) -> MentorProposal:
        """``request.num_candidates`` distinct strings of ``request.max_words`` random words (leading space: BPE)."""
        start = time.perf_counter()
        rng = random.Random(f"{self.seed}/{self._rounds}")
        self._rounds += 1
        candidates: list[str] = []
        while len(candidates) < request.num_candidates:
            text = " " + " ".join(rng.choice(self.words) for _ in range(request.max_words))
            if text not in candidates:
                candidates.append(text)
        latency = time.perf_counter() - start
        self.usage.record(latency_s=latency, prompt_tokens=0, completion_tokens=0)
        return MentorProposal(
            candidates=candidates,
            raw="\n".join(candidates),
            latency_s=latency,
            prompt_tokens=0,
            completion_tokens=0,
            model="random-words",
            request_id=None,
            messages=[],
        )


class HistoryMentor(Mentor):
    """``llm-only``: the inner mentor sees the best prompts scored so far instead of a gradient trajectory.

    The trainer's request holds only the current prompt (it does not move between rounds). This wrapper adds every
    finite-scored candidate and current prompt of the earlier rounds (``history()`` returns the trainer's
    ``catalyst_history``, typed :class:`~peft_catalyst.records.RoundRecord` s), keeps the best ranking score per
    text (in the request's direction), and passes the ``max_points`` best on: the OPRO-style memory that makes an
    LLM alone an optimizer. Usage is the inner mentor's (same object).
    """

    def __init__(self, inner: Mentor, history: Callable[[], Sequence[RoundRecord]], max_points: int = 4) -> None:
        super().__init__(strict_retry=False)
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.inner = inner
        self.history = history
        self.max_points = max_points
        self.name = f"{inner.name}+history"
        self.usage = inner.usage

    def cache_identity(self) -> dict[str, Any]:
        """The inner mentor's identity (the added points are part of the request, hence of any cache key)."""
        return self.inner.cache_identity()

    def _complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        raise NotImplementedError("HistoryMentor delegates in propose()")

    def close(self) -> None:
        """Close the inner mentor."""
        self.inner.close()

    def with_history(self, request: MentorRequest) -> MentorRequest:
        """``request`` whose trajectory is the ``max_points`` best-scored distinct prompts scored so far."""
        best: dict[str, TrajectoryPoint] = {}
        sign = -1.0 if request.higher_is_better else 1.0  # sorted ascending: best first

        def add(text: str, score: float | None, loss: float | None) -> None:
            if not text.strip() or score is None or not math.isfinite(score):
                return
            if text not in best or sign * score < sign * best[text].score:
                best[text] = TrajectoryPoint(text=text, score=float(score), loss=loss)

        for record in self.history():
            if record.current is not None:
                add(record.current.text, record.current.score, record.current.loss)
            for candidate in record.candidates:
                add(candidate.text, candidate.score, candidate.loss)
        for point in request.trajectory:
            add(point.text, point.score, point.loss)
        points = sorted(best.values(), key=lambda p: sign * p.score)[: self.max_points]
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
            from peft_catalyst.restart import param_groups_of

            for _, group in param_groups_of(optimizer, get_soft_prompt(self.model).weight):
                group["lr"] = 0.0
                group["initial_lr"] = 0.0
        return optimizer
