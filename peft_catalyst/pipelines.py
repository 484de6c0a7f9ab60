"""``peft_catalyst.pipeline``: ``transformers.pipeline`` that also takes a prompt-learning adapter's folder or Hub id.

Why a function of our own rather than making ``transformers.pipeline(task, model="<adapter>")`` work: transformers
5 loads an adapter id through ``AutoModel*.from_pretrained``, whose PEFT integration injects adapter layers
(``peft.inject_adapter_in_model``); PEFT refuses prompt-learning adapters there ("create_and_replace does not support
prompt learning"), because a soft prompt is not a layer but an input that ``PeftModel.forward`` prepends. Making the
transformers entry point work would mean replacing parts of ``pipeline`` or ``from_pretrained`` inside transformers,
which would break with its releases. This function loads the base model and the adapter the supported way
(``PeftModel.from_pretrained``) and hands the model to ``transformers.pipeline``, which handles a loaded
``PeftModel`` correctly (tests/test_pipelines.py). Every other ``model`` goes to ``transformers.pipeline`` unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Iterator
from typing import Any

import transformers

from peft_catalyst.labels import saved_label_names

logger = logging.getLogger(__name__)

#: The pipeline task for each PEFT task type, used when ``task`` is not given.
TASK_FOR_TASK_TYPE = {
    "SEQ_CLS": "text-classification",
    "CAUSAL_LM": "text-generation",
    "SEQ_2_SEQ_LM": "text2text-generation",
    "TOKEN_CLS": "token-classification",
}


def pipeline(task: str | None = None, model: Any = None, *args: Any, **kwargs: Any):
    """``transformers.pipeline``, where ``model`` may also be the folder or Hub id of a prompt-learning adapter
    (CATALYST, PROMPT_TUNING, P_TUNING, PREFIX_TUNING): its base model (``base_model_name_or_path``, or the
    ``base_model=`` keyword: a Hub id or a folder) and the adapter are loaded with ``PeftModel.from_pretrained``, and
    the tokenizer comes from the adapter's folder when it holds one, else from the base model. ``revision``, ``token``
    and ``model_kwargs`` apply to both; ``dtype`` to the base. A packaged model's Hub id as the base loads offline
    from its asset package (:func:`peft_catalyst.use_packaged_models`, for this call only). A PROMPT_TUNING adapter
    gets CATALYST's generation fixes (:func:`peft_catalyst.tuners.catalyst.apply_catalyst_fixes`), so its portable
    copy generates what the CATALYST adapter generates."""
    from peft_catalyst.offline_models import packaged_model, packaged_models

    base_model = kwargs.pop("base_model", None)
    if isinstance(model, (str, os.PathLike)):
        config = _prompt_learning_config(str(model), kwargs)
        if config is not None:
            task = task or TASK_FOR_TASK_TYPE.get(str(config.task_type))
            if task is None:
                raise ValueError(f"Pass task=...: the adapter {str(model)!r} has task_type {config.task_type!r}.")
            if base_model is not None:
                config.base_model_name_or_path = str(base_model)
            packaged = packaged_model(config.base_model_name_or_path) is not None
            with packaged_models() if packaged else contextlib.nullcontext():
                model, tokenizer = _load(task, str(model), config, kwargs)
                if kwargs.get("tokenizer") is None and tokenizer is not None:
                    kwargs["tokenizer"] = tokenizer
                return transformers.pipeline(task, model, *args, **kwargs)
    return transformers.pipeline(task, model, *args, **kwargs)


pipeline.__signature__ = inspect.signature(transformers.pipeline)  # type: ignore[attr-defined]


def _hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in ("revision", "token") if kwargs.get(k) is not None}


def _prompt_learning_config(model: str, kwargs: dict[str, Any]):
    """The adapter's ``PeftConfig`` when ``model`` is a prompt-learning adapter; ``None`` for anything else."""
    from peft import PeftConfig

    import peft_catalyst.tuners.catalyst  # noqa: F401 - registers CATALYST, so that its adapter_config.json parses

    try:
        config = PeftConfig.from_pretrained(model, **_hub_kwargs(kwargs))
    except (OSError, ValueError, KeyError, TypeError):  # not an adapter (a full model), or unreachable
        return None
    return config if getattr(config, "is_prompt_learning", False) else None


def _load(task: str, adapter: str, config, kwargs: dict[str, Any]):
    from peft import PeftModel, PeftType
    from transformers import AutoTokenizer
    from transformers.pipelines import check_task

    from peft_catalyst.tuners.catalyst import apply_catalyst_fixes

    if not config.base_model_name_or_path:
        raise ValueError(f"The adapter {adapter!r} does not name its base model (base_model_name_or_path).")
    _, targeted, _ = check_task(task)
    model_class = targeted["pt"][0]
    model_kwargs = dict(kwargs.get("model_kwargs") or {})
    for key in ("dtype", "torch_dtype", "trust_remote_code"):
        if kwargs.get(key) is not None:
            model_kwargs.setdefault("dtype" if key == "torch_dtype" else key, kwargs.pop(key))
    hub = {"token": kwargs["token"]} if kwargs.get("token") is not None else {}
    if task in ("text-classification", "sentiment-analysis", "token-classification"):
        labels = saved_label_names(adapter, **_hub_kwargs(kwargs))
        model_kwargs.update({k: v for k, v in labels.items() if k not in model_kwargs})
    with _without_load_report() as reports:
        try:
            base, loading = model_class.from_pretrained(
                config.base_model_name_or_path, output_loading_info=True, **hub, **model_kwargs
            )
        except OSError as exc:
            raise OSError(_base_model_missing(adapter, config.base_model_name_or_path)) from exc
    model = PeftModel.from_pretrained(base, adapter, **_hub_kwargs(kwargs)).eval()
    if getattr(model.active_peft_config, "peft_type", None) == PeftType.PROMPT_TUNING:
        apply_catalyst_fixes(model)
    _report_what_the_adapter_left(model, loading, reports, config.base_model_name_or_path)
    tokenizer = None
    for source, extra in ((adapter, _hub_kwargs(kwargs)), (config.base_model_name_or_path, hub)):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **extra)
            break
        except (OSError, ValueError, TypeError):
            continue
    kwargs.pop("revision", None)  # it named the adapter's revision; the loaded model needs none
    return model, tokenizer


#: transformers 5 logs a "<Model> LOAD REPORT" table (``transformers.utils.loading_report.log_state_dict_report``)
#: through this logger when a checkpoint lacks weights the model has, e.g. a classification head.
_LOAD_REPORT_LOGGER = "transformers.modeling_utils"


@contextlib.contextmanager
def _without_load_report() -> Iterator[list[logging.LogRecord]]:
    """Hold back transformers' load report of the base model: the adapter may restore what it calls missing.

    The held records are yielded; :func:`_report_what_the_adapter_left` says what the adapter did not restore.
    """
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            held.append(record)
            return False
        return True

    report_logger = logging.getLogger(_LOAD_REPORT_LOGGER)
    report_logger.addFilter(hold)
    try:
        yield held
    finally:
        report_logger.removeFilter(hold)


def _report_what_the_adapter_left(model, loading: dict[str, Any], held: list[logging.LogRecord], base: str) -> None:
    """Warn about the base model's missing, unexpected or mismatched weights that the adapter did not restore.

    A weight counts as restored when its module is one of the adapter's ``modules_to_save`` (a trained
    classification head, say): PEFT loads it from the adapter, so transformers' "MISSING ... newly initialized"
    would be wrong. Anything else is reported, as transformers would have.
    """
    if not held:
        return
    saved = set(getattr(model, "modules_to_save", None) or ())

    def restored(key: str) -> bool:
        module = key.rsplit(".", 1)[0]
        return any(module == name or module.endswith("." + name) for name in saved)

    missing = sorted(k for k in loading.get("missing_keys", ()) if not restored(k))
    unexpected = sorted(loading.get("unexpected_keys", ()))
    mismatched = [str(m[0]) if isinstance(m, (tuple, list)) else str(m) for m in loading.get("mismatched_keys", ())]
    if missing or unexpected or mismatched:
        logger.warning(
            "Loading %s: weights the adapter does not restore: missing %s, unexpected %s, mismatched %s.",
            base,
            missing or "none",
            unexpected or "none",
            mismatched or "none",
        )


def _base_model_missing(adapter: str, base: str) -> str:
    """One line: the base model that could not be loaded, where it was looked for, and the fix."""
    from huggingface_hub import constants

    from peft_catalyst.offline_models import packaged_model

    fix = "pass base_model=<a Hub id or a local folder of that model>"
    if os.path.isabs(base) or base.startswith((".", "~")) or "\\" in base or base.count("/") > 1:  # not a Hub id
        where = f"no model folder at {base}"
    else:
        online = "the Hugging Face Hub was not reachable (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else (
            "the Hugging Face Hub did not answer"
        )
        where = f"{online} and the cache {constants.HF_HUB_CACHE} has no copy"
        packaged = packaged_model(base)
        if packaged is not None:
            where += f", nor is its asset package {packaged.distribution!r} installed"
            fix = f"install it ({packaged.install_command}) or {fix}"
    return f"Cannot load the base model {base!r} of the adapter {adapter!r}: {where}. Fix: {fix}."


__all__ = ["TASK_FOR_TASK_TYPE", "pipeline"]
