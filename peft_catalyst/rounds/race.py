"""A fair race between restart points: every arm trains the same counted budget on the same batches, then is judged.

Successive halving (as in Hyperband): all arms train ``steps`` optimizer steps and are scored on the catalyst split;
the best ``1/eta`` (rounded up) go on with ``eta`` times the budget, until one arm is left. The incumbent continues
with its own optimizer state; every other arm starts from the same snapshot of every other trainable parameter
(e.g. a classification head), with the prompt's optimizer state as a restart leaves it
(``catalyst_restart_optimizer``: fresh, or the incumbent's with the first moment zeroed) and the usual re-warm-up;
a blended or
partial arm (``catalyst_restart``, :mod:`.restarts`) starts between the incumbent and its proposal
and inherits what that module says of the incumbent's optimizer state. A challenger
beats the incumbent only by more than ``margin``. The winner's parameters and optimizer state become the training
state; losers leave no trace. Race batches come from a seeded stream of their own, and the race runs under the
caller's forked RNG, so the main loop's data order and random streams are untouched.

When the prompt is the only trainable parameter, the arms train together (``arms_per_pass`` > 1): each race step is
one forward and backward over the step's batch stacked once per arm (:mod:`.multi_prompt`), then every
arm takes its own optimizer step with its own parameter, optimizer state and re-warmed learning rate, and a rung's
arms are scored in shared passes. Batches are paired as before; dropout noise (for a model that has dropout) is drawn
per row, so arms no longer share dropout masks. Otherwise the arms train one after the other.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import broadcast_object_list

from peft_catalyst.compat.transformers import (
    collator_with_removed_columns,
    num_items_in_batch,
    prepare_inputs,
    remove_unused_columns,
)
from peft_catalyst.projection import get_soft_prompt, read_soft_prompt, write_soft_prompt_, write_token_ids
from peft_catalyst.records import ArmKind, Race, RaceArm, RaceRung, RestartShape, ScoredPrompt, ranking_key
from peft_catalyst.rounds.multi_prompt import trainer_losses, trainer_unsupported_reason
from peft_catalyst.rounds.restarts import (
    apply_rewarmup,
    inner_optimizer,
    reshaped_optimizer_state,
    restarted_state,
    restore_state,
    shaped_start,
    snapshot_state,
)
from peft_catalyst.rounds.scoring import PromptScorer

logger = logging.getLogger(__name__)


@dataclass
class RaceSettings:
    """Budget of the first rung, halving factor, incumbent margin, re-warm-up length and the race's seed."""

    steps: int
    eta: int = 2
    margin: float = 0.0
    rewarmup_steps: int = 0
    seed: int = 0
    restart_optimizer: str = "reset"  # what a new start keeps of the incumbent's optimizer state (restarted_state)


@dataclass
class _ArmState:
    """An arm's training state between rungs: trainable parameter values, their optimizer state, re-warm step."""

    values: list[torch.Tensor]
    optimizer_state: list[dict[str, Any]]
    rewarm_step: int
    steps: int = 0


class RaceBatches:
    """The race's own batch stream: global batch ``k`` is a seeded function of ``k``; each process takes its share.

    Built from the host trainer's training dataset and collator (unused columns removed as ``Trainer`` does), so
    arms train on what the main loop trains on, but in an order that never touches the main dataloader.
    """

    def __init__(self, trainer: Any, seed: int) -> None:
        import datasets

        self.trainer = trainer
        dataset = trainer.train_dataset
        collator = trainer.data_collator
        if isinstance(dataset, datasets.Dataset):
            dataset = remove_unused_columns(trainer, dataset, description="race")
        else:
            collator = collator_with_removed_columns(trainer, collator, description="race")
        if not hasattr(dataset, "__len__") or len(dataset) == 0:
            raise ValueError("A race needs a map-style, non-empty train_dataset.")
        self.dataset, self.collator, self.seed = dataset, collator, seed
        args = trainer.args
        self.micro = args.per_device_train_batch_size
        self.accumulation = args.gradient_accumulation_steps
        self.processes, self.rank = args.world_size, args.process_index
        self._orders: dict[int, list[int]] = {}

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders[epoch] = torch.randperm(len(self.dataset), generator=generator).tolist()
        return self._orders[epoch][offset]

    def step_batches(self, k: int) -> list[dict[str, Any]]:
        """The micro-batches of this process for race optimizer step ``k`` (paired: the same for every arm)."""
        per_step = self.micro * self.processes * self.accumulation
        batches = []
        for a in range(self.accumulation):
            start = k * per_step + (a * self.processes + self.rank) * self.micro
            rows = [self.dataset[self._index(start + i)] for i in range(self.micro)]
            batches.append(self.collator(rows))
        return batches


class RaceRunner:
    """Runs one race on a host ``Trainer``'s model and optimizer (see the module docstring)."""

    def __init__(
        self,
        trainer: Any,
        scorer: PromptScorer,
        settings: RaceSettings,
        batches: RaceBatches,
        incumbent_rewarm_step: int,
        describe: Callable[[], tuple[str, list[int]]],
        on_step: Callable[[], None] | None = None,
        arms_per_pass: int = 1,
    ) -> None:
        self.trainer = trainer
        self.scorer = scorer
        self.settings = settings
        self.batches = batches
        self.incumbent_rewarm_step = incumbent_rewarm_step
        self.describe = describe  # the current soft prompt as (text, token ids)
        self.on_step = on_step  # e.g. a progress bar
        self.model = trainer.model
        self.prompt = get_soft_prompt(self.model).weight
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.only_prompt = len(self.params) == 1 and self.params[0] is self.prompt
        if arms_per_pass > 1 and not self.only_prompt:
            raise ValueError("Arms can train together only when the soft prompt is the only trainable parameter.")
        self.arms_per_pass = arms_per_pass  # > 1: arms train together, this many per forward and backward

    # ------------------------------------------------------------------------------------------------------------
    def run(self, arms: list[RaceArm]) -> tuple[Race, int]:
        """Race ``arms`` (arm 0 must be the incumbent); returns the record and the winner's re-warm-up step.

        On return the model and optimizer hold the winner's state.
        """
        if not arms or arms[0].kind is not ArmKind.INCUMBENT:
            raise ValueError("A race's first arm must be the incumbent.")
        meter = self.scorer.meter  # the arms' training and their rung scorings count as the race's compute
        with meter.as_part("races") if meter is not None else contextlib.nullcontext():
            return self._run(arms)

    def _run(self, arms: list[RaceArm]) -> tuple[Race, int]:
        optimizer = self.trainer.optimizer
        base_values = [p.detach().clone() for p in self.params]
        base_state = snapshot_state(optimizer, self.params)
        incumbent = read_soft_prompt(self.model)  # a reshaped arm starts between it and its proposal
        states = [self._initial_state(arm, base_values, base_state, incumbent) for arm in arms]
        race = Race(arms=arms, batched=self.arms_per_pass > 1)
        alive = list(range(len(arms)))
        budget, rung = self.settings.steps, 0
        while True:
            start = states[alive[0]].steps
            if race.batched:
                self._train_together(states, alive, start, budget, rung)
            else:
                for index in alive:
                    self._load(states[index])
                    self._train(states[index], start, budget, rung)
                    states[index] = self._snapshot(states[index])
            scores = self._score(states, alive)
            race.rungs.append(RaceRung(arms=list(alive), steps=start + budget, scores=scores))
            race.steps += budget * len(alive)
            ranked = self._ranked(alive, scores)
            keep = 1 if budget == 0 else math.ceil(len(alive) / self.settings.eta)
            alive = sorted(ranked[:keep])
            if len(alive) == 1:
                break
            budget *= self.settings.eta
            rung += 1
        race.winner = alive[0]
        self._load(states[race.winner])
        return race, states[race.winner].rewarm_step

    # ------------------------------------------------------------------------------------------------------------
    def _score(self, states: list[_ArmState], alive: list[int]) -> list[ScoredPrompt]:
        """Each live arm's score and text; arms that differ only in the prompt share scoring passes."""
        shared = self.scorer.score_prompts([states[i].values[0] for i in alive]) if self.only_prompt else None
        scores = []
        for slot, index in enumerate(alive):
            if shared is not None:  # values[0]: the prompt, the only trainable parameter
                write_soft_prompt_(self.model, states[index].values[0])
                score = shared[slot]
            else:
                self._load(states[index])
                score = self.scorer.score()
            text, ids = self.describe()
            scores.append(score.prompt(text, ids))
        return scores

    def _initial_state(
        self, arm: RaceArm, values: list[torch.Tensor], state: list[dict], incumbent: torch.Tensor
    ) -> _ArmState:
        if arm.kind is ArmKind.INCUMBENT:
            return _ArmState([v.clone() for v in values], state, self.incumbent_rewarm_step)
        write_token_ids(self.model, arm.token_ids)
        mode = self.settings.restart_optimizer
        fresh = [restarted_state(s, mode) if p is self.prompt else s for p, s in zip(self.params, state)]
        if arm.shape.name != "full":  # blended or partial: see peft_catalyst.rounds.restarts
            n = get_soft_prompt(self.model).num_virtual_tokens
            write_soft_prompt_(self.model, shaped_start(arm.shape, incumbent, read_soft_prompt(self.model), n))
            fresh = [
                (reshaped_optimizer_state(s, arm.shape, n, p.shape) or {}) if p is self.prompt else s
                for p, s in zip(self.params, state)
            ]
        start = [p.detach().clone() if p is self.prompt else v.clone() for p, v in zip(self.params, values)]
        return _ArmState(start, fresh, 1 if self.settings.rewarmup_steps > 0 else 0)

    def _load(self, arm: _ArmState) -> None:
        with torch.no_grad():
            for param, value in zip(self.params, arm.values):
                param.copy_(value)
        restore_state(self.trainer.optimizer, self.params, arm.optimizer_state)

    def _snapshot(self, arm: _ArmState) -> _ArmState:
        return _ArmState(
            [p.detach().clone() for p in self.params],
            snapshot_state(self.trainer.optimizer, self.params),
            arm.rewarm_step,
            arm.steps,
        )

    def _train(self, arm: _ArmState, start: int, budget: int, rung: int) -> None:
        """``budget`` optimizer steps from race step ``start``, dropout seeded per rung (paired across arms)."""
        trainer, settings = self.trainer, self.settings
        model = trainer.model_wrapped
        optimizer = trainer.optimizer
        scheduled = [g["lr"] for g in inner_optimizer(optimizer).param_groups]
        torch.manual_seed(settings.seed * 7919 + rung)
        try:
            for k in range(start, start + budget):
                apply_rewarmup(optimizer, trainer.lr_scheduler, self.prompt, arm.rewarm_step, settings.rewarmup_steps)
                batches = self.batches.step_batches(k)
                items = num_items_in_batch(trainer, batches)
                meter = self.scorer.meter
                for inputs in batches:
                    if meter is None:
                        trainer.training_step(model, inputs, items)
                        continue
                    meter.train(inputs, "races")
                    with meter.counted_elsewhere():  # not a stage's step: CatalystMixin leaves it to this count
                        trainer.training_step(model, inputs, items)
                if trainer.args.max_grad_norm and trainer.args.max_grad_norm > 0:
                    trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
                optimizer.step()
                model.zero_grad()
                arm.steps += 1
                if arm.rewarm_step > 0:
                    arm.rewarm_step = arm.rewarm_step + 1 if arm.rewarm_step < settings.rewarmup_steps else 0
                if self.on_step is not None:
                    self.on_step()
        finally:
            for group, lr in zip(inner_optimizer(optimizer).param_groups, scheduled):
                group["lr"] = lr

    def _train_together(self, states: list[_ArmState], alive: list[int], start: int, budget: int, rung: int) -> None:
        """``budget`` race steps of every live arm from race step ``start``: per step, one forward and backward over
        the stacked batch (in passes of ``arms_per_pass`` arms), then each arm's own optimizer step."""
        trainer, settings, prompt = self.trainer, self.settings, self.prompt
        optimizer = trainer.optimizer
        scheduled = [g["lr"] for g in inner_optimizer(optimizer).param_groups]
        torch.manual_seed(settings.seed * 7919 + rung)
        try:
            for k in range(start, start + budget):
                # values[0]: the prompt, the only trainable parameter
                grads = self._stacked_gradients([states[i].values[0] for i in alive], self.batches.step_batches(k))
                for slot, index in enumerate(alive):
                    arm = states[index]
                    self._load(arm)
                    prompt.grad = grads[slot].to(dtype=prompt.dtype)
                    apply_rewarmup(optimizer, trainer.lr_scheduler, prompt, arm.rewarm_step, settings.rewarmup_steps)
                    if trainer.args.max_grad_norm and trainer.args.max_grad_norm > 0:
                        trainer.accelerator.clip_grad_norm_([prompt], trainer.args.max_grad_norm)
                    optimizer.step()
                    self.model.zero_grad()
                    arm.steps += 1
                    if arm.rewarm_step > 0:
                        arm.rewarm_step = arm.rewarm_step + 1 if arm.rewarm_step < settings.rewarmup_steps else 0
                    states[index] = self._snapshot(arm)
                    if self.on_step is not None:
                        self.on_step()
        finally:
            for group, lr in zip(inner_optimizer(optimizer).param_groups, scheduled):
                group["lr"] = lr

    def _stacked_gradients(self, values: list[torch.Tensor], batches: list[dict[str, Any]]) -> torch.Tensor:
        """Each arm's prompt gradient for one race step, as ``training_step`` over ``batches`` would leave it."""
        trainer = self.trainer
        items = num_items_in_batch(trainer, batches)
        scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
        if scaled is None:  # as training_step decides whether to divide by the accumulation steps
            scaled = (trainer.model_accepts_loss_kwargs and items is not None) or trainer.compute_loss_func is not None
        accumulation = getattr(trainer, "current_gradient_accumulation_steps", None)
        accumulation = accumulation or trainer.args.gradient_accumulation_steps
        grads = []
        self.model.train()
        if callable(getattr(trainer.optimizer, "train", None)):  # schedule-free optimizers, as training_step does
            trainer.optimizer.train()
        for first in range(0, len(values), self.arms_per_pass):
            leaf = torch.stack(values[first : first + self.arms_per_pass]).detach().requires_grad_(True)
            for inputs in batches:
                if self.scorer.meter is not None:
                    self.scorer.meter.train(inputs, "races", prompts=leaf.shape[0])
                inputs = prepare_inputs(trainer, inputs)
                with trainer.compute_loss_context_manager():
                    losses, _ = trainer_losses(trainer, leaf, inputs, items)
                    total = torch.stack(losses).sum()
                if not scaled:
                    total = total / accumulation
                trainer.accelerator.backward(total)
            grads.append(leaf.grad)
        stacked = torch.cat(grads)
        if trainer.accelerator.num_processes > 1:  # what DDP's gradient hook does for a model's own parameters
            stacked = trainer.accelerator.reduce(stacked, reduction="mean")
        return stacked

    def _ranked(self, alive: list[int], scores: list[ScoredPrompt]) -> list[int]:
        """Arms best first; the incumbent (arm 0) counts as better by the margin; non-finite scores rank last."""
        scorer, margin = self.scorer, self.settings.margin

        def key(pair: tuple[int, ScoredPrompt]) -> float:
            index, score = pair
            if not score.finite:
                return math.inf
            value = ranking_key(score.score, scorer.higher_is_better)
            return value - (margin if index == 0 else 0.0)

        return main_process_decision(self.trainer.accelerator, [i for i, _ in sorted(zip(alive, scores), key=key)])


def arms_per_pass(trainer: Any, batch_size: int, only_prompt: bool) -> tuple[int, str | None]:
    """How many race arms train in one forward and backward under a ``batch_size`` of rows
    (``catalyst_score_batch_size``), and why only one when so; ``only_prompt``: the prompt is the only trainable
    parameter."""
    if not only_prompt:
        return 1, "another parameter trains beside the prompt, e.g. a classification head"
    reason = trainer_unsupported_reason(trainer)
    if reason is None and getattr(trainer.accelerator, "scaler", None) is not None:
        reason = "fp16 loss scaling"
    if reason is not None:
        return 1, reason
    per_pass = batch_size // max(1, trainer.args.per_device_train_batch_size)
    if per_pass < 2:
        return 1, f"catalyst_score_batch_size={batch_size} holds one arm's batch"
    return per_pass, None


def race_arms(
    incumbent: tuple[str, list[int]],
    candidates: list[ScoredPrompt],
    indices: list[int],
    controls: list[tuple[str, list[int]]],
    shapes: list[RestartShape],
) -> list[RaceArm]:
    """The arms of a race: the ``incumbent`` (text, token ids), then every candidate (``indices``: their places in
    the round's candidates) and every control (text, token ids), each in every restart shape."""
    arms = [RaceArm(ArmKind.INCUMBENT, incumbent[0], list(incumbent[1]))]
    arms += [
        RaceArm(ArmKind.CANDIDATE, c.text, list(c.token_ids), i, shape=shape)
        for c, i in zip(candidates, indices)
        for shape in shapes
    ]
    for text, ids in controls:
        arms += [RaceArm(ArmKind.CONTROL, text, list(ids), shape=shape) for shape in shapes]
    return arms


def race_beats_random(race: Race, higher_is_better: bool) -> bool | None:
    """Whether the best mentor arm did better than the best control arm in ``race``: it reached a later rung, or
    the same rung with a better score (None: the race had no candidate or no control arm, or the best of each
    stood level, as identical prompts do; the race's winner then came first in arm order, which is no evidence)."""

    def standing(arm: int) -> tuple[int, float]:
        reached = [(i, rung.scores[rung.arms.index(arm)]) for i, rung in enumerate(race.rungs) if arm in rung.arms]
        if not reached:
            return (-1, math.inf)
        rung, score = reached[-1]
        value = ranking_key(score.score, higher_is_better) if score.finite else math.inf
        return (rung, -value)

    groups = [
        [i for i, a in enumerate(race.arms) if a.kind is kind] for kind in (ArmKind.CANDIDATE, ArmKind.CONTROL)
    ]
    if not groups[0] or not groups[1]:
        return None
    mentor, control = (max(standing(i) for i in group) for group in groups)
    if mentor == control:
        return None
    if race.arms[race.winner].kind is not ArmKind.INCUMBENT:
        return race.arms[race.winner].kind is ArmKind.CANDIDATE
    return mentor > control


def main_process_decision(accelerator: Any, value: Any) -> Any:
    """Rank 0's ``value`` on every process: one decision for all ranks, even if their float sums differ by a bit."""
    if accelerator.num_processes > 1:
        payload = [value]
        broadcast_object_list(payload, from_process=0)
        value = payload[0]
    return value
