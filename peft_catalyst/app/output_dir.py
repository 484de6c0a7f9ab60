"""The run folder (``--output_dir``): created, refused, or reused, and never a file of the user's deleted.

``--overwrite_output_dir`` means what it means in transformers: write into a folder that exists. A run writes a
marker (:data:`MARKER`) when it starts, naming what was in the folder before it; the next run with
``--overwrite_output_dir`` removes only what an earlier peft-catalyst run wrote there (:func:`is_run_output` names,
never one the marker lists as already there), so that no stale checkpoint, chat log or plot is mistaken for the new
run's. Everything else in the folder (the user's files, the working directory, whatever it is) stays as it is.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from peft_catalyst.app.errors import UserError

logger = logging.getLogger(__name__)

#: Written into the run folder when a run starts: which entries were there before (they are never removed).
MARKER = ".peft_catalyst_run.json"

#: What a run writes at the top of its folder (its files, the adapter, the tokenizer, Trainer's own files).
RUN_OUTPUTS = frozenset(
    {
        "adapter_config.json",
        "adapter_model.safetensors",
        "adapter_model.bin",
        "README.md",
        "portable",
        "catalyst_history.json",
        "catalyst_chat.jsonl",
        "catalyst_state.json",
        "metrics.json",
        "run.png",
        "mentor_cache.sqlite",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "config.json",
        "training_args.bin",
        MARKER,
    }
)
_CHECKPOINT = re.compile(r"checkpoint-\d+")


def is_run_output(name: str) -> bool:
    """Whether a run writes an entry of this name at the top of its folder (a file, ``portable/``, a checkpoint)."""
    return name in RUN_OUTPUTS or bool(_CHECKPOINT.fullmatch(name)) or name.startswith("mentor_cache.sqlite-")


def _read_marker(path: Path) -> set[str] | None:
    """The entries that were in the folder before the run that wrote the marker; None without a (readable) one."""
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
        return {str(name) for name in data.get("preexisting", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _write_marker(path: Path, preexisting: set[str]) -> None:
    text = json.dumps({"written_by": "peft-catalyst", "preexisting": sorted(preexisting)}, indent=1) + "\n"
    (path / MARKER).write_text(text, encoding="utf-8")


def _remove(entry: Path) -> None:
    """Remove one entry a run wrote: a link is unlinked (never followed), a folder removed with its content."""
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink()
    else:
        shutil.rmtree(entry)


def earlier_run_outputs(path: Path) -> list[Path]:
    """What an earlier peft-catalyst run wrote into ``path`` (per its marker); empty without a marker."""
    before = _read_marker(path)
    if before is None:
        return []
    return sorted(p for p in path.iterdir() if is_run_output(p.name) and p.name not in before)


def prepare_output_dir(output_dir: str, overwrite: bool, resume_from_checkpoint: str | bool | None = None) -> Path:
    """Create ``output_dir``, or take an existing one, and mark it as a run folder.

    A non-empty folder is refused unless ``overwrite``; with it, the run writes into the folder: an earlier
    peft-catalyst run's outputs there are removed (per the folder's marker), the user's files are kept, and a folder
    holding files of the names a run writes that no run wrote (a ``README.md``, a ``config.json``) is refused, since
    the run would overwrite them. Resuming (``resume_from_checkpoint``) continues a run in its own folder: nothing
    is refused or removed (the checkpoint itself is checked before anything loads, in
    :func:`peft_catalyst.app.arguments.check_train_args`).
    """
    path = Path(output_dir)
    if resume_from_checkpoint:
        path.mkdir(parents=True, exist_ok=True)
        if not (path / MARKER).exists():
            _write_marker(path, {p.name for p in path.iterdir() if not is_run_output(p.name)})
        return path
    from accelerate import PartialState

    state = PartialState()  # several processes (torchrun, accelerate launch): only the main one changes the folder
    if path.exists() and not path.is_dir():
        raise UserError(f"output_dir {path} is a file: pick a folder for --output_dir.")
    occupied = path.is_dir() and any(p.name != MARKER for p in path.iterdir())  # a marker alone: a run that stopped
    if occupied and not overwrite:
        raise UserError(
            f"output_dir {path} exists and is not empty: pick another one, or pass --overwrite_output_dir to write "
            "into it (files of yours there are kept; an earlier peft-catalyst run's outputs there are replaced)."
        )
    stale = earlier_run_outputs(path) if occupied else []
    if occupied and _read_marker(path) is None:
        clash = sorted(p.name for p in path.iterdir() if is_run_output(p.name))
        if clash:
            shown = ", ".join(clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
            raise UserError(
                f"output_dir {path} holds {shown}, which this run would overwrite and no peft-catalyst run wrote "
                "there: move them, or pick another --output_dir."
            )
    state.wait_for_everyone()  # every process looked before the folder changes
    if state.is_main_process:
        for entry in stale:
            _remove(entry)
        if stale:
            logger.info("output_dir %s: removed an earlier run's %s", path, ", ".join(p.name for p in stale))
        path.mkdir(parents=True, exist_ok=True)
        _write_marker(path, {p.name for p in path.iterdir() if p.name != MARKER})
    state.wait_for_everyone()
    return path


__all__ = ["MARKER", "RUN_OUTPUTS", "earlier_run_outputs", "is_run_output", "prepare_output_dir"]
