"""PEFT internals (verified on peft 0.21.2; the supported range is :data:`SUPPORTED_PEFT`, checked on import).

PEFT has no plug-in point for a new prompt-learning method: ``PeftType`` is a closed enum, and ``PeftModel`` builds
prompt encoders only for built-in types. This module holds the three reaches into PEFT's internals that registering
CATALYST needs (``peft_catalyst.tuners.catalyst.registration`` says why each is used), and the class of the
``AutoPeftModel*`` loaders that ``peft_catalyst.offline_models.use_packaged_models`` wraps while switched on;
``tests/test_compat.py`` fails loudly if PEFT moves.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import peft
from packaging.version import Version
from peft.utils.peft_types import PeftType

VERIFIED = "peft 0.21.2"
SUPPORTED_PEFT = (">=0.21.0", "<0.22")
_MIN_PEFT, _MAX_PEFT = Version("0.21.0"), Version("0.22")

if not _MIN_PEFT <= Version(Version(peft.__version__).base_version) < _MAX_PEFT:
    raise ImportError(
        f"peft-catalyst builds on PEFT internals and supports peft{','.join(SUPPORTED_PEFT)}; found peft "
        f"{peft.__version__}. Install a supported release: pip install 'peft{','.join(SUPPORTED_PEFT)}'."
    )


def extend_peft_type(name: str) -> PeftType:
    """Add a member to the closed ``PeftType`` enum (idempotent) through the enum's member tables.

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


def wrap_setup_prompt_encoder(setup: Callable[[Callable[..., Any], Any, str], Any]) -> None:
    """Route ``PeftModel._setup_prompt_encoder(self, adapter_name)`` through ``setup(original, self, adapter_name)``
    (idempotent: a second call keeps the first wrapper)."""
    from peft import peft_model as pm

    original = pm.PeftModel._setup_prompt_encoder
    if getattr(original, "_catalyst_patched", False):
        return

    @functools.wraps(original)
    def _setup_prompt_encoder(self, adapter_name: str):
        return setup(original, self, adapter_name)

    _setup_prompt_encoder._catalyst_patched = True
    pm.PeftModel._setup_prompt_encoder = _setup_prompt_encoder


@contextlib.contextmanager
def prompt_tuning_tuner(tuner_cls: type) -> Iterator[None]:
    """Within the block, PEFT builds ``tuner_cls`` where it would build PROMPT_TUNING's ``PromptEmbedding``.

    It swaps ``peft.peft_model.PEFT_TYPE_TO_TUNER_MAPPING[PROMPT_TUNING]`` (restored afterwards, also on error); the
    mapping is global, so the caller holds a lock.
    """
    from peft import peft_model as pm

    mapping = pm.PEFT_TYPE_TO_TUNER_MAPPING
    saved = mapping[PeftType.PROMPT_TUNING]
    mapping[PeftType.PROMPT_TUNING] = tuner_cls
    try:
        yield
    finally:
        mapping[PeftType.PROMPT_TUNING] = saved


def auto_peft_model_base() -> type:
    """The class that holds ``from_pretrained`` of every ``AutoPeftModel*`` class: ``peft.auto._BaseAutoPeftModel``
    (verified on peft 0.21.2); :func:`peft_catalyst.offline_models.use_packaged_models` wraps it while switched on."""
    from peft.auto import _BaseAutoPeftModel

    return _BaseAutoPeftModel
