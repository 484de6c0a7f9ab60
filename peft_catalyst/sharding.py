"""Full views of sharded parameters, so the soft prompt can be read and written under DeepSpeed ZeRO-3 and FSDP.

- DeepSpeed ZeRO-3: PEFT's ``gather_params_ctx`` (``deepspeed.zero.GatheredParameters``); a write is made on every
  rank and broadcast from rank 0 (``modifier_rank=0``).
- FSDP2 (``fully_shard``): parameters are ``DTensor``s; reads use ``full_tensor()``, writes ``distribute_tensor``.
- FSDP1 (``FullyShardedDataParallel``): ``summon_full_params`` on the outermost FSDP module, with write-back.
Without sharding every function here is a plain tensor access.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from peft.utils.integrations import gather_params_ctx

from peft_catalyst.compat.deepspeed import (
    has_zero12_mapping,
    zero3_flat_partition,
    zero3_grad_position,
    zero3_optimizer,
    zero3_subgroup_offloaded,
)
from peft_catalyst.restart import FIRST_MOMENT_KEYS, RESTART_OPTIMIZERS, inner_optimizer, restarted_state


def is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is an FSDP2 ``DTensor`` shard (False on a torch without distributed)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(tensor, DTensor)


def fsdp1_root(model: torch.nn.Module) -> torch.nn.Module | None:
    """The outermost ``FullyShardedDataParallel`` wrapper around ``model`` (following ``.module``), if any."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        return None
    seen = 0
    while model is not None and seen < 8:
        if isinstance(model, FullyShardedDataParallel):
            return model
        model, seen = getattr(model, "module", None), seen + 1
    return None


def register_with_root_module(model: torch.nn.Module, param: torch.nn.Parameter) -> bool:
    """Under ZeRO-3, make ``param`` an external parameter of ``model`` (the module DeepSpeed wraps) before training.

    PEFT's ``get_prompt`` reads the soft prompt's ``weight.device`` from the root model's forward. DeepSpeed registers
    a parameter read there as the root's external parameter only when it is not gathered at that moment, so the
    registration happened at a different step in a fresh run (the first) than in a resumed one (after the first
    round re-partitioned the prompt), and a resumed run died in DeepSpeed's recorded fetch trace ("tracing error").
    Registering it before the first step makes every step fetch alike. Returns whether it registered.
    """
    if not hasattr(param, "ds_id"):
        return False
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    register_external_parameter(model, param)
    return True


@contextlib.contextmanager
def gathered(model: torch.nn.Module, params: Iterable[torch.nn.Parameter], writeback: bool) -> Iterator[None]:
    """Within the block, ``params`` hold their full values (ZeRO-3, FSDP1); with ``writeback`` changes persist.

    FSDP2 ``DTensor`` parameters need no context: use :func:`full_tensor` and :func:`assign_full_`.
    """
    params = list(params)
    root = fsdp1_root(model)
    if root is not None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(root, writeback=writeback, with_grads=False):
            yield
        return
    with gather_params_ctx(params, modifier_rank=0 if writeback else None):
        yield


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (all-gathered for an FSDP2 ``DTensor``; the tensor itself otherwise)."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def num_rows(tensor: torch.Tensor) -> int:
    """Rows of the full tensor, also for ZeRO-3 placeholders (``ds_shape``) and ``DTensor``s."""
    ds_shape = getattr(tensor, "ds_shape", None)
    return int(ds_shape[0]) if ds_shape is not None else int(tensor.shape[0])


@torch.no_grad()
def assign_full_(param: torch.Tensor, value: torch.Tensor) -> None:
    """Overwrite ``param`` in place with the full ``value`` (same on every rank); the Parameter object is kept."""
    if is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        value = value.to(device=param.to_local().device, dtype=param.dtype)
        param.copy_(distribute_tensor(value, param.device_mesh, param.placements))
    else:
        param.copy_(value.to(device=param.device, dtype=param.dtype))


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

    ``mode`` (:data:`~peft_catalyst.restart.RESTART_OPTIMIZERS`): ``"reset"`` forgets everything (below);
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
