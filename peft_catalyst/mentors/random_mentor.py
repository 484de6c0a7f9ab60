"""A mentor that asks no LLM: random vocabulary words as restart candidates, the control for any LLM mentor.

Scored and selected by the trainer exactly like an LLM's candidates, it answers the question "does my LLM beat random
restarts at the same budget?". Torch-free like every mentor: it takes a word list (see
``peft_catalyst.projection.vocabulary_words`` for one built from the doer's tokenizer).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from .base import Mentor, MentorProposal, MentorRequest

logger = logging.getLogger(__name__)

__all__ = ["RandomMentor", "draw_word_prompts"]


def draw_word_prompts(words: Sequence[str], rng: random.Random, count: int, max_words: int) -> list[str]:
    """``count`` distinct strings of ``max_words`` words drawn from ``words`` with ``rng`` (leading space: BPE), or as
    many as the vocabulary allows. The random control's draw, shared by :class:`RandomMentor` and the round's
    ``vocab`` and ``labels`` proposers (:mod:`peft_catalyst.rounds.proposers`)."""
    wanted = min(count, len(set(words)) ** max_words)
    candidates: list[str] = []
    while len(candidates) < wanted:
        text = " " + " ".join(rng.choice(words) for _ in range(max_words))
        if text not in candidates:
            candidates.append(text)
    return candidates


class RandomMentor(Mentor):
    """Proposes ``num_candidates`` distinct prompts of ``max_words`` words drawn at random from ``words``.

    Seeded per round from ``(seed, len(request.earlier_rounds))``, not from a counter, so a run resumed from a
    checkpoint proposes the same words in the same round. Makes no LLM call: usage records zero tokens.

    Args:
        words: the vocabulary to draw from (e.g. ``vocabulary_words(tokenizer)``: single-token words).
        seed: the run's seed.
        name: the name in logs and the history.
        counts: how many candidates each round draws, round by round (at most the number asked; a round past the
            list draws the number asked). ``peft-catalyst compare`` gives the number of usable candidates the same
            seed's LLM mentor gave in each round, so that both race the same arms and train equal gradient steps.
    """

    backend = "random"

    def __init__(
        self,
        words: Sequence[str],
        seed: int = 0,
        *,
        name: str = "random-words",
        counts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.counts = [int(c) for c in counts] if counts is not None else None
        if self.counts is not None and any(c < 0 for c in self.counts):
            raise ValueError(f"RandomMentor counts must be >= 0, got {self.counts}")
        self.words = [w for w in words if w and w.strip()]
        if not self.words:
            raise ValueError("RandomMentor needs a non-empty word list")
        self.seed = seed
        self.name = name

    def cache_identity(self) -> dict[str, Any]:
        """What decides the proposals besides the request (never cached in practice: it is free)."""
        identity = {"backend": self.backend, "model": self.name, "seed": self.seed, "vocabulary": len(self.words)}
        return identity if self.counts is None else {**identity, "counts": self.counts}

    def propose(self, request: MentorRequest) -> MentorProposal:
        """``request.num_candidates`` distinct strings of ``request.max_words`` random words (leading space: BPE)."""
        start = time.perf_counter()
        index = len(request.earlier_rounds)
        rng = random.Random(f"{self.seed}/{index}")
        asked = request.num_candidates
        if self.counts is not None and index < len(self.counts):
            asked = min(asked, self.counts[index])
        candidates = draw_word_prompts(self.words, rng, asked, request.max_words)
        latency = time.perf_counter() - start
        self.usage.record(latency_s=latency, prompt_tokens=0, completion_tokens=0)
        logger.debug("%s: %d random candidate(s)", self.name, len(candidates))
        return MentorProposal(
            candidates=candidates,
            raw="\n".join(candidates),
            latency_s=latency,
            prompt_tokens=0,
            completion_tokens=0,
            model=self.name,
            request_id=None,
            messages=[],
            warning=None if candidates else "no candidate drawn: this round is matched to a mentor that gave none",
        )
