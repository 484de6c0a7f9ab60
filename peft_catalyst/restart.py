"""What a restart does to the optimizer: the prompt's own parameter group and its lr re-warm-up (the state reset,
which must also reach DeepSpeed's partitions, is ``peft_catalyst.sharding.reset_optimizer_state``).

Knows nothing of mentors: it acts on a torch optimizer (or Accelerate's wrapper of one) and the soft-prompt
parameter. The re-warm-up ramps the prompt group's lr to ``k / (W + 1)`` of the scheduled lr over ``W`` steps, so
the first updates from a new start are small (the research code kept the stale Adam moments instead).

What a restart keeps of the optimizer state (``catalyst_restart_optimizer``, :data:`RESTART_OPTIMIZERS`): after a
full reset Adam's first updates are sign-like (``m / sqrt(v)`` is about +-1 per coordinate), so every coordinate
moves by about the lr whatever its gradient noise; keeping the second moment (and the step count, so no bias
correction inflates it) while zeroing the first makes the new start's first steps small and well scaled. A trust
region (:func:`project_to_radius_`) can also keep the prompt near its restart point for its first steps, as CPT
(arXiv 2410.17222) keeps its tokens near their start.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args

import torch

from peft_catalyst.compat.deepspeed import zero3_optimizer, zero3_param_group_index

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
