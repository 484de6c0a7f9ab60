"""Restart shapes (``catalyst_restart``): where a restart from a proposal starts, and what it keeps of the incumbent.

A full restart throws away everything the stage learned; at a plateau that is why it never wins (measured: fresh
starts won 1 of 36 races). Population training perturbs the weights a member has instead of resetting them, and
the other two shapes do the same with a proposal:

- ``"full"``: the proposal's token embeddings (the restart as it always was);
- ``"blend"``: ``incumbent + alpha * (proposal - incumbent)`` in embedding space, one start per alpha;
- ``"partial"``: the incumbent with the proposal's tokens written at ``k`` positions, the others untouched.

Rule for the partial positions: the ``k`` positions whose trained vectors lie *nearest* to a vocabulary token (by the
projector's metric; ties go to the earlier position). Such a vector says little more than its nearest token does, so
swapping it for the proposal's token at that position loses least of what the stage learned; the vectors training
moved furthest from the vocabulary are kept. The proposal's token at position ``p`` goes to position ``p`` (its
place in the proposal's word order); with one block of virtual tokens per transformer submodule (seq2seq) every
block's row ``p`` is written.

Knows nothing of mentors, rounds or races: tensors and optimizer state in, tensors and optimizer state out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, get_args

import torch

from peft_catalyst.records import RestartName, RestartShape
from peft_catalyst.restart import inner_optimizer

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
