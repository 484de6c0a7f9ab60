"""The soft prompt's trajectory in one gradient stage: its text after every optimizer step, with the training loss.

Pure bookkeeping (no torch): recording, and choosing the points a mentor sees - deduplicated by text and spread over
the stage, so a mentor reads how the prompt moved rather than eight copies of the same projection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepRecord:
    """The prompt after optimizer step ``step``: its projected text, token ids and the step's training loss."""

    step: int
    text: str
    token_ids: list[int]
    loss: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trajectory:
    """The records of the current gradient stage (cleared when a new stage starts)."""

    records: list[StepRecord] = field(default_factory=list)

    def append(self, step: int, text: str, token_ids: list[int], loss: float) -> None:
        """Record the prompt after an optimizer step."""
        self.records.append(StepRecord(step, text, list(token_ids), float(loss)))

    def clear(self) -> None:
        """Start a new stage."""
        self.records.clear()

    def __len__(self) -> int:
        return len(self.records)

    def select(self, num_points: int) -> list[StepRecord]:
        """Up to ``num_points`` records with distinct token ids, spread evenly over the stage, the latest included.

        Deduplication keeps the latest occurrence of each projection (the prompt that the last gradient steps
        produced), and the spread picks evenly spaced indices among the distinct ones, in step order.
        """
        if num_points < 1 or not self.records:
            return []
        latest: dict[tuple[int, ...], StepRecord] = {}
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
        """JSON-serializable form (checkpoints)."""
        return [r.to_dict() for r in self.records]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> Trajectory:
        """Inverse of :meth:`to_list`."""
        return cls([StepRecord(**item) for item in items])
