"""The CATALYST PEFT method: config beside the module it configures, as in ``peft.tuners``; registered on import."""

from .config import CatalystConfig
from .model import CatalystEmbedding
from .registration import CATALYST, register

register(CatalystConfig, CatalystEmbedding)

__all__ = ["CATALYST", "CatalystConfig", "CatalystEmbedding"]
