"""CATALYST's ``PeftModel`` classes: PEFT's own classes, subclassed, with the fixes prompt tuning needs.

A ``PeftModel`` that sets up a CATALYST prompt encoder becomes an instance of the CATALYST subclass of its own class
(``PeftModelForCausalLM`` -> :class:`CatalystPeftModelForCausalLM`, ...), in :func:`setup_prompt_encoder` (the one
hook that registering the type needs, see :mod:`peft_catalyst.tuners.catalyst.registration`). PEFT's classes are
left as they are, so a plain ``PROMPT_TUNING`` model in the same process behaves exactly as without peft-catalyst;
:func:`apply_catalyst_fixes` gives such a model the same fixes on request (``peft_catalyst.pipeline`` does for
the prompt adapters it loads). Each override says why it is needed; ``tests/test_patches.py`` fails loudly when the
PEFT code they build on moves. ``isinstance(model, PeftModelForCausalLM)`` stays true, and saving, loading,
``Trainer``, TRL, DDP, FSDP2 (which subclasses the class again) and ZeRO-3 see PEFT's methods below ours.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import transformers
from peft import peft_model as pm
from peft.utils.peft_types import PeftType

from peft_catalyst.compat.peft import prompt_tuning_tuner

from .model import CatalystEmbedding
from .registration import CATALYST

__all__ = [
    "CatalystPeftModel",
    "CatalystPeftModelForCausalLM",
    "CatalystPeftModelForFeatureExtraction",
    "CatalystPeftModelForQuestionAnswering",
    "CatalystPeftModelForSeq2SeqLM",
    "CatalystPeftModelForSequenceClassification",
    "CatalystPeftModelForTokenClassification",
    "apply_catalyst_fixes",
    "catalyst_model_class",
    "setup_prompt_encoder",
]

#: The prompt types whose soft prompt is one embedding row per virtual token: the fixes below apply to them.
_PROMPT_EMBEDDING_TYPES = (PeftType.PROMPT_TUNING, CATALYST)

# A lock for the few places below that present a CATALYST config to PEFT as PROMPT_TUNING for one call.
_SWAP_LOCK = threading.RLock()


@contextlib.contextmanager
def _as_prompt_tuning(config: Any) -> Iterator[None]:
    """Within the block, ``config.peft_type`` reads PROMPT_TUNING (restored afterwards, also on error).

    Why: PEFT's seq2seq forward/generate and its prompt-encoder set-up branch on ``peft_type in (PROMPT_TUNING, ...)``;
    CATALYST must take exactly those branches. Reusing them keeps us in step with PEFT instead of copying its code.
    """
    if config.peft_type != CATALYST:
        yield
        return
    with _SWAP_LOCK:
        config.peft_type = PeftType.PROMPT_TUNING
        try:
            yield
        finally:
            config.peft_type = CATALYST


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 ``DTensor`` shard (gathered); any other tensor as it is."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return tensor
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class CatalystPeftModel(pm.PeftModel):
    """``PeftModel`` with a soft prompt that can be saved under FSDP2 (base of every CATALYST model class)."""

    def get_prompt_embedding_to_save(self, adapter_name: str) -> torch.Tensor:
        """Read the soft prompt to save from the parameter, gathered when it is an FSDP2 ``DTensor``.

        Why: PEFT runs the prompt encoder's embedding lookup on a plain index tensor, which fails on a ``DTensor``
        weight ("mixed torch.Tensor and DTensor"), so ``save_pretrained`` and the portable export broke under FSDP2.
        For a prompt embedding that lookup of ``arange(rows)`` is the weight itself: identical values.
        """
        if self.peft_config[adapter_name].peft_type not in _PROMPT_EMBEDDING_TYPES:
            return super().get_prompt_embedding_to_save(adapter_name)
        return _full(self.prompt_encoder[adapter_name].embedding.weight).detach().cpu()


class CatalystPeftModelForCausalLM(CatalystPeftModel, pm.PeftModelForCausalLM):
    """``PeftModelForCausalLM`` whose cached ``generate`` equals greedy decoding without cache."""

    def prepare_inputs_for_generation(self, *args: Any, task_ids: torch.Tensor | None = None, **kwargs: Any):
        """Inject the virtual tokens at prefill only, and give positions that follow the attention mask.

        Why: with transformers 5.x, ``generate`` hands the KV cache over as ``cache``, but PEFT 0.21 only looks for
        ``past_key_values``. It therefore believes every decode step is the prefill and re-injects the virtual
        tokens in front of the newest token, so cached generation differs from greedy decoding without cache. PEFT
        also drops ``position_ids``, so a left-padded row sees its padding as positions and generates something else
        than the same row alone. Here the virtual tokens go in only when the cache is empty, the attention mask is
        always extended by them, and the position ids come from the attention mask (virtual tokens at 0..n-1, real
        tokens from n).
        """
        peft_config = self.active_peft_config
        if peft_config.peft_type not in _PROMPT_EMBEDDING_TYPES:
            return super().prepare_inputs_for_generation(*args, task_ids=task_ids, **kwargs)
        model_kwargs = self.base_model_prepare_inputs_for_generation(*args, **kwargs)
        attention_mask = model_kwargs.get("attention_mask")
        if attention_mask is not None and not (isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2):
            # Compilable (static) caches get a prebuilt 4-D mask that we cannot extend correctly; keep PEFT's path.
            warnings.warn(
                "peft-catalyst corrects generation for dynamic caches only; with a static/compilable cache PEFT's own "
                "(possibly wrong) prompt-tuning generation is used. Pass cache_implementation='dynamic' or "
                "use_cache=False.",
                stacklevel=3,
            )
            return super().prepare_inputs_for_generation(*args, task_ids=task_ids, **kwargs)

        n = peft_config.num_virtual_tokens
        input_ids = model_kwargs.get("input_ids")
        cache = model_kwargs.get("cache", model_kwargs.get("past_key_values"))
        prefill = cache is None or (isinstance(cache, transformers.Cache) and cache.get_seq_length() == 0)
        batch_size = input_ids.shape[0] if input_ids is not None else model_kwargs["inputs_embeds"].shape[0]

        if attention_mask is not None:
            prefix = attention_mask.new_ones((batch_size, n))
            model_kwargs["attention_mask"] = torch.cat((prefix, attention_mask), dim=1)

        position_ids = model_kwargs.pop("position_ids", None)
        model_kwargs.pop("cache_position", None)
        model_kwargs.pop("token_type_ids", None)

        if prefill:
            if model_kwargs.get("inputs_embeds") is not None:
                inputs_embeds = model_kwargs["inputs_embeds"]
            else:
                inputs_embeds = self.word_embeddings(input_ids)
            prompts = self.get_prompt(batch_size=batch_size, task_ids=task_ids).to(inputs_embeds.dtype)
            model_kwargs["inputs_embeds"] = torch.cat((prompts, inputs_embeds), dim=1)
            model_kwargs["input_ids"] = None
        if position_ids is not None:
            position_ids = position_ids.expand(batch_size, -1) + n
            if prefill:
                virtual = torch.arange(n, dtype=position_ids.dtype, device=position_ids.device)
                position_ids = torch.cat((virtual.expand(batch_size, n), position_ids), dim=1)
            model_kwargs["position_ids"] = position_ids
        return model_kwargs


class CatalystPeftModelForSeq2SeqLM(CatalystPeftModel, pm.PeftModelForSeq2SeqLM):
    """``PeftModelForSeq2SeqLM`` that runs CATALYST through PROMPT_TUNING's branches of ``forward`` and ``generate``.

    Why: both methods test ``peft_type in [PROMPT_TUNING, P_TUNING]`` and raise ``NotImplementedError`` (generate) or
    take a wrong branch (forward) for any other prompt-learning type.
    """

    def forward(self, *args: Any, **kwargs: Any):
        with _as_prompt_tuning(self.active_peft_config):
            return super().forward(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any):
        with _as_prompt_tuning(self.active_peft_config):
            return super().generate(*args, **kwargs)


class CatalystPeftModelForTokenClassification(CatalystPeftModel, pm.PeftModelForTokenClassification):
    """``PeftModelForTokenClassification`` whose labels are padded by ``-100`` for the virtual tokens.

    Why: PEFT 0.21 prepends ``num_virtual_tokens`` embeddings but passes the labels unchanged, so any forward with
    labels fails with a batch-size mismatch in the loss. Causal LMs already get this padding in PEFT; this does the
    same. Logits keep the virtual positions first, as for causal LMs.
    """

    def forward(self, *args: Any, labels: torch.Tensor | None = None, **kwargs: Any):
        config = self.active_peft_config
        if labels is not None and config.peft_type in _PROMPT_EMBEDDING_TYPES:
            prefix = labels.new_full((labels.shape[0], config.num_virtual_tokens), -100)
            labels = torch.cat((prefix, labels), dim=1)
        return super().forward(*args, labels=labels, **kwargs)


# The overrides above take ``*args, **kwargs`` and pass them on: show PEFT's parameters to whoever inspects them.
for _ours, _peft, _names in (
    (CatalystPeftModelForSeq2SeqLM, pm.PeftModelForSeq2SeqLM, ("forward", "generate")),
    (CatalystPeftModelForTokenClassification, pm.PeftModelForTokenClassification, ("forward",)),
):
    for _name in _names:
        vars(_ours)[_name].__signature__ = inspect.signature(getattr(_peft, _name))


class CatalystPeftModelForSequenceClassification(CatalystPeftModel, pm.PeftModelForSequenceClassification):
    """``PeftModelForSequenceClassification`` with :class:`CatalystPeftModel`'s saving."""


class CatalystPeftModelForQuestionAnswering(CatalystPeftModel, pm.PeftModelForQuestionAnswering):
    """``PeftModelForQuestionAnswering`` with :class:`CatalystPeftModel`'s saving."""


class CatalystPeftModelForFeatureExtraction(CatalystPeftModel, pm.PeftModelForFeatureExtraction):
    """``PeftModelForFeatureExtraction`` with :class:`CatalystPeftModel`'s saving."""


#: PEFT's class -> CATALYST's subclass of it (defined above, so that they pickle by name); another subclass of
#: ``PeftModel`` (a user's) gets one made on first use (:func:`catalyst_model_class`).
_CLASSES: dict[type, type] = {
    pm.PeftModel: CatalystPeftModel,
    pm.PeftModelForCausalLM: CatalystPeftModelForCausalLM,
    pm.PeftModelForSeq2SeqLM: CatalystPeftModelForSeq2SeqLM,
    pm.PeftModelForTokenClassification: CatalystPeftModelForTokenClassification,
    pm.PeftModelForSequenceClassification: CatalystPeftModelForSequenceClassification,
    pm.PeftModelForQuestionAnswering: CatalystPeftModelForQuestionAnswering,
    pm.PeftModelForFeatureExtraction: CatalystPeftModelForFeatureExtraction,
}
_CLASSES_LOCK = threading.Lock()


def catalyst_model_class(cls: type) -> type:
    """CATALYST's subclass of the ``PeftModel`` class ``cls`` (``cls`` itself when it is one already).

    For PEFT's own classes it is one of the classes above; another subclass of ``PeftModel`` (a user's) gets one made
    once and cached, whose methods are those of the class above for its closest PEFT class, then ``cls``'s.
    """
    if issubclass(cls, CatalystPeftModel):
        return cls
    with _CLASSES_LOCK:
        if cls not in _CLASSES:
            fixes = next(_CLASSES[base] for base in cls.__mro__ if base in _CLASSES)
            _CLASSES[cls] = type(f"Catalyst{cls.__name__}", (fixes, cls), {"__module__": __name__})
        return _CLASSES[cls]


def apply_catalyst_fixes(model: pm.PeftModel) -> pm.PeftModel:
    """Give a prompt-tuned ``model`` CATALYST's model class in place (and return it): cached generation as greedy
    decoding, token-classification labels padded, saving under FSDP2; for PROMPT_TUNING as for CATALYST adapters.

    A CATALYST model has it already; a plain PROMPT_TUNING model keeps PEFT's behaviour unless this is called.
    """
    if not isinstance(model, pm.PeftModel):
        raise TypeError(f"apply_catalyst_fixes expects a peft.PeftModel, got {type(model).__name__}")
    model.__class__ = catalyst_model_class(type(model))
    return model


def setup_prompt_encoder(original: Callable[[Any, str], Any], model: Any, adapter_name: str) -> Any:
    """``PeftModel``'s prompt-encoder set-up for CATALYST; PEFT's ``original``, unchanged, for every other type.

    Why: ``PeftModel`` builds prompt encoders only for built-in prompt types (else "Not supported"). Its
    PROMPT_TUNING branch looks the encoder class up in PEFT's tuner mapping, so for the duration of the call that
    entry points at ``CatalystEmbedding`` (constructed once: no double init, no extra RNG draws), and the config reads
    as PROMPT_TUNING. Then the model becomes an instance of CATALYST's subclass of its class
    (:func:`apply_catalyst_fixes`).
    """
    config = model.peft_config[adapter_name]
    if config.peft_type != CATALYST:
        return original(model, adapter_name)
    with _SWAP_LOCK, _as_prompt_tuning(config), prompt_tuning_tuner(CatalystEmbedding):
        result = original(model, adapter_name)
    apply_catalyst_fixes(model)
    return result
