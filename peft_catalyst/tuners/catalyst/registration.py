"""The CATALYST PEFT type and its registration with PEFT, beside the tuner it registers.

PEFT has no plug-in point for a new prompt-learning method: ``PeftType`` is a closed enum, and ``register_peft_method``
only accepts names that are already members. This module adds the member (through ``peft_catalyst.compat.peft``) and
registers ``CatalystConfig`` and ``CatalystEmbedding`` so that save/load, ``from_pretrained`` and the
``AutoPeftModel*`` classes handle CATALYST like a built-in method. It imports nothing of peft-catalyst but the
compatibility layer, so ``config.py`` can import :data:`CATALYST`.
"""

from __future__ import annotations

import logging

from peft_catalyst.compat.peft import extend_peft_type

logger = logging.getLogger(__name__)

__all__ = ["CATALYST", "register"]


#: The CATALYST member of ``peft.PeftType``.
CATALYST = extend_peft_type("CATALYST")


def register(config_cls: type, model_cls: type) -> None:
    """Register CATALYST's config and tuner classes with PEFT (idempotent); the package passes them in, so this
    module needs nothing of peft-catalyst."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    if CATALYST in PEFT_TYPE_TO_CONFIG_MAPPING:
        return
    register_peft_method(name="catalyst", config_cls=config_cls, model_cls=model_cls)
    logger.debug("registered the CATALYST PEFT method")
