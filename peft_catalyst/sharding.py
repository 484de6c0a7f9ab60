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

import torch
from peft.utils.integrations import gather_params_ctx


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
