"""Restarts: where a restart from a proposal starts (its shape) and what it does to the prompt's optimizer.

Knows nothing of mentors, rounds or races: tensors and optimizer state in, tensors and optimizer state out.

**Shapes** (``catalyst_restart``). A full restart throws away everything the stage learned; at a plateau that is why
it never wins (measured: fresh starts won 1 of 36 races). Population training perturbs the weights a member has
instead of resetting them, and the other two shapes do the same with a proposal:

- ``"full"``: the proposal's token embeddings (the restart as it always was);
- ``"blend"``: ``incumbent + alpha * (proposal - incumbent)`` in embedding space, one start per alpha;
- ``"partial"``: the incumbent with the proposal's tokens written at ``k`` positions, the others untouched.

Rule for the partial positions: the ``k`` positions whose trained vectors lie *nearest* to a vocabulary token (by the
projector's metric; ties go to the earlier position). Such a vector says little more than its nearest token does, so
swapping it for the proposal's token at that position loses least of what the stage learned; the vectors training
moved furthest from the vocabulary are kept. The proposal's token at position ``p`` goes to position ``p`` (its
place in the proposal's word order); with one block of virtual tokens per transformer submodule (seq2seq) every
block's row ``p`` is written.

**The optimizer.** The prompt gets its own parameter group and an lr re-warm-up after a restart (the state reset,
which must also reach DeepSpeed's partitions, is :func:`reset_optimizer_state`). The re-warm-up
ramps the prompt group's lr to ``k / (W + 1)`` of the scheduled lr over ``W`` steps, so the first updates from a new
start are small (the research code kept the stale Adam moments instead).

What a restart keeps of the optimizer state (``catalyst_restart_optimizer``, :data:`RESTART_OPTIMIZERS`): after a
full reset Adam's first updates are sign-like (``m / sqrt(v)`` is about +-1 per coordinate), so every coordinate
moves by about the lr whatever its gradient noise; keeping the second moment (and the step count, so no bias
correction inflates it) while zeroing the first makes the new start's first steps small and well scaled. A trust
region (:func:`project_to_radius_`) can also keep the prompt near its restart point for its first steps, as CPT
(arXiv 2410.17222) keeps its tokens near their start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from peft_catalyst.compat.deepspeed import (
    has_zero12_mapping,
    zero3_flat_partition,
    zero3_grad_position,
    zero3_optimizer,
    zero3_param_group_index,
    zero3_subgroup_offloaded,
)
from peft_catalyst.records import RestartName, RestartShape

logger = logging.getLogger(__name__)


#: What a restart does to the prompt's optimizer state: ``"reset"`` forgets it all (moments and step);
#: ``"keep_second_moment"`` zeroes the first moment only (Adam's ``exp_avg``, SGD's ``momentum_buffer``) and keeps
#: the second moment and the step; ``"keep"`` leaves it as it is.
RestartOptimizer = Literal["reset", "keep_second_moment", "keep"]
RESTART_OPTIMIZERS: tuple[str, ...] = get_args(RestartOptimizer)

#: Optimizer state entries that hold a first moment (a running mean of the gradient), zeroed by ``keep_second_moment``.
FIRST_MOMENT_KEYS = frozenset({"exp_avg", "momentum_buffer"})


def restarted_state(state: dict[str, Any], mode: str) -> dict[str, Any]:
    """A copy of one parameter's optimizer ``state`` as a restart in ``mode`` (:data:`RESTART_OPTIMIZERS`) leaves it:
    ``{}`` for ``"reset"``, the first moment zeroed for ``"keep_second_moment"``, unchanged for ``"keep"``."""
    if mode not in RESTART_OPTIMIZERS:
        raise ValueError(f"restart optimizer mode must be one of {RESTART_OPTIMIZERS} (got {mode!r})")
    if mode == "reset" or not state:
        return {}
    out = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    if mode == "keep_second_moment":
        for key in FIRST_MOMENT_KEYS & out.keys():
            if isinstance(out[key], torch.Tensor):
                out[key].zero_()
    return out


def embedding_scale(model: torch.nn.Module) -> float:
    """The mean L2 norm of the base model's input embedding rows (the scale a trust-region radius is a fraction
    of)."""
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        return float(weight.detach().float().norm(dim=-1).mean())


@torch.no_grad()
def project_to_radius_(param: torch.Tensor, center: torch.Tensor, radius: float) -> int:
    """Pull every row (virtual token) of ``param`` that lies farther than ``radius`` (L2) from the same row of
    ``center`` back onto that sphere, in place; returns how many rows were moved. One process, full tensors."""
    delta = param.detach().float() - center.to(device=param.device, dtype=torch.float32)
    norms = delta.norm(dim=-1, keepdim=True)
    outside = norms > radius
    if not bool(outside.any()):
        return 0
    scale = torch.where(outside, radius / norms.clamp_min(1e-12), torch.ones_like(norms))
    param.copy_((center.to(device=param.device, dtype=torch.float32) + delta * scale).to(param.dtype))
    return int(outside.sum())


def inner_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside Accelerate's (and DeepSpeed's) wrappers: ``.optimizer`` followed to the end (None
    stays None)."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", None)
        if inner is None:
            break
        optimizer = inner
    return optimizer


def isolate_param_group(optimizer: Any, param: torch.nn.Parameter) -> None:
    """Move ``param`` into a parameter group of its own (same hyper-parameters) unless it is alone already."""
    optimizer = inner_optimizer(optimizer)
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]) and len(group["params"]) > 1:
            group["params"] = [p for p in group["params"] if p is not param]
            optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": [param]})
            return


def param_groups_of(optimizer: Any, param: torch.nn.Parameter) -> list[tuple[int, dict]]:
    """``(index, group)`` of the optimizer's parameter groups that hold ``param``.

    Under DeepSpeed ZeRO-3 the torch optimizer holds flat fp32 partitions (sub-groups of the model's parameter
    groups) instead of the parameters: ``param``'s group is the one DeepSpeed records for its sub-group."""
    optimizer = inner_optimizer(optimizer)
    if optimizer is None:
        return []
    z3 = zero3_optimizer(param)
    if z3 is not None and inner_optimizer(z3) is optimizer:
        try:
            index = zero3_param_group_index(z3, param)
            return [(index, optimizer.param_groups[index])]
        except (AttributeError, KeyError, IndexError, TypeError):  # another DeepSpeed layout: nothing to scale
            return []
    return [(i, g) for i, g in enumerate(optimizer.param_groups) if any(p is param for p in g["params"])]


def scheduled_lr(lr_scheduler: Any, index: int, group: dict) -> float:
    """The lr the scheduler last set for group ``index`` (the group's own lr when it cannot tell)."""
    try:
        return float(lr_scheduler.get_last_lr()[index])
    except (AttributeError, IndexError, TypeError):
        return float(group["lr"])


def apply_rewarmup(optimizer: Any, lr_scheduler: Any, param: torch.nn.Parameter, step: int, steps: int) -> None:
    """Set the lr of ``param``'s group(s) for the next optimizer step to the scheduled lr times ``step / (steps + 1)``.

    ``step == 0`` means no re-warm-up is running: the scheduled lr is restored.
    """
    factor = step / (steps + 1) if step else 1.0
    for index, group in param_groups_of(optimizer, param):
        group["lr"] = scheduled_lr(lr_scheduler, index, group) * factor


def snapshot_state(optimizer: Any, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    """Deep copies of the optimizer state of ``params`` (for racing several arms from one training state)."""
    optimizer = inner_optimizer(optimizer)
    return [
        {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in optimizer.state.get(p, {}).items()}
        for p in params
    ]


def restore_state(optimizer: Any, params: list[torch.nn.Parameter], states: list[dict[str, Any]]) -> None:
    """Put copies of ``states`` (from :func:`snapshot_state`) back as the optimizer state of ``params``."""
    optimizer = inner_optimizer(optimizer)
    for param, state in zip(params, states, strict=True):
        if state:
            optimizer.state[param] = {
                k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()
            }
        else:
            optimizer.state.pop(param, None)


# Restart shapes

RESTART_SHAPES: tuple[str, ...] = get_args(RestartName)


def shape_errors(
    restart: str, alphas: Sequence[float], partial_tokens: int | None, num_virtual_tokens: int | None = None
) -> list[str]:
    """What is wrong with the restart-shape settings, one phrase per bad setting (empty: all good).

    ``num_virtual_tokens`` (when known) bounds ``partial_tokens``; it is only checked for ``restart="partial"``.
    """
    errors = []
    if restart not in RESTART_SHAPES:
        errors.append(f"catalyst_restart must be one of {RESTART_SHAPES} (got {restart!r})")
    if not alphas:
        errors.append("catalyst_blend_alphas needs at least one alpha in (0, 1]")
    bad = [a for a in alphas if not 0 < a <= 1]  # NaN fails too
    if bad:
        errors.append(f"catalyst_blend_alphas must each be in (0, 1] (got {list(alphas)})")
    if partial_tokens is not None and partial_tokens < 1:
        errors.append(f"catalyst_partial_tokens must be >= 1 or None (got {partial_tokens})")
    elif restart == "partial" and num_virtual_tokens is not None and (partial_tokens or 1) > num_virtual_tokens:
        errors.append(
            f"catalyst_partial_tokens must be at most num_virtual_tokens = {num_virtual_tokens} (got {partial_tokens})"
        )
    return errors


def partial_count(partial_tokens: int | None, num_virtual_tokens: int) -> int:
    """How many positions a partial restart writes: ``partial_tokens``, or half the prompt (rounded up) for None."""
    return partial_tokens if partial_tokens is not None else (num_virtual_tokens + 1) // 2


def partial_positions(nearness: torch.Tensor, count: int) -> list[int]:
    """The ``count`` positions a partial restart writes, in increasing order: the highest ``nearness`` (one value per
    virtual token, higher is nearer to its nearest vocabulary token), ties to the earlier position."""
    order = torch.sort(-nearness.detach().float().cpu(), stable=True).indices
    return sorted(order[:count].tolist())


def round_shapes(restart: str, alphas: Sequence[float], positions: Sequence[int] | None = None) -> list[RestartShape]:
    """The shapes every proposal (and every random control) of a round starts in: one per alpha for ``"blend"``."""
    if restart == "blend":
        return [RestartShape("blend", alpha=float(a)) for a in alphas]
    if restart == "partial":
        return [RestartShape("partial", positions=list(positions or []))]
    return [RestartShape()]


def _rows(positions: Sequence[int], num_virtual_tokens: int, total_rows: int) -> list[int]:
    """Rows of the soft prompt that hold ``positions``: one per block of ``num_virtual_tokens`` rows."""
    return [block + p for block in range(0, total_rows, num_virtual_tokens) for p in positions]


def shaped_start(
    shape: RestartShape, incumbent: torch.Tensor, proposal: torch.Tensor, num_virtual_tokens: int
) -> torch.Tensor:
    """The soft prompt a restart of ``shape`` starts from (a new tensor; ``proposal``: the proposal's embeddings)."""
    incumbent, proposal = incumbent.detach(), proposal.detach().to(incumbent.device, incumbent.dtype)
    if shape.name == "blend":
        return incumbent + shape.alpha * (proposal - incumbent)  # exactly the stated point (torch.lerp is not)
    if shape.name == "partial":
        start = incumbent.clone()
        rows = _rows(shape.positions or [], num_virtual_tokens, incumbent.shape[0])
        start[rows] = proposal[rows]
        return start
    return proposal.clone()


def reshaped_optimizer_state(
    state: dict[str, Any], shape: RestartShape, num_virtual_tokens: int, param_shape: torch.Size
) -> dict[str, Any] | None:
    """What an arm of ``shape`` inherits from the incumbent's optimizer ``state`` of the soft prompt.

    - ``"full"`` and ``"blend"``: nothing (``{}``, a fresh state, with the usual re-warm-up). A blended start is a new
      point: the incumbent's moments describe the gradients where the incumbent stands, and keeping stale moments
      at a new start is the research code's flaw that the reset and re-warm-up replaced; every row has moved.
    - ``"partial"``: the incumbent's state, with the rows of the written positions zeroed. The untouched vectors are
      exactly where their moments were measured, so their moments stay valid and keep their pace (throwing them
      away would waste what the stage learned about their curvature); the written rows start from zero moments,
      as a fresh start would. Scalars such as Adam's ``step`` are kept, so the zeroed rows get no bias correction;
      the re-warm-up keeps their first steps small.

    Returns None when the state is not laid out row by row like the prompt (e.g. Adafactor's factored moments):
    the caller then resets it, as for a full restart.
    """
    if shape.name != "partial" or not state:
        return {}
    rows = _rows(shape.positions or [], num_virtual_tokens, param_shape[0])
    kept: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            if value.shape != param_shape:
                return None
            value = value.detach().clone()
            value[rows] = 0
        elif isinstance(value, torch.Tensor):
            value = value.detach().clone()
        kept[key] = value
    return kept


def reshape_optimizer_state_(
    optimizer: Any, param: torch.nn.Parameter, shape: RestartShape, num_virtual_tokens: int
) -> bool:
    """Apply :func:`reshaped_optimizer_state` in place to ``param``'s state in ``optimizer`` (a torch optimizer or
    Accelerate's wrapper). False when it cannot (no row-wise state held for ``param`` itself, e.g. DeepSpeed's flat
    partitions): the caller resets the state instead."""
    inner = inner_optimizer(optimizer)
    state = getattr(inner, "state", {}).get(param)
    if not state:
        return False
    kept = reshaped_optimizer_state(state, shape, num_virtual_tokens, param.shape)
    if kept is None:
        return False
    inner.state[param] = kept
    return True


__all__ = [
    "RESTART_SHAPES",
    "partial_count",
    "partial_positions",
    "reshape_optimizer_state_",
    "reshaped_optimizer_state",
    "round_shapes",
    "shape_errors",
    "shaped_start",
]


# The optimizer state at a restart, also in DeepSpeed ZeRO-3's partitions


@dataclass(frozen=True)
class OptimizerReset:
    """What :func:`reset_optimizer_state` did: truthy when the parameter's optimizer state was reset.

    ``reason`` says why not (``done`` False), or what a reset could not cover (``done`` True).
    """

    done: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.done


@torch.no_grad()
def reset_optimizer_state(optimizer, param: torch.nn.Parameter, mode: str = "reset") -> OptimizerReset:
    """Forget ``param``'s optimizer state (Adam's moments and step), as if the optimizer had never seen it.

    ``mode`` (:data:`RESTART_OPTIMIZERS`): ``"reset"`` forgets everything (below);
    ``"keep_second_moment"`` zeroes only the first moment (``exp_avg``, ``momentum_buffer``) and keeps the second
    moment and the step, also in ZeRO-3's partitions; ``"keep"`` changes nothing.

    - A torch optimizer, also inside Accelerate's ``AcceleratedOptimizer`` (DDP, FSDP2, one process): the state entry
      is emptied, so the next step starts it afresh.
    - DeepSpeed ZeRO-3: the state lives in flat fp32 partitions, one per parameter (sub-)group, of which each rank
      holds a slice; every rank zeroes its own slice of ``param``'s per-element state (``exp_avg``, ``exp_avg_sq``,
      ...) through DeepSpeed's ``safe_set_local_optimizer_state``. Call it on every rank. A per-group scalar such as
      Adam's ``step`` is reset too when ``param`` is alone in its flat group; otherwise it is shared with the other
      parameters and kept (then ``reason`` says so: bias correction does not restart).
    Returns a falsy :class:`OptimizerReset` with the reason when it cannot reset: no optimizer, ZeRO-1/2 (not
    implemented), optimizer state offloaded to NVMe, or a parameter the optimizer does not hold (FSDP1 flattens
    parameters into one ``FlatParameter``).
    """
    if mode not in RESTART_OPTIMIZERS:
        raise ValueError(f"mode must be one of {RESTART_OPTIMIZERS} (got {mode!r})")
    if optimizer is None:
        return OptimizerReset(False, "there is no optimizer yet")
    if mode == "keep":
        return OptimizerReset(True, "the optimizer state is kept (catalyst_restart_optimizer='keep')")
    z3 = zero3_optimizer(param)
    if z3 is not None:
        return _reset_zero3(z3, param, first_moment_only=mode == "keep_second_moment")
    if has_zero12_mapping(param):
        return OptimizerReset(False, "DeepSpeed ZeRO stage 1/2 optimizer state is not reset (not implemented)")
    inner = inner_optimizer(optimizer)
    if param in inner.state:
        inner.state[param] = restarted_state(inner.state[param], mode)
        return OptimizerReset(True)
    if any(p is param for group in inner.param_groups for p in group["params"]):
        return OptimizerReset(True, "the optimizer holds no state for it yet")
    return OptimizerReset(
        False,
        f"the optimizer ({type(inner).__name__}) does not hold this parameter "
        "(FSDP1 flattens parameters into one FlatParameter)",
    )


def _reset_zero3(z3, param: torch.nn.Parameter, first_moment_only: bool = False) -> OptimizerReset:
    if not param.requires_grad:
        return OptimizerReset(False, "the parameter is frozen, DeepSpeed holds no optimizer state for it")
    try:
        group_idx, _, num_elements = zero3_grad_position(z3, param)
        flat = zero3_flat_partition(z3, group_idx)
    except (AttributeError, KeyError, IndexError) as exc:  # a DeepSpeed whose internals moved
        return OptimizerReset(False, f"this DeepSpeed's ZeRO-3 optimizer layout is not the one expected ({exc!r})")
    if zero3_subgroup_offloaded(z3, group_idx):
        return OptimizerReset(False, "the ZeRO-3 optimizer state is offloaded to NVMe (not reset)")
    state = z3.optimizer.state.get(flat)
    if not state:
        return OptimizerReset(True, "the optimizer holds no state for it yet")
    from deepspeed.utils import safe_set_local_optimizer_state

    alone = int(num_elements) == flat.numel()
    shared: list[str] = []
    for key, value in list(state.items()):
        if not torch.is_tensor(value) or (first_moment_only and key not in FIRST_MOMENT_KEYS):
            continue
        if value.numel() == flat.numel() and value.numel() > 1:
            safe_set_local_optimizer_state(param, torch.zeros_like(param.ds_tensor, dtype=value.dtype), key)
        elif alone:
            value.zero_()
        else:
            shared.append(key)
    if shared:
        return OptimizerReset(
            True,
            f"per-element state zeroed; {', '.join(shared)} is shared with the {flat.numel() - num_elements} other "
            "elements of its ZeRO-3 flat parameter group and kept (put the prompt in a parameter group of its own "
            "to reset it too)",
        )
    return OptimizerReset(True)
