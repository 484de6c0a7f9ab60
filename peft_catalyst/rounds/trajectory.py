"""The soft prompt's trajectory in one gradient stage: its text after every optimizer step, with the training loss.

Pure bookkeeping (no torch): recording, and choosing the points a mentor sees - deduplicated by text and spread over
the stage, so a mentor reads how the prompt moved rather than eight copies of the same projection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft_catalyst.records import ScoredPrompt


@dataclass
class Trajectory:
    """The prompts of the current gradient stage, one per optimizer step (cleared when a new stage starts).

    Each is a :class:`~peft_catalyst.records.ScoredPrompt` not scored yet: its projected ``text``, ``token_ids``, the
    ``step`` and that step's ``train_loss``. The round scores the ones a mentor sees.
    """

    records: list[ScoredPrompt] = field(default_factory=list)

    def append(self, step: int, text: str, token_ids: list[int], loss: float) -> None:
        """Record the prompt after an optimizer step and the step's training loss."""
        self.records.append(ScoredPrompt(text, token_ids=list(token_ids), step=step, train_loss=float(loss)))

    def clear(self) -> None:
        """Start a new stage."""
        self.records.clear()

    def __len__(self) -> int:
        return len(self.records)

    def select(self, num_points: int) -> list[ScoredPrompt]:
        """Up to ``num_points`` records with distinct token ids, spread evenly over the stage, the latest included.

        Deduplication keeps the latest occurrence of each projection (the prompt that the last gradient steps
        produced), and the spread picks evenly spaced indices among the distinct ones, in step order.
        """
        if num_points < 1 or not self.records:
            return []
        latest: dict[tuple[int, ...], ScoredPrompt] = {}
        for record in self.records:
            latest[tuple(record.token_ids)] = record
        distinct = sorted(latest.values(), key=lambda r: r.step)
        if len(distinct) <= num_points:
            return distinct
        if num_points == 1:
            return [distinct[-1]]
        last = len(distinct) - 1
        indices = sorted({round(i * last / (num_points - 1)) for i in range(num_points)})
        return [distinct[i] for i in indices]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-serializable form (checkpoints): ``{"step", "text", "token_ids", "loss"}`` per step, ``loss`` being the
        step's training loss (the layout of every checkpoint so far)."""
        return [{"step": r.step, "text": r.text, "token_ids": r.token_ids, "loss": r.train_loss} for r in self.records]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> Trajectory:
        """Inverse of :meth:`to_list` (a loss that was not finite reads back as None, as JSON wrote it)."""
        return cls(
            [
                ScoredPrompt(item["text"], token_ids=item["token_ids"], step=item["step"], train_loss=item["loss"])
                for item in items
            ]
        )
