"""Compute counted in forward-equivalent tokens: tiny runs counted by hand from their data, per part (stages, races,
screening, evaluation), in the summary, the history, the checkpoint and a resumed run."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import DataCollatorWithPadding

from peft_catalyst import CatalystTrainer
from peft_catalyst.compute import ComputeMeter, batch_tokens
from peft_catalyst.history import read_history
from peft_catalyst.mentors import RandomMentor
from peft_catalyst.records import TRAIN_FACTOR, Compute, RunSummary
from peft_catalyst.rounds.race import RaceBatches
from tests import tiny

V = 4  # the tiny prompt's virtual tokens
TRAIN, CATALYST, EVAL = 24, 8, 8  # rows; TRAIN / batch 4 = 6 steps per epoch


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _tokens(dataset) -> int:
    """Tokens the doer processes for one pass over ``dataset``, by hand: every row's ids plus the virtual tokens."""
    return sum(len(ids) + V for ids in dataset["input_ids"])


def _trainer(tok, out, **kwargs) -> CatalystTrainer:
    """One round after 3 steps of a 6-step run (one epoch of TRAIN rows: every row trained once), validation at
    steps 3 and 6; rows of toy reviews vary in length, so batches pad."""
    settings = dict(max_steps=6, catalyst_rounds=1, catalyst_stage_steps=3, catalyst_num_candidates=2,
                    catalyst_trajectory_points=2, eval_strategy="steps", eval_steps=3)  # fmt: skip
    train = tiny.toy_reviews(tok, TRAIN, seed=1)
    assert len(set(map(len, train["input_ids"]))) > 1  # padding happens: the count must leave it out
    return CatalystTrainer(
        model=tiny.catalyst_model(tok),
        args=tiny.catalyst_args(out, **{**settings, **kwargs}),
        mentor=RandomMentor(["great", "bad", "movie", "film", "story", "plot"], seed=0),
        train_dataset=train,
        catalyst_dataset=tiny.toy_reviews(tok, CATALYST, seed=2),
        eval_dataset=tiny.toy_reviews(tok, EVAL, seed=3),
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=tiny.accuracy,
    )


def _scored_prompts(record) -> int:
    """Prompts a "best" round scored, by hand: the current prompt, and each distinct hard prompt once (trajectory
    points and candidates share one cache of scores by token ids)."""
    hard = {tuple(p.token_ids) for p in [*record.trajectory, *record.candidates] if p.token_ids is not None}
    return 1 + len(hard)


def test_a_run_counts_its_compute_by_hand(tok, tmp_path):
    trainer = _trainer(tok, tmp_path / "out")
    trainer.train()
    compute = trainer.catalyst_summary().compute
    (record,) = trainer.catalyst_history
    train_tokens = _tokens(trainer.train_dataset)  # one epoch: each row once, padding not counted
    catalyst, evaluation = _tokens(trainer.catalyst_dataset), _tokens(trainer.eval_dataset)
    scored = _scored_prompts(record)
    assert compute.stages == TRAIN_FACTOR * train_tokens
    assert compute.screening == scored * catalyst and compute.scoring_passes == scored
    assert compute.evaluation == 2 * evaluation  # validation at steps 3 and 6
    assert compute.races == 0 and compute.gradient_steps == 6
    assert compute.tuning == compute.stages + compute.screening
    assert compute.total == compute.tuning + compute.evaluation
    # the padding the batches carried is not counted: padded, the stages would be larger
    padded = sum(4 * max(map(len, trainer.train_dataset[i : i + 4]["input_ids"])) for i in range(0, TRAIN, 4))
    assert padded > train_tokens - TRAIN * V
    # the same record in catalyst_history.json, and read back from it; the round's log has the running count
    written = read_history(tmp_path / "out").summary.compute
    assert written == compute
    logged = [e["catalyst/forward_equivalent_tokens"] for e in trainer.state.log_history if "catalyst/round" in e]
    (at_round,) = logged  # at step 3, before that step's validation: half the stages' rows and the screening
    assert compute.screening < at_round < compute.screening + compute.stages
    assert (at_round - compute.screening) % TRAIN_FACTOR == 0
    assert compute.line().startswith("compute ") and "forward-equivalent tokens: stages " in compute.line()


@pytest.mark.parametrize("together", [False, True], ids=["arms-one-at-a-time", "arms-together"])
def test_a_race_counts_its_arms_and_rungs_by_hand(tok, tmp_path, together):
    trainer = _trainer(tok, tmp_path / "out", catalyst_selection="race", catalyst_race_steps=1, catalyst_race_eta=2,
                       catalyst_score_batch_size=64)  # fmt: skip
    if together:  # the prompt alone trains: arms share one forward and backward per step, rungs one scoring pass
        for name, param in trainer.model.named_parameters():
            param.requires_grad = "prompt_encoder" in name
    trainer.train()
    compute = trainer.catalyst_summary().compute
    (record,) = trainer.catalyst_history
    race = record.race
    assert race.batched == together
    assert len(race.arms) == 3 and [len(r.arms) for r in race.rungs] == [3, 2]  # 3 arms x 1 step, then 2 x 2 steps
    batches = RaceBatches(trainer, seed=trainer.args.seed * 1009 + 1)  # the round's own stream (engine.race_seed)

    def step(k: int) -> int:  # race step k's tokens by hand: non-padding ids (attention mask) plus virtual tokens
        return sum(int(b["attention_mask"].sum()) + V * len(b["input_ids"]) for b in batches.step_batches(k))

    trained = 3 * step(0) + 2 * (step(1) + step(2))
    catalyst = _tokens(trainer.catalyst_dataset)
    assert compute.races == TRAIN_FACTOR * trained + (3 + 2) * catalyst  # arms' steps and the 5 rung scorings
    trajectory = {tuple(p.token_ids) for p in record.trajectory}
    assert compute.screening == len(trajectory) * catalyst  # the race scores candidates itself: no screening
    assert compute.stages == TRAIN_FACTOR * _tokens(trainer.train_dataset)  # the race left the main loop's count
    assert compute.gradient_steps == 6 + race.steps == 6 + 7
    assert compute.scoring_passes == len(trajectory) + 5


def test_a_resumed_run_counts_as_the_uninterrupted_one(tok, tmp_path):
    whole = _trainer(tok, tmp_path / "whole", save_strategy="steps", save_steps=3)
    whole.train()
    state = json.loads((tmp_path / "whole" / "checkpoint-3" / "catalyst_state.json").read_text())
    assert 0 < state["compute"]["stages"] < whole.catalyst_summary().compute.stages  # the checkpoint carries it
    resumed = _trainer(tok, tmp_path / "whole", save_strategy="steps", save_steps=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-3"))
    assert resumed.catalyst_summary().compute == whole.catalyst_summary().compute


def test_without_the_mixin_the_trainer_parts_are_not_counted_and_old_records_read():
    meter = ComputeMeter(virtual_tokens=2, pad_token_id=0)
    batch = {"input_ids": torch.tensor([[5, 6, 0], [7, 0, 0]])}
    assert batch_tokens(batch, 2, pad_token_id=0) == 3 + 2 * 2
    assert batch_tokens({**batch, "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}, 2) == 5 + 4
    meter.hook_train(batch)
    meter.score(batch, "screening", prompts=3)
    with meter.as_part("races"), meter.counted_elsewhere():
        meter.hook_predict(batch)  # counted elsewhere: nothing
        meter.score(batch, "screening")  # booked to the race
    record = meter.record(gradient_steps=1)
    assert (record.stages, record.evaluation, record.tuning, record.total) == (None, None, None, None)
    assert (record.screening, record.races) == (3 * 7, 7)
    meter.hooked = True
    assert meter.record().stages == TRAIN_FACTOR * 7 and meter.record().total == TRAIN_FACTOR * 7 + 28
    old = RunSummary(main_steps=5).to_dict()
    del old["compute"]
    assert RunSummary.from_dict(old).compute is None  # a history written before compute was counted
    assert Compute.from_dict(Compute(stages=9).to_dict()) == Compute(stages=9)


def test_the_model_card_and_the_summary_line_show_the_compute(tok, tmp_path, monkeypatch):
    from pathlib import Path

    import peft_catalyst.model_card as model_card
    from peft_catalyst.app.runner import summary_lines
    from peft_catalyst.records import History

    # this checkout's template (an editable install elsewhere may map the template package to another checkout)
    folder = Path(__file__).resolve().parents[1] / "model_cards"
    monkeypatch.setattr(model_card, "read_template", lambda name: (folder / name).read_text(encoding="utf-8"))
    compute = Compute(stages=9000, races=0, screening=1200, evaluation=400, gradient_steps=6, scoring_passes=4)
    history = History(summary=RunSummary(main_steps=6, compute=compute))
    model_card.write_model_card(tiny.catalyst_model(tok), tmp_path, history=history)
    card = (tmp_path / "README.md").read_text()
    row = "| Compute | 10.2k forward-equivalent tokens: stages 9k + screening 1.2k; evaluation 400 (3 per trained "
    assert row in card
    metrics = {"test_accuracy": {"initial": 0.5, "final": 0.75, "best_round": None}, "test_examples": 8,
               "catalyst": history.summary.to_dict(), "prompts": {"final": "x"}, "wall_time_s": 1.0}  # fmt: skip
    rounds_line = next(line for line in summary_lines(metrics, "out") if line.startswith("rounds:"))
    assert "gradient steps 6; 10.2k forward-equivalent tokens (+ evaluation 400);" in rounds_line
