"""Keep the best prompt by validation (``load_best_model_at_end=True``), the prompt a run starts from included.

``Trainer`` ranks its evaluations by ``metric_for_best_model`` and, at the end, loads the checkpoint of the best one.
Two things keep that from meaning "never worse on validation than the start" upstream (transformers 5.25):

- the evaluation at step 0 (``eval_on_start``) is logged but never ranked, and the training loop saves no
  checkpoint at step 0, so the starting prompt can never be the one loaded;
- ``best_global_step == 0`` is falsy, so ``Trainer`` never points ``best_model_checkpoint`` at a step-0 checkpoint.

:class:`~peft_catalyst.trainer.CatalystCallback` closes both gaps with one design that needs nothing kept in memory:
it evaluates at step 0 (after an initial round; ``eval_on_start`` does it when set), saves that prompt as
``checkpoint-0`` through the ordinary checkpoint path, and records it as the ``Trainer``'s best so far
(``best_metric``, ``best_global_step=0``, ``best_model_checkpoint``). Later evaluations then compete with the start
under ``Trainer``'s own strict comparison (a tie keeps the earlier prompt), checkpoint rotation protects it, a resumed
run reads it back from ``trainer_state.json``, every process of a DDP run saves and loads it as any checkpoint, and
``load_best_model_at_end`` loads it like any other. The final step is always evaluated and saved where the save
strategy allows (transformers does it for a step schedule; the callback asks for it under any other), so the kept
prompt is compared with where training ended, and a final-step best has a checkpoint to load.

For CATALYST and PROMPT_TUNING adapters ``Trainer``'s own loading of the best checkpoint works (it restores the soft
prompt in place, bit for bit; the error of peft issue 2256, which transformers PR 35087 reports, concerns prompt
methods whose saved state is smaller than the trained one, such as prefix tuning with a projection): the callback
checks the loaded prompt against the checkpoint's file anyway and restores it from there if a release ever differs.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peft_catalyst.records import KeptPrompt

logger = logging.getLogger(__name__)

#: The adapter weights file PEFT writes into each checkpoint.
ADAPTER_FILE = "adapter_model.safetensors"


def keeps_best(args: Any) -> bool:
    """Whether a run with these ``TrainingArguments`` keeps its best prompt by validation."""
    return bool(getattr(args, "load_best_model_at_end", False)) and bool(getattr(args, "metric_for_best_model", None))


def metric_key(args: Any) -> str:
    """The logged name of ``metric_for_best_model`` (``accuracy`` -> ``eval_accuracy``), as ``Trainer`` reads it."""
    name = args.metric_for_best_model
    return name if name.startswith("eval_") else f"eval_{name}"


def checkpoint_folder(args: Any, step: int) -> Path:
    """``output_dir/checkpoint-{step}``, where ``Trainer`` saves the checkpoint of ``step``."""
    return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


def checkpoint_step(folder: str | os.PathLike | None) -> int | None:
    """The step of a ``checkpoint-N`` folder; None for anything else."""
    match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", Path(folder).name) if folder else None
    return int(match.group(1)) if match else None


def mark_start_as_best(args: Any, state: Any, metrics: dict[str, float]) -> bool:
    """Record the step-0 evaluation as the ``Trainer``'s best so far (its checkpoint is ``checkpoint-0``); False when
    the metrics lack ``metric_for_best_model`` (``Trainer`` raises at its first own evaluation then) or it is not
    finite (a NaN start would never be beaten)."""
    value = metrics.get(metric_key(args))
    if value is None or not math.isfinite(float(value)):
        logger.warning(
            "The step-0 evaluation has no finite %s: the starting prompt is not a contender for the kept prompt.",
            metric_key(args),
        )
        return False
    state.best_metric = float(value)
    state.best_global_step = 0
    state.best_model_checkpoint = str(checkpoint_folder(args, 0))
    return True


def kept_prompt(args: Any, state: Any) -> KeptPrompt | None:
    """What the run kept, from the ``Trainer``'s state at the end of training (after the best was loaded)."""
    if not keeps_best(args):
        return None
    key = metric_key(args)
    scores = {int(entry["step"]): float(entry[key]) for entry in state.log_history if key in entry and "step" in entry}
    final = int(state.global_step)
    step = checkpoint_step(state.best_model_checkpoint)
    if step is None:  # nothing evaluated or the best checkpoint is gone: the model is the final step's
        step = final
    score = state.best_metric if step != final or final not in scores else scores[final]
    return KeptPrompt(
        step=step,
        metric=key,
        score=None if score is None else float(score),
        final_step=final,
        final_score=scores.get(final),
        greater_is_better=bool(args.greater_is_better),
    )


def saved_prompt(folder: str | os.PathLike) -> torch.Tensor | None:
    """The soft prompt saved in a checkpoint (``prompt_embeddings`` of its adapter file); None when there is none."""
    path = Path(folder) / ADAPTER_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    tensors = [v for k, v in load_file(path).items() if k.split(".")[-1] == "prompt_embeddings"]
    return tensors[0] if len(tensors) == 1 else None


__all__ = [
    "checkpoint_folder",
    "checkpoint_step",
    "kept_prompt",
    "keeps_best",
    "mark_start_as_best",
    "metric_key",
    "saved_prompt",
]
