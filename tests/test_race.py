"""catalyst_selection="race": arms train a counted budget on paired batches before they are judged.

The tiny BERT classifier's RANDOM prompt is scaled down (x0.001), which makes it the better start at step zero
against every text candidate used here; after 8 race steps the candidate is better (measured once, deterministic
on CPU, with margins of 0.02-0.04 nats).
"""

from __future__ import annotations

import json

import pytest
import torch

from peft_catalyst import ArmKind, Decision
from peft_catalyst.mentors import MentorRequest
from tests import tiny
from tests.testing_utils import ScriptedMentor, StopAt, comparable, race_model, race_run, trainable


def test_a_start_that_loses_untrained_but_wins_after_its_budget_wins_the_race_only(tmp_path):
    tok = tiny.bpe_tokenizer()
    best = race_run(tok, tmp_path / "best", ["who wrote the book"], catalyst_selection="best")
    (record,) = best.catalyst_history
    assert record.decision is Decision.KEPT and record.candidates[0].score > record.current.score

    race = race_run(tok, tmp_path / "race", ["who wrote the book"], catalyst_selection="race", catalyst_race_steps=8)
    (record,) = race.catalyst_history
    assert record.decision is Decision.ACCEPTED and record.winner == 0
    (rung,) = record.race.rungs
    assert rung.arms == [0, 1] and rung.steps == 8 and record.race.steps == 16 == record.race_steps
    assert rung.scores[1].score < rung.scores[0].score  # judged after equal training
    assert record.candidates[0].score == rung.scores[1].score and record.current.score == rung.scores[0].score
    # the budget is counted, never hidden: global_step is the main loop's, the rest is on the record and the log
    assert race.state.global_step == 9
    summary = race.catalyst_summary()
    assert (summary.main_steps, summary.race_steps, summary.total_steps) == (9, 16, 25)
    logged = next(h for h in race.state.log_history if "catalyst/round" in h)
    assert logged["catalyst/race_steps"] == 16.0 and logged["catalyst/total_steps"] == 3 + 16
    history = json.loads((tmp_path / "race" / "catalyst_history.json").read_text())
    assert history["summary"]["total_steps"] == 25 and history["rounds"][0]["race"]["rungs"][0]["steps"] == 8


def test_race_steps_zero_is_the_best_rule(tmp_path):
    tok = tiny.bpe_tokenizer()
    texts = ["the movie was great", "who wrote the book"]
    runs = {}
    for selection in ("best", "race"):
        runs[selection] = race_run(
            tok, tmp_path / selection, texts, catalyst_selection=selection, catalyst_race_steps=0, catalyst_rounds=2
        )
    for a, b in zip(runs["best"].catalyst_history, runs["race"].catalyst_history, strict=True):
        assert (a.decision, a.winner) == (b.decision, b.winner)
        assert a.current.score == b.current.score
        assert [c.score for c in a.candidates] == [c.score for c in b.candidates]
        assert b.race.steps == 0 and len(b.race.rungs) == 1
    final = {k: trainable(v.model) for k, v in runs.items()}
    assert all(torch.equal(final["best"][n], final["race"][n]) for n in final["best"])


def test_losing_arms_leave_no_trace(tmp_path):
    """Two races where different candidates lose end with bit-identical training: only the incumbent's path counts."""
    tok = tiny.bpe_tokenizer()
    runs = [
        race_run(tok, tmp_path / str(i), [text], catalyst_selection="race", catalyst_race_steps=4)
        for i, text in enumerate(["the movie was great", "hello lunch"])
    ]
    for run in runs:
        (record,) = run.catalyst_history
        assert record.decision is Decision.KEPT and record.race.rungs[0].scores[1].finite
    a, b = (trainable(r.model) for r in runs)
    assert all(torch.equal(a[n], b[n]) for n in a)
    # ... and the incumbent did train in the race: the run differs from one judged untrained
    best = trainable(race_run(tok, tmp_path / "best", ["the movie was great"], catalyst_selection="best").model)
    assert not all(torch.equal(a[n], best[n]) for n in a)


def test_arms_are_paired_on_identical_batches_and_the_main_loop_is_untouched(tmp_path):
    tok = tiny.bpe_tokenizer()
    mentor = ScriptedMentor(["1. the movie was great\n2. who wrote the book"])
    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path,
        mentor,
        model=race_model(tok),
        catalyst_rounds=1,
        catalyst_selection="race",
        catalyst_race_steps=2,
    )
    seen: list[tuple[bool, tuple]] = []
    original = trainer.training_step

    def spy(model, inputs, num_items_in_batch=None):
        seen.append((trainer.catalyst.racing, tuple(map(tuple, inputs["input_ids"].tolist()))))
        return original(model, inputs, num_items_in_batch)

    trainer.training_step = spy
    trainer.train()
    (record,) = trainer.catalyst_history
    race = [batch for racing, batch in seen if racing]
    main = [batch for racing, batch in seen if not racing]
    # rung 0: 3 arms x 2 steps, then the better 2 arms x 4 steps
    assert [r.steps for r in record.race.rungs] == [2, 6] and len(race) == 3 * 2 + 2 * 4 == record.race_steps
    rung0 = [race[i : i + 2] for i in range(0, 6, 2)]
    assert rung0[0] == rung0[1] == rung0[2]
    assert race[6:10] == race[10:14] and race[6:10] != rung0[0]  # the next rung continues the stream
    # the main loop saw the same batches as a run without any race
    plain = tiny.catalyst_trainer(tok, tmp_path / "plain", None, model=race_model(tok))
    plain_seen = []
    plain_original = plain.training_step

    def plain_spy(model, inputs, num_items_in_batch=None):
        plain_seen.append(tuple(map(tuple, inputs["input_ids"].tolist())))
        return plain_original(model, inputs, num_items_in_batch)

    plain.training_step = plain_spy
    plain.train()
    assert main == plain_seen


def test_controls_race_but_never_reach_the_mentor_as_its_proposals(tmp_path):
    tok = tiny.bpe_tokenizer()
    requests: list[MentorRequest] = []

    class Recording(ScriptedMentor):
        def propose(self, request):
            requests.append(request)
            return super().propose(request)

    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path,
        Recording(["1. the movie was great\n2. who wrote the book"]),
        model=race_model(tok),
        catalyst_selection="race",
        catalyst_race_steps=1,
        catalyst_race_controls=2,
    )
    trainer.train()
    first, second = trainer.catalyst_history
    kinds = [a.kind for a in first.race.arms]
    assert kinds == [ArmKind.INCUMBENT, ArmKind.CANDIDATE, ArmKind.CANDIDATE, ArmKind.CONTROL, ArmKind.CONTROL]
    controls = [a.text for a in first.race.arms if a.kind is ArmKind.CONTROL]
    assert all(len(a.token_ids) == 4 for a in first.race.arms)
    assert controls != [a.text for a in second.race.arms if a.kind is ArmKind.CONTROL]  # seeded per round
    assert len(requests) == 2 and not requests[0].earlier_rounds
    (past,) = requests[1].earlier_rounds
    assert past.proposed == ["the movie was great", "who wrote the book"]
    assert not set(controls) & set(past.proposed)
    assert all(c.text not in controls for c in first.candidates)


def test_resume_after_a_race_round_ends_like_an_uninterrupted_run(tmp_path):
    from peft_catalyst.mentors import CachedMentor

    tok = tiny.bpe_tokenizer()
    replies = ["1. who wrote the book\n2. a terrible film", "1. a good ending\n2. a boring plot"]
    cache = tmp_path / "mentor.sqlite"
    common = dict(
        save_strategy="steps",
        save_steps=4,
        catalyst_rounds=2,
        catalyst_stage_steps=3,
        catalyst_selection="race",
        catalyst_race_steps=3,
        catalyst_race_controls=1,
        catalyst_rewarmup_steps=6,  # a re-warm-up still running at the checkpoint
    )
    full = tiny.catalyst_trainer(
        tok, tmp_path / "full", CachedMentor(ScriptedMentor(replies), cache, mode="use"), model=race_model(tok),
        **common,
    )
    full.train()
    assert full.catalyst_history[0].race_steps > 0

    def resumed_trainer():
        return tiny.catalyst_trainer(
            tok, tmp_path / "resumed", CachedMentor(None, cache, mode="strict"), model=race_model(tok), **common
        )

    interrupted = resumed_trainer()
    interrupted.add_callback(StopAt(4))
    interrupted.train()
    assert interrupted.state.global_step == 4 and len(interrupted.catalyst_history) == 1
    resumed = resumed_trainer()
    resumed.train(resume_from_checkpoint=True)
    assert comparable(resumed.catalyst_history) == comparable(full.catalyst_history)
    a, b = trainable(resumed.model), trainable(full.model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert resumed.catalyst_summary().total_steps == full.catalyst_summary().total_steps


def test_a_race_on_an_iterable_training_set_is_refused_at_construction(tmp_path):
    from datasets import IterableDataset

    tok = tiny.bpe_tokenizer()
    rows = list(tiny.toy_reviews(tok, 24, 1))
    iterable = IterableDataset.from_generator(lambda: iter(rows))
    with pytest.raises(ValueError, match="map-style"):
        tiny.CatalystTrainer(
            model=race_model(tok),
            args=tiny.catalyst_args(tmp_path, catalyst_selection="race"),
            mentor=ScriptedMentor(["1. x"]),
            train_dataset=iterable,
            catalyst_dataset=tiny.toy_reviews(tok, 8, 2),
            processing_class=tok,
        )
