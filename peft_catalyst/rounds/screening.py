"""Screen many, keep few (``catalyst_num_samples``): a round's usable candidates, and a race's random controls, scored
untrained on the catalyst split; the best go on to selection.

Only scores: the round hands in how hard prompts are scored (its cache of scores by token ids), how random controls
are drawn and how token ids read as text, so the soft prompt, the optimizer and the RNG streams are left as they were.
Knows nothing of mentors or of how a round selects.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from peft_catalyst.records import RoundRecord, ScoredPrompt, Screening, is_better, ranking_key
from peft_catalyst.rounds.scoring import PromptScorer, Score

__all__ = ["beats_random", "ranked", "screen"]


def ranked(prompts: Sequence[ScoredPrompt], indices: list[int], higher_is_better: bool) -> list[int]:
    """``indices`` of ``prompts`` best first; prompts without a finite score last, in their order."""
    finite = [i for i in indices if prompts[i].finite]
    finite.sort(key=lambda i: ranking_key(prompts[i].score, higher_is_better))
    return finite + [i for i in indices if not prompts[i].finite]


def beats_random(
    mentor: Sequence[ScoredPrompt], random: Sequence[ScoredPrompt], higher_is_better: bool
) -> bool | None:
    """Whether the best finite mentor score beats the best finite random one (None: neither has one, or the two are
    equal, as when anchoring or a short prompt makes a mentor and a random prompt one text: a tie is no evidence)."""
    best = [
        min((p.score for p in group if p.finite), key=lambda v: ranking_key(v, higher_is_better), default=None)
        for group in (mentor, random)
    ]
    if best[0] is None or best[1] is None:
        return None if best[0] is None and best[1] is None else best[1] is None
    if best[0] == best[1]:
        return None
    return is_better(best[0], best[1], higher_is_better)


def screen(
    record: RoundRecord,
    usable: list[int],
    *,
    keep: int,
    samples: int,
    num_controls: int,
    scorer: PromptScorer,
    score_ids: Callable[[list[list[int]]], list[Score]],
    draw_controls: Callable[[int], list[list[int]]],
    decode: Callable[[list[int]], str],
) -> tuple[list[int], list[list[int]] | None]:
    """With ``samples`` above ``keep``, score every usable candidate of ``record`` untrained (and ``num_controls``
    random controls, drawn as many as ``samples``) and keep the best ``keep`` (and ``num_controls``).

    Fills the candidates' scores, ``record.screening`` and ``record.beat_random_screening``. Returns the candidates
    that go on (best first) and the kept controls' token ids (None: no screening).
    """
    if samples <= keep:
        return usable, None
    started, calls = time.perf_counter(), scorer.calls
    scores = score_ids([record.candidates[i].token_ids for i in usable])
    for i, score in zip(usable, scores):
        score.fill(record.candidates[i])
    controls: list[ScoredPrompt] = []
    if num_controls > 0:
        ids = draw_controls(max(samples, num_controls))
        controls = [score.prompt(decode(c), c) for c, score in zip(ids, score_ids(ids))]
    kept = ranked(record.candidates, usable, scorer.higher_is_better)[:keep]
    kept_controls = ranked(controls, list(range(len(controls))), scorer.higher_is_better)[:num_controls]
    prompts = scorer.calls - calls
    per_pass = scorer.prompts_per_pass() if scorer.sequential_reason() is None else 1
    record.screening = Screening(
        samples=samples,
        kept=kept,
        scores=[c.score if c.finite else None for c in record.candidates],
        controls=controls,
        kept_controls=kept_controls,
        prompts=prompts,
        passes=math.ceil(prompts / per_pass),
        seconds=round(time.perf_counter() - started, 3),
    )
    if controls:
        record.beat_random_screening = beats_random(
            [record.candidates[i] for i in usable], controls, scorer.higher_is_better
        )
    return kept, [controls[i].token_ids for i in kept_controls]
