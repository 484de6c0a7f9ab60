"""What a catalyst run produces, typed: scored prompts, races, one record per round, the run summary, the history.

The round engine writes these; ``catalyst_history.json``, the model card, ``run.png``, the command-line summary
and the benchmark read them through this one definition. Pure data (no torch). ``History.from_dict`` also reads
histories written before the format carried a version (format 1, peft-catalyst 0.1.0.dev0).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, asdict, dataclass, field
from enum import Enum
from typing import Any, Literal, get_args

HISTORY_FORMAT = 6
"""Version of ``catalyst_history.json``'s layout; 1 is the untyped layout of the first release (no version key), 2
named the summary's ``main_steps`` ``stage_steps``, 3 had no ``evidence`` in a round (what the mentor was shown of
the data; it reads as None), 4 had no ``followup`` in a round (a taken restart's later scores; it reads as an empty
list), 5 had no proposers (a prompt's ``proposer`` reads as None, a round's ``proposers`` and ``wins`` and the
summary's ``proposers`` as empty). Every earlier format reads into the current types."""


def higher_is_better(metric: str, greater_is_better: bool | None = None) -> bool:
    """Direction of a metric: as given, else lower is better for names ending in "loss" (as ``Trainer`` does)."""
    if greater_is_better is not None:
        return greater_is_better
    return not metric.endswith("loss")


def is_better(a: float, b: float, higher_is_better: bool, margin: float = 0.0) -> bool:
    """Whether score ``a`` beats ``b`` by more than ``margin`` in the metric's direction: the one comparison of scores
    that scoring, rounds, races, mentors and the app share (NaN never beats anything)."""
    return a - b > margin if higher_is_better else b - a > margin


def ranking_key(score: float, higher_is_better: bool) -> float:
    """``score`` turned so that lower is better whatever the metric: the key to sort best first or ``min`` by."""
    return -score if higher_is_better else score


#: The proposer named for a race's or screening's random control (``catalyst_race_controls``) in the wins per
#: proposer, and for the incumbent kept by a round (``RoundRecord.wins``).
CONTROL_PROPOSER = "control"
CURRENT_PROPOSER = "current"

Selection = Literal["best", "race", "first"]
"""How a round judges candidates (``catalyst_selection``): score them untrained, race them, or take the first."""
SELECTIONS: tuple[str, ...] = get_args(Selection)
#: How a restart uses a proposal (``catalyst_restart``, :class:`RestartShape`).
ScreenSchedule = Literal["full", "halving"]
"""How screening spends the catalyst split (``catalyst_screen_schedule``): every candidate on all of it, or successive
halving (:func:`peft_catalyst.rounds.screening.halving_rungs`)."""
SCREEN_SCHEDULES: tuple[str, ...] = get_args(ScreenSchedule)

RestartName = Literal["full", "blend", "partial"]


class Trigger(str, Enum):
    """Why a round started: the stage reached ``catalyst_stage_steps``, the training loss plateaued, or the run
    starts (``catalyst_initial_round``)."""

    SCHEDULE = "schedule"
    PLATEAU = "plateau"
    INITIAL = "initial"  # catalyst_initial_round: once at step 0, before any training


class Decision(str, Enum):
    """What a round did to the soft prompt."""

    ACCEPTED = "accepted"  # a scored candidate (or race arm) replaced the prompt
    KEPT = "kept"  # the incumbent won: training goes on as if the round had not happened
    SKIPPED = "skipped"  # nothing to judge (mentor error, no usable candidate)
    BLIND = "blind"  # catalyst_selection="first": the first candidate replaced the prompt unscored

    @property
    def restarted(self) -> bool:
        """True when the soft prompt was replaced."""
        return self in (Decision.ACCEPTED, Decision.BLIND)


class ArmKind(str, Enum):
    """Where a race arm starts from."""

    INCUMBENT = "incumbent"  # the current soft prompt with its own optimizer state
    CANDIDATE = "candidate"  # a mentor proposal, fresh optimizer state and re-warm-up
    CONTROL = "control"  # random vocabulary tokens (catalyst_race_controls), the round's own control


@dataclass
class ScoredPrompt:
    """A discrete prompt with its result on the catalyst split: the one record of "a prompt with a score".

    ``score`` is the value of the ranking metric (``metric`` of the round), ``loss`` the mean loss; both are None when
    the prompt was not scored (a trajectory point not scored yet, an unusable candidate, blind selection) and
    ``error`` says why when it could not be used. Trajectory points carry the optimizer ``step`` they were projected
    at and that step's ``train_loss`` (:class:`~peft_catalyst.rounds.trajectory.Trajectory`).

    The same class is what a mentor reads (``MentorRequest.trajectory`` and ``best_prompts``, exported there as
    ``TrajectoryPoint``): a request keeps only ``text``, ``score`` and ``loss``. ``text``, ``score`` and ``loss`` are
    the positional fields; the others are keyword-only. The scorer's own measurement, with per-example predictions,
    is :class:`peft_catalyst.rounds.scoring.Score`; a round copies its value, loss and metrics into a ``ScoredPrompt``.

    ``examples``: how many catalyst examples ``score`` is on, when fewer than the whole split may have been used
    (successive-halving screening scores losers on fewer); None: the whole split, as every record before it.
    """

    text: str
    score: float | None = None
    loss: float | None = None
    _: KW_ONLY
    token_ids: list[int] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    step: int | None = None
    train_loss: float | None = None
    #: Which proposer drew a round's candidate (``catalyst_proposers``: ``"mentor"``, ``"vocab"``, ...; None for
    #: trajectory points and other prompts no proposer drew, and in format 5 and earlier).
    proposer: str | None = None
    examples: int | None = None

    @property
    def finite(self) -> bool:
        """True when the prompt was scored and its score is a finite number (only those can be selected)."""
        return self.score is not None and math.isfinite(self.score)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (history layout: the key order of every format so far); see :meth:`from_dict`."""
        return {
            "text": self.text,
            "token_ids": list(self.token_ids) if self.token_ids is not None else None,
            "score": self.score,
            "loss": self.loss,
            "metrics": dict(self.metrics),
            "error": self.error,
            "step": self.step,
            "train_loss": self.train_loss,
            "proposer": self.proposer,
            "finite": self.finite,
            # only where set: records of whole-split scoring stay as every format so far wrote them
            **({"examples": self.examples} if self.examples is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoredPrompt:
        """Inverse of :meth:`to_dict`, for every history format."""
        # format 1 wrote trajectory scores as catalyst_score/catalyst_loss/catalyst_metrics and "loss" = train loss
        if "catalyst_score" in data:
            return cls(
                text=data.get("text", ""),
                token_ids=data.get("token_ids"),
                score=data.get("catalyst_score"),
                loss=data.get("catalyst_loss"),
                metrics=dict(data.get("catalyst_metrics") or {}),
                step=data.get("step"),
                train_loss=data.get("train_loss", data.get("loss")),
            )
        return cls(
            text=data.get("text") or "",
            token_ids=data.get("token_ids"),
            score=data.get("score"),
            loss=data.get("loss"),
            metrics=dict(data.get("metrics") or {}),
            error=data.get("error"),
            step=data.get("step"),
            train_loss=data.get("train_loss"),
            proposer=data.get("proposer"),
            examples=data.get("examples"),
        )


@dataclass(frozen=True)
class LabeledExample:
    """A catalyst-split example as the mentor sees it: its ``text`` (cut to a word budget), its true ``label`` and,
    for an error, the ``predicted`` label the current prompt gave. ``cut`` is True when the text was shortened."""

    text: str
    label: str
    predicted: str | None = None
    cut: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form; :meth:`from_dict` reads it back."""
        return {"text": self.text, "label": self.label, "predicted": self.predicted, "cut": self.cut}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabeledExample:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["text"]), str(data["label"]), data.get("predicted"), bool(data.get("cut", False)))


@dataclass
class Evidence:
    """What a round showed the mentor of the data (``MentorRequest``'s evidence fields), kept in its record.

    ``best_prompts`` hold text and score only; ``proposal`` is the mode asked (``"new"`` or ``"edit"``).
    """

    examples: list[LabeledExample] = field(default_factory=list)
    errors: list[LabeledExample] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    best_prompts: list[ScoredPrompt] = field(default_factory=list)
    proposal: str = "new"

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": [e.to_dict() for e in self.examples],
            "errors": [e.to_dict() for e in self.errors],
            "labels": list(self.labels),
            "best_prompts": [p.to_dict() for p in self.best_prompts],
            "proposal": self.proposal,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(
            examples=[LabeledExample.from_dict(e) for e in data.get("examples") or []],
            errors=[LabeledExample.from_dict(e) for e in data.get("errors") or []],
            labels=[str(label) for label in data.get("labels") or []],
            best_prompts=[ScoredPrompt.from_dict(p) for p in data.get("best_prompts") or []],
            proposal=data.get("proposal") or "new",
        )


@dataclass
class ScreenRung:
    """One rung of successive-halving screening: ``candidates`` (and random ``controls``) scored on the first
    ``examples`` of the round's fixed order of the catalyst split."""

    examples: int
    candidates: int
    controls: int = 0


@dataclass
class Screening:
    """Many samples screened, few kept (``catalyst_num_samples``): each usable candidate (and each random control)
    scored untrained on the catalyst split, the best going on to selection.

    ``kept`` indexes the round's candidates that went on, best first; ``controls`` are the random controls screened
    (with their scores) and ``kept_controls`` index those that went on; ``scores`` hold each candidate's screening
    score. ``prompts`` were scored in ``passes`` passes
    over the split (several prompts share a pass when scoring is batched), in ``seconds``.

    With ``schedule="halving"`` (``catalyst_screen_schedule``) ``rungs`` says how many candidates and controls were
    scored on how many examples at each rung, ``examples`` on how many each candidate's screening score in
    ``scores`` is (losers fewer than the split), and ``example_scorings`` the (examples x prompts) rows it scored;
    ``prompts`` and ``passes`` then count rung scorings. Whole-split screening records none of these (its records
    stay as before).
    """

    samples: int
    kept: list[int] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)  # untrained; a race rescores the kept after training
    controls: list[ScoredPrompt] = field(default_factory=list)
    kept_controls: list[int] = field(default_factory=list)
    prompts: int = 0
    passes: int = 0
    seconds: float = 0.0
    schedule: ScreenSchedule = "full"
    rungs: list[ScreenRung] = field(default_factory=list)
    examples: list[int | None] = field(default_factory=list)
    example_scorings: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "controls": [c.to_dict() for c in self.controls]}
        if self.schedule == "full":  # whole-split screening: the record every format so far wrote
            for name in ("schedule", "rungs", "examples", "example_scorings"):
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Screening:
        return cls(
            samples=int(data["samples"]),
            kept=list(data.get("kept") or []),
            scores=list(data.get("scores") or []),
            controls=[ScoredPrompt.from_dict(c) for c in data.get("controls") or []],
            kept_controls=list(data.get("kept_controls") or []),
            prompts=int(data.get("prompts") or 0),
            passes=int(data.get("passes") or 0),
            seconds=float(data.get("seconds") or 0.0),
            schedule=data.get("schedule") or "full",
            rungs=[ScreenRung(**r) for r in data.get("rungs") or []],
            examples=list(data.get("examples") or []),
            example_scorings=data.get("example_scorings"),
        )


@dataclass
class MentorCall:
    """One mentor exchange as the history keeps it (the full messages are in the chat log)."""

    name: str
    error: str | None = None
    candidates: list[str] = field(default_factory=list)
    model: str | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int | None = None
    cached: bool = False
    warning: str | None = None
    rejected: list[list[str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MentorCall:
        known = set(cls.__dataclass_fields__)
        kept = {k: v for k, v in data.items() if k in known}
        kept.setdefault("name", "unknown")
        kept["candidates"] = list(kept.get("candidates") or [])
        kept["rejected"] = [list(r) for r in kept.get("rejected") or []]
        kept["cached"] = bool(kept.get("cached"))
        return cls(**kept)


@dataclass
class RestartShape:
    """How a restart uses a proposal (``catalyst_restart``): ``"full"`` starts from the proposal's tokens, ``"blend"``
    from ``incumbent + alpha * (proposal - incumbent)``, ``"partial"`` from the incumbent with the proposal's tokens
    written at ``positions`` only. Records written before shapes existed read as ``"full"``."""

    name: RestartName = "full"
    alpha: float | None = None
    positions: list[int] | None = None

    @property
    def label(self) -> str:
        """The shape and its parameter in a few words, e.g. ``"blend alpha=0.3"``."""
        if self.name == "blend":
            return f"blend alpha={self.alpha:g}"
        if self.name == "partial":
            return "partial at position" + ("s " if len(self.positions or []) != 1 else " ") + ", ".join(
                str(p) for p in self.positions or []
            )
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "positions": self.positions}

    @staticmethod
    def setting_label(name: str, alphas: list[float] | None = None, partial_tokens: int | None = None) -> str:
        """The ``catalyst_restart`` setting in a few words, e.g. ``"blend alpha=0.3, 0.6"`` or ``"partial, 4
        tokens"`` (what the summary keeps even when no round restarted)."""
        if name == "blend":
            return "blend alpha=" + ", ".join(f"{a:g}" for a in alphas or [])
        if name == "partial":
            return "partial, " + (f"{partial_tokens} token{'s' if partial_tokens != 1 else ''}" if partial_tokens
                                  else "half the prompt")  # fmt: skip
        return name

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RestartShape:
        data = data or {}
        positions = data.get("positions")
        return cls(data.get("name", "full"), data.get("alpha"), list(positions) if positions is not None else None)


@dataclass
class RaceArm:
    """An arm of a race: where it starts (``kind``; ``candidate`` indexes the round's candidates), its text, and the
    ``shape`` of its start (a blended or partial arm starts between the incumbent and the text's tokens)."""

    kind: ArmKind
    text: str
    token_ids: list[int]
    candidate: int | None = None
    shape: RestartShape = field(default_factory=RestartShape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "text": self.text,
            "token_ids": list(self.token_ids),
            "candidate": self.candidate,
            "shape": self.shape.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaceArm:
        return cls(
            ArmKind(data["kind"]),
            data["text"],
            list(data["token_ids"]),
            data.get("candidate"),
            RestartShape.from_dict(data.get("shape")),
        )


@dataclass
class RaceRung:
    """One rung of successive halving: the arms that raced, the steps each had trained after it, their scores."""

    arms: list[int]
    steps: int
    scores: list[ScoredPrompt]

    def to_dict(self) -> dict[str, Any]:
        return {"arms": list(self.arms), "steps": self.steps, "scores": [s.to_dict() for s in self.scores]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaceRung:
        return cls(list(data["arms"]), int(data["steps"]), [ScoredPrompt.from_dict(s) for s in data["scores"]])


@dataclass
class Race:
    """A round's race: its arms, its rungs and the winning arm; ``steps`` counts every arm's gradient steps.

    ``batched``: the arms trained together, one forward and backward over the stacked batch per step (else one arm
    after the other).
    """

    arms: list[RaceArm]
    rungs: list[RaceRung] = field(default_factory=list)
    winner: int = 0
    steps: int = 0
    batched: bool = False

    def arm_steps(self, arm: int) -> int:
        """Gradient steps arm ``arm`` trained in this race."""
        return max((r.steps for r in self.rungs if arm in r.arms), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arms": [a.to_dict() for a in self.arms],
            "rungs": [r.to_dict() for r in self.rungs],
            "winner": self.winner,
            "steps": self.steps,
            "batched": self.batched,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Race:
        return cls(
            [RaceArm.from_dict(a) for a in data["arms"]],
            [RaceRung.from_dict(r) for r in data.get("rungs", [])],
            int(data.get("winner", 0)),
            int(data.get("steps", 0)),
            bool(data.get("batched", False)),
        )


@dataclass
class FollowUp:
    """The restarted prompt scored on the catalyst split ``steps`` optimizer steps after the restart it follows
    (``catalyst_restart_followup``): ``score`` in the round's metric, ``loss`` the mean loss; 0 steps is the restart
    point. None: not finite."""

    steps: int
    score: float | None
    loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "score": self.score, "loss": self.loss}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FollowUp:
        def number(value: Any) -> float | None:
            return None if value is None else float(value)

        return cls(int(data["steps"]), number(data.get("score")), number(data.get("loss")))


#: Optimizer steps after a taken restart at which ``catalyst_restart_followup`` scores the prompt (those within the
#: stage).
FOLLOWUP_STEPS: tuple[int, ...] = (1, 2, 5, 10, 20)


@dataclass
class RoundRecord:
    """Everything one round saw and did.

    ``winner`` indexes ``candidates`` when a candidate replaced the prompt (``None`` otherwise; a race won by a
    control arm has ``race.winner`` pointing at it and ``winner`` None). ``decisive`` is the scored prompt the
    prompt after the round corresponds to: what a plot or card should show next to the decision.
    """

    round: int
    step: int
    trigger: Trigger
    decision: Decision
    metric: str = "loss"
    higher_is_better: bool = False
    selection: Selection = "best"
    reason: str | None = None
    winner: int | None = None
    trajectory: list[ScoredPrompt] = field(default_factory=list)
    mentor: MentorCall | None = None
    current: ScoredPrompt | None = None
    candidates: list[ScoredPrompt] = field(default_factory=list)
    race: Race | None = None
    seconds: float = 0.0
    prompt_after: str | None = None
    notes: list[str] = field(default_factory=list)  # how the round ran, e.g. prompts handled one at a time and why
    shape: RestartShape | None = None  # the shape of the restart taken (None: no restart, or a record before shapes)
    evidence: Evidence | None = None  # what the mentor was shown of the data (None: format 3 and earlier)
    screening: Screening | None = None  # None: every usable candidate went on to selection
    #: Whether the best mentor prompt beat the best random control at screening / in the race (None: not compared,
    #: or a tie: the two best stood level, as identical prompts do).
    beat_random_screening: bool | None = None
    beat_random_race: bool | None = None
    #: A taken restart's follow-up (``catalyst_restart_followup``): its score at the restart point and after
    #: :data:`FOLLOWUP_STEPS` steps within the stage; empty when not measured (and in format 4 and earlier).
    followup: list[FollowUp] = field(default_factory=list)
    #: Prompts drawn per proposer (``{"mentor": 4, "vocab": 4}``; ``"control"``: the random controls screened or
    #: raced) and which proposer won at ``"screening"`` and at ``"selection"`` (race, best or first: ``"current"``
    #: when the incumbent was kept); see :func:`peft_catalyst.rounds.proposers.round_wins`. Empty in format 5 and
    #: earlier.
    proposers: dict[str, int] = field(default_factory=dict)
    wins: dict[str, str] = field(default_factory=dict)

    @property
    def race_steps(self) -> int:
        """Extra gradient steps this round spent (all race arms together; 0 without a race)."""
        return self.race.steps if self.race is not None else 0

    @property
    def restarted(self) -> bool:
        return self.decision.restarted

    @property
    def decisive(self) -> ScoredPrompt | None:
        """The scored prompt that the round left in place: the winning arm's last score, the winner, or current."""
        if self.race is not None and self.race.rungs:
            last = self.race.rungs[-1]
            for arm, score in zip(last.arms, last.scores):
                if arm == self.race.winner:
                    return score
        if self.winner is not None and self.decision is Decision.ACCEPTED:
            return self.candidates[self.winner]
        if self.decision is Decision.KEPT:
            return self.current
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "step": self.step,
            "trigger": self.trigger.value,
            "decision": self.decision.value,
            "reason": self.reason,
            "winner": self.winner,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "selection": self.selection,
            "trajectory": [p.to_dict() for p in self.trajectory],
            "mentor": self.mentor.to_dict() if self.mentor is not None else None,
            "current": self.current.to_dict() if self.current is not None else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "race": self.race.to_dict() if self.race is not None else None,
            "race_steps": self.race_steps,
            "seconds": self.seconds,
            "prompt_after": self.prompt_after,
            "notes": list(self.notes),
            "shape": self.shape.to_dict() if self.shape is not None else None,
            "evidence": self.evidence.to_dict() if self.evidence is not None else None,
            "screening": self.screening.to_dict() if self.screening is not None else None,
            "beat_random_screening": self.beat_random_screening,
            "beat_random_race": self.beat_random_race,
            "followup": [f.to_dict() for f in self.followup],
            "proposers": dict(self.proposers),
            "wins": dict(self.wins),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], defaults: dict[str, Any] | None = None) -> RoundRecord:
        """Read a round of either format; ``defaults`` fills what format 1 kept only in the summary (metric...)."""
        defaults = defaults or {}
        decision = data.get("decision")
        reason = data.get("reason")
        winner = data.get("winner")
        if isinstance(decision, dict):  # format 1: {"status", "reason", "accepted", "winner", "text"}
            reason, winner, decision = decision.get("reason"), decision.get("winner"), decision["status"]
        current = data.get("current")
        if current is not None and not current.get("text") and current.get("score") is None:
            current = None
        return cls(
            round=int(data["round"]),
            step=int(data["step"]),
            trigger=Trigger(data.get("trigger", "schedule")),
            decision=Decision(decision),
            metric=data.get("metric", defaults.get("metric", "loss")),
            higher_is_better=bool(data.get("higher_is_better", defaults.get("higher_is_better", False))),
            selection=data.get("selection", defaults.get("selection", "best")),
            reason=reason,
            winner=winner,
            trajectory=[ScoredPrompt.from_dict(p) for p in data.get("trajectory") or []],
            mentor=MentorCall.from_dict(data["mentor"]) if data.get("mentor") else None,
            current=ScoredPrompt.from_dict(current) if current else None,
            candidates=[ScoredPrompt.from_dict(c) for c in data.get("candidates") or []],
            race=Race.from_dict(data["race"]) if data.get("race") else None,
            seconds=float(data.get("seconds") or 0.0),
            prompt_after=data.get("prompt_after"),
            notes=list(data.get("notes") or []),
            shape=RestartShape.from_dict(data["shape"]) if data.get("shape") else None,
            evidence=Evidence.from_dict(data["evidence"]) if data.get("evidence") else None,
            screening=Screening.from_dict(data["screening"]) if data.get("screening") else None,
            beat_random_screening=data.get("beat_random_screening"),
            beat_random_race=data.get("beat_random_race"),
            followup=[FollowUp.from_dict(f) for f in data.get("followup") or []],
            proposers={str(k): int(v) for k, v in (data.get("proposers") or {}).items()},
            wins={str(k): str(v) for k, v in (data.get("wins") or {}).items()},
        )


@dataclass
class KeptPrompt:
    """Which step's prompt a run kept by validation (``load_best_model_at_end``), and the final step's score.

    ``step`` 0 is the prompt the run started from (after an initial round). ``score``/``final_score`` are the values
    of ``metric`` (e.g. ``eval_accuracy``) at the kept and the final step; ``final_score`` is None when the final
    step was not evaluated.
    """

    step: int
    metric: str
    score: float | None
    final_step: int
    final_score: float | None = None
    greater_is_better: bool = False

    def line(self) -> str:
        """``"kept: step 40 (validation label_loss 0.420; final step 0.430)"``, the run's one-line account."""
        final = "not evaluated" if self.final_score is None else f"{self.final_score:.3f}"
        score = "not evaluated" if self.score is None else f"{self.score:.3f}"
        name = self.metric.removeprefix("eval_")
        if self.step == self.final_step:
            return f"kept: step {self.step}, the final step (validation {name} {score})"
        return f"kept: step {self.step} (validation {name} {score}; final step {final})"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> KeptPrompt | None:
        if not data:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


#: Forward-equivalents of one token in a training step: a forward pass and a backward pass of about twice its cost
#: (the usual 6N-against-2N FLOPs per token of training against inference). With frozen weights, as in prompt
#: tuning, the backward skips the weights' gradients, so 3 is an upper estimate; one constant for every method keeps
#: runs comparable.
TRAIN_FACTOR = 3
#: Forward-equivalents of one token in a scoring or evaluation pass (a forward pass, no backward).
SCORE_FACTOR = 1
#: The parts of a run whose compute is counted, in the order reports show them.
COMPUTE_PARTS: tuple[str, ...] = ("stages", "races", "screening", "evaluation")


@dataclass
class Compute:
    """The doer's compute in a run, in forward-equivalent tokens (:data:`TRAIN_FACTOR` per training token,
    :data:`SCORE_FACTOR` per scored token), per part, summed over all processes.

    A token is a non-padding token of a batch's main input (``attention_mask`` when the batch has one) plus the
    soft prompt's virtual tokens, once per row and prompt; an encoder-decoder's decoder tokens are not counted.

    ``stages``: the main training loop's steps; ``races``: race arms' training steps and rung scorings;
    ``screening``: the rounds' scorings of trajectory points, candidates, controls and the current prompt;
    ``evaluation``: ``Trainer.evaluate``/``predict`` (validation, keep-best) and restart follow-ups. ``stages`` and
    ``evaluation`` are counted by :class:`~peft_catalyst.trainer.CatalystMixin`; None where a stock ``Trainer`` ran
    with the callback alone (a callback never sees a batch). ``gradient_steps``: the main loop's optimizer steps plus
    every race arm's; ``scoring_passes``: prompts scored on the catalyst split (or a part of it), a shared pass of k
    prompts counting k.
    """

    stages: int | None = 0
    races: int = 0
    screening: int = 0
    evaluation: int | None = 0
    gradient_steps: int = 0
    scoring_passes: int = 0
    train_factor: int = TRAIN_FACTOR

    @property
    def tuning(self) -> int | None:
        """The compute that shaped the prompt: stages + races + screening (None when the stages were not counted);
        what ``peft-catalyst compare --match compute`` gives ``single``."""
        return None if self.stages is None else self.stages + self.races + self.screening

    @property
    def total(self) -> int | None:
        """Every part together (None when a part was not counted)."""
        tuning = self.tuning
        return None if tuning is None or self.evaluation is None else tuning + self.evaluation

    def _head(self) -> str:
        """The tuning compute, short (the rounds' alone when the stages were not counted)."""
        if self.tuning is None:
            rounds = tokens_text(self.races + self.screening)
            return f"{rounds} forward-equivalent tokens in the rounds (stages not counted)"
        return f"{tokens_text(self.tuning)} forward-equivalent tokens"

    def line(self) -> str:
        """``"compute 1.23M forward-equivalent tokens: stages 900k + races 200k + screening 130k; evaluation
        50k"``: the run's compute in one line."""
        parts = [f"{name} {tokens_text(getattr(self, name))}" for name in ("stages", "races", "screening")
                 if getattr(self, name)]  # fmt: skip
        tail = f"; evaluation {tokens_text(self.evaluation)}" if self.evaluation else ""
        inside = " + ".join(parts) + tail
        return f"compute {self._head()}" + (f": {inside}" if inside else "")

    def short(self) -> str:
        """``"1.23M forward-equivalent tokens (+ evaluation 45.6k)"``: the tuning compute, for a summary line."""
        tail = f" (+ evaluation {tokens_text(self.evaluation)})" if self.evaluation else ""
        return f"{self._head()}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tuning": self.tuning, "total": self.total}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Compute | None:
        if not data:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def tokens_text(count: int | None) -> str:
    """``1.23M``, ``45.6k`` or ``789``: a token count, short."""
    if count is None:
        return "not counted"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= scale:
            return f"{count / scale:.3g}{suffix}"
    return str(count)


@dataclass
class RunSummary:
    """Counts over a run's rounds, the mentor's usage and the compute spent, so runs compare at equal compute.

    ``main_steps`` are the optimizer steps of the main training loop (``global_step``, all stages together; not to be
    confused with ``catalyst_stage_steps``, the length of one stage), ``race_steps`` the extra gradient steps of all
    race arms; ``total_steps`` is their sum.
    """

    rounds: int = 0
    accepted: int = 0
    kept: int = 0
    skipped: int = 0
    mentor: str | None = None
    mentor_usage: dict[str, Any] | None = None
    selection: Selection = "best"
    metric: str = "loss"
    higher_is_better: bool = False
    main_steps: int = 0
    race_steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    final_prompt: str | None = None
    #: Rounds where the best mentor prompt beat the best random control, and rounds where they were compared: at
    #: screening and in the race (``[wins, rounds]``; ``[0, 0]`` when no random control ran beside the mentor; a
    #: tied round is not counted).
    beat_random_screening: list[int] = field(default_factory=lambda: [0, 0])
    beat_random_race: list[int] = field(default_factory=lambda: [0, 0])
    #: Rounds by what started them (``{"initial": 1, "schedule": 2}``; empty in files written before it was kept).
    triggers: dict[str, int] = field(default_factory=dict)
    #: Skipped rounds by why (``{"mentor unreachable": 2}``, see :func:`skip_reason`).
    skip_reasons: dict[str, int] = field(default_factory=dict)
    #: The restart shape the run was set to (``catalyst_restart``, e.g. ``"blend alpha=0.3, 0.6"``), also when every
    #: round kept the prompt and no round took a shape; None when not recorded (files written before it was kept).
    restart: str | None = None
    #: The prompt kept by validation (``load_best_model_at_end``); None when the run did not keep the best.
    kept_prompt: KeptPrompt | None = None
    #: Per proposer (``catalyst_proposers``, plus ``"current"`` for kept rounds and ``"control"`` for random
    #: controls): prompts ``drawn`` over the run and rounds won at ``screening`` and at ``selection`` (the race, or
    #: best/first), e.g. ``{"mentor": {"drawn": 8, "screening": 1, "selection": 1}}``; empty in format 5 and earlier.
    proposers: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The doer's compute in forward-equivalent tokens per part (:class:`Compute`); None in files written before it
    #: was counted.
    compute: Compute | None = None

    @property
    def total_steps(self) -> int:
        return self.main_steps + self.race_steps

    def rounds_line(self) -> str:
        """``"3 (1 initial + 2 scheduled)"``: the rounds and what started them (the count alone when unrecorded)."""
        words = {"initial": "initial", "schedule": "scheduled", "plateau": "at a plateau"}
        parts = [f"{n} {words.get(t, t)}" for t, n in self.triggers.items() if n]
        if not parts or (len(parts) == 1 and "initial" not in self.triggers):
            return str(self.rounds)
        return f"{self.rounds} ({' + '.join(parts)})"

    def skip_reasons_text(self) -> str:
        """Why rounds were skipped: ``"mentor unreachable"``, or ``"mentor timed out 1, no usable candidate 2"``
        (empty when none was skipped or the reasons were not recorded)."""
        if len(self.skip_reasons) == 1:
            return next(iter(self.skip_reasons))
        return ", ".join(f"{why} {n}" for why, n in self.skip_reasons.items())

    @property
    def mixed_proposers(self) -> bool:
        """Whether the rounds drew from a proposer besides the mentor (and the race's random controls)."""
        return any(row.get("drawn") for name, row in self.proposers.items() if name not in ("mentor", "control"))

    def proposers_line(self, selection: str | None = None) -> str | None:
        """``"wins by proposer: screening vocab 2, mentor 1; race current 2, mentor 1"`` (None when no round was
        won); ``selection`` names the second phase (default: the run's ``selection``, "race" or "best")."""
        phases = []
        for phase, label in (("screening", "screening"), ("selection", selection or self.selection)):
            won = sorted(
                ((name, row.get(phase, 0)) for name, row in self.proposers.items() if row.get(phase, 0)),
                key=lambda item: -item[1],
            )
            if won:
                phases.append(f"{label} " + ", ".join(f"{name} {n}" for name, n in won))
        return "wins by proposer: " + "; ".join(phases) if phases else None

    def beat_random_line(self) -> str | None:
        """``"mentor beat random in X of Y rounds (screening), ..."`` or None when never compared (the ``random``
        control as the mentor compares random with random: nothing to say, see :attr:`mentor`)."""
        if self.mentor is not None and self.mentor.startswith("random"):
            return None
        parts = [
            f"{wins} of {rounds} rounds ({what})"
            for what, (wins, rounds) in (("screening", self.beat_random_screening), ("race", self.beat_random_race))
            if rounds
        ]
        return "mentor beat random in " + ", ".join(parts) if parts else None

    @classmethod
    def of(cls, rounds: list[RoundRecord], **kwargs: Any) -> RunSummary:
        """The summary of ``rounds``; ``kwargs`` give the fields that do not come from the rounds."""
        decisions = [r.decision for r in rounds]
        return cls(
            rounds=len(rounds),
            accepted=sum(d.restarted for d in decisions),
            kept=decisions.count(Decision.KEPT),
            skipped=decisions.count(Decision.SKIPPED),
            race_steps=sum(r.race_steps for r in rounds),
            beat_random_screening=_wins(r.beat_random_screening for r in rounds),
            beat_random_race=_wins(r.beat_random_race for r in rounds),
            triggers=_counts(r.trigger.value for r in rounds),
            skip_reasons=_counts(skip_reason(r) for r in rounds if r.decision is Decision.SKIPPED),
            proposers=proposer_counts(rounds),
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "greater_is_better": self.higher_is_better, "total_steps": self.total_steps}
        data["compute"] = self.compute.to_dict() if self.compute is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        data = dict(data)
        if "higher_is_better" not in data:  # format 1 wrote the argument as given: None meant "from the name"
            data["higher_is_better"] = higher_is_better(data.get("metric", "loss"), data.get("greater_is_better"))
        if "main_steps" not in data and "stage_steps" in data:  # format 2's name for the main loop's steps
            data["main_steps"] = data["stage_steps"]
        known = set(cls.__dataclass_fields__)
        kept = {k: v for k, v in data.items() if k in known}
        kept["higher_is_better"] = bool(kept["higher_is_better"])
        kept["kept_prompt"] = KeptPrompt.from_dict(kept.get("kept_prompt"))
        kept["compute"] = Compute.from_dict(kept.get("compute"))
        return cls(**kept)


#: What a skipped round's mentor error says, by the ``MentorError`` reason in its ``[reason]`` prefix.
_SKIP_REASONS = {
    "connection": "mentor unreachable",
    "auth": "mentor rejected the key",
    "timeout": "mentor timed out",
    "rate_limited": "mentor rate-limited",
    "server_error": "mentor server error",
    "cache_miss": "no reply in the replay",
}


def skip_reason(record: RoundRecord) -> str:
    """Why a skipped round was skipped, in a few words: the mentor's fault (``"mentor unreachable"``, ``"mentor
    timed out"``, ...) or ``"no usable candidate"``."""
    error = record.mentor.error if record.mentor is not None else None
    if error or record.reason == "mentor_error":
        tag = error[1 : error.index("]")] if error and error.startswith("[") and "]" in error else ""
        return _SKIP_REASONS.get(tag, "mentor error")
    return "no usable candidate"


def proposer_counts(rounds: list[RoundRecord]) -> dict[str, dict[str, int]]:
    """Prompts drawn and rounds won (at screening, at selection) per proposer over ``rounds``, proposers in order of
    first appearance."""
    table: dict[str, dict[str, int]] = {}

    def row(name: str) -> dict[str, int]:
        return table.setdefault(name, {"drawn": 0, "screening": 0, "selection": 0})

    for record in rounds:
        for name, count in record.proposers.items():
            row(name)["drawn"] += count
        for phase, name in record.wins.items():
            row(name)[phase] = row(name).get(phase, 0) + 1
    return table


def _counts(values: Any) -> dict[str, int]:
    """How often each value occurs, in order of first occurrence."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _wins(outcomes: Any) -> list[int]:
    """``[wins, compared]`` over per-round outcomes (True, False, or None: not compared)."""
    compared = [o for o in outcomes if o is not None]
    return [sum(bool(o) for o in compared), len(compared)]


@dataclass
class History:
    """The content of ``catalyst_history.json``: the summary and one record per round, with the format version."""

    summary: RunSummary = field(default_factory=RunSummary)
    rounds: list[RoundRecord] = field(default_factory=list)
    format: int = HISTORY_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "summary": self.summary.to_dict(), "rounds": [r.to_dict() for r in self.rounds]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | list[dict[str, Any]]) -> History:
        """Read any format up to :data:`HISTORY_FORMAT` (1 is unversioned); a bare list is read as the rounds alone."""
        if isinstance(data, list):
            data = {"rounds": data}
        version = int(data.get("format", 1))
        if version > HISTORY_FORMAT:
            raise ValueError(
                f"catalyst_history.json has format {version}, newer than this peft-catalyst reads ({HISTORY_FORMAT}): "
                "upgrade peft-catalyst."
            )
        summary = RunSummary.from_dict(data.get("summary") or {})
        defaults = {
            "metric": summary.metric,
            "higher_is_better": summary.higher_is_better,
            "selection": summary.selection,
        }
        rounds = [RoundRecord.from_dict(r, defaults) for r in data.get("rounds") or []]
        return cls(summary=summary, rounds=rounds, format=HISTORY_FORMAT)
