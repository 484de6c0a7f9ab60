"""Screen many, keep few (``catalyst_num_samples``): a round's usable candidates, and a race's random controls, scored
untrained on the catalyst split; the best go on to selection.

Two schedules (``catalyst_screen_schedule``): ``"full"`` scores every candidate on the whole split; ``"halving"``
scores all on a first rung of examples, keeps the better half on twice the examples, and so on (:func:`halving_rungs`
gives the rule), so the losers cost a fraction of a pass and the ones that go on are compared on the whole split.

Only scores: the round hands in how hard prompts are scored (its cache of scores by token ids), how random controls
are drawn and how token ids read as text, so the soft prompt, the optimizer and the RNG streams are left as they were.
Knows nothing of mentors or of how a round selects.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from peft_catalyst.records import (
    RoundRecord,
    ScoredPrompt,
    Screening,
    ScreenRung,
    ScreenSchedule,
    is_better,
    ranking_key,
)
from peft_catalyst.rounds.scoring import PromptScorer, Score

__all__ = ["beats_random", "halving_rungs", "ranked", "screen", "successive_halving"]

HALVING_ETA = 2
"""Successive halving's rate: each rung keeps half the candidates (rounded up) on twice the examples."""


def halving_rungs(candidates: int, keep: int, examples: int, min_examples: int) -> list[tuple[int, int]]:
    """``(candidates scored, examples each)`` of every rung of successive halving, from ``candidates`` down to
    ``keep`` on a split of ``examples``.

    The rule: ``h = ceil(log2(candidates / keep))`` halvings reach ``keep``; the first rung has
    ``max(min_examples, ceil(examples / 2**h))`` examples (never more than the split), so that the rung where ``keep``
    remain is the whole split, or the split is used up sooner when ``min_examples`` asks for more; each rung doubles
    the examples and keeps ``max(keep, ceil(n / 2))`` of its ``n`` candidates; the last rung is the whole split, and
    its best ``keep`` go on. Rungs nest: each scores a prefix of one fixed order of the split.

    >>> halving_rungs(16, 1, 100, 8)
    [(16, 8), (8, 16), (4, 32), (2, 64), (1, 100)]
    >>> halving_rungs(16, 4, 100, 16)
    [(16, 25), (8, 50), (4, 100)]
    """
    if candidates < 1 or keep < 1 or examples < 1 or min_examples < 1:
        raise ValueError(f"halving needs positive counts (got {candidates}, {keep}, {examples}, {min_examples})")
    halvings = max(0, math.ceil(math.log2(candidates / keep))) if candidates > keep else 0
    size = min(examples, max(min_examples, math.ceil(examples / HALVING_ETA**halvings)))
    rungs, count = [(candidates, size)], candidates
    while size < examples:
        count, size = max(keep, math.ceil(count / HALVING_ETA)), min(examples, size * HALVING_ETA)
        rungs.append((min(count, candidates), size))
    return rungs


def successive_halving(
    candidates: int,
    keep: int,
    examples: int,
    min_examples: int,
    score: Callable[[list[int], int], list[ScoredPrompt]],
    higher_is_better: bool,
) -> tuple[list[int], list[ScoredPrompt | None], list[tuple[int, int]]]:
    """Run :func:`halving_rungs` over ``candidates`` (indices ``0..candidates-1``); ``score(indices, n)`` scores
    those on the first ``n`` examples (the whole split when ``n == examples``).

    Returns the ``keep`` that go on (best first, ranked by the last rung's scores only, as :func:`ranked` ranks: ties
    keep their order, non-finite scores last), each candidate's last score (its ``examples`` set to the rung's size),
    and the rungs run.
    """
    rungs = halving_rungs(candidates, keep, examples, min_examples)
    alive, last = list(range(candidates)), [None] * candidates
    for count, size in rungs:
        alive = alive[:count]  # alive is best first after the rung before
        for i, prompt in zip(alive, score(alive, size)):
            prompt.examples = size
            last[i] = prompt
        alive = ranked(last, alive, higher_is_better)
    return alive[:keep], last, rungs


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
    schedule: ScreenSchedule = "full",
    min_examples: int = 16,
    score_subset: Callable[[list[list[int]], int], list[Score]] | None = None,
) -> tuple[list[int], list[list[int]] | None]:
    """With ``samples`` above ``keep``, score every usable candidate of ``record`` untrained (and ``num_controls``
    random controls, drawn as many as ``samples``) and keep the best ``keep`` (and ``num_controls``).

    ``schedule="halving"`` screens by :func:`successive_halving` (first rung at least ``min_examples``): the rungs
    below the whole split are scored by ``score_subset(token_ids, examples)``, the whole split by ``score_ids``.

    Fills the candidates' scores, ``record.screening`` and ``record.beat_random_screening``. Returns the candidates
    that go on (best first) and the kept controls' token ids (None: no screening).
    """
    if samples <= keep:
        return usable, None
    if schedule == "halving":
        if score_subset is None:
            raise ValueError("halving screening needs score_subset")
        return _screen_halving(
            record, usable, keep, samples, num_controls, scorer, score_ids, score_subset, draw_controls, decode,
            min_examples,
        )  # fmt: skip
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


def _screen_halving(
    record: RoundRecord,
    usable: list[int],
    keep: int,
    samples: int,
    num_controls: int,
    scorer: PromptScorer,
    score_ids: Callable[[list[list[int]]], list[Score]],
    score_subset: Callable[[list[list[int]], int], list[Score]],
    draw_controls: Callable[[int], list[list[int]]],
    decode: Callable[[list[int]], str],
    min_examples: int,
) -> tuple[list[int], list[list[int]] | None]:
    """:func:`screen` by successive halving: candidates (and controls, halved alike down to ``num_controls``)."""
    started, calls, rows = time.perf_counter(), scorer.calls, scorer.example_scorings
    size, hib = scorer.size, scorer.higher_is_better
    candidates = record.candidates

    def scored(ids: list[list[int]], examples: int) -> list[Score]:
        return score_ids(ids) if examples >= size else score_subset(ids, examples)

    def score_candidates(indices: list[int], examples: int) -> list[ScoredPrompt]:
        for k, score in zip(indices, scored([candidates[usable[k]].token_ids for k in indices], examples)):
            score.fill(candidates[usable[k]])
        return [candidates[usable[k]] for k in indices]

    went_on, _, rungs = successive_halving(len(usable), keep, size, min_examples, score_candidates, hib)
    kept = [usable[k] for k in went_on]
    controls: list[ScoredPrompt] = []
    kept_controls: list[int] = []
    control_rungs: list[tuple[int, int]] = []
    if num_controls > 0:
        ids = draw_controls(max(samples, num_controls))
        controls = [ScoredPrompt(decode(c), token_ids=c) for c in ids]

        def score_controls(indices: list[int], examples: int) -> list[ScoredPrompt]:
            for k, score in zip(indices, scored([controls[k].token_ids for k in indices], examples)):
                score.fill(controls[k])
            return [controls[k] for k in indices]

        kept_controls, _, control_rungs = successive_halving(
            len(controls), num_controls, size, min_examples, score_controls, hib
        )
    by_size = {n: [c, 0] for c, n in rungs}
    for c, n in control_rungs:
        by_size.setdefault(n, [0, 0])[1] = c
    prompts = scorer.calls - calls
    per_pass = scorer.prompts_per_pass() if scorer.sequential_reason() is None else 1
    record.screening = Screening(
        samples=samples,
        kept=kept,
        scores=[c.score if c.finite else None for c in candidates],
        controls=controls,
        kept_controls=kept_controls,
        prompts=prompts,
        passes=math.ceil(prompts / per_pass),
        seconds=round(time.perf_counter() - started, 3),
        schedule="halving",
        rungs=[ScreenRung(examples=n, candidates=c, controls=k) for n, (c, k) in sorted(by_size.items())],
        examples=[c.examples for c in candidates],
        example_scorings=scorer.example_scorings - rows,
    )
    if controls:
        record.beat_random_screening = beats_random(
            [candidates[i] for i in kept], [controls[i] for i in kept_controls], hib
        )
    return kept, [controls[i].token_ids for i in kept_controls]
