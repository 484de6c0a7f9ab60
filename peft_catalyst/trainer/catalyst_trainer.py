"""``CatalystTrainer``: ``transformers.Trainer`` that alternates gradient stages with LLM-mentor restarts.

The trainer orchestrates; it does not know how a mentor talks to its server (``peft_catalyst.mentors``) nor how a
soft prompt maps to tokens (``peft_catalyst.projection``). A round, after ``catalyst_stage_steps`` optimizer steps:

1. the stage's trajectory (the prompt projected to text after every step) is thinned to a few distinct points,
   each re-embedded from its tokens and scored on the held-out catalyst split (a hard prompt scored before reuses
   its score while nothing but the soft prompt trains);
2. the mentor (on the main process only) proposes candidates; they are broadcast to every process;
3. every candidate and the current soft prompt are scored on the catalyst split, sharded over processes; the best
   finite score wins (``catalyst_selection="best"``) - the current prompt included, so a round never makes it worse;
4. a winning candidate is written into the soft prompt in place, the prompt's optimizer state is reset and its
   learning rate re-warmed; otherwise the soft prompt is restored bit for bit.

Scoring runs under a forked RNG, restores the model's mode and never touches gradients or the train dataloader, so
a round whose candidates all lose leaves training exactly as if it had not happened.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import nested_concat, nested_numpify
from transformers.trainer_utils import EvalPrediction, get_last_checkpoint

from peft_catalyst.history import HISTORY_FILE, ChatLog, write_history, write_json_atomic
from peft_catalyst.mentors import Mentor, MentorError, MentorProposal, MentorRequest, TrajectoryPoint
from peft_catalyst.projection import (
    Projector,
    get_soft_prompt,
    read_soft_prompt,
    text_to_token_ids,
    write_soft_prompt_,
    write_token_ids,
)
from peft_catalyst.scoring import sorted_by_length
from peft_catalyst.sharding import reset_optimizer_state
from peft_catalyst.trajectory import Trajectory

from .catalyst_config import CatalystTrainingArguments

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

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["trajectory"] = self.trajectory.to_list()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CatalystState:
        data = dict(data)
        data["trajectory"] = Trajectory.from_list(data.get("trajectory", []))
        return cls(**data)


@dataclass
class Score:
    """A prompt's result on the catalyst split: the ranking value, the loss and any task metrics."""

    value: float
    loss: float
    metrics: dict[str, float]

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.value, "loss": self.loss, "metrics": dict(self.metrics), "finite": self.finite}


class _CatalystCallback(TrainerCallback):
    """Hooks the catalyst schedule onto the end of every optimizer step (also under gradient accumulation)."""

    def __init__(self, trainer: CatalystTrainer) -> None:
        self._trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self._trainer._catalyst_on_step_end()
        return control


class CatalystTrainer(Trainer):
    """A drop-in ``Trainer`` for prompt-tuned models that restarts the soft prompt from an LLM mentor's proposals.

    Args:
        model: a ``PeftModel`` whose active adapter is CATALYST or vanilla PROMPT_TUNING.
        args: :class:`CatalystTrainingArguments`.
        mentor: a :class:`peft_catalyst.mentors.Mentor`; ``None`` runs plain prompt tuning (no rounds).
        catalyst_dataset: the held-out split candidates are scored on; by default ``catalyst_eval_size`` examples
            are carved from ``train_dataset`` (seeded by ``args.seed``) and removed from training.
        processing_class: the tokenizer (needed to read the soft prompt as text and to tokenize candidates).
        Everything else is passed to ``transformers.Trainer``.
    """

    def __init__(
        self,
        model=None,
        args: CatalystTrainingArguments | None = None,
        *,
        mentor: Mentor | None = None,
        catalyst_dataset=None,
        train_dataset=None,
        processing_class=None,
        **kwargs,
    ) -> None:
        if args is None:
            args = CatalystTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, CatalystTrainingArguments):
            raise TypeError(
                f"CatalystTrainer needs CatalystTrainingArguments, got {type(args).__name__}: build the arguments "
                "with peft_catalyst.CatalystTrainingArguments(output_dir=..., catalyst_rounds=..., ...)."
            )
        rounds_enabled = mentor is not None and args.catalyst_rounds > 0
        if rounds_enabled and catalyst_dataset is None and train_dataset is not None:
            train_dataset, catalyst_dataset = split_catalyst_dataset(train_dataset, args.catalyst_eval_size, args.seed)
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )
        get_soft_prompt(self.model)  # a clear error for any model without a prompt-tuning adapter
        if rounds_enabled and catalyst_dataset is None:
            raise ValueError(
                "Mentor rounds need data: pass train_dataset (a catalyst split is carved from it) or catalyst_dataset."
            )
        if mentor is None and args.catalyst_rounds > 0:
            logger.warning("CatalystTrainer got no mentor: training runs as plain prompt tuning, without rounds.")
        self.mentor = mentor
        self.catalyst_dataset = catalyst_dataset
        self.catalyst_history: list[dict[str, Any]] = []
        self.catalyst_state = CatalystState()
        self._rounds_enabled = rounds_enabled
        self._step_loss = 0.0
        self._projector: Projector | None = None
        self._catalyst_dataloader = None
        self._hard_prompt_scores: dict[tuple[int, ...], Score] = {}
        self.catalyst_timings = _new_timings()
        self.add_callback(_CatalystCallback(self))

    # ------------------------------------------------------------------------------------------------------------
    # Small accessors
    # ------------------------------------------------------------------------------------------------------------

    @property
    def tokenizer_for_prompts(self):
        """The tokenizer used to read and write prompts as text (``processing_class`` or its ``.tokenizer``)."""
        tok = getattr(self.processing_class, "tokenizer", self.processing_class)
        if tok is None or not callable(getattr(tok, "decode", None)):
            raise ValueError("CatalystTrainer needs the base model's tokenizer: pass processing_class=tokenizer.")
        return tok

    @property
    def projector(self) -> Projector:
        if self._projector is None:
            self._projector = Projector(self.model, self.tokenizer_for_prompts)
        return self._projector

    def _task_description(self) -> str:
        soft = get_soft_prompt(self.model)
        text = self.args.catalyst_task_description or getattr(soft.config, "task_description", None)
        if not text:
            raise ValueError(
                "No task description for the mentor: set CatalystConfig(task_description=...) or "
                "CatalystTrainingArguments(catalyst_task_description=...)."
            )
        return text

    # ------------------------------------------------------------------------------------------------------------
    # Trainer overrides
    # ------------------------------------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        """As ``Trainer``, then give the soft prompt a parameter group of its own so a re-warm-up scales it alone."""
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if created:
            _isolate_param_group(optimizer, get_soft_prompt(self.model).weight)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        """As ``Trainer``, and sum the micro-batch losses of the optimizer step for the trajectory."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_loss += float(loss)
        return loss

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """As ``Trainer.train``; resuming also restores the catalyst history, schedule and current trajectory."""
        self.catalyst_history = []
        self.catalyst_state = CatalystState()
        self.catalyst_timings = _new_timings()
        self._hard_prompt_scores = {}
        self._step_loss = 0.0
        if resume_from_checkpoint:
            checkpoint = resume_from_checkpoint
            if isinstance(checkpoint, bool):
                checkpoint = get_last_checkpoint(self.args.output_dir)
                if checkpoint is None:
                    raise ValueError(f"No checkpoint found in output_dir {self.args.output_dir!r} to resume from.")
            self._load_catalyst_state(checkpoint)
        result = super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )
        self._write_history()
        return result

    def _save_checkpoint(self, model, trial) -> None:
        """As ``Trainer``, plus ``catalyst_state.json`` (history, round counter, current trajectory) in the folder."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            write_json_atomic(
                folder / STATE_FILE, {"state": self.catalyst_state.to_dict(), "history": self.catalyst_history}
            )
        super()._save_checkpoint(model, trial)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """Push the adapter, its portable copy, ``catalyst_history.json`` and a model card in one commit.

        Same arguments as ``Trainer.push_to_hub``, plus ``repo_id``, ``metrics`` and the model-card options of
        :func:`peft_catalyst.push_to_hub`; only the main process pushes (``peft_catalyst.hub.push_trainer_to_hub``).
        """
        from peft_catalyst.hub import push_trainer_to_hub

        return push_trainer_to_hub(self, commit_message, blocking, token, revision, private, **kwargs)

    def _load_catalyst_state(self, checkpoint: str | os.PathLike) -> None:
        path = Path(checkpoint) / STATE_FILE
        if not path.exists():
            logger.warning(
                "Checkpoint %s has no %s: the catalyst schedule restarts from scratch.", checkpoint, STATE_FILE
            )
            return
        import json

        data = json.loads(path.read_text(encoding="utf-8"))
        self.catalyst_state = CatalystState.from_dict(data["state"])
        self.catalyst_history = data["history"]
        step = int(Path(checkpoint).name.rsplit("-", 1)[-1]) if "-" in Path(checkpoint).name else None
        if step is not None and self.args.should_save:
            self._chat_log().truncate_after(step)

    # ------------------------------------------------------------------------------------------------------------
    # The schedule
    # ------------------------------------------------------------------------------------------------------------

    def _catalyst_on_step_end(self) -> None:
        """After each optimizer step: record the trajectory, advance a re-warm-up, and run a round when due."""
        started = time.perf_counter()
        trigger = self._record_step()
        self.catalyst_timings["step_bookkeeping"] += time.perf_counter() - started
        if trigger:
            started = time.perf_counter()
            self._run_round(trigger)
            self.catalyst_timings["rounds"] += time.perf_counter() - started

    def _record_step(self) -> str | None:
        """Trajectory point, re-warm-up and plateau bookkeeping of one optimizer step; returns a round trigger."""
        state, args = self.catalyst_state, self.args
        loss = self._step_loss
        self._step_loss = 0.0
        if self.accelerator.num_processes > 1:
            loss = float(self.accelerator.reduce(torch.tensor(loss, device=self.args.device), reduction="mean"))
        self._advance_rewarmup()
        if not self._rounds_enabled or state.rounds_done >= args.catalyst_rounds:
            return None
        step = self.state.global_step
        started = time.perf_counter()
        ids = self.projector.token_ids()
        self.catalyst_timings["projection"] += time.perf_counter() - started
        state.trajectory.append(step, self.tokenizer_for_prompts.decode(ids), ids, loss)
        if step - state.stage_start_step >= args.catalyst_stage_steps:
            return "schedule"
        if args.catalyst_plateau_patience and self._plateau(loss):
            return "plateau"
        return None

    def _plateau(self, loss: float) -> bool:
        """True when the stage's smoothed (EMA 0.9) training loss has not improved for ``patience`` steps."""
        state = self.catalyst_state
        if not math.isfinite(loss):
            return False
        state.plateau_ema = loss if state.plateau_ema is None else 0.9 * state.plateau_ema + 0.1 * loss
        if state.plateau_best is None or state.plateau_ema < state.plateau_best:
            state.plateau_best, state.plateau_wait = state.plateau_ema, 0
            return False
        state.plateau_wait += 1
        return state.plateau_wait >= self.args.catalyst_plateau_patience

    # ------------------------------------------------------------------------------------------------------------
    # One round
    # ------------------------------------------------------------------------------------------------------------

    def _run_round(self, trigger: str) -> None:
        args, state = self.args, self.catalyst_state
        started = time.perf_counter()
        saved = read_soft_prompt(self.model)
        record: dict[str, Any] = {"round": state.rounds_done + 1, "step": self.state.global_step, "trigger": trigger}
        if not self._only_prompt_trains():  # the trained weights also move hard prompts' scores
            self._hard_prompt_scores.clear()
        with _preserved_rng(), _preserved_mode(self.model):
            points = state.trajectory.select(args.catalyst_trajectory_points)
            scored_points = []
            for point in points:
                score = self._score_token_ids(point.token_ids)
                scored_points.append({**point.to_dict(), "train_loss": point.loss, **_prefixed(score)})
            self._restore(saved)
            record["trajectory"] = scored_points

            request = self._mentor_request(scored_points)
            proposal, error = self._propose(request)
            record["mentor"] = self._mentor_record(proposal, error)
            self._log_chat(record, request, proposal, error)

            winner, candidates, current = self._judge(proposal, saved)
            record["current"] = {"text": self.projector.text(), **(current.to_dict() if current else {})}
            record["candidates"] = candidates
            if winner is None:
                self._restore(saved)
            else:
                write_token_ids(self.model, candidates[winner]["token_ids"])
        record["decision"] = self._decide(record, proposal, error, winner)
        if winner is not None:
            self._after_restart()
        state.rounds_done += 1
        state.trajectory.clear()
        state.stage_start_step = self.state.global_step
        state.plateau_ema = state.plateau_best = None
        state.plateau_wait = 0
        record["seconds"] = round(time.perf_counter() - started, 3)
        record["prompt_after"] = self.projector.text()
        self.catalyst_history.append(record)
        self._log_round(record)
        self._write_history()

    def _mentor_request(self, scored_points: list[dict[str, Any]]) -> MentorRequest:
        soft = get_soft_prompt(self.model)
        metric = self.args.catalyst_metric
        points = [
            TrajectoryPoint(
                text=p["text"],
                loss=p["catalyst_loss"],
                metric=None if metric == "loss" else p["catalyst_metrics"].get(metric),
            )
            for p in scored_points
            if math.isfinite(p["catalyst_loss"])
        ]
        return MentorRequest(
            task_description=self._task_description(),
            trajectory=points,
            num_candidates=self.args.catalyst_num_candidates,
            max_words=self.args.catalyst_max_words or soft.num_virtual_tokens,
            manual_prompt=self.args.catalyst_manual_prompt,
        )

    def _propose(self, request: MentorRequest) -> tuple[MentorProposal | None, str | None]:
        """Ask the mentor on the main process only and broadcast its answer; never raises."""
        started = time.perf_counter()
        try:
            return self._propose_uncounted(request)
        finally:
            self.catalyst_timings["mentor"] += time.perf_counter() - started

    def _propose_uncounted(self, request: MentorRequest) -> tuple[MentorProposal | None, str | None]:
        payload: list[Any] = [None]
        if self.accelerator.is_main_process:
            try:
                proposal = self.mentor.propose(request)
                payload = [{"proposal": proposal.to_dict(), "error": None}]
            except MentorError as exc:
                logger.warning("Mentor round skipped: %s", exc)
                payload = [{"proposal": None, "error": str(exc)}]
            except Exception as exc:  # a mentor bug must not kill a training run
                logger.warning("Mentor round skipped: unexpected %s: %s", type(exc).__name__, exc)
                payload = [{"proposal": None, "error": f"{type(exc).__name__}: {exc}"}]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(payload, from_process=0)
        data = payload[0]
        proposal = MentorProposal.from_dict(data["proposal"]) if data["proposal"] else None
        return proposal, data["error"]

    def _judge(self, proposal: MentorProposal | None, saved: torch.Tensor):
        """Score candidates and the current prompt: (winner index or None, candidate records, current score)."""
        if proposal is None or not proposal.candidates:
            return None, [], None
        tok = self.tokenizer_for_prompts
        n = get_soft_prompt(self.model).num_virtual_tokens
        candidates = []
        for text in proposal.candidates:
            try:
                ids = text_to_token_ids(tok, text, n)
            except ValueError as exc:
                candidates.append({"text": text, "token_ids": None, "error": str(exc), "finite": False})
                continue
            candidates.append({"text": text, "token_ids": ids})
        usable = [i for i, c in enumerate(candidates) if c["token_ids"] is not None]
        if not usable:
            return None, candidates, None
        if self.args.catalyst_selection == "first":
            return usable[0], candidates, None

        bar = tqdm(
            total=len(usable) + 1,
            desc=f"catalyst round {self.catalyst_state.rounds_done + 1}: scoring",
            leave=False,
            disable=self.args.disable_tqdm or not self.is_local_process_zero(),
        )
        current = self._score()
        bar.update()
        for i in usable:
            candidates[i].update(self._score_token_ids(candidates[i]["token_ids"]).to_dict())
            bar.update()
        bar.close()
        self._restore(saved)
        higher = self.args.catalyst_higher_is_better
        best = None
        for i in usable:
            if not candidates[i]["finite"]:
                continue
            if best is None or _better(candidates[i]["score"], candidates[best]["score"], higher):
                best = i
        if best is not None and current.finite and not _better(candidates[best]["score"], current.value, higher):
            best = None
        if self.accelerator.num_processes > 1:  # one decision for all ranks, even if float sums differ by a bit
            decision = [best]
            broadcast_object_list(decision, from_process=0)
            best = decision[0]
        return best, candidates, current

    def _decide(self, record, proposal, error, winner) -> dict[str, Any]:
        if error is not None:
            return {"status": "skipped", "reason": "mentor_error", "accepted": False}
        if proposal is None or not proposal.candidates:
            reason = (proposal.warning if proposal else None) or "no usable candidate"
            return {"status": "skipped", "reason": reason, "accepted": False}
        if not any(c.get("token_ids") for c in record["candidates"]):
            return {"status": "skipped", "reason": "no candidate could be tokenized", "accepted": False}
        if self.args.catalyst_selection == "first":
            return {
                "status": "blind",
                "accepted": True,
                "winner": winner,
                "text": record["candidates"][winner]["text"],
            }
        if winner is None:
            return {"status": "kept", "accepted": False, "winner": None}
        return {"status": "accepted", "accepted": True, "winner": winner, "text": record["candidates"][winner]["text"]}

    def _restore(self, saved: torch.Tensor) -> None:
        write_soft_prompt_(self.model, saved)

    # ------------------------------------------------------------------------------------------------------------
    # Scoring on the catalyst split
    # ------------------------------------------------------------------------------------------------------------

    def _score(self) -> Score:
        """Loss (and ``compute_metrics``) of the current soft prompt on the catalyst split, over all processes."""
        started = time.perf_counter()
        try:
            return self._score_uncounted()
        finally:
            self.catalyst_timings["scoring"] += time.perf_counter() - started

    def _score_token_ids(self, token_ids: list[int]) -> Score:
        """Write a hard prompt (token ids) into the soft prompt and score it; a repeated prompt reuses its score.

        Reuse is exact: a hard prompt's score depends only on its ids and the other weights, which do not change
        within a round, nor between rounds when the soft prompt is the only trained parameter (the cache is cleared
        otherwise). Trajectories that stop moving and mentors that repeat themselves make repeats common.
        """
        key = tuple(int(i) for i in token_ids)
        score = self._hard_prompt_scores.get(key)
        if score is None:
            write_token_ids(self.model, list(key))
            score = self._hard_prompt_scores[key] = self._score()
        return score

    def _only_prompt_trains(self) -> bool:
        """True when the soft prompt is the model's only trainable parameter (no head in ``modules_to_save``)."""
        prompt = get_soft_prompt(self.model).weight
        return all(p is prompt for p in self.model.parameters() if p.requires_grad)

    def _score_uncounted(self) -> Score:
        if self._catalyst_dataloader is None:
            column = (getattr(self.tokenizer_for_prompts, "model_input_names", None) or ["input_ids"])[0]
            # Longest rows first: far less padding, and the mean over the split does not depend on the order.
            self._catalyst_dataloader = self.get_eval_dataloader(sorted_by_length(self.catalyst_dataset, column))
        model = self.model_wrapped if (self.is_fsdp_enabled or self.is_deepspeed_enabled) else self.model
        model.eval()
        want_metrics = self.compute_metrics is not None
        losses, preds, labels = [], None, None
        for inputs in self._catalyst_dataloader:
            loss, logits, label = self.prediction_step(model, inputs, prediction_loss_only=not want_metrics)
            if loss is None:
                raise ValueError("The catalyst split has no labels, so prompts cannot be scored: add a label column.")
            batch_size = _batch_size(inputs)
            losses.append(self.accelerator.gather_for_metrics(loss.detach().float().reshape(1).repeat(batch_size)))
            if want_metrics and logits is not None and label is not None:
                if self.preprocess_logits_for_metrics is not None:
                    logits = self.preprocess_logits_for_metrics(logits, label)
                logits = self.accelerator.pad_across_processes(logits, dim=1, pad_index=-100)
                label = self.accelerator.pad_across_processes(label, dim=1, pad_index=-100)
                # Batches differ in width (causal-LM labels are as long as their batch): pad while concatenating.
                logits, label = self.accelerator.gather_for_metrics((logits, label))
                preds = logits.cpu() if preds is None else nested_concat(preds, logits.cpu(), padding_index=-100)
                labels = label.cpu() if labels is None else nested_concat(labels, label.cpu(), padding_index=-100)
        all_losses = torch.cat(losses).cpu()
        mean_loss = float(all_losses.mean()) if torch.isfinite(all_losses).all() else math.inf
        metrics: dict[str, float] = {}
        if want_metrics and preds is not None:
            result = self.compute_metrics(
                EvalPrediction(predictions=nested_numpify(preds), label_ids=nested_numpify(labels))
            )
            metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float, np.floating))}
        metric = self.args.catalyst_metric
        if metric == "loss":
            value = mean_loss
        elif metric in metrics:
            value = metrics[metric]
        else:
            raise ValueError(
                f"catalyst_metric={metric!r} is not among the metrics compute_metrics returns ({sorted(metrics)}); "
                "set catalyst_metric to 'loss' or one of those keys."
            )
        if not math.isfinite(value) or not math.isfinite(mean_loss):
            value = math.inf if not self.args.catalyst_higher_is_better else -math.inf
        return Score(value=value, loss=mean_loss, metrics=metrics)

    # ------------------------------------------------------------------------------------------------------------
    # Restart side effects: optimizer state and learning-rate re-warm-up
    # ------------------------------------------------------------------------------------------------------------

    def _after_restart(self) -> None:
        weight = get_soft_prompt(self.model).weight
        optimizer = _inner_optimizer(self.optimizer)
        if self.args.catalyst_reset_optimizer and optimizer is not None:
            if not (reset := reset_optimizer_state(self.optimizer, weight)):
                logger.warning("catalyst_reset_optimizer: the prompt's optimizer state is kept: %s.", reset.reason)
        if self.args.catalyst_rewarmup_steps > 0 and optimizer is not None:
            self.catalyst_state.rewarm_step = 1
            self._apply_rewarmup_scale()

    def _prompt_groups(self) -> list[tuple[int, dict]]:
        """``(index, group)`` of the optimizer's parameter groups that hold the soft prompt."""
        optimizer = _inner_optimizer(self.optimizer)
        if optimizer is None:
            return []
        weight = get_soft_prompt(self.model).weight
        return [(i, g) for i, g in enumerate(optimizer.param_groups) if any(p is weight for p in g["params"])]

    def _scheduled_lr(self, index: int, group: dict) -> float:
        """The lr the scheduler last set for group ``index`` (the group's own lr when it cannot tell)."""
        try:
            return float(self.lr_scheduler.get_last_lr()[index])
        except (AttributeError, IndexError, TypeError):
            return float(group["lr"])

    def _advance_rewarmup(self) -> None:
        state = self.catalyst_state
        if state.rewarm_step <= 0:
            return
        state.rewarm_step += 1
        if state.rewarm_step > self.args.catalyst_rewarmup_steps:
            state.rewarm_step = 0
        self._apply_rewarmup_scale()

    def _apply_rewarmup_scale(self) -> None:
        """Set the prompt group's lr for the next optimizer step to the scheduled lr times ``k / (W + 1)``."""
        steps = self.args.catalyst_rewarmup_steps
        factor = self.catalyst_state.rewarm_step / (steps + 1) if self.catalyst_state.rewarm_step else 1.0
        for index, group in self._prompt_groups():
            group["lr"] = self._scheduled_lr(index, group) * factor

    # ------------------------------------------------------------------------------------------------------------
    # Records, logs and files
    # ------------------------------------------------------------------------------------------------------------

    def _mentor_record(self, proposal: MentorProposal | None, error: str | None) -> dict[str, Any]:
        record: dict[str, Any] = {"name": getattr(self.mentor, "name", type(self.mentor).__name__), "error": error}
        if proposal is not None:
            data = proposal.to_dict()
            data.pop("messages", None)
            record.update(data)
        return record

    def _chat_log(self) -> ChatLog:
        return ChatLog(Path(self.args.output_dir) / self.args.catalyst_chat_log)

    def _log_chat(self, record, request: MentorRequest, proposal: MentorProposal | None, error: str | None) -> None:
        if not self.args.should_save:
            return
        entry = {
            "round": record["round"],
            "step": record["step"],
            "mentor": record["mentor"]["name"],
            "request": request.to_dict(),
            "messages": proposal.messages if proposal else None,
            "reply": proposal.raw if proposal else None,
            "candidates": proposal.candidates if proposal else [],
            "latency_s": proposal.latency_s if proposal else None,
            "prompt_tokens": proposal.prompt_tokens if proposal else None,
            "completion_tokens": proposal.completion_tokens if proposal else None,
            "error": error,
        }
        self._chat_log().append(entry)

    def _log_round(self, record: dict[str, Any]) -> None:
        decision = record["decision"]
        logs: dict[str, float] = {
            "catalyst/round": float(record["round"]),
            "catalyst/accepted": float(decision["status"] in ("accepted", "blind")),
            "catalyst/skipped": float(decision["status"] == "skipped"),
            "catalyst/num_candidates": float(len(record.get("candidates", []))),
            "catalyst/seconds": float(record["seconds"]),
        }
        current = record.get("current", {})
        if current.get("loss") is not None:
            logs["catalyst/current_loss"] = float(current["loss"])
        losses = [c["loss"] for c in record.get("candidates", []) if c.get("finite")]
        if losses:
            logs["catalyst/best_candidate_loss"] = float(min(losses))
        mentor = record.get("mentor", {})
        if mentor.get("latency_s") is not None:
            logs["catalyst/mentor_latency_s"] = float(mentor["latency_s"])
        logger.info("catalyst round %d at step %d: %s", record["round"], record["step"], decision["status"])
        self.log(logs)

    def catalyst_summary(self) -> dict[str, Any]:
        """Counts over the rounds so far, plus the mentor's cumulative usage."""
        statuses = [r["decision"]["status"] for r in self.catalyst_history]
        usage = getattr(getattr(self.mentor, "usage", None), "to_dict", lambda: None)()
        return {
            "rounds": len(statuses),
            "accepted": statuses.count("accepted") + statuses.count("blind"),
            "kept": statuses.count("kept"),
            "skipped": statuses.count("skipped"),
            "mentor": getattr(self.mentor, "name", None),
            "mentor_usage": usage,
            "selection": self.args.catalyst_selection,
            "metric": self.args.catalyst_metric,
            "greater_is_better": self.args.catalyst_higher_is_better,
            "seconds": {k: round(v, 3) for k, v in self.catalyst_timings.items()},
            "final_prompt": self.projector.text() if self.processing_class is not None else None,
        }

    def _write_history(self) -> None:
        if self._rounds_enabled:
            summary = self.catalyst_summary()  # on every rank: reading the prompt gathers it under ZeRO-3 and FSDP
            if self.args.should_save:
                write_history(self.args.output_dir, self.catalyst_history, summary)


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


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


def _new_timings() -> dict[str, float]:
    """Seconds spent by the catalyst machinery: per-step bookkeeping (of which projection) and rounds (of which
    scoring and the mentor call)."""
    return {"step_bookkeeping": 0.0, "projection": 0.0, "rounds": 0.0, "scoring": 0.0, "mentor": 0.0}


def _isolate_param_group(optimizer, param: torch.nn.Parameter) -> None:
    """Move ``param`` into a parameter group of its own (same hyper-parameters) unless it is alone already."""
    optimizer = _inner_optimizer(optimizer)
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]) and len(group["params"]) > 1:
            group["params"] = [p for p in group["params"] if p is not param]
            optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": [param]})
            return


def _inner_optimizer(optimizer):
    """The torch optimizer inside Accelerate's wrapper (or the optimizer itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _batch_size(inputs: dict[str, Any]) -> int:
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("Cannot tell the batch size of a catalyst batch: it holds no tensor.")


def _prefixed(score: Score) -> dict[str, Any]:
    return {"catalyst_score": score.value, "catalyst_loss": score.loss, "catalyst_metrics": dict(score.metrics)}


@contextlib.contextmanager
def _preserved_rng():
    """Run the block without consuming the torch (CPU and CUDA), NumPy or Python RNG streams of training."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _preserved_mode(model: torch.nn.Module):
    """Restore every module's train/eval mode after the block."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


__all__ = ["CatalystTrainer", "CatalystTrainingArguments", "split_catalyst_dataset", "HISTORY_FILE"]
