"""Scoring as its own part: the ranking value, its direction, a user's score_fn, and logits only when needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from peft_catalyst import Decision
from peft_catalyst.rounds.scoring import PromptScorer
from tests import tiny
from tests.testing_utils import ScriptedMentor


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _trainer(tok, tmp_path, **kwargs):
    mentor = ScriptedMentor(["1. the movie was great\n2. a terrible film"])
    return tiny.catalyst_trainer(tok, tmp_path, mentor, model=tiny.catalyst_model(tok, init_scale=50.0), **kwargs)


def test_logits_are_gathered_only_when_the_ranking_needs_them(tok, tmp_path):
    trainer = _trainer(tok, tmp_path / "loss", catalyst_rounds=1, catalyst_mentor_errors=0)
    trainer.compute_metrics = tiny.accuracy
    modes = []
    step = trainer.prediction_step

    def spy(model, inputs, prediction_loss_only, ignore_keys=None):
        modes.append(prediction_loss_only)
        return step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    trainer.prediction_step = spy
    trainer.train()
    (record,) = trainer.catalyst_history
    assert modes and all(modes)  # ranked by the loss, no errors shown: no logits, no compute_metrics
    assert record.current.metrics == {} and record.current.score == record.current.loss

    # Errors for the mentor need each example's predicted class: logits come from the same pass, only their argmax
    # is kept, and the ranking is still the loss without compute_metrics.
    trainer = _trainer(tok, tmp_path / "errors", catalyst_rounds=1)
    trainer.compute_metrics = tiny.accuracy
    modes.clear()
    step = trainer.prediction_step
    trainer.prediction_step = spy
    trainer.train()
    (record,) = trainer.catalyst_history
    assert modes and not any(modes)
    assert record.current.metrics == {} and record.current.score == record.current.loss

    trainer = _trainer(tok, tmp_path / "acc", catalyst_rounds=1, catalyst_metric="accuracy")
    trainer.compute_metrics = tiny.accuracy
    modes.clear()
    step = trainer.prediction_step
    trainer.prediction_step = spy
    trainer.train()
    (record,) = trainer.catalyst_history
    assert modes and not any(modes)
    assert record.current.score == record.current.metrics["accuracy"] and record.higher_is_better


def test_a_user_score_fn_ranks_prompts_in_its_direction(tok, tmp_path):
    seen = []

    def mean_positive_logit(prediction) -> float:
        seen.append(prediction)
        return float(np.mean(prediction.predictions[:, 1]))

    runs = {}
    for higher in (True, False):
        trainer = _trainer(
            tok, tmp_path / str(higher), catalyst_rounds=1, catalyst_greater_is_better=higher, max_steps=4
        )
        trainer.catalyst.score_fn = mean_positive_logit
        trainer.train()
        (record,) = trainer.catalyst_history
        runs[higher] = record
        assert record.metric == "score_fn" and record.higher_is_better is higher
        values = [c.score for c in record.candidates] + [record.current.score]
        assert all(math.isfinite(v) for v in values)
        pick = max if higher else min
        best = pick(values)
        if record.decision is Decision.ACCEPTED:
            assert record.candidates[record.winner].score == best
        else:
            assert record.current.score == best
    assert seen and seen[0].losses is not None and len(seen[0].losses) == 16
    assert runs[True].decision != runs[False].decision or runs[True].winner != runs[False].winner


def test_scorer_direction_and_margin():
    scorer = PromptScorer(trainer=None, dataset=None, metric="label_loss")
    assert scorer.better(0.5, 0.6) and not scorer.better(0.6, 0.5) and not scorer.better(0.5, 0.5)
    assert not scorer.better(0.5, 0.6, margin=0.2) and scorer.worst() == math.inf
    assert scorer.needs_logits  # label_loss comes from compute_metrics
    assert not PromptScorer(trainer=None, dataset=None, metric="loss").needs_logits
    up = PromptScorer(trainer=None, dataset=None, metric="accuracy", higher_is_better=True)
    assert up.better(0.7, 0.6) and up.worst() == -math.inf and up.needs_logits


def test_a_rounds_scoring_shows_a_bar_over_the_catalyst_batches(tok, tmp_path, capsys):
    """Scoring the trajectory and the candidates can take minutes with a larger doer: a bar over the catalyst split's
    batches, shown as the trainer shows its own (not with disable_tqdm)."""
    trainer = _trainer(tok, tmp_path / "quiet", catalyst_rounds=1, catalyst_mentor_errors=0, max_steps=4)
    trainer.train()
    assert "catalyst: scoring" not in capsys.readouterr().err
    trainer = _trainer(tok, tmp_path / "shown", catalyst_rounds=1, catalyst_mentor_errors=0, max_steps=4,
                       disable_tqdm=False)  # fmt: skip
    trainer.train()
    err = capsys.readouterr().err
    assert "catalyst: scoring 3 prompts" in err and "batch" in err
