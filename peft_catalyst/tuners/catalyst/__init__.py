"""The CATALYST PEFT method: config beside the module it configures, as in ``peft.tuners``."""

from .config import CatalystConfig
from .model import CatalystEmbedding

__all__ = ["CatalystConfig", "CatalystEmbedding"]
