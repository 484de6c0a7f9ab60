"""catalyst_proposers: a round's candidates drawn from a mix of proposers, seeded, recorded and counted.

Draws are checked on their own (seeded per round and proposer, ``sample_vocab`` against PEFT's own ``SAMPLE_VOCAB``
init, ``examples`` from the training split only and within the prompt's length), then in tiny BERT runs: a round
with mixed proposers records each candidate's proposer and the wins per proposer, runs without a mentor when the
mix needs none, and a resumed run replays such rounds bit for bit.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from datasets import Dataset
from peft import PromptTuningConfig, PromptTuningInit
from peft.tuners.prompt_tuning.model import PromptEmbedding
from transformers import DataCollatorWithPadding, HfArgumentParser, Trainer, TrainerCallback, TrainingArguments

from peft_catalyst import CatalystArguments, CatalystCallback, CatalystTrainer, Decision, History
from peft_catalyst.app.runner import summary_lines
from peft_catalyst.mentors import RandomMentor
from peft_catalyst.model_card import build_model_card
from peft_catalyst.projection import get_soft_prompt, vocabulary_words
from peft_catalyst.records import RunSummary, Trigger
from peft_catalyst.rounds.proposers import (
    TrainExamples,
    draw_labels,
    draw_sample_vocab,
    draw_vocab,
    parse_proposers,
    proposer_seed,
    without_mentor,
)
from tests import tiny

MIX = "mentor=2,vocab=2,labels=2,sample_vocab=2,examples=2,text=1,current=1"
LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _fits(tok, n):
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) <= n


# ---------------------------------------------------------------------------------------------------------------
# The setting
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "samples", "expected"),
    [
        (None, 4, None),
        ("mentor=4,vocab=4,labels=4", 4, {"mentor": 4, "vocab": 4, "labels": 4}),
        ('{"vocab": 3, "current": 1}', 4, {"vocab": 3, "current": 1}),
        ({"mentor": 2, "examples": 0}, 4, {"mentor": 2, "examples": 0}),
        ("mentor,vocab,labels", 8, {"mentor": 3, "vocab": 3, "labels": 2}),  # the first take the remainder
        (["mentor", "text", "current", "vocab"], 6, {"mentor": 2, "text": 1, "current": 1, "vocab": 2}),
        ('["sample_vocab"]', 5, {"sample_vocab": 5}),
    ],
)
def test_proposers_read_as_name_to_count(value, samples, expected):
    assert parse_proposers(value, samples) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mentr=3", "unknown proposer 'mentr': use names among mentor, vocab"),
        ("vocab=-1", "counts must be >= 0 (got vocab=-1)"),
        ("text=2", "set their count to 1"),
        ("vocab=x", "has no whole count: write name=count"),
        ("{bad", "not valid JSON"),
        ("vocab=0", "draws no prompt"),
        ("vocab,vocab", "names a proposer twice"),
    ],
)
def test_a_bad_proposer_setting_is_one_line_naming_the_fix(value, message):
    parser = HfArgumentParser(CatalystArguments)
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parser.parse_args_into_dataclasses(["--catalyst_proposers", value])
    assert "\n" not in str(caught.value)


def test_without_a_mentor_its_share_is_drawn_by_another_proposer_and_as_many_are_screened():
    mix = {"mentor": 2, "labels": 2, "examples": 2, "sample_vocab": 1, "current": 1}
    assert without_mentor(mix) == {"labels": 4, "examples": 2, "sample_vocab": 1, "current": 1}
    assert sum(without_mentor(mix).values()) == sum(mix.values()) and "mentor" in mix  # a copy, not in place
    assert without_mentor({"mentor": 3, "current": 1}, to="vocab") == {"current": 1, "vocab": 3}
    assert without_mentor({"vocab": 2, "mentor": 0}) == {"vocab": 2, "mentor": 0}  # no share to move


def test_the_command_line_form_becomes_counts_and_sets_the_prompts_screened():
    parser = HfArgumentParser(CatalystArguments)
    (args,) = parser.parse_args_into_dataclasses(["--catalyst_proposers", "mentor=4,vocab=4,labels=4"])
    assert args.catalyst_proposers == {"mentor": 4, "vocab": 4, "labels": 4} and args.catalyst_samples == 12
    (args,) = parser.parse_args_into_dataclasses([])
    assert args.catalyst_proposers is None and args.catalyst_samples == args.catalyst_num_candidates
    with pytest.raises(ValueError, match="draws 8 prompts but catalyst_num_samples is 6"):
        CatalystArguments(catalyst_proposers="vocab=4,mentor=4", catalyst_num_samples=6)
    assert CatalystArguments(catalyst_proposers="vocab,mentor", catalyst_num_samples=6).catalyst_samples == 6


# ---------------------------------------------------------------------------------------------------------------
# The draws
# ---------------------------------------------------------------------------------------------------------------


def test_draws_depend_only_on_the_round_seed_and_the_proposer(tok):
    words = vocabulary_words(tok)
    round_1, round_2 = 1009 * 0 + 1, 1009 * 0 + 2
    for name, draw in [
        ("vocab", lambda s: draw_vocab(words, 3, 4, s)),
        ("labels", lambda s: draw_labels(words, LABELS, 3, 4, _fits(tok, 12), s)),
        ("sample_vocab", lambda s: draw_sample_vocab(len(tok), 3, 4, s, tok.decode)),
    ]:
        first = draw(proposer_seed(round_1, name))
        torch.manual_seed(123)  # no global stream is read
        assert draw(proposer_seed(round_1, name)) == first
        assert draw(proposer_seed(round_2, name)) != first
    assert proposer_seed(round_1, "vocab") != proposer_seed(round_1, "labels")


def test_labels_name_every_label_within_the_prompt(tok):
    for draw in draw_labels(vocabulary_words(tok), LABELS, 4, 12, _fits(tok, 12), seed=5):
        assert draw.text.endswith(": negative, positive") and _fits(tok, 12)(draw.text)


@pytest.mark.parametrize("seed", [0, 7, 2026])
def test_sample_vocab_draws_what_peft_sample_vocab_init_draws(tok, seed):
    """From the state PEFT's global generator is in when its ``SAMPLE_VOCAB`` init draws (after the embedding's own
    init), ``draw_sample_vocab`` draws the same token ids: PEFT's init weights are exactly those rows."""
    embeddings = tiny.tiny_llama(tok).get_input_embeddings()
    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=6, prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB, token_dim=32
    )
    config.num_transformer_submodules = 1
    torch.manual_seed(seed)
    peft_init = PromptEmbedding(config, embeddings).embedding.weight
    torch.manual_seed(seed)
    torch.nn.Embedding(6, 32)  # PEFT builds its embedding (a random init) before it draws the ids
    generator = torch.Generator().set_state(torch.get_rng_state())
    (draw,) = draw_sample_vocab(embeddings.num_embeddings, 1, 6, generator, tok.decode)
    assert torch.equal(peft_init, embeddings(torch.tensor(draw.token_ids)).detach().float())
    # a round's draw is seeded by the round and the proposer alone: the same ids from the same seed
    assert draw_sample_vocab(400, 2, 6, seed, tok.decode) == draw_sample_vocab(400, 2, 6, seed, tok.decode)


def _marked(tok, word: str, n: int, seed: int) -> Dataset:
    """A labelled split whose every text starts and ends with ``word`` (a draw shows which split it came from)."""
    rows = tiny.toy_reviews(tok, n, seed)
    texts = [f"{word} {tok.decode(ids)} {word}" for ids in rows["input_ids"]]
    return Dataset.from_dict({"text": texts, "label": rows["label"]})


def test_examples_are_training_rows_with_their_label_word_cut_to_the_prompt(tok):
    train = _marked(tok, "train", 40, seed=1)
    source = TrainExamples(train, tok, LABELS)
    for n in (4, 12, 40):
        draws = source.draw(6, _fits(tok, n), seed=3)
        assert len(draws) == 6 and all(_fits(tok, n)(d.text) for d in draws)
        assert all(d.text.split()[-1] in LABELS for d in draws)
    long = source.draw(4, _fits(tok, 40), seed=3)
    assert all(d.text.startswith("train ") and {"negative", "positive"} <= set(d.text.split()) for d in long)
    assert source.draw(4, _fits(tok, 12), seed=3) == source.draw(4, _fits(tok, 12), seed=3)
    assert source.draw(4, _fits(tok, 12), seed=3) != source.draw(4, _fits(tok, 12), seed=4)
    # tokenized rows (the Trainer's usual data) read as their decoded input, then the label word
    tokenized = TrainExamples(tiny.toy_reviews(tok, 20, seed=1), tok, LABELS).draw(2, _fits(tok, 40), seed=0)
    assert all(d.text.split()[-1] in LABELS for d in tokenized)


# ---------------------------------------------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------------------------------------------


def _trainer(tok, out, mentor="random", train=None, catalyst=None, eval_dataset=None, **kwargs):
    settings = {
        "catalyst_proposers": MIX,
        "catalyst_labels": LABELS,
        "catalyst_initial_round": True,
        "catalyst_num_candidates": 3,
        "catalyst_manual_prompt": "Is the review positive or negative",
        **kwargs,
    }
    return CatalystTrainer(
        model=tiny.catalyst_model(tok, num_virtual_tokens=12),
        args=tiny.catalyst_args(out, **settings),
        mentor=RandomMentor(vocabulary_words(tok), seed=0) if mentor == "random" else mentor,
        train_dataset=train if train is not None else tiny.toy_reviews(tok, 48, seed=1),
        catalyst_dataset=catalyst if catalyst is not None else tiny.toy_reviews(tok, 16, seed=2),
        eval_dataset=eval_dataset,
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=tiny.accuracy,
    )


def _tokenized(tok, data: Dataset) -> Dataset:
    return data.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])


def test_a_round_with_mixed_proposers_records_proposers_and_counts_wins(tok, tmp_path):
    trainer = _trainer(tok, tmp_path, catalyst_selection="race", catalyst_race_controls=1, catalyst_race_steps=1)
    trainer.train()
    history = trainer.catalyst_history
    assert [r.round for r in history] == [0, 1, 2]
    drawn = {"mentor": 2, "vocab": 2, "labels": 2, "sample_vocab": 2, "examples": 2, "text": 1, "current": 1}
    for record in history:
        assert [c.proposer for c in record.candidates] == [n for n, k in drawn.items() for _ in range(k)]
        assert {k: v for k, v in record.proposers.items() if k != "control"} == drawn
        assert record.proposers["control"] == len(record.screening.controls) == 12  # screened like the samples
        assert record.screening.samples == 12 and len(record.screening.kept) == 3
        assert set(record.wins) == {"screening", "selection"}
        kept = record.candidates[record.screening.kept[0]]
        assert record.wins["screening"] in (kept.proposer, "control")
        # the incumbent never races as a candidate: it is the race's incumbent arm
        raced = {a.candidate for a in record.race.arms if a.candidate is not None}
        assert all(record.candidates[i].proposer != "current" for i in raced)
        assert all(c.score is not None for c in record.candidates)
    text = next(c for c in history[0].candidates if c.proposer == "text")
    assert text.text == "Is the review positive or negative"
    labels = [c for c in history[0].candidates if c.proposer == "labels"]
    assert all(c.text.endswith(": negative, positive") for c in labels)

    summary = trainer.catalyst_summary()
    for name, count in drawn.items():
        assert summary.proposers[name]["drawn"] == 3 * count
    for phase in ("screening", "selection"):
        assert sum(row[phase] for row in summary.proposers.values()) == 3
    assert summary.proposers_line().startswith("wins by proposer: screening ")
    # written and read back (history format 6)
    saved = json.loads((tmp_path / "catalyst_history.json").read_text())
    assert saved["format"] == 6 and saved["summary"]["proposers"] == summary.proposers
    back = History.from_dict(saved)
    assert back.rounds[1].wins == history[1].wins and back.rounds[1].candidates[0].proposer == "mentor"
    # the model card and the command's summary line say it
    card = str(build_model_card(trainer.model, tok, history=back))
    assert summary.proposers_line().replace("_", "\\_") in card and "restarted from a proposed prompt" in card
    metrics = {
        "test_accuracy": {"initial": 0.5, "final": 0.75, "best_round": None}, "test_examples": 24,
        "catalyst": summary.to_dict(), "prompts": {"final": "r s"}, "wall_time_s": 61.0,
    }  # fmt: skip
    assert summary_lines(metrics, "out")[1].endswith(summary.proposers_line())


def test_the_current_candidate_is_scored_as_the_incumbent_itself(tok, tmp_path):
    """Screened beside the others, the ``current`` candidate's score is the soft prompt's (not its nearest tokens');
    with ``best`` selection the round's ``current`` score is the same number."""
    trainer = _trainer(tok, tmp_path, catalyst_proposers="vocab=3,current=1", catalyst_num_candidates=2)
    trainer.train()
    for record in trainer.catalyst_history:
        (incumbent,) = [c for c in record.candidates if c.proposer == "current"]
        assert incumbent.score == pytest.approx(record.current.score, abs=1e-6)
        assert record.mentor is None  # the mix asks no mentor: none is asked
        if record.decision is Decision.KEPT:
            assert record.wins["selection"] == "current"


def test_rounds_run_without_a_mentor_when_the_mix_needs_none(tok, tmp_path):
    trainer = _trainer(tok, tmp_path, mentor=None, catalyst_proposers="vocab=2,examples=2,sample_vocab=1")
    trainer.train()
    assert len(trainer.catalyst_history) == 3 and trainer.catalyst_summary().mentor is None
    assert all(r.decision is not Decision.SKIPPED for r in trainer.catalyst_history)


def test_the_initial_round_alone_screens_a_start_then_trains_plainly(tok, tmp_path):
    """``catalyst_rounds=0`` with ``catalyst_initial_round``: round 0 screens the start, no round follows (the
    command line and ``compare`` took this setting as an initial round before the callback ran it)."""
    trainer = _trainer(
        tok, tmp_path, mentor=None, catalyst_rounds=0, catalyst_initial_round=True,
        catalyst_proposers="vocab=2,sample_vocab=1,current=1", catalyst_num_candidates=1,
    )  # fmt: skip
    trainer.train()
    (only,) = trainer.catalyst_history
    assert only.trigger is Trigger.INITIAL and only.step == 0
    assert only.proposers == {"vocab": 2, "sample_vocab": 1, "current": 1}
    summary = trainer.catalyst_summary()
    assert summary.main_steps == trainer.args.max_steps and summary.compute.screening > 0


def test_examples_come_from_the_training_split_only(tok, tmp_path):
    """Every split holds its own marker word: no ``examples`` candidate shows the catalyst or evaluation split's."""
    train = _tokenized(tok, _marked(tok, "train", 48, seed=1))
    catalyst = _tokenized(tok, _marked(tok, "catalyst", 16, seed=2))
    evaluation = _tokenized(tok, _marked(tok, "validation", 8, seed=3))
    trainer = _trainer(
        tok,
        tmp_path,
        mentor=None,
        train=train,
        catalyst=catalyst,
        eval_dataset=evaluation,
        catalyst_proposers="examples=4",
        catalyst_num_candidates=2,
    )
    trainer.train()
    texts = [c.text for r in trainer.catalyst_history for c in r.candidates]
    assert len(texts) == 12 and all(t.split()[-1] in LABELS for t in texts)
    assert any("train" in t for t in texts)
    assert not any("catalyst" in t or "validation" in t for t in texts)
    n = get_soft_prompt(trainer.model).num_virtual_tokens
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) <= n for t in texts)


@pytest.mark.parametrize(
    ("setting", "kwargs", "message"),
    [
        ("mentor=2,vocab=2", dict(mentor=None), "asks the mentor but no mentor was given"),
        ("labels=2", dict(catalyst_labels=None), "label words are unknown: set catalyst_labels"),
    ],
)
def test_a_mix_the_run_cannot_draw_is_refused_at_attach(tok, tmp_path, setting, kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        _trainer(tok, tmp_path, catalyst_proposers=setting, **kwargs)
    assert "\n" not in str(caught.value)


def test_examples_without_training_rows_are_refused_at_attach(tok, tmp_path):

    trainer = Trainer(
        model=tiny.catalyst_model(tok),
        args=tiny.catalyst_args(tmp_path),
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
    )
    callback = CatalystCallback(
        None, args=CatalystArguments(catalyst_proposers="examples=2"), catalyst_dataset=tiny.toy_reviews(tok, 8, 2)
    )
    with pytest.raises(ValueError, match="no train_dataset rows: give the trainer a train_dataset"):
        callback.attach(trainer)


def test_a_stock_trainer_with_the_callback_draws_examples_from_its_train_dataset(tok, tmp_path):

    train = _tokenized(tok, _marked(tok, "train", 40, seed=1))
    trainer = Trainer(
        model=tiny.catalyst_model(tok, num_virtual_tokens=12),
        args=TrainingArguments(output_dir=str(tmp_path), **tiny.TRAINING),
        train_dataset=train,
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
    )
    settings = CatalystArguments(**tiny.ROUNDS, catalyst_proposers="examples=2,text=1", catalyst_labels=LABELS)
    callback = CatalystCallback(None, args=settings).attach(trainer)
    trainer.train()
    examples = [c for r in callback.history for c in r.candidates if c.proposer == "examples"]
    assert len(examples) == 4 and all("train" in c.text.split() for c in examples)


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == self.step
        return control


def _comparable(records) -> list[dict]:
    drop = {"seconds", "latency_s"}
    data = json.loads(json.dumps([r.to_dict() for r in records]))
    return json.loads(json.dumps(data), object_hook=lambda d: {k: v for k, v in d.items() if k not in drop})


def test_a_resumed_run_replays_rounds_with_mixed_proposers_bit_for_bit(tok, tmp_path):
    settings = dict(save_strategy="steps", save_steps=4, catalyst_selection="race", catalyst_race_steps=1)
    full = _trainer(tok, tmp_path / "full", **settings)
    full.train()
    interrupted = _trainer(tok, tmp_path / "resumed", **settings)
    interrupted.add_callback(_StopAt(4))
    interrupted.train()
    assert [r.round for r in interrupted.catalyst_history] == [0, 1]
    resumed = _trainer(tok, tmp_path / "resumed", **settings)
    resumed.train(resume_from_checkpoint=True)
    assert _comparable(resumed.catalyst_history) == _comparable(full.catalyst_history)
    trained = [{n: p for n, p in t.model.named_parameters() if p.requires_grad} for t in (full, resumed)]
    assert all(torch.equal(trained[0][n], trained[1][n]) for n in trained[0])
    assert resumed.catalyst_summary().proposers == full.catalyst_summary().proposers


def test_without_the_setting_the_mentor_alone_draws_and_older_histories_still_read(tok, tmp_path):
    trainer = tiny.catalyst_trainer(tok, tmp_path, RandomMentor(vocabulary_words(tok), seed=0))
    trainer.train()
    for record in trainer.catalyst_history:
        assert record.proposers == {"mentor": 2} and {c.proposer for c in record.candidates} == {"mentor"}
    old = json.loads((tmp_path / "catalyst_history.json").read_text())
    old["format"] = 5
    del old["summary"]["proposers"]
    for record in old["rounds"]:
        del record["proposers"], record["wins"]
        for candidate in record["candidates"]:
            del candidate["proposer"]
    back = History.from_dict(old)
    assert back.summary.proposers == {} and back.rounds[0].proposers == {} and back.rounds[0].wins == {}
    assert back.rounds[0].candidates[0].proposer is None
    assert RunSummary.of(back.rounds).proposers_line() is None


def test_the_command_line_takes_the_setting_and_refuses_the_mentor_without_one():
    from peft_catalyst.app.arguments import check_train_args, parse_train_args
    from peft_catalyst.app.errors import UserError

    args = parse_train_args(["--mentor", "random", "--catalyst_rounds", "2", "--catalyst_proposers",
                             "mentor=2,vocab=2,labels=2"])  # fmt: skip
    assert args[-1].catalyst_proposers == {"mentor": 2, "vocab": 2, "labels": 2} and args[-1].catalyst_samples == 6
    check_train_args(*args, resume=False)
    args = parse_train_args(["--mentor", "none", "--catalyst_proposers", "mentor=2,vocab=2"])
    with pytest.raises(UserError, match="asks the mentor but --mentor is none: name a mentor, or drop 'mentor'"):
        check_train_args(*args, resume=False)
    with pytest.raises(UserError, match="unknown proposer 'vocabs'"):
        parse_train_args(["--catalyst_proposers", "vocabs=2"])


def test_a_round_whose_screening_keeps_only_the_incumbent_keeps_the_prompt(tok, tmp_path):
    """With the tiny classifier's seed-1 prompt scaled down (x0.001), the incumbent scores best among these random
    words at step 0 (measured once, deterministic on CPU): screened beside them as ``current``, it alone goes on
    and the round keeps it."""
    model = tiny.catalyst_model(tok, num_virtual_tokens=12, seed=1)
    with torch.no_grad():
        get_soft_prompt(model).weight.mul_(0.001)
    before = get_soft_prompt(model).weight.detach().clone()
    settings = dict(catalyst_proposers="vocab=3,current=1", catalyst_num_candidates=1, catalyst_initial_round=True)
    trainer = CatalystTrainer(
        model=model,
        args=tiny.catalyst_args(tmp_path, max_steps=4, catalyst_rounds=1, **settings),
        train_dataset=tiny.toy_reviews(tok, 48, seed=1),
        catalyst_dataset=tiny.toy_reviews(tok, 16, seed=2),
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
    )
    trainer.train()
    first = trainer.catalyst_history[0]
    (incumbent,) = [i for i, c in enumerate(first.candidates) if c.proposer == "current"]
    assert first.screening.kept == [incumbent] and first.decision is Decision.KEPT and first.reason is None
    assert first.current.score == first.candidates[incumbent].score and first.wins["selection"] == "current"
    assert first.wins["screening"] == "current" and first.prompt_after is not None
    assert not torch.equal(before, get_soft_prompt(model).weight)  # then one ordinary step from the kept prompt
