"""The CATALYST PEFT type and its registration with PEFT, beside the tuner it registers.

PEFT has no plug-in point for a new prompt-learning method: ``PeftType`` is a closed enum, and ``register_peft_method``
only accepts names that are already members. This module adds the member and registers ``CatalystConfig`` and
``CatalystEmbedding`` so that save/load, ``from_pretrained`` and the ``AutoPeftModel*`` classes handle CATALYST like a
built-in method. It imports nothing of peft-catalyst at module level, so ``config.py`` can import :data:`CATALYST`.
"""

from __future__ import annotations

import logging

from peft.utils.peft_types import PeftType

logger = logging.getLogger(__name__)

__all__ = ["CATALYST", "register"]


def _extend_peft_type(name: str) -> PeftType:
    """Add a member to the closed ``PeftType`` enum (idempotent).

    Why: ``register_peft_method`` only accepts names that are already members, and PEFT looks configs and tuners up by
    ``PeftType`` everywhere (including when it reads ``"peft_type": "CATALYST"`` from ``adapter_config.json``).
    """
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    type.__setattr__(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    return member


#: The CATALYST member of ``peft.PeftType``.
CATALYST = _extend_peft_type("CATALYST")


def register(config_cls: type, model_cls: type) -> None:
    """Register CATALYST's config and tuner classes with PEFT (idempotent); the package passes them in, so this
    module needs nothing of peft-catalyst."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    if CATALYST in PEFT_TYPE_TO_CONFIG_MAPPING:
        return
    register_peft_method(name="catalyst", config_cls=config_cls, model_cls=model_cls)
    logger.debug("registered the CATALYST PEFT method")
