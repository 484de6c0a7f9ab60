"""DeepSpeed ZeRO internals (verified on DeepSpeed 0.19.8). DeepSpeed is not imported: the functions receive its
objects (a parameter, or the ZeRO-3 optimizer that :func:`zero3_optimizer` returns)."""

from __future__ import annotations

from typing import Any

VERIFIED = "deepspeed 0.19.8"


def zero3_optimizer(param: Any) -> Any | None:
    """The ZeRO-3 optimizer that holds ``param``'s partition (``param._z3_optimizer``); None outside ZeRO-3."""
    if not hasattr(param, "ds_id"):
        return None
    return getattr(param, "_z3_optimizer", None)


def has_zero12_mapping(param: Any) -> bool:
    """Whether ZeRO-1/2 (or DeepSpeed's bf16 optimizer) mapped ``param`` to an fp32 partition (``_hp_mapping``)."""
    return hasattr(param, "_hp_mapping")


def zero3_grad_position(z3: Any, param: Any) -> tuple[int, int, int]:
    """``(sub_group, offset, num_elements)`` of ``param`` in the ZeRO-3 flat partitions (``grad_position``).

    Raises ``AttributeError``/``KeyError``/``IndexError`` when the layout is not the one verified.
    """
    sub_group, offset, num_elements = z3.grad_position[z3.get_param_id(param)]
    return int(sub_group), int(offset), int(num_elements)


def zero3_flat_partition(z3: Any, sub_group: int) -> Any:
    """This rank's flat fp32 partition of sub-group ``sub_group``: the tensor the torch optimizer keeps state for
    (``fp32_partitioned_groups_flat``)."""
    return z3.fp32_partitioned_groups_flat[sub_group]


def zero3_param_group_index(z3: Any, param: Any) -> int:
    """Index of the model parameter group that ``param``'s ZeRO-3 sub-group came from (``sub_group_to_group_id``)."""
    return z3.sub_group_to_group_id[zero3_grad_position(z3, param)[0]]


def zero3_subgroup_offloaded(z3: Any, sub_group: int) -> bool:
    """Whether sub-group ``sub_group``'s optimizer state is swapped out to NVMe (``_swappable_optimizer_subgroup``)."""
    return bool(z3._swappable_optimizer_subgroup(sub_group))
