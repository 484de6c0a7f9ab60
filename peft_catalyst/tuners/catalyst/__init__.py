"""The CATALYST PEFT method: config beside the module it configures, as in ``peft.tuners``; registered on import.

Registering is all that importing does to PEFT (see :mod:`.registration`): the ``PeftType`` member, the config and
tuner classes, and the prompt-encoder set-up hook that builds CATALYST's encoder and gives the model CATALYST's
model class (:mod:`.peft_model`). PEFT's own classes and methods are left unchanged.
"""

from .config import CatalystConfig
from .model import CatalystEmbedding
from .peft_model import apply_catalyst_fixes, setup_prompt_encoder
from .registration import CATALYST, register

register(CatalystConfig, CatalystEmbedding, setup_prompt_encoder)

__all__ = ["CATALYST", "CatalystConfig", "CatalystEmbedding", "apply_catalyst_fixes"]
