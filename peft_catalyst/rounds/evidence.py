"""What the mentor is shown of the data: labelled examples, the current prompt's errors, the label names.

Reads the catalyst split (a text per row and its class id) and a prompt's per-example predictions
(:attr:`peft_catalyst.rounds.scoring.Score.predictions`, from the scoring pass a round runs anyway) and turns them into
plain :class:`~peft_catalyst.mentors.LabeledExample` data for a :class:`~peft_catalyst.mentors.MentorRequest`.
Examples are balanced over the classes and seeded; every text is cut to its share of a total word budget, and a
cut text is marked (``cut=True``), never dropped. :func:`round_evidence` assembles a round's
:class:`~peft_catalyst.records.Evidence`, with the best prompts scored so far (:func:`best_prompts`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from peft_catalyst.mentors import LabeledExample
from peft_catalyst.records import Evidence, ScoredPrompt, is_better, ranking_key

__all__ = [
    "BEST_PROMPTS_SHOWN",
    "EvidenceSource",
    "anchor_labels",
    "balanced_indices",
    "best_prompts",
    "cut_words",
    "label_names_of",
    "missing_labels",
    "round_evidence",
]

#: How many of the best prompts scored so far a request shows (``MentorRequest.best_prompts``).
BEST_PROMPTS_SHOWN = 3

LABEL_COLUMNS = ("label", "labels", "label_ids")


def cut_words(text: str, budget: int) -> tuple[str, bool]:
    """``text`` with at most ``budget`` words (whitespace collapsed) and whether it was cut."""
    words = text.split()
    return " ".join(words[: max(1, budget)]), len(words) > max(1, budget)


def missing_labels(text: str, labels: Sequence[str]) -> list[str]:
    """The labels ``text`` does not name (whole words, case-insensitive)."""
    words = {w.strip(".,;:!?\"'()").lower() for w in text.split()}
    return [label for label in labels if label.lower() not in words]


def anchor_labels(text: str, labels: Sequence[str], fits: Any) -> str:
    """``text`` completed with the labels it does not name (``catalyst_label_anchor``), as ``"<text>: a, b"``.

    ``fits(candidate) -> bool`` says whether a text fits the prompt (its token budget): the text's last words are
    dropped until the completed text fits (then the first word's last characters: random tokens decode to long
    "words"), so the labels are never the part that is cut. When nothing of the text fits beside the labels, the
    text is returned as it is: completing it would replace the whole proposal with the labels, and every candidate
    (the mentor's and the random controls') would become one prompt.
    """
    if not missing_labels(text, labels):
        return text
    words = text.split()
    prefixes = [" ".join(words[:keep]) for keep in range(len(words), 0, -1)]
    prefixes += [words[0][:cut] for cut in range(len(words[0]) - 1, 0, -1)] if words else []
    for kept in prefixes:
        suffix = ", ".join(missing_labels(kept, labels))  # a label named by a dropped word is added back
        anchored = f"{kept}: {suffix}"
        if fits(anchored):
            return anchored
    return text


def balanced_indices(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """Up to ``count`` row indices taking the classes in turn (seeded order within each class, classes by id)."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    rng = random.Random(seed)
    queues = [rng.sample(rows, len(rows)) for _, rows in sorted(by_class.items())]
    picked: list[int] = []
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def label_names_of(model: Any, given: Sequence[str] | None) -> list[str]:
    """The class names the mentor is told: ``given`` (``catalyst_labels``), else the model config's ``id2label``
    when it names the classes (not transformers' ``LABEL_0`` defaults), else none."""
    if given:
        return [str(name) for name in given]
    from peft_catalyst.labels import _named

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    id2label = getattr(getattr(base, "config", None), "id2label", None)
    if not _named(id2label):
        return []
    return [str(id2label[i]) for i in sorted(int(k) for k in id2label)] if id2label else []


class EvidenceSource:
    """The catalyst split read as texts and class ids, in the order a scorer's predictions come in.

    Args:
        dataset: the split as scored (:attr:`~peft_catalyst.rounds.scoring.PromptScorer.scored_dataset`): a ``"text"``
            column is used as is, otherwise the first model input (``input_ids``) is decoded with ``tokenizer``.
        tokenizer: decodes token ids when the split holds no text.
        label_names: class names in class-id order (empty: class ids are shown as numbers).
    """

    def __init__(self, dataset: Any, tokenizer: Any, label_names: Sequence[str] = ()) -> None:
        self.label_names = list(label_names)
        self.texts: list[str] = []
        self.labels: list[int] = []
        rows = len(dataset) if hasattr(dataset, "__len__") else 0
        for i in range(rows):
            row = dataset[i]
            label = next((row[c] for c in LABEL_COLUMNS if isinstance(row, dict) and c in row), None)
            if hasattr(label, "item") and getattr(label, "ndim", 1) == 0:
                label = label.item()
            if isinstance(label, bool) or not isinstance(label, int):  # token labels, floats: no classes
                self.texts, self.labels = [], []
                return
            self.labels.append(label)
            self.texts.append(self._text(row, tokenizer))

    @staticmethod
    def _text(row: dict[str, Any], tokenizer: Any) -> str:
        if isinstance(row.get("text"), str):
            return row["text"]
        ids = row.get("input_ids")
        if ids is None or tokenizer is None:
            return ""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def has_classes(self) -> bool:
        """Whether the split has class ids (a notion of examples and errors)."""
        return bool(self.labels)

    def name(self, label: int) -> str:
        """The class's name, or its id when the names are unknown."""
        return self.label_names[label] if 0 <= label < len(self.label_names) else str(label)

    def examples(self, count: int, words: int, seed: int) -> list[LabeledExample]:
        """``count`` labelled examples balanced over the classes, each text cut to ``words`` words."""
        picked = balanced_indices(self.labels, count, seed) if count > 0 else []
        return [self._example(i, words) for i in picked]

    def errors(
        self, predictions: Sequence[int] | None, count: int, words: int, seed: int
    ) -> list[LabeledExample]:
        """Up to ``count`` examples the predictions get wrong (balanced over the true classes), with the predicted
        label; none without predictions or when they do not cover the split."""
        if count <= 0 or predictions is None or len(predictions) != len(self.labels):
            return []
        wrong = [i for i, (p, t) in enumerate(zip(predictions, self.labels)) if int(p) != t]
        picked = balanced_indices([self.labels[i] for i in wrong], count, seed)
        return [self._example(wrong[i], words, predicted=int(predictions[wrong[i]])) for i in picked]

    def _example(self, index: int, words: int, predicted: int | None = None) -> LabeledExample:
        text, cut = cut_words(self.texts[index], words)
        return LabeledExample(
            text=text,
            label=self.name(self.labels[index]),
            predicted=self.name(predicted) if predicted is not None else None,
            cut=cut,
        )


def best_prompts(
    scored: Iterable[ScoredPrompt], higher_is_better: bool, count: int = BEST_PROMPTS_SHOWN
) -> list[ScoredPrompt]:
    """The best ``count`` distinct discrete prompts among ``scored`` (finite scores only), best first, as text, score
    and loss."""
    best: dict[str, ScoredPrompt] = {}
    for p in scored:
        if p.finite and (p.text not in best or is_better(p.score, best[p.text].score, higher_is_better)):
            best[p.text] = ScoredPrompt(p.text, p.score, p.loss)
    return sorted(best.values(), key=lambda p: ranking_key(p.score, higher_is_better))[:count]


def round_evidence(
    source: EvidenceSource,
    *,
    examples: int,
    errors: int,
    words: int,
    seed: int,
    predictions: Sequence[int] | None,
    best: list[ScoredPrompt],
    proposal: str,
) -> Evidence:
    """What a round shows the mentor of the data: ``examples`` balanced examples and ``errors`` errors of the
    ``predictions`` (the current prompt's), their texts sharing ``words`` words, the label names, the ``best`` prompts
    scored so far and the ``proposal`` mode."""
    share = max(1, words // max(1, examples + errors))
    return Evidence(
        examples=source.examples(examples, share, seed) if source.has_classes else [],
        errors=source.errors(predictions, errors, share, seed) if source.has_classes else [],
        labels=list(source.label_names),
        best_prompts=best,
        proposal=proposal,
    )
