"""One LLM-guided round, start to finish, producing a :class:`~peft_catalyst.records.RoundRecord`.

The round orchestrates; it does not know how a mentor talks to its server (``peft_catalyst.mentors``), how a soft
prompt maps to tokens (``peft_catalyst.projection``), how prompts are scored (``rounds.scoring``), screened
(``rounds.screening``) or raced (``rounds.race``), what the mentor is shown of the data
(``rounds.evidence``) or how the exchange with it is kept (``rounds.mentor_exchange``). In order:

1. the stage's trajectory is thinned to a few distinct points, each re-embedded from its tokens and scored on the
   catalyst split (a hard prompt scored before reuses its score while nothing but the soft prompt trains);
2. the mentor, on the main process only, gets the scored trajectory, the metric and its direction and the earlier
   rounds' outcomes, and proposes candidates, which are broadcast to every process;
3. selection: ``"best"`` scores every candidate and the current prompt untrained and keeps the best finite score;
   ``"race"`` trains them (and optional random controls) for a counted budget first; ``"first"`` takes the first
   candidate unscored (the research code's rule, for ablations);
4. a new start is written into the soft prompt in place, the prompt's optimizer state is reset and its learning
   rate re-warmed; otherwise the soft prompt is restored bit for bit. ``catalyst_restart`` shapes every start: the
   proposal's tokens, blends of the trained prompt towards them, or a few of its positions rewritten
   (:mod:`.restarts`).

Everything runs under a forked RNG and restores the model's train/eval mode, so a ``"best"`` round whose candidates
all lose leaves training exactly as if it had not happened.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from peft_catalyst.mentors import Mentor
from peft_catalyst.projection import (
    Projector,
    get_soft_prompt,
    random_token_ids,
    read_soft_prompt,
    text_to_token_ids,
    vocabulary_words,
    write_soft_prompt_,
    write_token_ids,
)
from peft_catalyst.records import (
    CONTROL_PROPOSER,
    CURRENT_PROPOSER,
    ArmKind,
    Decision,
    Evidence,
    RestartShape,
    RoundRecord,
    ScoredPrompt,
)
from peft_catalyst.rounds.contract import RoundContext, RoundOutcome, RoundSettings, RoundTimings
from peft_catalyst.rounds.evidence import (
    EvidenceSource,
    anchor_labels,
    best_prompts,
    label_names_of,
    missing_labels,
    round_evidence,
)
from peft_catalyst.rounds.mentor_exchange import ask, chat_entry, mentor_call, mentor_request
from peft_catalyst.rounds.proposers import (
    TrainExamples,
    draw_labels,
    draw_sample_vocab,
    draw_vocab,
    proposer_seed,
    round_wins,
)
from peft_catalyst.rounds.race import (
    RaceBatches,
    RaceRunner,
    RaceSettings,
    arms_per_pass,
    main_process_decision,
    race_arms,
    race_beats_random,
)
from peft_catalyst.rounds.restarts import (
    partial_count,
    partial_positions,
    reset_optimizer_state,
    reshape_optimizer_state_,
    round_shapes,
    shaped_start,
)
from peft_catalyst.rounds.scoring import PromptScorer, Score
from peft_catalyst.rounds.screening import screen

logger = logging.getLogger(__name__)


class RoundEngine:
    """Runs rounds on a host ``Trainer`` (its model, optimizer, accelerator and evaluation pieces).

    Args:
        trainer: the host ``transformers.Trainer`` (or ``SFTTrainer``, ``Seq2SeqTrainer``, ...).
        mentor: the :class:`~peft_catalyst.mentors.Mentor` asked for candidates.
        settings: the ``catalyst_*`` settings (:class:`RoundSettings`: a
            :class:`~peft_catalyst.trainer.CatalystArguments`).
        scorer: scores the model's current soft prompt on the catalyst split.
        projector: reads the soft prompt as text and token ids.
        task_description: what the mentor is told the task is.

    The engine owns what it measures (:attr:`timings`, :attr:`racing`); the schedule reads them and calls
    :meth:`reset` when a run starts.
    """

    def __init__(
        self,
        trainer: Any,
        mentor: Mentor,
        settings: RoundSettings,
        scorer: PromptScorer,
        projector: Projector,
        task_description: str,
    ) -> None:
        self.trainer = trainer
        self.mentor = mentor
        self.settings = settings
        self.scorer = scorer
        self.projector = projector
        self.task_description = task_description
        self.timings = RoundTimings()
        self.hard_prompt_scores: dict[tuple[int, ...], Score] = {}
        self.racing = False  # True while race arms train (their losses are not the main loop's)
        self._said: set[str] = set()
        self._evidence_source: EvidenceSource | None = None
        self._anchor_warned = False
        self._words: list[str] | None = None
        self._train_examples: TrainExamples | None = None

    def reset(self) -> None:
        """Start a run: no timings, no scoring seconds, no remembered hard-prompt scores."""
        self.timings = RoundTimings()
        self.scorer.seconds = 0.0
        self.hard_prompt_scores.clear()

    def seconds(self) -> dict[str, float]:
        """Seconds spent since :meth:`reset`: ``scoring``, ``mentor`` and ``race``."""
        return {"scoring": self.scorer.seconds, "mentor": self.timings.mentor, "race": self.timings.race}

    @property
    def model(self):
        return self.trainer.model

    @property
    def tokenizer(self):
        tok = self.trainer.processing_class
        return getattr(tok, "tokenizer", tok)

    # ------------------------------------------------------------------------------------------------------------
    def run(self, context: RoundContext) -> RoundOutcome:
        """Run round ``context.index`` at optimizer step ``context.step``; the model keeps the chosen prompt
        afterwards."""
        settings, index, earlier = self.settings, context.index, context.earlier
        started = time.perf_counter()
        saved = read_soft_prompt(self.model)
        if not self.only_prompt_trains():  # the trained weights also move hard prompts' scores
            self.hard_prompt_scores.clear()
        record = RoundRecord(
            round=index,
            step=context.step,
            trigger=context.trigger,
            decision=Decision.SKIPPED,
            metric=self.scorer.metric if self.scorer.score_fn is None else "score_fn",
            higher_is_better=self.scorer.higher_is_better,
            selection=settings.catalyst_selection,
        )
        new_rewarm: int | None = None
        events = len(self.scorer.events)
        with preserved_rng(), preserved_mode(self.model):
            points = context.trajectory.select(settings.catalyst_trajectory_points)
            _, scores = self.score_hard_prompts([point.token_ids for point in points])
            for point, score in zip(points, scores):
                record.trajectory.append(
                    score.prompt(point.text, point.token_ids, step=point.step, train_loss=point.train_loss)
                )
            write_soft_prompt_(self.model, saved)

            mix = self.proposer_mix()
            proposal, error = None, None
            if mix.get("mentor"):
                record.evidence = self.evidence(index, record.trajectory, scores[-1] if scores else None, earlier)
                proposal, error = self.ask_mentor(record, context, mix["mentor"])
            record.candidates = self.draw_candidates(record, mix, proposal)
            others = any(c.proposer != "mentor" for c in record.candidates)
            if error is not None and others:
                record.notes.append(f"mentor: no prompt ({error}); the other proposers' prompts compete")
            usable = [i for i, c in enumerate(record.candidates) if c.token_ids is not None]
            controls = None
            if (error is None or others) and usable:
                incumbent = {tuple(c.token_ids): saved for c in record.candidates if c.proposer == CURRENT_PROPOSER}
                usable, controls = self.screen(record, usable, incumbent)
            screened, usable = usable, self.challengers(record, usable)
            if error is not None and not others:
                record.reason = "mentor_error"
            elif not record.candidates:
                record.reason = (proposal.warning if proposal else None) or "no usable candidate"
            elif not usable and screened:  # only the incumbent went on: the round keeps it
                self.keep_incumbent(record, screened)
            elif not usable:
                record.reason = "no candidate could be tokenized"
            elif settings.catalyst_selection == "first":
                record.decision, record.winner = Decision.BLIND, usable[0]
                record.shape, first = self.restart_shapes()[0], record.candidates[usable[0]]  # blend: first alpha
                if record.shape.name == "full":
                    write_token_ids(self.model, first.token_ids)
                else:
                    write_soft_prompt_(self.model, self.shaped_prompt(record.shape, saved, first))
                new_rewarm = self.after_restart(record.shape)
            elif settings.catalyst_selection == "race":
                new_rewarm = self.race(record, usable, saved, context.rewarm_step, controls)
            else:
                new_rewarm = self.best(record, usable, saved)
            self.close_proposers(record)
        reason = self.scorer.sequential_reason()
        if reason is not None:
            record.notes.insert(0, self._say(f"scoring: one prompt at a time ({reason})"))
        record.notes.extend(self.scorer.events[events:])
        record.seconds = round(time.perf_counter() - started, 3)
        record.prompt_after = self.projector.text()
        return RoundOutcome(record, new_rewarm)

    # ------------------------------------------------------------------------------------------------------------
    # Selection rules
    # ------------------------------------------------------------------------------------------------------------

    def best(self, record: RoundRecord, usable: list[int], saved: torch.Tensor) -> int | None:
        """Score the current prompt and every candidate untrained; the best finite score, strictly better, wins."""
        shapes = self.restart_shapes()
        if shapes[0].name != "full":
            return self.best_shaped(record, usable, saved, shapes)
        bar = self._bar(len(usable) + 1, record.round, "scoring")
        (current,), scores = self.score_hard_prompts([record.candidates[i].token_ids for i in usable], [saved])
        record.current = current.prompt(self.projector.text())
        for i, score in zip(usable, scores):
            score.fill(record.candidates[i])
        bar.update(len(usable) + 1)
        bar.close()
        write_soft_prompt_(self.model, saved)
        best = None
        allowed = self.loss_guard(record, [record.candidates[i].loss for i in usable], current.loss)
        for i, ok in zip(usable, allowed):
            cand = record.candidates[i]
            if ok and cand.finite and (best is None or self.scorer.better(cand.score, record.candidates[best].score)):
                best = i
        if (
            best is not None
            and current.finite
            and not self.scorer.better(record.candidates[best].score, current.value)
        ):
            best = None
        best = main_process_decision(self.trainer.accelerator, best)
        if best is None:
            record.decision = Decision.KEPT
            return None
        record.decision, record.winner, record.shape = Decision.ACCEPTED, best, RestartShape()
        write_token_ids(self.model, record.candidates[best].token_ids)
        return self.after_restart()

    def best_shaped(
        self, record: RoundRecord, usable: list[int], saved: torch.Tensor, shapes: list[RestartShape]
    ) -> int | None:
        """``"best"`` with blended or partial starts: every candidate's start in every shape is scored untrained; a
        candidate's recorded score is its best shape's (not its screening score, which is not what is compared);
        the best finite start, strictly better than current, wins."""
        starts = [(i, shape) for i in usable for shape in shapes]
        values = [self.shaped_prompt(shape, saved, record.candidates[i]) for i, shape in starts]
        bar = self._bar(len(starts) + 1, record.round, "scoring")
        current, *scores = self.scorer.score_prompts([saved, *values])
        bar.update(len(starts) + 1)
        bar.close()
        record.current = current.prompt(self.projector.text())
        for i in usable:  # the record shows what was compared; a screening score stays in ``record.screening``
            record.candidates[i].score, record.candidates[i].loss, record.candidates[i].metrics = None, None, {}
        best: int | None = None
        allowed = self.loss_guard(record, [score.loss for score in scores], current.loss)
        for k, ((i, _), score) in enumerate(zip(starts, scores)):
            self._fill_best(record.candidates[i], score)
            if allowed[k] and score.finite and (best is None or self.scorer.better(score.value, scores[best].value)):
                best = k
        if best is not None and current.finite and not self.scorer.better(scores[best].value, current.value):
            best = None
        best = main_process_decision(self.trainer.accelerator, best)
        if best is None:
            record.decision = Decision.KEPT
            return None
        (winner, shape), record.decision = starts[best], Decision.ACCEPTED
        record.winner, record.shape = winner, shape
        write_soft_prompt_(self.model, values[best])
        return self.after_restart(shape)

    def race(
        self,
        record: RoundRecord,
        usable: list[int],
        saved: torch.Tensor,
        rewarm_step: int,
        controls: list[list[int]] | None = None,
    ) -> int | None:
        """Race the incumbent, the usable candidates and the controls (see :mod:`.race`); ``controls``:
        the screened controls' token ids (None: draw ``catalyst_race_controls`` unscreened)."""
        settings = self.settings
        current_text, current_ids = self.projector.text(), self.projector.token_ids()
        seed = self.race_seed(record.round)
        if controls is None:
            controls = self.control_token_ids(settings.catalyst_race_controls, seed)
        arms = race_arms(
            (current_text, current_ids),
            [record.candidates[i] for i in usable],
            usable,
            [(self.tokenizer.decode(ids), ids) for ids in controls],
            self.restart_shapes(),  # every proposal and every control races in each shape
        )
        race_settings = RaceSettings(
            steps=settings.catalyst_race_steps,
            eta=settings.catalyst_race_eta,
            margin=settings.catalyst_race_margin,
            rewarmup_steps=settings.catalyst_rewarmup_steps,
            seed=seed,
            restart_optimizer=settings.catalyst_restart_optimizer,
        )
        total = _race_total_steps(len(arms), race_settings.steps, race_settings.eta)
        bar = self._bar(total, record.round, "race")
        per_pass, reason = arms_per_pass(self.trainer, self.scorer.batch_size, self.only_prompt_trains())
        if reason is not None:
            record.notes.append(self._say(f"race: arms trained one at a time ({reason})"))
        runner = RaceRunner(
            self.trainer,
            self.scorer,
            race_settings,
            RaceBatches(self.trainer, seed),
            incumbent_rewarm_step=rewarm_step,
            describe=lambda: (self.projector.text(), self.projector.token_ids()),
            on_step=bar.update,
            arms_per_pass=per_pass,
        )
        self.racing = True
        started = time.perf_counter()
        try:
            race, rewarm = runner.run(arms)
        finally:
            self.racing = False
            bar.close()
            self.timings.race += time.perf_counter() - started
        record.race = race
        record.beat_random_race = race_beats_random(race, self.scorer.higher_is_better)
        first = race.rungs[0]
        for arm_index, score in zip(first.arms, first.scores):
            arm = race.arms[arm_index]
            if arm.kind is ArmKind.INCUMBENT:
                record.current = ScoredPrompt(
                    current_text, score.score, score.loss, token_ids=list(current_ids), metrics=dict(score.metrics)
                )
            elif arm.kind is ArmKind.CANDIDATE:  # in several shapes: the candidate's best arm
                self._fill_best(record.candidates[arm.candidate], Score(score.score, score.loss, score.metrics))
        winner = race.arms[race.winner]
        if winner.kind is ArmKind.INCUMBENT:
            record.decision = Decision.KEPT
        else:
            record.decision = Decision.ACCEPTED
            record.winner, record.shape = winner.candidate, winner.shape
        return rewarm

    # ------------------------------------------------------------------------------------------------------------
    # Pieces
    # ------------------------------------------------------------------------------------------------------------

    def proposer_mix(self) -> dict[str, int]:
        """The round's proposers and their counts (``catalyst_proposers``; by default the mentor alone, asked
        ``catalyst_samples`` prompts, as before proposers existed)."""
        counts = self.settings.catalyst_proposer_counts
        return dict(counts) if counts else {"mentor": self.settings.catalyst_samples}

    def ask_mentor(self, record: RoundRecord, context: RoundContext, count: int) -> tuple[Any, str | None]:
        """Ask the mentor for ``count`` prompts (main process, broadcast; :mod:`.mentor_exchange`) from the round's
        scored trajectory and evidence; the exchange goes into the record and the chat log."""
        settings = self.settings
        request = mentor_request(
            self.task_description,
            record.trajectory,
            context.earlier,
            record.evidence,
            num_candidates=count,
            max_words=settings.catalyst_max_words or get_soft_prompt(self.model).num_virtual_tokens,
            manual_prompt=settings.catalyst_manual_prompt,
            metric=self.scorer.metric if self.scorer.score_fn is None else "score",
            higher_is_better=self.scorer.higher_is_better,
        )
        started_asking = time.perf_counter()
        try:
            proposal, error = ask(self.mentor, request, self.trainer.accelerator, record.round)
        finally:
            self.timings.mentor += time.perf_counter() - started_asking
        record.mentor = mentor_call(self.mentor, proposal, error)
        if context.chat_log is not None:
            context.chat_log.append(chat_entry(record, request, proposal, error))
        return proposal, error

    def draw_candidates(self, record: RoundRecord, mix: dict[str, int], proposal: Any) -> list[ScoredPrompt]:
        """The round's candidates, proposer by proposer in the order of ``mix`` (:mod:`.proposers`), each marked
        with its proposer; every draw is seeded by the round's seed and the proposer's name only."""
        n = get_soft_prompt(self.model).num_virtual_tokens
        seed = self.race_seed(record.round)
        max_words = self.settings.catalyst_max_words or n

        def fits(text: str) -> bool:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) <= n

        candidates: list[ScoredPrompt] = []
        for name, count in mix.items():
            if count <= 0:
                continue
            stream = proposer_seed(seed, name)
            if name == "mentor":
                drawn = self.tokenize(self.anchored(proposal.candidates if proposal else [], record))
            elif name == "current":
                drawn = [ScoredPrompt(self.projector.text(), token_ids=self.projector.token_ids())]
            elif name == "sample_vocab":
                rows = self.model.word_embeddings.weight.shape[0]
                drawn = [
                    ScoredPrompt(d.text, token_ids=d.token_ids)
                    for d in draw_sample_vocab(rows, count, n, stream, self.tokenizer.decode)
                ]
            else:
                if name == "vocab":
                    texts = [d.text for d in draw_vocab(self.vocabulary_words, count, max_words, stream)]
                elif name == "labels":
                    draws = draw_labels(self.vocabulary_words, self.label_names, count, max_words, fits, stream)
                    texts = [d.text for d in draws]
                elif name == "examples":
                    texts = [d.text for d in self.train_examples.draw(count, fits, stream)]
                else:  # "text"
                    texts = [self.settings.catalyst_manual_prompt or self.task_description]
                drawn = self.tokenize(self.anchored(texts, record) if name != "labels" else texts)
            for candidate in drawn:
                candidate.proposer = name
            record.proposers[name] = len(drawn)
            candidates += drawn
        return candidates

    def challengers(self, record: RoundRecord, usable: list[int]) -> list[int]:
        """``usable`` without the ``current`` proposer's candidate: the incumbent itself takes part in every
        selection (as the race's incumbent arm, or the prompt ``best`` compares with) and is never a restart."""
        return [i for i in usable if record.candidates[i].proposer != CURRENT_PROPOSER]

    def keep_incumbent(self, record: RoundRecord, went_on: list[int]) -> None:
        """Only the ``current`` candidate went on (screening ranked the incumbent above every other prompt, or it was
        the only usable one): the round keeps the prompt, with the incumbent's screening score as ``current``."""
        record.decision = Decision.KEPT
        incumbent = record.candidates[went_on[0]]
        if incumbent.score is not None:
            record.current = ScoredPrompt(
                incumbent.text,
                incumbent.score,
                incumbent.loss,
                token_ids=incumbent.token_ids,
                metrics=dict(incumbent.metrics),
            )

    def close_proposers(self, record: RoundRecord) -> None:
        """After selection: the ``current`` candidate's score is the incumbent's where screening did not score it;
        the random controls are counted as drawn; which proposer won at screening and at selection."""
        for candidate in record.candidates:
            if candidate.proposer == CURRENT_PROPOSER and candidate.score is None and record.current is not None:
                candidate.score, candidate.loss = record.current.score, record.current.loss
                candidate.metrics = dict(record.current.metrics)
        if record.screening is not None and record.screening.controls:
            record.proposers[CONTROL_PROPOSER] = len(record.screening.controls)
        elif record.race is not None:
            arms = {(a.text, tuple(a.token_ids)) for a in record.race.arms if a.kind is ArmKind.CONTROL}
            if arms:
                record.proposers[CONTROL_PROPOSER] = len(arms)
        record.wins = round_wins(record, self.scorer.higher_is_better)

    @property
    def vocabulary_words(self) -> list[str]:
        """The doer's single-token vocabulary words (``vocab`` and ``labels`` draw from them), read once."""
        if self._words is None:
            self._words = vocabulary_words(self.tokenizer)
        return self._words

    @property
    def label_names(self) -> list[str]:
        """The task's label words (``catalyst_labels``, else the model config's ``id2label``)."""
        return label_names_of(self.model, self.settings.catalyst_labels)

    @property
    def train_examples(self) -> TrainExamples:
        """The host trainer's training set (after the catalyst split was carved from it) as the ``examples``
        proposer reads it: never the catalyst split, the evaluation or a test split."""
        dataset = self.trainer.train_dataset
        if self._train_examples is None or self._train_examples.dataset is not dataset:
            self._train_examples = TrainExamples(dataset, self.tokenizer, self.label_names)
        return self._train_examples

    def race_seed(self, index: int) -> int:
        """Seed of round ``index``'s race stream and random controls."""
        settings = self.settings
        seed = settings.catalyst_race_seed if settings.catalyst_race_seed is not None else self.trainer.args.seed
        return seed * 1009 + index

    def screen(
        self, record: RoundRecord, usable: list[int], incumbent: dict[tuple[int, ...], torch.Tensor] | None = None
    ) -> tuple[list[int], list[list[int]] | None]:
        """Screen many, race few (:func:`peft_catalyst.rounds.screening.screen`): with ``catalyst_num_samples`` above
        ``catalyst_num_candidates``, keep the best usable candidates (and, for a race, random controls) scored
        untrained. ``incumbent``: the ``current`` candidate's token ids -> the soft prompt it stands for (scored as
        that prompt). Returns the candidates that go on and the controls' token ids (None: no screening).

        ``catalyst_screen_schedule="halving"`` screens by successive halving down to the number that go on:
        ``catalyst_num_candidates`` to a race, 1 otherwise (``best`` then compares that one with the current
        prompt, ``first`` takes it), on prefixes of one seeded order of the catalyst split (the race's seed)."""
        settings = self.settings
        schedule = settings.catalyst_screen_schedule
        race = settings.catalyst_selection == "race"
        seed = self.race_seed(record.round)
        return screen(
            record,
            usable,
            keep=settings.catalyst_num_candidates if schedule == "full" or race else 1,
            samples=settings.catalyst_samples,
            num_controls=settings.catalyst_race_controls if race else 0,
            scorer=self.scorer,
            score_ids=lambda ids: self.score_hard_prompts(ids, soft=incumbent)[1],
            draw_controls=lambda count: self.control_token_ids(count, seed),
            decode=self.tokenizer.decode,
            schedule=schedule,
            min_examples=settings.catalyst_screen_min_examples,
            score_subset=lambda ids, examples: self.score_hard_prompts_on(ids, examples, seed, soft=incumbent),
        )

    def score_hard_prompts_on(
        self,
        token_ids: list[list[int]],
        examples: int,
        seed: int,
        soft: dict[tuple[int, ...], torch.Tensor] | None = None,
    ) -> list[Score]:
        """Scores of hard prompts on the first ``examples`` of the catalyst split in the order of ``seed``
        (:meth:`PromptScorer.score_prompts`); a prompt repeated in ``token_ids`` is scored once; ``soft`` as in
        :meth:`score_hard_prompts`. Not remembered: :attr:`hard_prompt_scores` holds whole-split scores only."""
        soft = soft or {}
        keys = [tuple(int(i) for i in ids) for ids in token_ids]
        unique = list(dict.fromkeys(keys))
        scores = self.scorer.score_prompts(
            [soft[key] if key in soft else self.prompt_of(list(key)) for key in unique],
            examples=examples,
            order_seed=seed,
        )
        by_key = dict(zip(unique, scores))
        return [by_key[key] for key in keys]

    def score_hard_prompts(
        self,
        token_ids: list[list[int]],
        prompts: Sequence[torch.Tensor] = (),
        soft: dict[tuple[int, ...], torch.Tensor] | None = None,
    ) -> tuple[list[Score], list[Score]]:
        """Scores of ``prompts`` (soft prompt tensors) and of hard prompts (token ids), in shared passes.

        A repeated hard prompt reuses its score. Reuse is exact up to float noise: a hard prompt's score depends
        only on its ids and the other weights, which do not change within a round, nor between rounds when the soft
        prompt is the only trained parameter (the cache is cleared otherwise). Trajectories that stop moving and
        mentors that repeat themselves make repeats common. The model's soft prompt is left as it was. ``soft`` maps
        token ids to the soft prompt scored in their place (the ``current`` proposer's candidate: the incumbent
        itself, not its nearest tokens; never kept in the cache).
        """
        soft = soft or {}
        keys = [tuple(int(i) for i in ids) for ids in token_ids]
        own = list(dict.fromkeys(key for key in keys if key in soft))
        missing = list(dict.fromkeys(key for key in keys if key not in self.hard_prompt_scores and key not in soft))
        scores = self.scorer.score_prompts(
            [*prompts, *(soft[key] for key in own), *(self.prompt_of(list(key)) for key in missing)]
        )
        first = len(prompts) + len(own)
        for key, score in zip(missing, scores[first:]):
            self.hard_prompt_scores[key] = score
        found = {**self.hard_prompt_scores, **dict(zip(own, scores[len(prompts) : first]))}
        return scores[: len(prompts)], [found[key] for key in keys]

    def prompt_of(self, token_ids: list[int]) -> torch.Tensor:
        """The soft prompt a restart from ``token_ids`` writes (a full copy; the model's prompt is unchanged)."""
        before = read_soft_prompt(self.model)
        write_token_ids(self.model, token_ids)
        value = read_soft_prompt(self.model)
        write_soft_prompt_(self.model, before)
        return value

    def _say(self, note: str) -> str:
        """``note``, logged the first time this engine meets it (the round record keeps it every time)."""
        if note not in self._said:
            self._said.add(note)
            logger.info("catalyst: %s", note)
        return note

    def only_prompt_trains(self) -> bool:
        """True when the soft prompt is the model's only trainable parameter (no head in ``modules_to_save``)."""
        prompt = get_soft_prompt(self.model).weight
        return all(p is prompt for p in self.model.parameters() if p.requires_grad)

    @property
    def evidence_source(self) -> EvidenceSource:
        """The catalyst split as texts and class ids, in scoring order (read once)."""
        if self._evidence_source is None:
            names = label_names_of(self.model, self.settings.catalyst_labels)
            self._evidence_source = EvidenceSource(self.scorer.scored_dataset, self.tokenizer, names)
        return self._evidence_source

    def evidence(
        self, index: int, trajectory: list[ScoredPrompt], latest: Score | None, earlier: list[RoundRecord]
    ) -> Evidence:
        """What the mentor is shown of the data (:func:`.evidence.round_evidence`): balanced examples,
        the errors of the current prompt (the latest trajectory point, from the pass that scored it), the label names
        and the best prompts scored so far (this stage's trajectory and earlier rounds' candidates)."""
        settings = self.settings
        scored = [*trajectory, *(c for r in earlier for c in r.candidates)]
        return round_evidence(
            self.evidence_source,
            examples=settings.catalyst_mentor_examples,
            errors=settings.catalyst_mentor_errors,
            words=settings.catalyst_mentor_words,
            seed=self.race_seed(index),
            predictions=latest.predictions if latest is not None else None,
            best=best_prompts(scored, self.scorer.higher_is_better),
            proposal=settings.catalyst_proposal,
        )

    def anchored(self, texts: list[str], record: RoundRecord | None = None) -> list[str]:
        """``texts`` completed with the task's labels where they do not name them (``catalyst_label_anchor``), cut
        to the prompt's length first so that the labels stay in; unchanged without labels or the setting."""
        labels = self.label_names if self.settings.catalyst_label_anchor else []
        if not labels:
            return list(texts)
        n = get_soft_prompt(self.model).num_virtual_tokens

        def fits(text: str) -> bool:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) <= n

        out = [anchor_labels(text, labels, fits) for text in texts]
        changed = sum(a != t for a, t in zip(out, texts))
        unanchored = sum(a == t and bool(missing_labels(t, labels)) for a, t in zip(out, texts))
        if record is not None and changed:
            record.notes.append(f"label anchor: {changed} of {len(texts)} prompt(s) completed with the labels")
        if unanchored and record is not None:
            note = (
                f"label anchor: {unanchored} of {len(texts)} prompt(s) left as proposed: the labels do not fit the "
                f"prompt's {n} tokens beside any of their words"
            )
            record.notes.append(note)
            if not self._anchor_warned:
                self._anchor_warned = True
                logger.warning("catalyst: %s (a longer prompt, num_virtual_tokens, leaves room for them)", note)
        return out

    def tokenize(self, texts: list[str]) -> list[ScoredPrompt]:
        """Candidates as token ids of the prompt's length; one that cannot be tokenized keeps its error."""
        n = get_soft_prompt(self.model).num_virtual_tokens
        out = []
        for text in texts:
            try:
                out.append(ScoredPrompt(text=text, token_ids=text_to_token_ids(self.tokenizer, text, n)))
            except ValueError as exc:
                out.append(ScoredPrompt(text=text, error=str(exc)))
        return out

    def control_token_ids(self, count: int, seed: int) -> list[list[int]]:
        """``count`` prompts of uniformly random printable vocabulary tokens (the race's controls), seeded; with
        ``catalyst_label_anchor`` each is completed with the labels as the mentor's candidates are."""
        if count <= 0:
            return []
        soft = get_soft_prompt(self.model)
        controls = random_token_ids(self.tokenizer, self.model, count, soft.num_virtual_tokens, seed)
        if not (self.settings.catalyst_label_anchor and self.label_names):
            return controls
        texts = self.anchored([self.tokenizer.decode(ids) for ids in controls])
        return [text_to_token_ids(self.tokenizer, text, soft.num_virtual_tokens) for text in texts]

    def _fill_best(self, candidate: ScoredPrompt, score: Score) -> None:
        """Give ``candidate`` ``score`` unless it holds a better one already (a candidate started in several shapes
        keeps its best shape's score: what the mentor later sees of its proposal)."""
        if candidate.score is None or (
            score.finite and (not candidate.finite or self.scorer.better(score.value, candidate.score))
        ):
            score.fill(candidate)

    def restart_shapes(self) -> list[RestartShape]:
        """The shapes of this round's starts (``catalyst_restart``); partial positions follow the current prompt
        (:mod:`.restarts`), as the main process reads it."""
        settings = self.settings
        positions = None
        if settings.catalyst_restart == "partial":
            n = get_soft_prompt(self.model).num_virtual_tokens
            nearness, _ = self.projector.nearest_ids(1, rows=n)
            count = partial_count(settings.catalyst_partial_tokens, n)
            positions = main_process_decision(self.trainer.accelerator, partial_positions(nearness[:, 0], count))
        return round_shapes(settings.catalyst_restart, settings.catalyst_blend_alphas, positions)

    def shaped_prompt(self, shape: RestartShape, incumbent: torch.Tensor, candidate: ScoredPrompt) -> torch.Tensor:
        """The soft prompt a restart of ``shape`` from ``candidate`` starts at (the model's prompt is unchanged)."""
        n = get_soft_prompt(self.model).num_virtual_tokens
        return shaped_start(shape, incumbent, self.prompt_of(candidate.token_ids), n)

    def loss_guard(self, record: RoundRecord, losses: list[float | None], current: float | None) -> list[bool]:
        """Which starts ``catalyst_restart_loss_ratio`` allows: those whose catalyst-split loss (the training
        objective's mean, from the scoring pass) is at most the ratio times the current prompt's. A start that ranks
        better by ``catalyst_metric`` (e.g. the label words' loss) while the training loss is far worse is followed
        by a jump of the training loss (``benchmarks/restart_shock.py``). All allowed without the setting."""
        ratio = self.settings.catalyst_restart_loss_ratio
        if ratio is None or current is None or not math.isfinite(current):
            return [True] * len(losses)
        allowed = [loss is not None and math.isfinite(loss) and loss <= ratio * current for loss in losses]
        if not all(allowed):
            record.notes.append(
                f"loss guard: {allowed.count(False)} of {len(losses)} start(s) refused, their catalyst loss above "
                f"{ratio:g} x the current prompt's ({current:.4g})"
            )
        return allowed

    def after_restart(self, shape: RestartShape | None = None) -> int:
        """Reset the prompt's optimizer state as ``catalyst_restart_optimizer`` says (a partial restart keeps its
        untouched rows: see :func:`~peft_catalyst.rounds.restarts.reshaped_optimizer_state`); return the re-warm-up
        step (0: none)."""
        settings = self.settings
        soft = get_soft_prompt(self.model)
        weight = soft.weight
        if settings.catalyst_reset_optimizer and self.trainer.optimizer is not None:
            if shape is not None and shape.name == "partial":
                if reshape_optimizer_state_(self.trainer.optimizer, weight, shape, soft.num_virtual_tokens):
                    return 1 if settings.catalyst_rewarmup_steps > 0 else 0
            # on every rank: under ZeRO-3 each rank resets its own partition of the state
            mode = settings.catalyst_restart_optimizer
            if not (reset := reset_optimizer_state(self.trainer.optimizer, weight, mode)):
                logger.warning("catalyst_reset_optimizer: the prompt's optimizer state is kept: %s.", reset.reason)
        return 1 if settings.catalyst_rewarmup_steps > 0 and self.trainer.optimizer is not None else 0

    def _bar(self, total: int, index: int, what: str):
        return tqdm(
            total=total,
            desc=f"catalyst round {index}: {what}",
            leave=False,
            disable=self.trainer.args.disable_tqdm or not self.trainer.is_local_process_zero(),
        )


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _race_total_steps(arms: int, steps: int, eta: int) -> int:
    """Gradient steps a race of ``arms`` arms will spend (for the progress bar)."""
    total, alive, budget = 0, arms, steps
    while alive > 1 and budget > 0:
        total += alive * budget
        alive, budget = math.ceil(alive / eta), budget * eta
    return total


@contextlib.contextmanager
def preserved_rng():
    """Run the block without consuming the torch (CPU and CUDA), NumPy or Python RNG streams of training."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def preserved_mode(model: torch.nn.Module):
    """Restore every module's train/eval mode after the block."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


__all__ = [
    "RoundContext",
    "RoundEngine",
    "RoundOutcome",
    "RoundSettings",
    "RoundTimings",
    "preserved_mode",
    "preserved_rng",
]
