"""``CatalystCallback``: the schedule of LLM-guided rounds, for any ``transformers.Trainer``.

After every optimizer step it records the soft prompt's trajectory and, when a stage is over (or the training loss
plateaus), runs a round (:class:`~peft_catalyst.rounds.engine.RoundEngine`). It keeps the typed round records, writes
``catalyst_history.json``, logs through ``Trainer.log`` and carries its state in every checkpoint.

Works on a stock ``Trainer``, TRL's ``SFTTrainer`` or ``Seq2SeqTrainer``: ``CatalystCallback(mentor, ...).attach(
trainer)``. With ``load_best_model_at_end=True`` it also makes the prompt the run starts from a contender for the
prompt kept by validation (:mod:`peft_catalyst.trainer.keep_best`: a step-0 evaluation and ``checkpoint-0``).
:class:`~peft_catalyst.trainer.CatalystMixin` adds what a callback cannot do: the prompt's own optimizer parameter
group (so a re-warm-up scales the prompt alone), the exact training loss of every step (for the trajectory and plateau
detection) and the checkpoint path of an explicit ``resume_from_checkpoint``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peft_catalyst.compat.transformers import save_checkpoint, trainer_logging_untouched
from peft_catalyst.compat.trl import can_prepare_dataset, prepare_dataset
from peft_catalyst.compute import ComputeMeter
from peft_catalyst.history import HISTORY_FILE, ChatLog, write_history, write_json_atomic
from peft_catalyst.mentors import Mentor
from peft_catalyst.projection import Projector, get_soft_prompt, read_soft_prompt, write_soft_prompt_
from peft_catalyst.quiet import no_pin_memory_without_accelerator
from peft_catalyst.records import (
    FOLLOWUP_STEPS,
    FollowUp,
    History,
    KeptPrompt,
    RestartShape,
    RoundRecord,
    RunSummary,
    Trigger,
    ranking_key,
)
from peft_catalyst.rounds.contract import RoundContext
from peft_catalyst.rounds.engine import RoundEngine, preserved_mode, preserved_rng
from peft_catalyst.rounds.evidence import label_names_of
from peft_catalyst.rounds.restarts import apply_rewarmup, embedding_scale, project_to_radius_
from peft_catalyst.rounds.scoring import PromptScorer, ScoreFunction
from peft_catalyst.rounds.trajectory import Trajectory
from peft_catalyst.sharding import register_with_root_module
from peft_catalyst.tuners.catalyst.peft_model import apply_catalyst_fixes

from .catalyst_arguments import CatalystArguments, catalyst_fields, higher_is_better
from .keep_best import keeps_best, kept_prompt, mark_start_as_best, saved_prompt

logger = logging.getLogger(__name__)

STATE_FILE = "catalyst_state.json"


@dataclass
class CatalystState:
    """Everything about the catalyst schedule that a checkpoint must carry to resume exactly."""

    rounds_done: int = 0
    stage_start_step: int = 0
    trajectory: Trajectory = field(default_factory=Trajectory)
    rewarm_step: int = 0  # optimizer steps into the current re-warm-up (0: none running)
    plateau_ema: float | None = None
    plateau_best: float | None = None
    plateau_wait: int = 0
    restart_center: list | None = None  # the restart point while the trust region holds (catalyst_restart_radius)
    radius_steps: int = 0  # optimizer steps the trust region still holds

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["trajectory"] = self.trajectory.to_list()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CatalystState:
        data = dict(data)
        data["trajectory"] = Trajectory.from_list(data.get("trajectory", []))
        return cls(**data)


class CatalystCallback(TrainerCallback):
    """Runs LLM-guided rounds in the ``Trainer`` it is attached to.

    Args:
        mentor: a :class:`~peft_catalyst.mentors.Mentor` (``propose(request) -> MentorProposal``, ``name``,
            ``usage``); ``None`` runs no rounds.
        args: the ``catalyst_*`` settings: :class:`CatalystArguments`, or any object carrying them (e.g. a config
            class inheriting both ``SFTConfig`` and ``CatalystArguments``). Default: the trainer's ``args`` when
            they carry them, else ``CatalystArguments()``.
        catalyst_dataset: the held-out split candidates are scored on, preprocessed as the trainer's eval data.
            By default ``catalyst_eval_size`` examples are carved (seeded by the training seed) from the trainer's
            ``train_dataset`` *after* the trainer prepared it, and removed from training.
        score_fn: rank prompts by your own function of the catalyst split's predictions (an ``EvalPrediction``
            with ``losses``) instead of ``catalyst_metric``; its direction is ``catalyst_greater_is_better``
            (default: higher is better for a ``score_fn``).

    With ``load_best_model_at_end=True`` (and the ``metric_for_best_model`` it implies), the prompt the run starts
    from competes too: the callback evaluates it at step 0 (unless ``eval_on_start`` does), saves it as
    ``checkpoint-0`` and records it as the trainer's best so far, so no later prompt is kept unless it beats the start
    on validation; the final step is always evaluated and saved. After training, :attr:`kept` says which step's
    prompt the model holds (also in the summary, ``catalyst_history.json`` and the model card). Every process of a
    distributed run does the same, through the ordinary checkpoint path; a resumed run reads it all back from the
    checkpoint's ``trainer_state.json``. See :mod:`peft_catalyst.trainer.keep_best`.
    """

    def __init__(
        self,
        mentor: Mentor | None = None,
        args: Any = None,
        catalyst_dataset: Any = None,
        score_fn: ScoreFunction | None = None,
    ) -> None:
        if mentor is not None and not isinstance(mentor, Mentor):
            raise TypeError(
                f"mentor must be a peft_catalyst.mentors.Mentor, not {type(mentor).__name__}: subclass Mentor and "
                "implement propose(request)."
            )
        self.mentor = mentor
        self.settings: CatalystArguments | None = catalyst_fields(args) if args is not None else None
        self.catalyst_dataset = catalyst_dataset
        self.score_fn = score_fn
        self.trainer: Any = None
        self.history: list[RoundRecord] = []
        self.state = CatalystState()
        self.timings = _new_timings()  # the callback's own; the engine's are read from it (RoundEngine.seconds)
        self.step_loss: float | None = None  # filled by add_step_loss (CatalystMixin.training_step); None: not known
        self._carried = _Carried()  # usage and timings of the run before the checkpoint it resumed from
        self._engine: RoundEngine | None = None
        self._radius_scale: float | None = None  # mean word-embedding norm (catalyst_restart_radius's unit)
        self._projector: Projector | None = None
        self._prepared = False
        self._start_pending = False  # a fresh run until its start is saved: its step-0 evaluation is the start's
        #: The prompt kept by validation, set at the end of a ``load_best_model_at_end`` run.
        self.kept: KeptPrompt | None = None
        #: The doer's compute so far in forward-equivalent tokens (built by :meth:`attach`; see
        #: :mod:`peft_catalyst.compute`).
        self.compute: ComputeMeter | None = None

    # ------------------------------------------------------------------------------------------------------------
    # Set-up
    # ------------------------------------------------------------------------------------------------------------

    def attach(self, trainer: Any) -> CatalystCallback:
        """Bind to ``trainer`` (carving the catalyst split from its prepared train data) and register as callback."""
        if self.settings is None:
            self.settings = catalyst_fields(trainer.args) if hasattr(trainer.args, "catalyst_rounds") else None
            self.settings = self.settings or CatalystArguments()
        get_soft_prompt(trainer.model)  # a clear error for any model without a prompt-tuning adapter
        if isinstance(trainer.model, PeftModel):  # a PROMPT_TUNING model trained here gets CATALYST's model fixes
            apply_catalyst_fixes(trainer.model)
        self.trainer = trainer
        self.compute = _meter(trainer)
        no_pin_memory_without_accelerator(trainer.args)  # as the command line: no pin_memory warning per dataloader
        if self.settings.catalyst_proposer_counts and self.rounds_scheduled:
            self.settings.validate_proposers(
                has_mentor=self.mentor is not None,
                train_rows=len(trainer.train_dataset) if hasattr(trainer.train_dataset, "__len__") else 0,
                label_names=label_names_of(trainer.model, self.settings.catalyst_labels),
            )
        if self.rounds_enabled:
            if trainer.args.max_steps > 0:
                self.settings.validate_schedule(trainer.args.max_steps)
            self.settings.validate_restart_shape(get_soft_prompt(trainer.model).num_virtual_tokens)
            if self.catalyst_dataset is None:
                if trainer.train_dataset is None:
                    raise ValueError(
                        "Mentor rounds need data: give the trainer a train_dataset (a catalyst split is carved from "
                        "it) or pass catalyst_dataset= explicitly."
                    )
                trainer.train_dataset, self.catalyst_dataset = split_catalyst_dataset(
                    trainer.train_dataset, self.settings.catalyst_eval_size, trainer.args.seed
                )
            else:
                self.catalyst_dataset = _prepared_like_eval(trainer, self.catalyst_dataset)
            if self.settings.catalyst_selection == "race":
                _check_race_possible(trainer)
            if self.settings.catalyst_restart_radius is not None and (
                trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
            ):
                raise ValueError(
                    "catalyst_restart_radius is not supported under DeepSpeed or FSDP (the trust region writes the "
                    "whole prompt after every step): leave it None there."
                )
            self.task_description()  # fail now, not at the first round
        elif self.mentor is None and self.rounds_scheduled:
            logger.warning("No mentor: training runs as plain prompt tuning, without rounds.")
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    @property
    def rounds_enabled(self) -> bool:
        return self.has_proposers and self.rounds_scheduled

    @property
    def rounds_scheduled(self) -> bool:
        """Whether the settings ask for any round: later rounds, or the initial round alone (``catalyst_rounds=0``
        with ``catalyst_initial_round``: a screened start, then plain prompt tuning)."""
        return self.settings.catalyst_rounds > 0 or bool(self.settings.catalyst_initial_round)

    @property
    def has_proposers(self) -> bool:
        """Whether rounds have anything to draw from: a mentor, or ``catalyst_proposers`` that need none."""
        if self.settings is None:
            return False
        counts = self.settings.catalyst_proposer_counts
        return self.mentor is not None or bool(counts and not counts.get("mentor"))

    @property
    def higher_is_better(self) -> bool:
        """Direction of the ranking value (``score_fn`` defaults to higher is better, metrics by their name)."""
        given = self.settings.catalyst_greater_is_better
        if self.score_fn is not None:
            return True if given is None else given
        return higher_is_better(self.settings.catalyst_metric, given)

    @property
    def projector(self) -> Projector:
        if self._projector is None:
            tok = self.trainer.processing_class
            tok = getattr(tok, "tokenizer", tok)
            if tok is None or not callable(getattr(tok, "decode", None)):
                raise ValueError("LLM-guided rounds need the base model's tokenizer: pass processing_class=tokenizer.")
            self._projector = Projector(self.trainer.model, tok)
        return self._projector

    @property
    def engine(self) -> RoundEngine:
        """The round engine (built on first use, when the trainer's model and optimizer exist)."""
        if self._engine is None:
            scorer = PromptScorer(
                self.trainer,
                self.catalyst_dataset,
                metric=self.settings.catalyst_metric,
                higher_is_better=self.higher_is_better,
                score_fn=self.score_fn,
                batch_size=self.settings.score_batch_size(self.trainer.args.device),
                predictions=self.score_fn is None and self.settings.catalyst_mentor_errors > 0,
            )
            scorer.meter = self.compute
            self._engine = RoundEngine(
                self.trainer, self.mentor, self.settings, scorer, self.projector, self.task_description()
            )
        return self._engine

    @property
    def racing(self) -> bool:
        """True while race arms train (their losses are not the main loop's)."""
        return self._engine is not None and self._engine.racing

    def add_step_loss(self, loss: float) -> None:
        """Add a micro-batch's training loss to the current optimizer step's (for the trajectory and plateau
        detection); a race arm's loss is not the main loop's and is left out."""
        if not self.racing:
            self.step_loss = (self.step_loss or 0.0) + loss

    def task_description(self) -> str:
        soft = get_soft_prompt(self.trainer.model)
        text = self.settings.catalyst_task_description or getattr(soft.config, "task_description", None)
        if not text:
            raise ValueError(
                "No task description for the mentor: set CatalystConfig(task_description=...) or "
                "catalyst_task_description=... in the catalyst arguments."
            )
        return text

    def prepare(self, checkpoint: str | os.PathLike | None = None) -> None:
        """Start a run: fresh state, or the state saved in ``checkpoint`` when resuming."""
        self.history, self.state = [], CatalystState()
        self.timings = _new_timings()
        if self._engine is not None:
            self._engine.reset()
        self.step_loss = None
        self._carried = _Carried()
        self.kept = None
        if self.compute is not None:
            self.compute.reset()
        if checkpoint is not None:
            self._load_state(checkpoint)
        self._prepared = True

    # ------------------------------------------------------------------------------------------------------------
    # Trainer events
    # ------------------------------------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError("CatalystCallback is not attached: call callback.attach(trainer) before train().")
        # A fresh state has no best yet; one read from checkpoint-0 (the start, saved to keep the best) has: that run
        # resumes at step 0 and must neither ask for its initial round again nor save its start once more.
        fresh = state.global_step == 0 and state.best_model_checkpoint is None
        if not self._prepared:  # a stock Trainer resuming: look for the state beside its checkpoint
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            self.prepare(None if fresh else folder)
        if self.trainer.is_deepspeed_enabled:  # the same ZeRO-3 fetch order in fresh and resumed runs
            register_with_root_module(self.trainer.model, get_soft_prompt(self.trainer.model).weight)
        if self.rounds_enabled and self.settings.catalyst_initial_round and fresh:
            started = time.perf_counter()
            self._run_initial_round()
            self.timings["rounds"] += time.perf_counter() - started
        self._start_pending = fresh  # the next step-0 evaluation is the start's (none when resuming)
        if keeps_best(args) and fresh and not args.eval_on_start:
            self.trainer.evaluate()  # the starting prompt's score (on_evaluate saves it as checkpoint-0)
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._start_pending and keeps_best(args) and state.global_step == 0 and metrics:
            self._start_pending = False  # the start is saved once
            if mark_start_as_best(args, state, metrics):
                save_checkpoint(self.trainer)  # every process, as the training loop saves
        return control

    def _run_initial_round(self) -> None:
        """Round 0 (``catalyst_initial_round``): the mentor asked before any step, with examples and labels and no
        trajectory; the winner is the prompt training starts from. A resumed run has it in its history already
        (the checkpoint holds the prompt it chose), so it runs only when training starts at step 0."""
        trainer, state = self.trainer, self.state
        chat_log = self.chat_log() if trainer.args.should_save else None
        with trainer_logging_untouched(trainer):
            context = RoundContext(0, 0, Trigger.INITIAL, rewarm_step=state.rewarm_step, chat_log=chat_log)
            outcome = self.engine.run(context)
            if outcome.rewarm_step is not None:
                state.rewarm_step = outcome.rewarm_step
                self._apply_rewarmup()
            self._after_restart(outcome.record)
            self.history.append(outcome.record)
            self._log_round(outcome.record)
        self.write_history()

    def on_step_end(self, args, state, control, **kwargs):
        started = time.perf_counter()
        trigger = self._record_step(state.global_step)
        self.timings["step_bookkeeping"] += time.perf_counter() - started
        if trigger is not None:
            started = time.perf_counter()
            self._run_round(trigger, state.global_step)
            self.timings["rounds"] += time.perf_counter() - started
        if keeps_best(args) and state.global_step >= state.max_steps:  # the final step competes and is reported
            control.should_evaluate = control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if folder.is_dir():
                summary = self.summary(final_prompt=False)
                write_json_atomic(
                    folder / STATE_FILE,
                    {
                        "state": self.state.to_dict(),
                        "history": [r.to_dict() for r in self.history],
                        "mentor_usage": summary.mentor_usage,
                        "seconds": summary.seconds,
                        "compute": self.compute.to_dict() if self.compute is not None else None,
                    },
                )
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._start_pending = False
        if keeps_best(args):
            self._check_kept_prompt(state.best_model_checkpoint)
            self.kept = kept_prompt(args, state)
            if self.kept is not None:
                logger.info("%s", self.kept.line())
        self.write_history()
        self._prepared = False
        return control

    def _check_kept_prompt(self, checkpoint: str | None) -> None:
        """The model must hold the best checkpoint's soft prompt bit for bit after ``Trainer`` loaded it: restore it
        from the checkpoint's adapter file if it does not (every process: reading the prompt may be collective)."""
        if not checkpoint or not Path(checkpoint).is_dir():
            return
        saved = saved_prompt(checkpoint)
        if saved is None:
            return
        live = read_soft_prompt(self.trainer.model)
        if not torch.equal(live.cpu(), saved.to(live.dtype)):
            logger.warning(
                "load_best_model_at_end left a soft prompt that differs from %s: restored it from that checkpoint.",
                checkpoint,
            )
            write_soft_prompt_(self.trainer.model, saved.to(device=live.device, dtype=live.dtype))

    # ------------------------------------------------------------------------------------------------------------
    # The schedule
    # ------------------------------------------------------------------------------------------------------------

    def _record_step(self, step: int) -> Trigger | None:
        """Trajectory point, re-warm-up and plateau bookkeeping of one optimizer step; returns a round trigger."""
        state, settings, trainer = self.state, self.settings, self.trainer
        loss = self.step_loss
        self.step_loss = None if loss is None else 0.0
        if loss is not None and trainer.accelerator.num_processes > 1:
            loss = float(trainer.accelerator.reduce(torch.tensor(loss, device=trainer.args.device), reduction="mean"))
        self._advance_rewarmup()
        self._hold_trust_region()
        self._follow_up(step)
        if not self.rounds_enabled or state.rounds_done >= settings.catalyst_rounds:
            return None
        started = time.perf_counter()
        ids = self.projector.token_ids()
        self.timings["projection"] += time.perf_counter() - started
        state.trajectory.append(step, self.projector.tokenizer.decode(ids), ids, math.nan if loss is None else loss)
        if step - state.stage_start_step >= settings.catalyst_stage_steps:
            return Trigger.SCHEDULE
        if settings.catalyst_plateau_patience and loss is not None and self._plateau(loss):
            return Trigger.PLATEAU
        return None

    def _plateau(self, loss: float) -> bool:
        """True when the stage's smoothed (EMA 0.9) training loss has not improved for ``patience`` steps."""
        state = self.state
        if not math.isfinite(loss):
            return False
        state.plateau_ema = loss if state.plateau_ema is None else 0.9 * state.plateau_ema + 0.1 * loss
        if state.plateau_best is None or state.plateau_ema < state.plateau_best:
            state.plateau_best, state.plateau_wait = state.plateau_ema, 0
            return False
        state.plateau_wait += 1
        return state.plateau_wait >= self.settings.catalyst_plateau_patience

    def _run_round(self, trigger: Trigger, step: int) -> None:
        state, trainer = self.state, self.trainer
        chat_log = self.chat_log() if trainer.args.should_save else None
        with trainer_logging_untouched(trainer):
            outcome = self.engine.run(
                RoundContext(
                    state.rounds_done + 1, step, trigger, state.trajectory, self.history, state.rewarm_step, chat_log
                )
            )
            if outcome.rewarm_step is not None:
                state.rewarm_step = outcome.rewarm_step
                self._apply_rewarmup()
            self._after_restart(outcome.record)
            state.rounds_done += 1
            state.trajectory.clear()
            state.stage_start_step = step
            state.plateau_ema = state.plateau_best = None
            state.plateau_wait = 0
            self.history.append(outcome.record)
            self._log_round(outcome.record)
        self.write_history()

    def _advance_rewarmup(self) -> None:
        state = self.state
        if state.rewarm_step <= 0:
            return
        state.rewarm_step += 1
        if state.rewarm_step > self.settings.catalyst_rewarmup_steps:
            state.rewarm_step = 0
        self._apply_rewarmup()

    def _after_restart(self, record: RoundRecord) -> None:
        """After a taken restart: start the trust region (``catalyst_restart_radius``) around the new prompt and
        open its follow-up (``catalyst_restart_followup``) with the restart point's score, where the round has it."""
        state, settings = self.state, self.settings
        state.restart_center, state.radius_steps = None, 0
        if not record.restarted:
            return
        if settings.catalyst_restart_radius is not None:
            state.restart_center = read_soft_prompt(self.trainer.model).tolist()
            state.radius_steps = settings.catalyst_restart_radius_steps
        start = record.decisive
        if settings.catalyst_restart_followup and start is not None and start.score is not None:
            record.followup.append(FollowUp(0, start.score, start.loss))

    def _hold_trust_region(self) -> None:
        """Pull the prompt back within ``catalyst_restart_radius`` of its restart point (while the region holds)."""
        state = self.state
        if state.radius_steps <= 0 or state.restart_center is None:
            return
        if self._radius_scale is None:
            self._radius_scale = embedding_scale(self.trainer.model)
        weight = get_soft_prompt(self.trainer.model).weight
        radius = self.settings.catalyst_restart_radius * self._radius_scale
        project_to_radius_(weight, torch.tensor(state.restart_center), radius)
        state.radius_steps -= 1
        if state.radius_steps == 0:
            state.restart_center = None

    def _follow_up(self, step: int) -> None:
        """Score the prompt :data:`~peft_catalyst.records.FOLLOWUP_STEPS` steps after the latest round's restart
        (``catalyst_restart_followup``), into that round's record."""
        if not (self.settings.catalyst_restart_followup and self.rounds_enabled and self.history):
            return
        record = self.history[-1]
        offset = step - record.step
        if not record.restarted or offset not in FOLLOWUP_STEPS or any(f.steps == offset for f in record.followup):
            return
        counted = self.compute.as_part("evaluation") if self.compute is not None else contextlib.nullcontext()
        with preserved_rng(), preserved_mode(self.trainer.model), counted:  # a measurement, not the search
            score = self.engine.scorer.score()
        finite = [v if math.isfinite(v) else None for v in (score.value, score.loss)]
        record.followup.append(FollowUp(offset, *finite))

    def _apply_rewarmup(self) -> None:
        trainer = self.trainer
        if trainer.optimizer is None:
            return
        weight = get_soft_prompt(trainer.model).weight
        apply_rewarmup(
            trainer.optimizer,
            trainer.lr_scheduler,
            weight,
            self.state.rewarm_step,
            self.settings.catalyst_rewarmup_steps,
        )

    # ------------------------------------------------------------------------------------------------------------
    # Records, logs and files
    # ------------------------------------------------------------------------------------------------------------

    def chat_log(self) -> ChatLog:
        """The JSON Lines log of every mentor exchange, in ``output_dir``."""
        return ChatLog(Path(self.trainer.args.output_dir) / self.settings.catalyst_chat_log)

    def _log_round(self, record: RoundRecord) -> None:
        logs: dict[str, float] = {
            "catalyst/round": float(record.round),
            "catalyst/accepted": float(record.restarted),
            "catalyst/skipped": float(record.decision.value == "skipped"),
            "catalyst/num_candidates": float(len(record.candidates)),
            "catalyst/seconds": float(record.seconds),
            "catalyst/race_steps": float(record.race_steps),
            "catalyst/total_steps": float(self.trainer.state.global_step + self.race_steps),
        }
        if self.compute is not None:  # every part counted so far (see peft_catalyst.compute)
            logs["catalyst/forward_equivalent_tokens"] = float(sum(self.compute.parts.values()))
        if record.current is not None and record.current.loss is not None:
            logs["catalyst/current_loss"] = float(record.current.loss)
        if record.current is not None and record.current.finite:
            logs["catalyst/current_score"] = float(record.current.score)
        finite = [c for c in record.candidates if c.finite]
        if finite:
            logs["catalyst/best_candidate_loss"] = float(min(c.loss for c in finite))
            best = min((c.score for c in finite), key=lambda s: ranking_key(s, self.higher_is_better))
            logs["catalyst/best_candidate_score"] = float(best)
        if record.mentor is not None and record.mentor.latency_s is not None:
            logs["catalyst/mentor_latency_s"] = float(record.mentor.latency_s)
        logger.info("catalyst round %d at step %d: %s", record.round, record.step, record.decision.value)
        self.trainer.log(logs)

    @property
    def race_steps(self) -> int:
        """Gradient steps spent in races so far (on top of the main loop's ``global_step``)."""
        return sum(r.race_steps for r in self.history)

    def summary(self, final_prompt: bool = True) -> RunSummary:
        """Counts over the rounds so far, the mentor's usage and the compute spent (a resumed run's include what the
        run spent before its checkpoint). ``final_prompt=False`` skips reading the prompt as text."""
        usage = getattr(getattr(self.mentor, "usage", None), "to_dict", lambda: None)()
        usage = _add_counts(self._carried.mentor_usage, usage) if usage is not None else None
        trainer = self.trainer
        engine = self._engine.seconds() if self._engine is not None else {"scoring": 0.0, "mentor": 0.0, "race": 0.0}
        seconds = _add_counts(self._carried.seconds, {**self.timings, **engine})
        main_steps = trainer.state.global_step if trainer is not None else 0
        steps = main_steps + self.race_steps
        return RunSummary.of(
            self.history,
            mentor=self.mentor.name if self.mentor is not None else None,
            mentor_usage=usage,
            selection=self.settings.catalyst_selection,
            metric=self.settings.catalyst_metric if self.score_fn is None else "score_fn",
            higher_is_better=self.higher_is_better,
            main_steps=main_steps,
            seconds={k: round(v, 3) for k, v in seconds.items()},
            compute=self.compute.record(gradient_steps=steps) if self.compute is not None else None,
            restart=self._restart_label(),
            final_prompt=self.projector.text()
            if final_prompt and trainer is not None and trainer.processing_class is not None
            else None,
            kept_prompt=self.kept,
        )

    def _restart_label(self) -> str | None:
        """The restart shape the run was set to, for the summary (None without a mentor: no round restarts)."""
        if not self.has_proposers:
            return None
        settings = self.settings
        return RestartShape.setting_label(
            settings.catalyst_restart, settings.catalyst_blend_alphas, settings.catalyst_partial_tokens
        )

    def history_record(self, final_prompt: bool = True) -> History:
        """The run's :class:`~peft_catalyst.records.History` (what ``catalyst_history.json`` holds); see
        :meth:`summary` for ``final_prompt``."""
        return History(summary=self.summary(final_prompt), rounds=list(self.history))

    def write_history(self) -> None:
        """Write ``catalyst_history.json`` into ``output_dir`` (main process, runs with rounds)."""
        if self.rounds_enabled:
            history = self.history_record()  # on every rank: reading the prompt gathers it under ZeRO-3 and FSDP
            if self.trainer.args.should_save:
                write_history(self.trainer.args.output_dir, history)

    def _load_state(self, checkpoint: str | os.PathLike) -> None:
        path = Path(checkpoint) / STATE_FILE
        if not path.exists():
            logger.warning(
                "Checkpoint %s has no %s: the catalyst schedule restarts from scratch.", checkpoint, STATE_FILE
            )
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        self.state = CatalystState.from_dict(data["state"])
        self.history = History.from_dict({"rounds": data["history"]}).rounds
        self._carried = _Carried(data.get("mentor_usage") or {}, data.get("seconds") or {})
        if self.compute is not None:
            self.compute.load(data.get("compute"))  # a checkpoint written before compute was counted: from 0
        name = Path(checkpoint).name
        step = int(name.rsplit("-", 1)[-1]) if "-" in name else None
        if step is not None and self.trainer.args.should_save:
            self.chat_log().truncate_after(step)


def split_catalyst_dataset(dataset, size: float, seed: int):
    """Carve a seeded held-out catalyst split from ``dataset``; returns ``(train, catalyst)``.

    ``size`` is a fraction in (0, 1) or a number of examples. ``datasets.Dataset`` uses ``train_test_split``; any
    other map-style dataset uses ``torch.utils.data.random_split`` with a seeded generator.
    """
    if not hasattr(dataset, "__len__"):
        raise ValueError("Cannot carve a catalyst split from an iterable dataset: pass catalyst_dataset= explicitly.")
    total = len(dataset)
    count = int(size) if size >= 1 else max(1, round(size * total))
    if count >= total:
        raise ValueError(
            f"catalyst_eval_size={size} leaves no training data ({total} examples): lower catalyst_eval_size or "
            "pass catalyst_dataset= explicitly."
        )
    if hasattr(dataset, "train_test_split"):
        parts = dataset.train_test_split(test_size=count, seed=seed, shuffle=True)
        return parts["train"], parts["test"]
    generator = torch.Generator().manual_seed(seed)
    train, catalyst = torch.utils.data.random_split(dataset, [total - count, count], generator=generator)
    return train, catalyst


def _check_race_possible(trainer: Any) -> None:
    """A race needs its own batch stream over a map-style training set, and optimizer state it can copy."""
    if trainer.is_deepspeed_enabled:
        raise ValueError(
            "catalyst_selection='race' is not supported under DeepSpeed (its optimizer state is partitioned inside "
            "the engine): use catalyst_selection='best'."
        )
    if not hasattr(trainer.train_dataset, "__len__"):
        raise ValueError(
            "catalyst_selection='race' draws its own batches from the training set, which must be map-style (an "
            "iterable dataset has no length): use catalyst_selection='best' or a map-style dataset."
        )


def _prepared_like_eval(trainer: Any, dataset: Any) -> Any:
    """An explicit raw catalyst split, prepared as a TRL trainer prepares its eval data (unchanged otherwise).

    TRL trainers (``SFTTrainer``) tokenize their datasets in ``__init__``; a split given with ``catalyst_dataset=``
    that has no ``input_ids`` yet goes through the same preparation (without a formatting function), with the eval
    packing setting.
    """
    import datasets

    raw = isinstance(dataset, datasets.Dataset) and "input_ids" not in dataset.column_names
    if not raw or not can_prepare_dataset(trainer):
        return dataset
    args = trainer.args
    packing = getattr(args, "eval_packing", None)
    packing = getattr(args, "packing", False) if packing is None else packing
    return prepare_dataset(trainer, dataset, packing=packing, dataset_name="catalyst")


@dataclass
class _Carried:
    """What a run spent before the checkpoint it resumed from, added to this process's own counts in the summary."""

    mentor_usage: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _meter(trainer: Any) -> ComputeMeter:
    """The compute meter of a run on ``trainer``: its prompt's virtual tokens, its tokenizer's padding id, and a sum
    over the processes of a distributed run."""
    tok = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    accelerator = trainer.accelerator
    reduce = None
    if accelerator.num_processes > 1:

        def reduce(count: int) -> int:
            total = accelerator.reduce(torch.tensor(count, device=trainer.args.device), reduction="sum")
            return int(total)

    return ComputeMeter(get_soft_prompt(trainer.model).num_virtual_tokens, getattr(tok, "pad_token_id", None), reduce)


def _add_counts(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``now`` plus ``before``, key by key (numbers; keys only in ``before`` are kept)."""
    total = dict(before)
    for key, value in now.items():
        earlier = before.get(key)
        numbers = isinstance(value, (int, float)) and isinstance(earlier, (int, float))
        total[key] = value + earlier if numbers else value
    return total


def _new_timings() -> dict[str, float]:
    """Seconds the callback spends: per-step bookkeeping (of which projection) and rounds (of which the engine's
    scoring, mentor calls and races: :meth:`RoundEngine.seconds`)."""
    return {"step_bookkeeping": 0.0, "projection": 0.0, "rounds": 0.0}


__all__ = ["CatalystCallback", "CatalystState", "HISTORY_FILE", "STATE_FILE", "split_catalyst_dataset"]
