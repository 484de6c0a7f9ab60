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


def _is_dtensor(tensor: torch.Tensor) -> bool:
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
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def num_rows(tensor: torch.Tensor) -> int:
    """Rows of the full tensor, also for ZeRO-3 placeholders (``ds_shape``) and ``DTensor``s."""
    ds_shape = getattr(tensor, "ds_shape", None)
    return int(ds_shape[0]) if ds_shape is not None else int(tensor.shape[0])


@torch.no_grad()
def assign_full_(param: torch.Tensor, value: torch.Tensor) -> None:
    """Overwrite ``param`` in place with the full ``value`` (same on every rank); the Parameter object is kept."""
    if _is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        value = value.to(device=param.to_local().device, dtype=param.dtype)
        param.copy_(distribute_tensor(value, param.device_mesh, param.placements))
    else:
        param.copy_(value.to(device=param.device, dtype=param.dtype))
