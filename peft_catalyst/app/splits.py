"""How a pool of labelled texts becomes the four splits, identically on every machine for a given seed: clean each
text, deduplicate before splitting (so no text sits in two splits), carve the splits from a seeded stratified order,
build the ``datasets.DatasetDict`` (the steps are described in :mod:`peft_catalyst.app.data`)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SPLITS",
    "deduplicate",
    "normalize_text",
    "resolve_sizes",
    "size_count",
    "split_pool",
    "stratified_order",
    "to_dataset_dict",
]

SPLITS: tuple[str, ...] = ("train", "catalyst", "validation", "test")
"""Split names, in the order a DatasetDict lists them."""


# ---------------------------------------------------------------------------------------------------------------
# Text cleaning
# ---------------------------------------------------------------------------------------------------------------

_C1 = re.compile("[\x80-\x9f]")


def _repair_c1(match: re.Match[str]) -> str:
    """A C1 control char in decoded text is a cp1252 byte read as latin-1 (e.g. \\x92 for a right quote)."""
    try:
        return bytes([ord(match.group())]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined in cp1252
        return " "


def normalize_text(text: str) -> str:
    """NFC, cp1252 C1 controls repaired, U+FFFD and all whitespace runs collapsed to single spaces, stripped."""
    text = unicodedata.normalize("NFC", text)
    text = _C1.sub(_repair_c1, text)
    text = text.replace("\ufffd", " ")
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------------------
# Deduplication and splitting
# ---------------------------------------------------------------------------------------------------------------


def deduplicate(texts: Sequence[str], labels: Sequence[int], stats: dict[str, int]) -> tuple[list[str], list[int]]:
    """Keep the first occurrence of each case-folded text; drop texts that appear with conflicting labels."""
    first: dict[str, tuple[str, int]] = {}
    conflicted: set[str] = set()
    empty = 0
    for text, label in zip(texts, labels):
        if not text:
            empty += 1
            continue
        key = text.casefold()
        if key in first:
            if first[key][1] != label:
                conflicted.add(key)
            continue
        first[key] = (text, label)
    kept = [(text, label) for key, (text, label) in first.items() if key not in conflicted]  # dicts keep file order
    stats["empty"] = empty
    stats["duplicates"] = len(texts) - empty - len(first)
    stats["conflicting_texts"] = len(conflicted)
    stats["pool"] = len(kept)
    return [t for t, _ in kept], [lab for _, lab in kept]


def stratified_order(labels: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation in which every prefix holds each label within one example of its share of the pool.

    Each label's examples are shuffled and placed at evenly spaced keys ``(i + 0.5) / n_label``; sorting all keys
    (random tie-break) interleaves the labels proportionally.
    """
    labels_arr = np.asarray(labels, dtype=np.int64)
    keys = np.empty(len(labels_arr), dtype=np.float64)
    for value in np.unique(labels_arr):  # sorted: no dependence on set or hash order
        members = rng.permutation(np.flatnonzero(labels_arr == value))
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
    tie_break = rng.random(len(labels_arr))
    return np.lexsort((tie_break, keys))


def size_count(value: int | float, pool: int, split: str) -> int:
    """A split size as a count: an int is a count, a float in (0, 1) a fraction of the ``pool`` (rounded)."""
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        if not 0 < value < 1:
            raise ValueError(f"{split}_size as a fraction must be in (0, 1), got {value}")
        return int(round(float(value) * pool))
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or value < 0:
        raise ValueError(f"{split}_size must be a non-negative count or a fraction in (0, 1), got {value!r}")
    return int(value)


def resolve_sizes(
    sizes: Mapping[str, int | float | None], defaults: Mapping[str, int], pool: int | None = None
) -> dict[str, int]:
    """Fill unset sizes from the defaults and check them: counts, or fractions in (0, 1) of ``pool`` (when given)."""
    resolved = {}
    for split in SPLITS:
        value = sizes.get(split)
        value = defaults[split] if value is None else value
        if pool is None and isinstance(value, (float, np.floating)) and not float(value).is_integer():
            raise ValueError(f"{split}_size must be a non-negative int, got {value!r}")
        resolved[split] = size_count(value, pool or 0, split)
    return resolved


def split_pool(
    texts: Sequence[str],
    labels: Sequence[int],
    sizes: Mapping[str, int],
    seed: int,
    carve_order: Sequence[str] = ("test", "validation", "catalyst", "train"),
    what: str = "task",
) -> dict[str, tuple[list[str], list[int]]]:
    """Carve splits of the given sizes from one deduplicated pool, stratified, in ``carve_order``."""
    needed = sum(sizes[s] for s in carve_order)
    if needed > len(texts):
        wanted = ", ".join(f"{s}={sizes[s]}" for s in carve_order)
        raise ValueError(f"The {what} has {len(texts)} unique examples, fewer than the {needed} requested ({wanted}).")
    rng = np.random.default_rng(seed)
    order = stratified_order(labels, rng)
    out: dict[str, tuple[list[str], list[int]]] = {}
    start = 0
    for split in carve_order:
        chunk = order[start : start + sizes[split]]
        start += sizes[split]
        chunk = chunk[rng.permutation(len(chunk))]
        out[split] = ([texts[i] for i in chunk], [int(labels[i]) for i in chunk])
    return out


def to_dataset_dict(parts: Mapping[str, tuple[list[str], list[int]]], label_names: Sequence[str]) -> Any:
    """Build the DatasetDict (text: string, label: ClassLabel) in the canonical split order."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label_names))})
    return DatasetDict(
        {
            split: Dataset.from_dict({"text": parts[split][0], "label": parts[split][1]}, features=features)
            for split in SPLITS
        }
    )
