"""The typed records of a run: a history with a race survives to_dict -> JSON -> from_dict unchanged, and the
unversioned format of the first release reads into the same types."""

from __future__ import annotations

import dataclasses
import json

import pytest

from peft_catalyst.history import read_history, write_history
from peft_catalyst.records import (
    HISTORY_FORMAT,
    ArmKind,
    Decision,
    History,
    MentorCall,
    Race,
    RaceArm,
    RaceRung,
    RestartShape,
    RoundRecord,
    RunSummary,
    ScoredPrompt,
    Trigger,
    is_better,
    ranking_key,
)


def _sp(text: str, score: float | None, loss: float | None = None, **kw) -> ScoredPrompt:
    return ScoredPrompt(text=text, token_ids=[1, 2], score=score, loss=loss, metrics={"accuracy": 0.5}, **kw)


def raced_history() -> History:
    """Two rounds: a plain 'best' round that kept the prompt, and a race won by the second candidate."""
    kept = RoundRecord(
        round=1,
        step=10,
        trigger=Trigger.SCHEDULE,
        decision=Decision.KEPT,
        metric="label_loss",
        trajectory=[_sp("a b", 0.7, 0.9, step=8, train_loss=1.1), _sp("a c", 0.6, 0.8, step=10, train_loss=1.0)],
        mentor=MentorCall(
            name="scripted",
            candidates=["x y"],
            model="m",
            latency_s=0.5,
            prompt_tokens=11,
            completion_tokens=7,
            attempts=1,
            rejected=[["zz", "copies the trajectory"]],
        ),  # fmt: skip
        current=_sp("a c", 0.6, 0.8),
        candidates=[_sp("x y", 0.65, 0.85), ScoredPrompt(text="", token_ids=None, error="tokenises to nothing")],
        seconds=1.25,
        prompt_after="a c",
    )
    arms = [
        RaceArm(ArmKind.INCUMBENT, "a c", [1, 2]),
        RaceArm(ArmKind.CANDIDATE, "p q", [3, 4], candidate=0),
        RaceArm(ArmKind.CANDIDATE, "r s", [5, 6], candidate=1),
        RaceArm(ArmKind.CONTROL, "zq wv", [7, 8]),
    ]
    race = Race(
        arms=arms,
        rungs=[
            RaceRung([0, 1, 2, 3], 2, [_sp("a c", 0.5), _sp("p q", 0.55), _sp("r s", 0.45), _sp("zq wv", 0.9)]),
            RaceRung([2, 0], 6, [_sp("r s", 0.3), _sp("a c", 0.4)]),
        ],
        winner=2,
        steps=2 * 4 + 4 * 2,
    )
    raced = RoundRecord(
        round=2,
        step=20,
        trigger=Trigger.PLATEAU,
        decision=Decision.ACCEPTED,
        metric="label_loss",
        selection="race",
        winner=1,
        current=_sp("a c", 0.5),
        candidates=[_sp("p q", 0.55), _sp("r s", 0.45)],
        race=race,
        prompt_after="r s",
    )
    summary = RunSummary.of(
        [kept, raced],
        mentor="scripted",
        mentor_usage={"calls": 2, "prompt_tokens": 22, "completion_tokens": 14},
        selection="race",
        metric="label_loss",
        main_steps=30,
        seconds={"rounds": 2.5},
        final_prompt="r s",
    )
    return History(summary=summary, rounds=[kept, raced])


def test_history_with_a_race_round_trips(tmp_path):
    history = raced_history()
    raced = history.rounds[1]
    assert raced.race_steps == 16 and raced.decisive == _sp("r s", 0.3)  # the winner's last rung decided
    assert history.rounds[0].decisive is history.rounds[0].current
    summary = history.summary
    assert (summary.rounds, summary.accepted, summary.kept, summary.skipped) == (2, 1, 1, 0)
    assert (summary.main_steps, summary.race_steps, summary.total_steps) == (30, 16, 46)

    data = history.to_dict()
    assert data["format"] == HISTORY_FORMAT and data["summary"]["total_steps"] == 46
    assert data["rounds"][1]["decision"] == "accepted" and data["rounds"][1]["race_steps"] == 16
    assert History.from_dict(data) == history
    assert History.from_dict(json.loads(json.dumps(data))) == history  # through JSON too
    write_history(tmp_path, history)
    assert read_history(tmp_path) == history and read_history(tmp_path / "catalyst_history.json") == history


def test_a_newer_format_is_refused():
    with pytest.raises(ValueError, match="upgrade peft-catalyst"):
        History.from_dict({"format": HISTORY_FORMAT + 1, "rounds": []})


def old_format_history() -> dict:
    """``catalyst_history.json`` as peft-catalyst 0.1.0.dev0 wrote it: no "format" key, the decision as a dict,
    trajectory points with catalyst_score / catalyst_loss / catalyst_metrics / train_loss."""
    return {
        "summary": {
            "rounds": 2, "accepted": 1, "kept": 1, "skipped": 0, "mentor": "openai:old-mentor",
            "mentor_usage": {"calls": 2, "prompt_tokens": 100, "completion_tokens": 20}, "selection": "best",
            "metric": "label_loss", "greater_is_better": False, "seconds": {"rounds": 3.0},
            "final_prompt": "Classify the review",
        },
        "rounds": [
            {"round": 1, "step": 5,
             "trajectory": [{"text": "good bad", "step": 5, "loss": 0.9, "train_loss": 0.9, "catalyst_score": 0.61,
                             "catalyst_loss": 0.7, "catalyst_metrics": {"label_loss": 0.61}}],
             "mentor": {"name": "openai:old-mentor", "model": "gpt-old", "latency_s": 1.5, "prompt_tokens": 50,
                        "completion_tokens": 10, "error": None, "raw": "1. Classify the review"},
             "current": {"text": "good bad", "score": 0.61, "loss": 0.7, "metrics": {"label_loss": 0.61}},
             "candidates": [{"text": "Classify the review", "token_ids": [3, 4], "score": 0.42, "loss": 0.8,
                             "metrics": {"label_loss": 0.42}, "finite": True}],
             "decision": {"status": "accepted", "accepted": True, "winner": 0, "text": "Classify the review"}},
            {"round": 2, "step": 10, "trajectory": [],
             "mentor": {"name": "openai:old-mentor", "model": "gpt-old"},
             "current": {"text": "Classify the review", "score": 0.3, "loss": 0.5},
             "candidates": [{"text": "Say it", "token_ids": [5], "score": 0.35, "loss": 0.45, "finite": True}],
             "decision": {"status": "kept", "accepted": False, "winner": None}},
        ],
    }  # fmt: skip


def test_the_old_unversioned_format_reads_into_the_types(tmp_path):
    (tmp_path / "catalyst_history.json").write_text(json.dumps(old_format_history()))
    history = read_history(tmp_path)
    first, second = history.rounds
    assert history.format == HISTORY_FORMAT
    assert first.decision is Decision.ACCEPTED and first.winner == 0 and first.restarted
    assert first.metric == "label_loss" and first.higher_is_better is False  # from the old summary
    assert first.decisive.score == 0.42 and first.decisive.text == "Classify the review"
    (point,) = first.trajectory
    assert (point.score, point.loss, point.train_loss, point.step) == (0.61, 0.7, 0.9, 5)
    assert point.metrics == {"label_loss": 0.61}
    assert first.mentor.name == "openai:old-mentor" and first.mentor.model == "gpt-old"
    assert second.decision is Decision.KEPT and second.winner is None and second.decisive.score == 0.3
    assert history.summary.final_prompt == "Classify the review" and history.summary.metric == "label_loss"
    assert history.summary.race_steps == 0 and history.summary.main_steps == 0  # not recorded then
    # Read once, it writes in the current format and reads back the same.
    assert History.from_dict(history.to_dict()) == history


def test_an_old_summary_without_a_direction_takes_it_from_the_metric_name():
    """The first release wrote greater_is_better as given: None meant "from the name", as Trainer does."""
    for metric, expected in (("accuracy", True), ("label_loss", False)):
        data = {"summary": {"metric": metric, "greater_is_better": None}, "rounds": []}
        assert History.from_dict(data).summary.higher_is_better is expected
    assert (
        History.from_dict({"summary": {"metric": "accuracy", "greater_is_better": False}}).summary.higher_is_better
        is False
    )


@pytest.mark.parametrize("higher", [False, True])
def test_one_comparison_of_scores_in_either_direction(higher):
    """``is_better`` and ``ranking_key`` agree: the best of a list by the key beats every other by ``is_better``."""
    scores = [0.7, 0.2, 0.9, 0.4]
    best = min(scores, key=lambda s: ranking_key(s, higher))
    assert best == (0.9 if higher else 0.2)
    assert all(is_better(best, s, higher) for s in scores if s != best)
    assert not is_better(best, best, higher)  # a tie is not better
    other = 0.85 if higher else 0.25
    assert is_better(best, other, higher) and not is_better(best, other, higher, margin=0.1)  # within the margin
    assert not is_better(float("nan"), best, higher) and not is_better(best, float("nan"), higher)
    assert sorted(scores, key=lambda s: ranking_key(s, higher))[0] == best


def test_format_2_summary_steps_read_as_main_steps():
    """Format 2 named the main loop's steps ``stage_steps``: they read into ``main_steps``."""
    data = raced_history().to_dict()
    summary = dict(data["summary"])
    summary["stage_steps"] = summary.pop("main_steps")
    history = History.from_dict({**data, "format": 2, "summary": summary})
    assert history.summary.main_steps == 30 and history.summary.total_steps == 46
    assert history == raced_history() and history.to_dict()["summary"]["main_steps"] == 30
    assert "stage_steps" not in history.to_dict()["summary"]


def test_summary_keeps_triggers_skip_reasons_and_the_restart_shape_and_reads_older_files():
    """Skipped rounds by why (from the ``[reason]`` of the mentor's error), rounds by trigger and the restart shape
    set survive JSON; a summary written before they were kept reads with them empty; the random control as the mentor
    is never said to beat random."""
    kept = raced_history().rounds[0]
    unreachable = RoundRecord(
        2, 20, Trigger.SCHEDULE, Decision.SKIPPED, reason="mentor_error",
        mentor=MentorCall("openai:m", error="[connection] openai:m: cannot reach http://127.0.0.1:9/v1"),
    )  # fmt: skip
    empty = RoundRecord(3, 30, Trigger.SCHEDULE, Decision.SKIPPED, reason="no usable candidate")
    rounds = [dataclasses.replace(kept, trigger=Trigger.INITIAL), unreachable, empty]
    summary = RunSummary.of(rounds, mentor="openai:m", restart=RestartShape.setting_label("blend", [0.3, 0.6]))
    assert summary.triggers == {"initial": 1, "schedule": 2} and summary.rounds_line() == "3 (1 initial + 2 scheduled)"
    assert summary.skip_reasons == {"mentor unreachable": 1, "no usable candidate": 1}
    assert summary.skip_reasons_text() == "mentor unreachable 1, no usable candidate 1"
    assert summary.restart == "blend alpha=0.3, 0.6"
    history = History(summary=summary, rounds=rounds)
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history
    older = history.to_dict()
    for key in ("triggers", "skip_reasons", "restart"):
        del older["summary"][key]
    read = History.from_dict(older).summary
    assert (read.triggers, read.skip_reasons, read.restart, read.rounds_line()) == ({}, {}, None, "3")

    compared = dataclasses.replace(summary, beat_random_screening=[2, 2])
    assert compared.beat_random_line() == "mentor beat random in 2 of 2 rounds (screening)"
    assert dataclasses.replace(compared, mentor="random-words").beat_random_line() is None
