"""Several soft prompts in one forward pass: the batch holds every example once per prompt.

The base model is frozen and only the prompt differs, so K prompts can share a pass; each prompt's loss depends only
on its own rows, so gradients stay separate too. The stacked batch goes through PEFT's own forward, which builds the
attention masks, token type ids, label padding and dropped position ids exactly as for one prompt: the inputs are
repeated K times (prompt-major rows) and, for the duration of the call, the model's ``get_prompt`` returns prompt k
for the k-th block of rows. Per-prompt outputs are the model's output class with every batch-first tensor cut to
that prompt's rows, and the loss is the model's own loss on them.

:func:`trainer_losses` adds what a host ``Trainer`` does around the model (``compute_loss_func``, the loss scaling
of ``compute_loss``); :func:`trainer_unsupported_reason` says when that cannot be reproduced and prompts must be
handled one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from transformers.loss.loss_utils import ForSequenceClassificationLoss, ForTokenClassification

from peft_catalyst.projection import get_soft_prompt
from peft_catalyst.sharding import fsdp1_root, is_dtensor

#: Task types whose prompt-learning forward :func:`multi_prompt_forward` reproduces.
SUPPORTED_TASK_TYPES = ("CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM", "TOKEN_CLS")
#: Inputs that are per example whatever their shape (seq-cls labels are 1-D).
_PER_EXAMPLE = {"labels"}


@dataclass
class MultiPromptOutput:
    """Per-prompt results of one stacked pass: ``outputs[k]`` is the model's output for prompt ``k`` alone."""

    outputs: list[Any]

    @property
    def losses(self) -> list[torch.Tensor | None]:
        """The model's own loss per prompt (None where the batch had no labels)."""
        return [out.get("loss") for out in self.outputs]


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot take several prompts in one pass (None when it can)."""
    try:
        soft = get_soft_prompt(model)
    except ValueError as exc:
        return str(exc)
    task = getattr(soft.config, "task_type", None)
    task = getattr(task, "value", task)
    if task not in SUPPORTED_TASK_TYPES:
        return f"task type {task} is not one of {SUPPORTED_TASK_TYPES}"
    weight = soft.weight
    if hasattr(weight, "ds_shape") or is_dtensor(weight) or fsdp1_root(model) is not None:
        return "the prompt is sharded (DeepSpeed ZeRO-3 or FSDP)"
    return None


def multi_prompt_forward(
    model: Any,
    prompts: torch.Tensor | Sequence[torch.Tensor],
    inputs: Mapping[str, Any],
    num_items_in_batch: Any = None,
) -> MultiPromptOutput:
    """Run ``inputs`` once per prompt of ``prompts`` (K tensors shaped like the soft prompt) in one forward pass.

    ``inputs`` is one batch as the model's forward takes it. With ``labels``, every output carries the model's own
    loss for its prompt (``num_items_in_batch`` as a model accepting loss kwargs uses it); gradients reach
    ``prompts`` when they require grad. The model's own soft prompt is neither used nor changed.
    """
    peft_model = extract_model_from_parallel(model)
    reason = unsupported_reason(peft_model)
    if reason is not None:
        raise ValueError(f"Cannot run several prompts in one pass: {reason}.")
    soft = get_soft_prompt(peft_model)
    stacked_prompts = prompts if isinstance(prompts, torch.Tensor) else torch.stack(list(prompts))
    if stacked_prompts.dim() != 3 or stacked_prompts.shape[1:] != soft.weight.shape:
        raise ValueError(
            f"prompts must be K x {tuple(soft.weight.shape)} (the soft prompt's shape), "
            f"got {tuple(stacked_prompts.shape)}."
        )
    count = stacked_prompts.shape[0]
    rows = _batch_rows(inputs)
    task = _task_type(soft.config)
    labels = inputs.get("labels")
    stacked = {key: _repeat(value, count, rows, key) for key, value in inputs.items() if key != "labels"}
    if labels is not None and task == "SEQ_2_SEQ_LM":
        base = peft_model.get_base_model()
        if "decoder_input_ids" not in inputs and "decoder_inputs_embeds" not in inputs:
            # what the model derives from labels itself; passing labels would also compute a loss over all K prompts
            if hasattr(base, "prepare_decoder_input_ids_from_labels"):
                stacked["decoder_input_ids"] = _repeat(
                    base.prepare_decoder_input_ids_from_labels(labels=labels), count, rows, "decoder_input_ids"
                )
            else:
                stacked["labels"] = _repeat(labels, count, rows, "labels")
    per_row = stacked_prompts.to(soft.weight.device).repeat_interleave(rows, dim=0)

    def get_prompt(batch_size: int, task_ids: Any = None, **kwargs: Any) -> torch.Tensor:
        if batch_size != per_row.shape[0]:
            raise RuntimeError(f"multi-prompt forward: expected {per_row.shape[0]} rows, PEFT asked for {batch_size}.")
        return per_row

    peft_model.get_prompt = get_prompt  # an instance attribute, shadowing PeftModel.get_prompt for this call only
    try:
        output = peft_model(**stacked)
    finally:
        del peft_model.get_prompt
    outputs = []
    for k in range(count):
        fields = {}
        for key, value in output.items():
            if key == "loss":
                continue
            part = _rows_of(value, k, rows, count * rows)
            if part is not None:
                fields[key] = part
        if labels is not None:
            fields["loss"] = model_loss(peft_model, fields["logits"], labels, num_items_in_batch)
        outputs.append(type(output)(**fields) if _accepts(output, fields) else dict(fields))
    return MultiPromptOutput(outputs)


def model_loss(model: Any, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """The loss the prompt-learning model's forward computes from one prompt's ``logits`` and the batch's ``labels``.

    Causal-LM and token-classification labels get the ``-100`` padding of the virtual tokens, as PEFT (and our
    token-classification patch) pads them; causal LMs use the base model's own ``loss_function``.
    """
    peft_model = extract_model_from_parallel(model)
    soft = get_soft_prompt(peft_model)
    task = _task_type(soft.config)
    base = peft_model.get_base_model()
    labels = labels.to(logits.device)
    if task in ("CAUSAL_LM", "TOKEN_CLS"):
        prefix = labels.new_full((labels.shape[0], soft.num_virtual_tokens), -100)
        labels = torch.cat((prefix, labels), dim=1)
        if logits.shape[1] != labels.shape[1]:
            raise ValueError(
                f"Logits cover {logits.shape[1]} positions but the labels {labels.shape[1]}: a model that keeps only "
                "some logits (logits_to_keep) needs a compute_loss_func."
            )
    if task == "CAUSAL_LM":
        kwargs = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
        return base.loss_function(logits=logits, labels=labels, vocab_size=base.config.vocab_size, **kwargs)
    if task == "TOKEN_CLS":
        return ForTokenClassification(logits, labels, base.config)
    if task == "SEQ_CLS":
        return ForSequenceClassificationLoss(labels, logits, base.config)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


# ----------------------------------------------------------------------------------------------------------------
# What a host Trainer adds around the model
# ----------------------------------------------------------------------------------------------------------------


def trainer_unsupported_reason(trainer: Any) -> str | None:
    """Why ``trainer``'s loss and predictions for several prompts cannot come from one pass (None when they can).

    One pass reproduces ``Trainer.compute_loss`` (the model's loss or ``compute_loss_func``) and
    ``Trainer.prediction_step``; a trainer that overrides them, smooths labels or shards the prompt is left alone.
    """
    from transformers import Seq2SeqTrainer, Trainer

    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return "the prompt is sharded (DeepSpeed or FSDP)"
    cls = type(trainer)
    if cls.compute_loss is not Trainer.compute_loss:
        return f"{cls.__name__} computes its own loss"
    if cls.prediction_step not in (Trainer.prediction_step, Seq2SeqTrainer.prediction_step):
        return f"{cls.__name__} has its own prediction_step"
    if getattr(trainer.args, "predict_with_generate", False):
        return "predict_with_generate scores generated text"
    if trainer.label_smoother is not None:
        return "label smoothing"
    if list(trainer.label_names or []) != ["labels"]:
        return f"label_names={trainer.label_names} (only ['labels'] is supported)"
    if getattr(trainer.args, "use_liger_kernel", False):
        return "use_liger_kernel"
    return unsupported_reason(trainer.model)


def trainer_losses(
    trainer: Any,
    prompts: torch.Tensor | Sequence[torch.Tensor],
    inputs: Mapping[str, Any],
    num_items_in_batch: Any = None,
) -> tuple[list[torch.Tensor], list[Any]]:
    """Each prompt's loss and outputs on ``inputs`` (already prepared), as ``trainer.compute_loss`` computes them.

    Only for a trainer :func:`trainer_unsupported_reason` accepts.
    """
    inputs = dict(inputs)
    labels = inputs.pop("labels", None) if trainer.compute_loss_func is not None else None
    model_items = num_items_in_batch if trainer.model_accepts_loss_kwargs else None
    result = multi_prompt_forward(trainer.model, prompts, inputs, num_items_in_batch=model_items)
    losses = []
    for output in result.outputs:
        if trainer.compute_loss_func is not None:
            loss = trainer.compute_loss_func(output, labels, num_items_in_batch=num_items_in_batch)
        else:
            loss = output.get("loss")
            if loss is None:
                raise ValueError("The model did not return a loss: the batch has no labels.")
        if (
            trainer.args.average_tokens_across_devices
            and (trainer.model_accepts_loss_kwargs or trainer.compute_loss_func)
            and num_items_in_batch is not None
        ):
            tp = trainer.get_tp_size() if hasattr(trainer, "get_tp_size") else 1
            loss = loss * (trainer.accelerator.num_processes // tp if trainer.args.n_gpu <= 1 else trainer.args.n_gpu)
        losses.append(loss)
    return losses, result.outputs


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _task_type(config: Any) -> str:
    task = getattr(config, "task_type", None)
    return getattr(task, "value", task)


def _batch_rows(inputs: Mapping[str, Any]) -> int:
    for key in ("input_ids", "inputs_embeds"):
        value = inputs.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise ValueError("A batch for a multi-prompt forward needs input_ids or inputs_embeds.")


def _repeat(value: Any, count: int, rows: int, key: str) -> Any:
    """``value`` once per prompt (prompt-major) when it is per example; anything else (e.g. logits_to_keep) as is."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != rows:
        return value
    if value.dim() == 1 and key not in _PER_EXAMPLE:
        return value
    return value.repeat(count, *([1] * (value.dim() - 1)))


def _rows_of(value: Any, k: int, rows: int, total: int) -> Any:
    """Prompt ``k``'s rows of a batch-first tensor (or a tuple of them); None for anything else (e.g. a cache)."""
    if isinstance(value, torch.Tensor):
        return value[k * rows : (k + 1) * rows] if value.dim() > 0 and value.shape[0] == total else None
    if isinstance(value, (tuple, list)):
        parts = [_rows_of(v, k, rows, total) for v in value]
        return type(value)(parts) if parts and all(p is not None for p in parts) else None
    return None


def _accepts(output: Any, fields: dict[str, Any]) -> bool:
    """Whether the model's output class can be rebuilt from ``fields`` (a ModelOutput dataclass)."""
    names = getattr(type(output), "__dataclass_fields__", None)
    return names is not None and all(key in names for key in fields)


__all__ = [
    "MultiPromptOutput",
    "SUPPORTED_TASK_TYPES",
    "model_loss",
    "multi_prompt_forward",
    "trainer_losses",
    "trainer_unsupported_reason",
    "unsupported_reason",
]
