"""torch internals (verified on torch 2.13.0)."""

from __future__ import annotations

from typing import Any

VERIFIED = "torch 2.13.0"


def compiled_inner(model: Any) -> Any | None:
    """The module that ``torch.compile`` wrapped (``OptimizedModule._orig_mod``); None for any other object."""
    return getattr(model, "_orig_mod", None)


def tensor_version(tensor: Any) -> int:
    """``tensor``'s in-place version counter (``Tensor._version``): it changes whenever the storage is written in
    place, so ``(data_ptr, version)`` tells whether cached values derived from the tensor are still current."""
    return tensor._version
