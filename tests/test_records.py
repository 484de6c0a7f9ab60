"""The typed records of a run: a history with a race survives to_dict -> JSON -> from_dict unchanged, and the
unversioned format of the first release reads into the same types."""

from __future__ import annotations

import dataclasses
import json

import pytest

from peft_catalyst.history import read_history, write_history
from peft_catalyst.records import (
    HISTORY_FORMAT,
    Decision,
    History,
    MentorCall,
    RestartShape,
    RoundRecord,
    RunSummary,
    Trigger,
    is_better,
    ranking_key,
)
from tests.testing_utils import old_format_history, raced_history
from tests.testing_utils import scored_prompt as _sp


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
