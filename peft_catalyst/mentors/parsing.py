"""Parse a mentor's reply into usable candidate prompts.

Takes numbered, bulleted, quoted, JSON and code-fenced replies; drops preambles ("Sure! Here are...") and
explanations; and filters candidates that are empty, over the word budget, duplicates of each other, copies of a
trajectory prompt, or (optionally) unrelated to the task. Every rejection is reported with a reason, because a weak
local mentor rejects most of its output and the reasons tell how to prompt it better.

All patterns are linear-time and the input is capped, so a multi-megabyte reply parses in bounded time.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ParseResult", "extract_items", "normalize", "parse_candidates", "parse_reply"]

MAX_PARSE_CHARS = 64_000
MAX_ITEM_CHARS = 1_000
MAX_REJECTED = 100  # rejections kept for diagnostics; a rambling reply would otherwise list thousands

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
_LIST_MARKER = re.compile(
    r"^\s*(?:"
    r"\(?\d{1,3}\s*[.):\]]"  # 1.  1)  (1)  1:  1]
    r"|\d{1,3}\s+-"  # 1 -
    r"|[-*\u2022\u2023\u25e6\u2043+>]"  # - * bullets > quote
    r"|[a-hA-H][.)](?=\s)"  # a) b.
    r")\s*"
)
_LABEL = re.compile(
    r"^\s*(?:new\s+|improved\s+|better\s+|candidate\s+|alternative\s+)?"
    r"(?:prompt|candidate|instruction|option|version|suggestion)\s*#?\s*\d{0,3}\s*[:.)\-\u2013\u2014]\s*",
    re.I,
)
_MARKDOWN = re.compile(r"\*\*|__|`+|^#{1,6}\s*")
_QUOTED = re.compile(r"\"([^\"\n]{2,}?)\"|\u201c([^\u201d\n]{2,}?)\u201d|\u00ab([^\u00bb\n]{2,}?)\u00bb")
_TRAILING_SCORE = re.compile(r"\s*[(\[](?:[^()\[\]]*(?:loss|score|metric|accuracy)[^()\[\]]*)[)\]]\s*$", re.I)
_PREAMBLE_START = re.compile(
    r"^\s*(?:sure|certainly|of course|okay|ok|absolutely|great|here(?:'s| is| are)|below|these|the following|"
    r"i (?:have|hope|think|will|would|'ve)|i'm|i am|let me|note|explanation|reason|why|each of|all of|"
    r"the (?:new |improved )?prompts?|this prompt|these prompts|they|hope)\b",
    re.I,
)
_EXPLANATION_SPLIT = re.compile(r"\s+[\u2013\u2014]\s+|\s+-\s+(?=[A-Z]|this\b|it\b|more\b|better\b|because\b)")
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\u024f\u0400-\u04ff']+")
_STOPWORDS = frozenset(
    "a an the of for to in on and or is are be by with as at from this that these those it its into about whether "
    "which what who each one two three four five six seven eight nine ten (".split()
)
_JSON_KEYS = ("prompts", "candidates", "instructions", "prompt", "candidate", "instruction", "text", "items")


@dataclass
class ParseResult:
    """Usable candidates (in order) and the rejected ``(text, reason)`` pairs."""

    candidates: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """A short count of rejection reasons, e.g. ``"too_long: 3, copy: 1"``."""
        if not self.rejected:
            return "empty reply"
        counts = Counter(reason for _, reason in self.rejected)
        return ", ".join(f"{reason}: {n}" for reason, n in counts.most_common())


def normalize(text: str) -> str:
    """Case- and punctuation-insensitive form used to detect duplicates and copies."""
    return " ".join(_WORD.findall(text.casefold()))


def _word_count(text: str) -> int:
    return len(text.split())


# --------------------------------------------------------------------------------------------------------- JSON
def _strings_from_json(value: Any, depth: int = 0) -> list[str] | None:
    if depth > 4:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict):
                got = _strings_from_json(item, depth + 1)
                if got:
                    out.extend(got[:1])
        return out
    if isinstance(value, dict):
        for key in _JSON_KEYS:
            for k, v in value.items():
                if k.lower() == key:
                    got = _strings_from_json(v, depth + 1)
                    if got is not None:
                        return got
        strings = [v for v in value.values() if isinstance(v, str)]
        if strings and all(re.fullmatch(r"\D*\d+", str(k)) for k in value):  # {"1": "...", "2": "..."}
            return strings
    return None


def _try_json(text: str) -> list[str] | None:
    stripped = text.strip()
    candidates = [stripped]
    for open_, close in (("[", "]"), ("{", "}")):
        start, end = stripped.find(open_), stripped.rfind(close)
        if 0 <= start < end:
            candidates.append(stripped[start : end + 1])
    for blob in candidates:
        if not blob or blob[0] not in "[{":
            continue
        try:
            value = json.loads(blob)
        except (ValueError, RecursionError):
            continue
        got = _strings_from_json(value)
        if got is not None:
            return got
    return None


# --------------------------------------------------------------------------------------------------------- lines
def _clean(item: str) -> str:
    item = item.strip()
    item = _MARKDOWN.sub("", item).strip()
    item = _LIST_MARKER.sub("", item, count=1) if _LIST_MARKER.match(item) else item
    item = _LABEL.sub("", item, count=1)
    item = _MARKDOWN.sub("", item).strip()
    match = _QUOTED.search(item)
    before = item[: match.start()].strip() if match else ""
    if match and (not before or before.endswith(":")):
        # `"Classify the review" - clearer` or `Try: "Classify..."`: keep the quoted prompt, drop the remark.
        item = next(g for g in match.groups() if g is not None)
    elif not match:
        parts = _EXPLANATION_SPLIT.split(item, maxsplit=1)
        if len(parts) == 2 and parts[0].strip():
            item = parts[0]
    item = _TRAILING_SCORE.sub("", item)
    item = item.strip().strip("\"'\u201c\u201d\u2018\u2019`").strip()
    return " ".join(item.split())


def _cap(text: str) -> str:
    """At most ``MAX_PARSE_CHARS``, cut at a line end: a line cut in the middle would become a bogus candidate."""
    if len(text) <= MAX_PARSE_CHARS:
        return text
    head = text[:MAX_PARSE_CHARS]
    end = head.rfind("\n")
    return head[:end] if end > 0 else ""


def _extract(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """``(items, dropped)``: candidate strings, and the lines set aside as preamble or remark, with that reason."""
    text = _cap(text or "")
    fences = _FENCE.findall(text)
    if fences:
        items: list[str] = []
        dropped: list[tuple[str, str]] = []
        for _lang, body in fences:
            if "```" not in body:
                got, lost = _extract(body)
                items += got
                dropped += lost
        if items:
            return items, dropped
    parsed = _try_json(text)
    if parsed is not None:
        return [" ".join(s.split()) for s in parsed], []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    listed = {i for i, line in enumerate(lines) if _LIST_MARKER.match(line) or _LABEL.match(_MARKDOWN.sub("", line))}
    out: list[str] = []
    dropped = []
    for i, line in enumerate(lines):
        line = line[:MAX_ITEM_CHARS]
        if listed and i not in listed:
            dropped.append((line, "not_listed"))  # text around a list: preamble or explanation
        elif line.endswith(":") and not _QUOTED.search(line):  # "Here are the prompts:", "1. Prompts:"
            dropped.append((line, "preamble"))
        elif not listed and _PREAMBLE_START.match(_MARKDOWN.sub("", line)):
            dropped.append((line, "preamble"))
        else:
            out.append(_clean(line))
    return out, dropped


def extract_items(text: str) -> list[str]:
    """Candidate strings in ``text`` before filtering: JSON lists, fenced blocks, list items, or plain lines."""
    return _extract(text)[0]


# --------------------------------------------------------------------------------------------------------- filters
def stems(text: str) -> set[str]:
    """Crude stems (first five letters) of the content words of ``text``: "headlines" and "headline" match."""
    return _stems(text)


def _stems(text: str) -> set[str]:
    return {w[:5] for w in _WORD.findall(text.casefold()) if len(w) >= 3 and w not in _STOPWORDS}


#: Words an instruction keeps its meaning without: dropped from a candidate only when that brings it within the word
#: budget. A small mentor (SmolLM2-135M) cannot count words: a third of its lines are one to three words over.
_FILLERS = frozenset({"a", "an", "the", "either", "please", "just", "simply", "really", "very", "following", "given"})


def fit_words(item: str, max_words: int) -> str:
    """``item`` within ``max_words`` words by dropping filler words (articles, "please", ...), when that suffices;
    otherwise ``item`` unchanged (it is then rejected as too long)."""
    if _word_count(item) <= max_words:
        return item
    words = item.split()
    kept = [w for w in words if w.casefold().strip(",.:;!?\"'") not in _FILLERS]
    if not kept or len(kept) > max_words:
        return item
    shorter = " ".join(kept)
    return shorter[0].upper() + shorter[1:] if item[:1].isupper() else shorter


def _reject_reason(
    item: str,
    *,
    max_words: int,
    seen: set[str],
    excluded: set[str],
    task_stems: set[str] | None,
    banned: set[str],
) -> str | None:
    if not item:
        return "empty"
    norm = normalize(item)
    if not norm or not re.search(r"[^\W\d_]", item):
        return "empty"
    if _word_count(item) > max_words:
        return "too_long"
    if norm in excluded:
        return "copy"
    if norm in seen:
        return "duplicate"
    if banned and banned & _stems(item):
        return "example_leak"
    if task_stems is not None and not (_stems(item) & task_stems):
        return "off_task"
    return None


def parse_reply(
    texts: str | Sequence[str],
    *,
    max_words: int = 8,
    num_candidates: int | None = None,
    exclude: Iterable[str] = (),
    task_description: str | None = None,
    banned_words: Iterable[str] = (),
) -> ParseResult:
    """Parse one or several sampled replies into a :class:`ParseResult` (candidates in order, then rejections).

    ``task_description``, when given, turns on the task filter: a candidate must share a word stem with it
    (catches a weak model writing example inputs instead of instructions). A candidate sharing a word stem with
    ``banned_words`` is rejected as ``example_leak``: used for the words of a few-shot example's task.
    """
    if isinstance(texts, str):
        texts = [texts]
    excluded = {normalize(t) for t in exclude if t}
    task_stems = _stems(task_description) if task_description else None
    banned = set().union(*(_stems(w) for w in banned_words)) if banned_words else set()
    result = ParseResult()
    seen: set[str] = set()
    for text in texts:
        items, dropped = _extract(text)
        room = MAX_REJECTED - len(result.rejected)
        result.rejected.extend((line[:200], reason) for line, reason in dropped[: max(0, room)])
        for item in items:
            item = fit_words(item, max_words)
            reason = _reject_reason(
                item, max_words=max_words, seen=seen, excluded=excluded, task_stems=task_stems, banned=banned
            )
            if reason is None and num_candidates is not None and len(result.candidates) >= num_candidates:
                reason = "surplus"
            if reason is None:
                result.candidates.append(item)
                seen.add(normalize(item))
            elif len(result.rejected) < MAX_REJECTED:
                result.rejected.append((item[:200], reason))
    return result


def parse_candidates(
    raw: str | Sequence[str],
    *,
    max_words: int = 8,
    num_candidates: int | None = None,
    exclude: Iterable[str] = (),
    task_description: str | None = None,
    banned_words: Iterable[str] = (),
) -> list[str]:
    """Usable candidate prompts from a raw reply (or several samples), in order; see :func:`parse_reply`."""
    return parse_reply(
        raw,
        max_words=max_words,
        num_candidates=num_candidates,
        exclude=exclude,
        task_description=task_description,
        banned_words=banned_words,
    ).candidates
