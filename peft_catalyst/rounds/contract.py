"""The typed contract between the catalyst schedule (:class:`~peft_catalyst.trainer.CatalystCallback`) and the round
engine (:class:`~.engine.RoundEngine`): the settings a round reads, what the schedule hands a round,
what a round hands back and what the engine measured.

Plain types, no behaviour: the callback builds a :class:`RoundContext` per round and reads :class:`RoundOutcome` and
:class:`RoundTimings`; nothing mutable is shared between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from peft_catalyst.history import ChatLog
from peft_catalyst.mentors.base import Proposal
from peft_catalyst.records import RestartName, RoundRecord, ScreenSchedule, Selection, Trigger
from peft_catalyst.rounds.restarts import RestartOptimizer
from peft_catalyst.rounds.trajectory import Trajectory

__all__ = ["RoundContext", "RoundOutcome", "RoundSettings", "RoundTimings"]


@runtime_checkable
class RoundSettings(Protocol):
    """The ``catalyst_*`` settings a round reads: :class:`~peft_catalyst.trainer.CatalystArguments` has them (and is
    what the callback passes); a protocol, so that the round needs no import from the trainer package above it."""

    catalyst_selection: Selection
    catalyst_trajectory_points: int
    catalyst_num_candidates: int
    catalyst_max_words: int | None
    catalyst_manual_prompt: str | None
    catalyst_mentor_examples: int
    catalyst_mentor_errors: int
    catalyst_mentor_words: int
    catalyst_labels: list[str] | None
    catalyst_label_anchor: bool
    catalyst_proposal: Proposal
    catalyst_race_steps: int
    catalyst_race_eta: int
    catalyst_race_controls: int
    catalyst_race_margin: float
    catalyst_race_seed: int | None
    catalyst_reset_optimizer: bool
    catalyst_rewarmup_steps: int
    catalyst_restart_optimizer: RestartOptimizer
    catalyst_restart_loss_ratio: float | None
    catalyst_restart: RestartName
    catalyst_blend_alphas: list[float]
    catalyst_partial_tokens: int | None
    # proposers
    catalyst_proposers: dict[str, int] | str | None
    # screening schedule
    catalyst_screen_schedule: ScreenSchedule
    catalyst_screen_min_examples: int

    @property
    def catalyst_samples(self) -> int:
        """Prompts drawn per round (the proposers' counts, ``catalyst_num_samples`` or ``catalyst_num_candidates``)."""

    @property
    def catalyst_proposer_counts(self) -> dict[str, int] | None:
        """``catalyst_proposers`` as ``{name: count}`` (None: the mentor alone, asked ``catalyst_samples``)."""


@dataclass
class RoundContext:
    """What the schedule hands a round: its ``index``, the optimizer ``step``, the ``trigger``, the stage's
    ``trajectory``, the ``earlier`` rounds' records, the re-warm-up step under way and the chat log (None: none
    kept on this process)."""

    index: int
    step: int
    trigger: Trigger
    trajectory: Trajectory = field(default_factory=Trajectory)
    earlier: list[RoundRecord] = field(default_factory=list)
    rewarm_step: int = 0
    chat_log: ChatLog | None = None


@dataclass
class RoundTimings:
    """Seconds an engine spent since its last :meth:`RoundEngine.reset`, by phase (scoring is
    :attr:`~peft_catalyst.rounds.scoring.PromptScorer.seconds`)."""

    mentor: float = 0.0  # asking the mentor, broadcast included
    race: float = 0.0  # training and judging race arms


@dataclass
class RoundOutcome:
    """A round's record, plus what the schedule must carry on: the re-warm-up step (None: leave it as it was)."""

    record: RoundRecord
    rewarm_step: int | None
