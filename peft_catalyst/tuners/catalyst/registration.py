"""The CATALYST PEFT type and its registration with PEFT, beside the tuner it registers.

PEFT has no plug-in point for a new prompt-learning method: ``PeftType`` is a closed enum, ``register_peft_method``
only accepts names that are already members, and ``PeftModel``'s prompt-encoder set-up raises "Not supported" for
any prompt type that is not built in. Registering CATALYST therefore takes three steps, all here: add the member
(through ``peft_catalyst.compat.peft``), register ``CatalystConfig`` and ``CatalystEmbedding`` so that save/load,
``from_pretrained`` and the ``AutoPeftModel*`` classes handle CATALYST like a built-in method, and route the
prompt-encoder set-up through a hook that builds CATALYST's encoder and calls PEFT's original, unchanged, for every
other type. That hook is the only method of PEFT's that importing peft-catalyst replaces. This module imports
nothing of peft-catalyst but the compatibility layer, so ``config.py`` can import :data:`CATALYST`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from peft_catalyst.compat.peft import extend_peft_type, wrap_setup_prompt_encoder

logger = logging.getLogger(__name__)

__all__ = ["CATALYST", "register"]


#: The CATALYST member of ``peft.PeftType``.
CATALYST = extend_peft_type("CATALYST")


def register(
    config_cls: type, model_cls: type, setup_prompt_encoder: Callable[[Callable[..., Any], Any, str], Any]
) -> None:
    """Register CATALYST's config and tuner classes with PEFT, and its prompt-encoder set-up (idempotent).

    ``setup_prompt_encoder(original, model, adapter_name)`` runs in place of ``PeftModel``'s prompt-encoder set-up
    (``peft_catalyst.compat.peft.wrap_setup_prompt_encoder``); it must call ``original(model, adapter_name)`` for any
    type but CATALYST. The package passes the classes and the hook in, so this module needs nothing of peft-catalyst.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    wrap_setup_prompt_encoder(setup_prompt_encoder)
    if CATALYST in PEFT_TYPE_TO_CONFIG_MAPPING:
        return
    register_peft_method(name="catalyst", config_cls=config_cls, model_cls=model_cls)
    logger.debug("registered the CATALYST PEFT method")
