"""Turn a :class:`~peft_catalyst.app.data.TaskData` + tokenizer into what ``transformers.Trainer`` needs (two doers).

``kind="seq_cls"``: an ``AutoModelForSequenceClassification`` (e.g. the packaged MiniLM). Texts are tokenised,
padded on the right to the batch's longest, ``labels`` are the class ids and the model computes its own loss.

``kind="causal_lm"``: a causal LM as a label-word classifier (e.g. SmolLM2). The input is the task's template
(``"Review: {text}\\nSentiment:"``) and the target is the label word (``" positive"``) as the next token. The
collator appends the label word, so ``labels`` have the usual causal-LM layout (same shape as ``input_ids``, ``-100``
everywhere but the label word, which is the row's last real token) and the model's own loss would be the same
number. The cheap path, used by default:

- the collator adds ``logits_to_keep``: the batch's distinct prediction positions as *negative* indices (counted from
  the end of the sequence), so the LM head runs on a handful of positions instead of all of them. Negative indices
  are unaffected by the ``num_virtual_tokens`` that PEFT prepends, so nothing here needs to know the prompt length;
  it also works without PEFT. (transformers 5.x slices ``hidden_states[:, logits_to_keep]``; PEFT's
  ``PeftModelForCausalLM.forward`` passes it through ``**kwargs`` to the base model.) Measured on SmolLM2-135M,
  batch 8, 8 virtual tokens, 1 CPU thread: 2.25 s CPU per optimizer step against 2.65 s with full logits and
  2.79 s for the model's own loss over every token (best of 6; about 1.4 s wall with 2 threads).
- ``compute_loss_func`` gathers each row's prediction position from the kept logits and takes the cross-entropy
  over the full vocabulary there (summed, divided by ``num_items_in_batch`` when the Trainer passes it, so gradient
  accumulation is exact).
- ``preprocess_logits_for_metrics`` shrinks the logits to the label words' scores (batch x num_labels) before the
  Trainer accumulates them, and ``compute_metrics`` reports the accuracy of the argmax over the label words.
- Rows are padded on the RIGHT (PEFT drops position ids, so left padding would change the results) and
  ``use_cache=False`` is passed (no KV cache is built, and none leaks into the Trainer's predictions).

Both kinds work with stock ``Trainer`` defaults: the tokenised splits hold only ``input_ids`` and ``label``, which
``remove_unused_columns=True`` keeps (the collators build ``attention_mask`` and ``labels``). Pass
``**spec.trainer_kwargs()``::

    spec = prepare_task(load_task("rotten_tomatoes"), tokenizer, "causal_lm")
    trainer = Trainer(model=peft_model, args=TrainingArguments(...), **spec.trainer_kwargs())
    trainer.train(); trainer.evaluate()  # eval_loss, eval_accuracy

If a model ignores ``logits_to_keep``, prepare the task with ``keep_label_logits=False`` (full logits, same loss).
Causal ``labels`` are as wide as their batch, so code that gathers them over batches must pad them with ``-100``
(``transformers.trainer_pt_utils.nested_concat(..., padding_index=-100)``, as the Trainer's evaluation loop does);
``compute_metrics`` accepts such padded ``(N, L)`` label ids as well as ``(N,)`` class ids.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from peft_catalyst.app.data import SPLITS, TaskData, sorted_by_length

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORE_INDEX",
    "AccuracyMetric",
    "CausalLabelWordCollator",
    "LabelWordLoss",
    "LabelWordScores",
    "PreparedTask",
    "SeqClsCollator",
    "evaluate_accuracy",
    "label_word_ids_for",
    "prepare_task",
]

Kind = Literal["seq_cls", "causal_lm"]
IGNORE_INDEX = -100
_KIND_ALIASES = {"seq_cls": "seq_cls", "causal_lm": "causal_lm"}


def _normalize_kind(kind: Any) -> str:
    """Accept ``"seq_cls"``/``"causal_lm"`` in any case, or PEFT's ``TaskType.SEQ_CLS``/``CAUSAL_LM``."""
    value = str(getattr(kind, "value", kind)).lower()
    if value not in _KIND_ALIASES:
        raise ValueError(f"Unknown doer kind {kind!r}: use 'seq_cls' or 'causal_lm'.")
    return _KIND_ALIASES[value]


def _pad_id(tokenizer: Any) -> int:
    """The id used for padding on the right (masked out, so its value only matters to models that search for it)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Collators
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SeqClsCollator:
    """Pad ``input_ids`` on the right to the batch's longest; ``label`` becomes ``labels``."""

    pad_token_id: int

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate tokenised rows into a right-padded batch."""
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, (feature, length) in enumerate(zip(features, lengths)):
            input_ids[row, :length] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, :length] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        labels = [f.get("label", f.get("labels")) for f in features]
        if any(label is not None for label in labels):
            if any(label is None for label in labels):
                raise ValueError("Some rows of the batch have a label and some do not.")
            batch["labels"] = torch.as_tensor([int(label) for label in labels], dtype=torch.long)
        return batch


@dataclass
class CausalLabelWordCollator:
    """Right-pad prompts, append each row's label word, and ask the model for the prediction positions' logits only.

    Output: ``input_ids``, ``attention_mask``, ``use_cache=False``, ``labels`` (when rows carry ``label``: ``-100``
    except the appended label word) and, if ``keep_label_logits``, ``logits_to_keep``: the sorted distinct prediction
    positions as negative indices.
    """

    pad_token_id: int
    label_word_ids: Sequence[int]
    keep_label_logits: bool = True

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate tokenised prompts (``input_ids`` and optional ``label``) into a batch."""
        labels = [f.get("label", f.get("labels")) for f in features]
        labeled = [label is not None for label in labels]
        if any(labeled) and not all(labeled):
            raise ValueError("Some rows of the batch have a label and some do not.")
        sequences = []
        for feature, label in zip(features, labels):
            ids = list(feature["input_ids"])
            if label is not None:
                ids.append(int(self.label_word_ids[int(label)]))
            sequences.append(ids)
        lengths = torch.as_tensor([len(s) for s in sequences], dtype=torch.long)
        width = int(lengths.max())
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        rows = torch.arange(len(sequences))
        if all(labeled):
            target = torch.full_like(input_ids, IGNORE_INDEX)
            target[rows, lengths - 1] = input_ids[rows, lengths - 1]
            batch["labels"] = target
            prediction = lengths - 2  # the label word is predicted from the token before it
        else:
            prediction = lengths - 1  # unlabeled: score the next token after the prompt
        if (prediction < 0).any():
            raise ValueError("A prompt tokenised to zero tokens: the template must produce at least one token.")
        if self.keep_label_logits:
            batch["logits_to_keep"] = torch.unique(prediction - width)
        return batch


# ---------------------------------------------------------------------------------------------------------------
# Picking each row's prediction logits out of (kept or full) causal-LM logits
# ---------------------------------------------------------------------------------------------------------------


def _first_logits(logits: Any) -> torch.Tensor:
    """Model outputs or a tuple of them (Trainer predictions) -> the logits tensor."""
    if isinstance(logits, Mapping) or hasattr(logits, "logits"):
        return logits["logits"] if isinstance(logits, Mapping) else logits.logits
    if isinstance(logits, (tuple, list)):
        return logits[0]
    return logits


def _label_positions(labels: torch.Tensor) -> torch.Tensor:
    """Index of each row's single non-ignored label (the label word); raise if a row has none or several."""
    valid = labels != IGNORE_INDEX
    counts = valid.sum(dim=1)
    if not bool((counts == 1).all()):
        raise ValueError(
            "Label-word classification expects exactly one label token per row (from CausalLabelWordCollator); "
            f"got rows with {sorted(set(counts.tolist()))} labelled tokens."
        )
    return valid.int().argmax(dim=1)


def _prediction_logits(
    logits: torch.Tensor, prediction: torch.Tensor, batch_width: int, padded_width: int, keep_label_logits: bool
) -> torch.Tensor:
    """Rows' logits at their prediction positions, (batch, vocab), from kept or full logits.

    ``prediction`` holds positions in the collated input (virtual tokens excluded); ``batch_width`` is the collated
    width (the longest row), ``padded_width`` the width of the tensor those positions came from, which the Trainer
    may have padded further across processes.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    prediction = prediction.to(logits.device)
    if keep_label_logits:
        kept = torch.unique(prediction - batch_width)  # exactly what the collator asked for, sorted
        if logits.shape[1] < kept.numel() or logits.shape[1] >= padded_width:
            raise ValueError(
                f"Expected logits for {kept.numel()} kept positions, got {logits.shape[1]}: the model did not apply "
                "the collator's logits_to_keep (prepare the task with keep_label_logits=False for such models)."
            )
        return logits[rows, torch.searchsorted(kept, prediction - batch_width)]
    offset = logits.shape[1] - padded_width  # num_virtual_tokens prepended by PEFT (0 without PEFT)
    if offset < 0:
        raise ValueError(f"Logits ({logits.shape[1]} positions) are shorter than the inputs ({padded_width}).")
    return logits[rows, offset + prediction]


def _labeled_prediction_logits(
    logits: torch.Tensor, labels: torch.Tensor, keep_label_logits: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, vocab) prediction logits and the (batch,) label-word token ids, from collator-style labels.

    The label word is each row's last real token, so the collated width is ``max(position) + 1``: derived from the
    content, not the shape, which the Trainer may pad across processes before ``preprocess_logits_for_metrics``.
    """
    positions = _label_positions(labels)
    targets = labels[torch.arange(labels.shape[0], device=labels.device), positions]
    batch_width = int(positions.max()) + 1
    row_logits = _prediction_logits(logits, positions - 1, batch_width, labels.shape[1], keep_label_logits)
    return row_logits, targets


# ---------------------------------------------------------------------------------------------------------------
# Loss and metrics
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LabelWordLoss:
    """``Trainer(compute_loss_func=...)``: cross-entropy over the full vocabulary at each row's label position."""

    keep_label_logits: bool = True

    def __call__(self, outputs: Any, labels: torch.Tensor | None, num_items_in_batch: Any = None) -> torch.Tensor:
        """Sum of the rows' losses divided by ``num_items_in_batch`` (whole accumulated batch) or the batch size."""
        if labels is None:
            raise ValueError("LabelWordLoss needs labels: the batch had no 'label' column.")
        row_logits, targets = _labeled_prediction_logits(_first_logits(outputs), labels, self.keep_label_logits)
        loss = F.cross_entropy(row_logits.float(), targets.to(row_logits.device), reduction="sum")
        if num_items_in_batch is None:
            return loss / max(labels.shape[0], 1)
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        return loss / num_items_in_batch


@dataclass
class LabelWordScores:
    """``Trainer(preprocess_logits_for_metrics=...)``: keep only the label words' logits, (batch, num_labels)."""

    label_word_ids: Sequence[int]
    keep_label_logits: bool = True

    def __call__(self, logits: Any, labels: torch.Tensor) -> torch.Tensor:
        """Label-word logits at each row's prediction position."""
        row_logits, _ = _labeled_prediction_logits(_first_logits(logits), labels, self.keep_label_logits)
        return row_logits[:, torch.as_tensor(list(self.label_word_ids), device=row_logits.device)]


#: What :class:`AccuracyMetric` returns: the names ``--catalyst_metric`` may take besides ``"loss"``.
METRIC_NAMES = ("label_loss", "accuracy")


@dataclass
class AccuracyMetric:
    """``Trainer(compute_metrics=...)``: accuracy of the argmax over the classes (label words for causal LMs)."""

    label_word_ids: Sequence[int] | None = None  # causal: map label-word token ids back to class ids

    def class_ids(self, label_ids: np.ndarray) -> np.ndarray:
        """Class ids from Trainer label_ids: (N,) class ids, or (N, L) collator labels holding one label word each."""
        label_ids = np.asarray(label_ids)
        if label_ids.ndim == 1:
            return label_ids.astype(np.int64)
        if self.label_word_ids is None:
            raise ValueError("Got 2-D label_ids but no label words to map them to classes.")
        masked = np.where(label_ids == IGNORE_INDEX, -1, label_ids)
        tokens = masked.max(axis=1)  # the single label word of each row (padding is -100)
        lookup = {int(token): cls for cls, token in enumerate(self.label_word_ids)}
        return np.asarray([lookup.get(int(t), -1) for t in tokens], dtype=np.int64)

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        """``{"accuracy", "label_loss"}`` from an ``EvalPrediction`` (or a ``(predictions, label_ids)`` pair).

        ``label_loss`` is the cross-entropy of the softmax over the classes' scores (the label words' logits for a
        causal LM): unlike the LM loss over the whole vocabulary, it only rewards telling the classes apart, which
        is what accuracy measures; it ranks prompts for mentor restarts by default.
        """
        predictions, label_ids = eval_pred[0], eval_pred[1]
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        scores = np.asarray(predictions, dtype=np.float64)
        truth = self.class_ids(label_ids)
        if not truth.size:
            return {"accuracy": float("nan"), "label_loss": float("nan")}
        known = truth >= 0
        shifted = scores - scores.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        label_loss = -log_probs[known, truth[known]].mean() if known.any() else float("nan")
        return {"accuracy": float((scores.argmax(axis=-1) == truth).mean()), "label_loss": float(label_loss)}


# ---------------------------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------------------------


def label_word_ids_for(tokenizer: Any, label_words: Sequence[str]) -> list[int]:
    """One token id per label word; a multi-token word uses its first token if those stay distinct (with a warning).

    Raises ``ValueError`` when two labels would share a token.
    """
    ids, multi = [], []
    for word in label_words:
        tokens = tokenizer.encode(word, add_special_tokens=False)
        if not tokens:
            raise ValueError(f"Label word {word!r} tokenises to nothing.")
        if len(tokens) > 1:
            multi.append(f"{word!r} -> {tokens}")
        ids.append(int(tokens[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"Label words {list(label_words)} do not map to distinct single tokens ({ids}); choose words that are "
            "single tokens for this tokenizer (usually with a leading space)."
        )
    if multi:
        logger.warning("Label words are not single tokens, scoring their first token: %s", "; ".join(multi))
    return ids


def _encode_prompt(tokenizer: Any, template: str, text: str, budget: int) -> tuple[list[int], bool]:
    """Token ids of the filled template, with the *text* shortened (never the template) to fit ``budget``."""

    def encode(value: str) -> list[int]:
        ids = tokenizer(template.format(text=value))["input_ids"]
        eos = tokenizer.eos_token_id
        if len(ids) > 1 and eos is not None and ids[-1] == eos and eos != tokenizer.bos_token_id:
            ids = ids[:-1]  # a tokenizer that appends EOS would put it between the prompt and the label word
        return list(ids)

    ids = encode(text)
    if len(ids) <= budget:
        return ids, False
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = len(text_ids) - (len(ids) - budget)
    while keep > 0:
        ids = encode(tokenizer.decode(text_ids[:keep]))
        if len(ids) <= budget:
            return ids, True
        keep -= max(1, len(ids) - budget)
    ids = encode("")
    if len(ids) > budget:
        raise ValueError(f"The template alone takes {len(ids)} tokens, more than max_length allows ({budget}).")
    return ids, True


# ---------------------------------------------------------------------------------------------------------------
# The prepared task
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PreparedTask:
    """A task tokenised for one doer kind, with the collator, loss and metric functions that go with it."""

    task: TaskData
    kind: str
    tokenizer: Any
    datasets: Any  # DatasetDict of the tokenised splits: input_ids (+ attention_mask for seq_cls) and label
    data_collator: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]]
    compute_metrics: Callable[[Any], dict[str, float]]
    compute_loss_func: Callable[..., torch.Tensor] | None = None
    preprocess_logits_for_metrics: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    label_word_ids: list[int] | None = None
    max_length: int = 128
    keep_label_logits: bool = True
    stats: dict[str, int] = field(default_factory=dict)

    def trainer_kwargs(self, train_split: str = "train", eval_split: str = "validation") -> dict[str, Any]:
        """Keyword arguments for ``Trainer(...)``: datasets, collator, loss, metrics and the tokenizer."""
        kwargs: dict[str, Any] = {
            "train_dataset": self.datasets[train_split],
            "eval_dataset": self.datasets[eval_split],
            "data_collator": self.data_collator,
            "compute_metrics": self.compute_metrics,
            "processing_class": self.tokenizer,
        }
        if self.compute_loss_func is not None:
            kwargs["compute_loss_func"] = self.compute_loss_func
        if self.preprocess_logits_for_metrics is not None:
            kwargs["preprocess_logits_for_metrics"] = self.preprocess_logits_for_metrics
        return kwargs

    def class_scores(self, model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """(batch, num_labels) class scores of one collated batch (logits; label-word logits for causal LMs)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        outputs = model(**inputs)
        logits = _first_logits(outputs)
        if self.kind == "seq_cls":
            return logits
        lengths = batch["attention_mask"].sum(dim=1)
        prediction = lengths - (2 if "labels" in batch else 1)  # with labels, the label word was appended
        width = batch["input_ids"].shape[1]
        row_logits = _prediction_logits(logits, prediction, width, width, self.keep_label_logits)
        return row_logits[:, torch.as_tensor(self.label_word_ids, device=row_logits.device)]


def prepare_task(
    task: TaskData,
    tokenizer: Any,
    kind: Kind | str = "causal_lm",
    max_length: int = 128,
    *,
    keep_label_logits: bool = True,
    splits: Sequence[str] | None = None,
) -> PreparedTask:
    """Tokenise a task's splits for ``kind`` (``"seq_cls"`` or ``"causal_lm"``) and build the Trainer plumbing.

    ``max_length`` caps the tokens per example *before* PEFT's virtual tokens (causal: prompt plus label word; long
    texts are shortened, never the template). ``keep_label_logits=False`` asks the causal-LM model for full logits.
    """
    kind = _normalize_kind(kind)
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    names = [s for s in (splits or SPLITS) if s in task.splits]
    pad_id = _pad_id(tokenizer)
    stats: dict[str, int] = {"truncated": 0}

    if kind == "seq_cls":

        def tokenize(batch: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
            encoded = tokenizer(batch["text"], truncation=True, max_length=max_length, return_token_type_ids=False)
            return {"input_ids": encoded["input_ids"]}

        label_word_ids = None
        collator: Callable[..., dict[str, Any]] = SeqClsCollator(pad_token_id=pad_id)
        loss_func = None
        preprocess = None
    else:
        label_word_ids = label_word_ids_for(tokenizer, task.label_words)
        budget = max_length - 1  # room for the label word

        def tokenize(batch: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
            out = []
            for text in batch["text"]:
                ids, truncated = _encode_prompt(tokenizer, task.template, text, budget)
                stats["truncated"] += int(truncated)
                out.append(ids)
            return {"input_ids": out}

        collator = CausalLabelWordCollator(pad_id, label_word_ids, keep_label_logits)
        loss_func = LabelWordLoss(keep_label_logits)
        preprocess = LabelWordScores(label_word_ids, keep_label_logits)

    from datasets import DatasetDict

    tokenised = DatasetDict(
        {
            name: task.splits[name].map(
                tokenize,
                batched=True,
                remove_columns=[c for c in task.splits[name].column_names if c != "label"],
                desc=f"Tokenising {task.name}/{name}",
                load_from_cache_file=False,
            )
            for name in names
        }
    )
    if stats["truncated"]:
        logger.info("%d texts of %s were shortened to fit max_length=%d", stats["truncated"], task.name, max_length)
    return PreparedTask(
        task=task,
        kind=kind,
        tokenizer=tokenizer,
        datasets=tokenised,
        data_collator=collator,
        compute_metrics=AccuracyMetric(label_word_ids),
        compute_loss_func=loss_func,
        preprocess_logits_for_metrics=preprocess,
        label_word_ids=label_word_ids,
        max_length=max_length,
        keep_label_logits=keep_label_logits,
        stats=stats,
    )


@torch.no_grad()
def evaluate_accuracy(
    model: Any,
    spec: PreparedTask,
    split: str = "test",
    batch_size: int = 32,
    max_examples: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Accuracy (and mean loss) of ``model`` on a split, without a Trainer: ``{"accuracy", "loss", "num_examples"}``.

    The loss is the task's training loss (full-vocabulary cross-entropy at the label position for causal LMs); the
    model's train/eval mode is restored afterwards. ``progress``: a bar with the time left (an evaluation of a
    larger doer takes minutes).
    """
    dataset = spec.datasets[split]
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    dataset = sorted_by_length(dataset)  # same result, far less padding
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct, total, loss_sum = 0, 0, 0.0
    batches = range(0, len(dataset), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"{split} accuracy ({len(dataset)} examples)", unit="batch", leave=False)
    try:
        for start in batches:
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = spec.data_collator(rows)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            labels = batch.pop("labels")
            outputs = model(**batch)
            if spec.kind == "seq_cls":
                logits = _first_logits(outputs)
                loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
                scores, truth = logits, labels
            else:
                logits = _first_logits(outputs)
                row_logits, targets = _labeled_prediction_logits(logits, labels, spec.keep_label_logits)
                loss_sum += float(F.cross_entropy(row_logits.float(), targets, reduction="sum"))
                scores = row_logits[:, torch.as_tensor(spec.label_word_ids, device=row_logits.device)]
                lookup = {token: cls for cls, token in enumerate(spec.label_word_ids)}
                truth = torch.as_tensor([lookup[int(t)] for t in targets], device=scores.device)
            correct += int((scores.argmax(dim=-1) == truth).sum())
            total += len(rows)
    finally:
        model.train(was_training)
    return {
        "accuracy": correct / total if total else math.nan,
        "loss": loss_sum / total if total else math.nan,
        "num_examples": total,
    }
