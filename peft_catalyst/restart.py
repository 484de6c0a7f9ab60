"""What a restart does to the optimizer: the prompt's own parameter group and its lr re-warm-up (the state reset,
which must also reach DeepSpeed's partitions, is ``peft_catalyst.sharding.reset_optimizer_state``).

Knows nothing of mentors: it acts on a torch optimizer (or Accelerate's wrapper of one) and the soft-prompt
parameter. The re-warm-up ramps the prompt group's lr to ``k / (W + 1)`` of the scheduled lr over ``W`` steps, so
the first updates from a new start are small (the research code kept the stale Adam moments instead).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from peft_catalyst.compat.deepspeed import zero3_optimizer, zero3_param_group_index

logger = logging.getLogger(__name__)


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
