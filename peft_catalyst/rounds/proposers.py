"""Where a round's candidates come from (``catalyst_proposers``): a mix of proposers, each drawing its prompts from a
generator seeded by ``(seed, round index, proposer)`` alone, so a resumed run draws a round's prompts again bit for
bit.

- ``mentor``: the LLM, asked through :mod:`.mentor_exchange` (the round engine asks it; nothing is drawn here);
- ``vocab``: random vocabulary words (the random control's draw, :func:`~peft_catalyst.mentors.random_mentor.
  draw_word_prompts`);
- ``labels``: random vocabulary words completed with the label words (:func:`.evidence.anchor_labels`);
- ``sample_vocab``: uniformly random token ids of the whole embedding matrix, as PEFT's
  ``PromptTuningInit.SAMPLE_VOCAB`` draws them (``torch.randint(0, num_embeddings, (n,))``, here from a seeded
  generator of its own, not the global one PEFT draws from: the same ids for the same generator state);
- ``examples``: labelled *training* examples written as text (the row's text, then its label word) and cut to the
  prompt's length, demonstrations as a start as CPT does; they come from the training set the host trainer holds
  (after the catalyst split was carved from it), never from the catalyst, validation or test split;
- ``text``: the user's manual prompt (``catalyst_manual_prompt``), else the task description;
- ``current``: the incumbent itself, one candidate judged at screening like the others (so keeping the prompt is one
  candidate among the rest); the round engine scores it as the soft prompt it is, not as its nearest tokens.

Knows nothing of scoring or selection: it turns settings into counts, draws texts or token ids, and reads a round
record's outcome as wins per proposer (:func:`round_wins`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from peft_catalyst.mentors.random_mentor import draw_word_prompts
from peft_catalyst.records import CONTROL_PROPOSER, CURRENT_PROPOSER, Decision, RoundRecord, ranking_key
from peft_catalyst.rounds.evidence import LABEL_COLUMNS, anchor_labels, balanced_indices

__all__ = [
    "ONE_PROMPT",
    "PROPOSERS",
    "Draw",
    "TrainExamples",
    "draw_labels",
    "draw_sample_vocab",
    "draw_vocab",
    "parse_proposers",
    "proposer_seed",
    "round_wins",
    "without_mentor",
]

#: Every proposer a round can draw from, in the order a list of names is split in.
PROPOSERS: tuple[str, ...] = ("mentor", "vocab", "labels", "sample_vocab", "examples", "text", "current")
#: Proposers that give one prompt whatever their count (a second copy would be the same prompt).
ONE_PROMPT: tuple[str, ...] = ("text", "current")
#: Training rows read per round by ``examples`` (a seeded sample; the demonstrations are balanced within it).
EXAMPLE_POOL = 64


def parse_proposers(value: Any, samples: int) -> dict[str, int] | None:
    """``catalyst_proposers`` as ``{name: count}`` (None: not set, the mentor alone as before).

    Accepts a dict, a JSON dict or list, ``"mentor=4,vocab=4"``, or a list of names (``"mentor,vocab"`` or
    ``["mentor", "vocab"]``): ``text`` and ``current`` then get one prompt each and ``samples`` (the prompts a round
    asks, ``catalyst_num_samples`` or ``catalyst_num_candidates``) is split evenly over the others, the first ones
    taking the remainder. Raises ``ValueError`` with one line naming the fix.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "{[":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"catalyst_proposers is not valid JSON ({exc.msg}): write e.g. 'mentor=4,vocab=4'"
                ) from None
        elif "=" in text:
            value = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                name, _, count = part.partition("=")
                try:
                    value[name.strip()] = int(count)
                except ValueError:
                    raise ValueError(
                        f"catalyst_proposers: {part!r} has no whole count: write name=count, e.g. 'mentor=4,vocab=4'"
                    ) from None
        else:
            value = [p.strip() for p in text.split(",") if p.strip()]
    if isinstance(value, (list, tuple)):
        names = [str(n) for n in value]
        _check_names(names)
        if len(set(names)) != len(names):
            raise ValueError(f"catalyst_proposers names a proposer twice ({names}): name each once")
        single = [n for n in names if n in ONE_PROMPT]
        shared = [n for n in names if n not in ONE_PROMPT]
        left = max(0, samples - len(single))
        counts = {n: left // len(shared) + (i < left % len(shared)) for i, n in enumerate(shared)} if shared else {}
        return {n: 1 if n in ONE_PROMPT else counts[n] for n in names}
    if not isinstance(value, dict):
        raise ValueError(
            f"catalyst_proposers must be name=count pairs or a list of names, not {type(value).__name__}: write e.g. "
            "'mentor=4,vocab=4'"
        )
    counts = {}
    for name, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"catalyst_proposers: the count of {name!r} must be a whole number (got {count!r})")
        counts[str(name)] = count
    _check_names(list(counts))
    negative = [f"{n}={c}" for n, c in counts.items() if c < 0]
    if negative:
        raise ValueError(f"catalyst_proposers: counts must be >= 0 (got {', '.join(negative)}): give 0 or more")
    many = [f"{n}={c}" for n, c in counts.items() if n in ONE_PROMPT and c > 1]
    if many:
        raise ValueError(
            f"catalyst_proposers: {', '.join(many)}: 'text' and 'current' give one prompt each, set their count to 1"
        )
    if not any(counts.values()):
        raise ValueError("catalyst_proposers draws no prompt (every count is 0): give one proposer a count above 0")
    return counts


def without_mentor(counts: dict[str, int], to: str = "labels") -> dict[str, int]:
    """``counts`` with the mentor's share drawn by ``to`` instead (a round without an LLM screens as many prompts);
    a copy of ``counts`` when it has no mentor. ``labels`` by default: label-anchored random words, the proposer whose
    starts paid on the default job (``benchmarks/results/compare/screen-first/``)."""
    if not counts.get("mentor"):
        return dict(counts)
    out = {name: n for name, n in counts.items() if name != "mentor"}
    out[to] = out.get(to, 0) + counts["mentor"]
    return out


def _check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in PROPOSERS]
    if unknown:
        raise ValueError(
            f"catalyst_proposers: unknown proposer {', '.join(map(repr, unknown))}: use names among "
            + ", ".join(PROPOSERS)
        )
    if not names:
        raise ValueError(f"catalyst_proposers names no proposer: use names among {', '.join(PROPOSERS)}")


def proposer_seed(round_seed: int, name: str) -> int:
    """The seed of proposer ``name``'s draws in the round seeded ``round_seed`` (the round's own seed, from the run's
    seed and the round index): a 63-bit integer, the same in every process and every resumed run."""
    digest = hashlib.sha256(f"{round_seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Draw:
    """One drawn prompt: its text and, when drawn as tokens (``sample_vocab``, ``current``), its token ids (None:
    the round tokenizes the text to the prompt's length)."""

    text: str
    token_ids: list[int] | None = None


def draw_vocab(words: Sequence[str], count: int, max_words: int, seed: int) -> list[Draw]:
    """``count`` distinct prompts of ``max_words`` random words from ``words`` (the random control's draw)."""
    return [Draw(t) for t in draw_word_prompts(list(words), random.Random(seed), count, max_words)]


def draw_labels(
    words: Sequence[str],
    labels: Sequence[str],
    count: int,
    max_words: int,
    fits: Callable[[str], bool],
    seed: int,
) -> list[Draw]:
    """``count`` random-word prompts completed with the label words (``"<words>: positive, negative"``), their words
    cut so that the labels fit the prompt (``fits``)."""
    return [Draw(anchor_labels(d.text, labels, fits)) for d in draw_vocab(words, count, max_words, seed)]


def draw_sample_vocab(
    num_embeddings: int, count: int, length: int, seed: int | torch.Generator, decode: Callable[[list[int]], str]
) -> list[Draw]:
    """``count`` prompts of ``length`` token ids drawn as PEFT's ``SAMPLE_VOCAB`` init draws them, ``torch.randint(0,
    num_embeddings, (length,))`` (uniform over every row of the embedding matrix, special tokens included), one
    after the other from a generator of their own: a new one seeded ``seed``, or ``seed`` itself when it is a
    generator (from the state PEFT's global generator is in, it draws PEFT's ids; ``tests/test_proposers.py``)."""
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, num_embeddings, (length,), dtype=torch.long, generator=generator).tolist()
        out.append(Draw(decode(ids), ids))
    return out


class TrainExamples:
    """Labelled training examples written as text, for the ``examples`` proposer.

    Reads only the ``dataset`` it is given (the host trainer's ``train_dataset``), and of it only a seeded sample of
    :data:`EXAMPLE_POOL` rows per draw. A row's text is its ``"text"`` column or its decoded ``input_ids`` (the task's
    input format, e.g. ``"Review: ...\\nSentiment:"``); a row with a class id in ``label`` is written as
    ``"<text> <label word>"``, a row without as its text alone (an LM row's text holds its answer).
    """

    def __init__(self, dataset: Any, tokenizer: Any, label_names: Sequence[str] = ()) -> None:
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.label_names = list(label_names)

    def __len__(self) -> int:
        return len(self.dataset) if self.dataset is not None and hasattr(self.dataset, "__len__") else 0

    def _row(self, index: int) -> tuple[str, int | None]:
        row = self.dataset[index]
        if not isinstance(row, dict):
            return "", None
        text = row.get("text")
        if not isinstance(text, str):
            ids = row.get("input_ids")
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids or [])
            text = self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
        label = next((row[c] for c in LABEL_COLUMNS if c in row), None)
        if hasattr(label, "item") and getattr(label, "ndim", 1) == 0:
            label = label.item()
        return " ".join(text.split()), label if isinstance(label, int) and not isinstance(label, bool) else None

    def _written(self, text: str, label: int | None, words: int | None) -> str:
        kept = text.split()
        kept = kept[-words:] if words is not None and words < len(kept) else kept  # the end holds the format's cue
        name = None if label is None else (self.label_names[label] if 0 <= label < len(self.label_names) else None)
        return " ".join(kept + ([name] if name else []))

    def draw(self, count: int, fits: Callable[[str], bool], seed: int) -> list[Draw]:
        """``count`` demonstrations, each of up to one example per class (balanced, seeded) with their texts cut from
        the front until the prompt holds them (``fits``); at the least the last tokens of one example and its label
        (a prompt too short for even the label word gets it cut by the round, as any text)."""
        total = len(self)
        if count <= 0 or total == 0:
            return []
        rng = random.Random(seed)
        pool = rng.sample(range(total), min(EXAMPLE_POOL, total))
        rows = [self._row(i) for i in pool]
        rows = [r for r in rows if r[0] or r[1] is not None]
        if not rows:
            return []
        order = balanced_indices([-1 if label is None else label for _, label in rows], len(rows), seed)
        per = max(1, len({label for _, label in rows if label is not None}))
        out: list[Draw] = []
        for k in range(count):
            picked = [rows[order[(k * per + j) % len(order)]] for j in range(per)]
            picked = picked[k % per :] + picked[: k % per]  # each class leads in turn (a short prompt shows one)
            out.append(Draw(self._fitted(picked, fits)))
        return out

    def _fitted(self, picked: list[tuple[str, int | None]], fits: Callable[[str], bool]) -> str:
        for shown in range(len(picked), 0, -1):
            longest = max(len(text.split()) for text, _ in picked[:shown])
            for words in range(longest, 0, -1):
                text = " ".join(self._written(t, label, words) for t, label in picked[:shown])
                if fits(text):
                    return text
        text, label = picked[0]
        ids = self.tokenizer(self._written(text, label, 1), add_special_tokens=False)["input_ids"]
        for keep in range(len(ids) - 1, 0, -1):  # the last word's last tokens and the label's, as the prompt holds
            tail = self.tokenizer.decode(ids[-keep:]).strip()
            if tail and fits(tail):
                return tail
        return self._written(text, label, 1)  # not even the label fits: the round cuts its tokens


def round_wins(record: RoundRecord, higher_is_better: bool) -> dict[str, str]:
    """Which proposer won round ``record`` at ``"screening"`` (the best screened prompt: a candidate's proposer, or
    ``"control"`` for a random control scoring strictly better) and at ``"selection"`` (the proposer of the prompt
    the round left in place: ``"current"`` when the incumbent was kept, ``"control"`` when a race control won).
    A phase that did not happen (no screening, a skipped round) has no entry."""
    wins: dict[str, str] = {}
    screening = record.screening

    def _beats(a: float, b: float) -> bool:
        return ranking_key(a, higher_is_better) < ranking_key(b, higher_is_better)

    if screening is not None:
        best = screening.kept[0] if screening.kept else None
        best_score = screening.scores[best] if best is not None and best < len(screening.scores) else None
        control = screening.controls[screening.kept_controls[0]] if screening.kept_controls else None
        if control is not None and control.finite and (best_score is None or _beats(control.score, best_score)):
            wins["screening"] = CONTROL_PROPOSER
        elif best is not None:
            wins["screening"] = record.candidates[best].proposer or "mentor"
    if record.decision is Decision.KEPT:
        wins["selection"] = CURRENT_PROPOSER
    elif record.decision.restarted:
        winner = record.candidates[record.winner] if record.winner is not None else None
        wins["selection"] = (winner.proposer or "mentor") if winner is not None else CONTROL_PROPOSER
    return wins
