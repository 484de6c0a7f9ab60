"""Share a catalyst adapter on the Hugging Face Hub in one commit, with the peft-catalyst model card.

What a push uploads (and :func:`save_for_hub` writes locally), in a single commit:

- ``adapter_config.json`` + ``adapter_model.safetensors``: the adapter as ``PeftModel.save_pretrained`` writes it;
- ``portable/``: the same soft prompt as a vanilla ``PROMPT_TUNING`` adapter (``export_prompt_tuning``), for people
  who do not install peft-catalyst;
- ``catalyst_history.json``: the per-round record of the mentor's proposals and the decisions taken (when given);
- the tokenizer files (when given) and ``README.md``: the model card (:mod:`peft_catalyst.model_card`).

This is for a model outside a trainer; a ``CatalystTrainer`` (or ``CatalystMixin``) writes the same folder in
``save_model()`` and pushes it with the stock ``Trainer.push_to_hub``. Pushing to a repository that already has a
card replaces only its peft-catalyst section. The Hub token is only handed to :class:`~huggingface_hub.HfApi`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

from peft_catalyst.export import export_prompt_tuning
from peft_catalyst.history import HISTORY_FILE, write_json_atomic
from peft_catalyst.model_card import PORTABLE_SUBFOLDER, README_FILE, normalize_history, write_model_card
from peft_catalyst.projection import _unwrap, get_soft_prompt
from peft_catalyst.quiet import saving_prompt_adapter
from peft_catalyst.redaction import public_obj

logger = logging.getLogger(__name__)

__all__ = ["finish_adapter_folder", "push_to_hub", "save_for_hub", "set_base_model"]

DEFAULT_COMMIT_MESSAGE = "Upload peft-catalyst adapter"


# ---------------------------------------------------------------------------------------------------------------


def _save_adapter(model, directory: Path, adapter_name: str | None) -> str:
    """``save_pretrained`` of the one adapter into ``directory`` itself (PEFT nests non-default adapters)."""
    peft_model = _unwrap(model)
    name = get_soft_prompt(model, adapter_name).adapter_name
    with tempfile.TemporaryDirectory(dir=directory, prefix=".adapter-") as tmp:
        with saving_prompt_adapter(peft_model):  # no vocabulary-check warning: a prompt leaves it as it is
            peft_model.save_pretrained(tmp, selected_adapters=[name])
        source = Path(tmp) if name == "default" else Path(tmp) / name
        for path in source.iterdir():
            if path.is_file() and path.name != README_FILE:  # PEFT's boilerplate card: ours replaces it
                shutil.move(str(path), directory / path.name)
    return name


def set_base_model(directory: str | os.PathLike, base_model: str) -> None:
    """Name ``base_model`` (a Hub id) as ``base_model_name_or_path`` in the folder's adapter configs (and its
    portable copy's), so that ``AutoPeftModel*`` finds the base model on the Hub."""
    folder = Path(directory)
    for config_path in (folder / "adapter_config.json", folder / PORTABLE_SUBFOLDER / "adapter_config.json"):
        if config_path.is_file():
            data = json.loads(config_path.read_text(encoding="utf-8"))
            data["base_model_name_or_path"] = base_model
            config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_for_hub(
    model,
    directory: str | os.PathLike,
    tokenizer=None,
    *,
    adapter_name: str | None = None,
    **folder_kwargs: Any,
) -> Path:
    """Write into ``directory`` exactly what :func:`push_to_hub` uploads; returns the directory.

    The adapter (``save_pretrained``), then :func:`finish_adapter_folder` (portable copy, tokenizer, history, card),
    which takes the other keyword arguments (``history``, ``metrics``, ``repo_id``, ``base_model``,
    ``existing_card``, ``secrets`` and the card's own).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    name = _save_adapter(model, out, adapter_name)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return finish_adapter_folder(model, out, tokenizer, adapter_name=name, **folder_kwargs)


def finish_adapter_folder(
    model,
    directory: str | os.PathLike,
    tokenizer=None,
    *,
    history: Any = None,
    metrics: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    existing_card: ModelCard | str | None = None,
    secrets: Iterable[str | None] = (),
    adapter_name: str | None = None,
    is_main_process: bool = True,
    **card_kwargs: Any,
) -> Path:
    """Complete a folder that holds a saved adapter: ``portable/``, ``catalyst_history.json`` and the model card.

    Under ZeRO-3 / FSDP call it on every process (the portable copy gathers the weights) with ``is_main_process``
    true on the one that writes, and pass ``final_prompt`` (the card does not read the sharded prompt then).
    ``base_model`` (a Hub id) replaces ``base_model_name_or_path`` in both adapter configs, so that
    ``AutoPeftModel*`` finds the base model on the Hub. The history is written through
    :func:`~peft_catalyst.redaction.public_obj` (no secret, no credentialed URL). The card is
    :func:`write_model_card`'s: an existing peft-catalyst ``README.md`` keeps what its owner wrote, PEFT's template is
    replaced. ``tokenizer`` reads the soft prompt as text for the card.
    """
    out = Path(directory)
    secrets = [s for s in secrets if s]
    name = get_soft_prompt(model, adapter_name).adapter_name
    export_prompt_tuning(model, out / PORTABLE_SUBFOLDER, adapter_name=name, is_main_process=is_main_process)
    if not is_main_process:
        return out
    if base_model:
        set_base_model(out, base_model)
    normalized = normalize_history(history)
    if normalized is not None:
        write_json_atomic(out / HISTORY_FILE, public_obj(normalized.to_dict(), secrets))
    write_model_card(
        model,
        out,
        tokenizer,
        history=normalized,
        metrics=metrics,
        repo_id=repo_id,
        base_model=base_model,
        existing=existing_card,
        secrets=secrets,
        adapter_name=name,
        **card_kwargs,
    )
    return out


def _existing_card(api: HfApi, repo_id: str, revision: str | None) -> str | None:
    """The repository's current ``README.md``, or None when it has none; never guesses on a failed download."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = api.hf_hub_download(repo_id, README_FILE, revision=revision)
    except LocalEntryNotFoundError:
        if not constants.HF_HUB_OFFLINE:
            raise  # the Hub could not be asked: do not risk overwriting the owner's card
        logger.warning("HF_HUB_OFFLINE is set and %s has no cached README.md: writing a new card.", repo_id)
        return None
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return Path(path).read_text(encoding="utf-8")


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def push_to_hub(
    model,
    repo_id: str,
    tokenizer=None,
    history: Any = None,
    metrics: Mapping[str, Any] | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    *,
    revision: str | None = None,
    create_pr: bool = False,
    base_model: str | None = None,
    secrets: Iterable[str | None] = (),
    run_as_future: bool = False,
    adapter_name: str | None = None,
    **card_kwargs: Any,
):
    """Upload a prompt-tuned adapter, its portable copy, its history and its model card in ONE commit.

    Runs on the main process only (others return None). The repository is created if needed; an existing card keeps
    everything outside the peft-catalyst section. ``token`` defaults to the usual ``HF_TOKEN`` / ``hf auth login``
    and is handed to ``HfApi`` only. Returns the ``CommitInfo`` (a ``Future`` with ``run_as_future=True``).
    Other keyword arguments go to :func:`build_model_card` (``task_name``, ``score_metric``, ``license``...).
    """
    if not _is_main_process():
        logger.debug("push_to_hub: not the main process, nothing to do")
        return None
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    existing = _existing_card(api, repo_id, revision)
    with tempfile.TemporaryDirectory(prefix="peft-catalyst-push-") as tmp:
        save_for_hub(
            model,
            tmp,
            tokenizer,
            history=history,
            metrics=metrics,
            repo_id=repo_id,
            base_model=base_model,
            existing_card=existing,
            secrets=[*secrets, token],
            adapter_name=adapter_name,
            **card_kwargs,
        )
        root = Path(tmp)
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(root).as_posix(), path_or_fileobj=path.read_bytes())
            for path in sorted(root.rglob("*"))
            if path.is_file()
        ]
    logger.info("Pushing %d files to %s in one commit", len(operations), repo_id)
    extra = {"run_as_future": True} if run_as_future else {}
    return api.create_commit(
        repo_id=repo_id,
        operations=operations,
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
        repo_type="model",
        **extra,
    )


