"""A mentor that sees the data: examples, the current prompt's errors, labels and best prompts in every request."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from transformers import DataCollatorWithPadding, TrainerCallback

from peft_catalyst import CatalystTrainingArguments
from peft_catalyst.mentors import LabeledExample, MentorRequest, MetaPrompt, TrajectoryPoint
from peft_catalyst.mentors.cache import full_key, request_key
from peft_catalyst.mentors.metaprompt import SMALL_MODEL_META_PROMPT
from peft_catalyst.projection import read_soft_prompt, write_soft_prompt_, write_token_ids
from peft_catalyst.records import HISTORY_FORMAT, Decision, Evidence, History, RoundRecord, Trigger
from peft_catalyst.rounds.evidence import EvidenceSource, balanced_indices, cut_words
from tests import tiny
from tests.testing_utils import ScriptedMentor, StopAt, causal_trainer, comparable, plain_run, trainable


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def test_cut_words_marks_what_it_cuts():
    assert cut_words("a  b c", 5) == ("a b c", False)
    assert cut_words("one two three four", 2) == ("one two", True)


def test_balanced_indices_take_the_classes_in_turn():
    labels = [0] * 10 + [1] * 2 + [2] * 5
    picked = balanced_indices(labels, 7, seed=3)
    assert len(set(picked)) == 7
    assert Counter(labels[i] for i in picked) == {0: 3, 1: 2, 2: 2}  # class 1 runs out, the others fill in
    assert picked == balanced_indices(labels, 7, seed=3) != balanced_indices(labels, 7, seed=4)


def test_errors_are_exactly_the_misclassified_rows(tok):
    data = tiny.toy_reviews(tok, 12, seed=5)
    source = EvidenceSource(data, tok, ["negative", "positive"])
    predictions = [1 - label if i % 3 == 0 else label for i, label in enumerate(source.labels)]
    errors = source.errors(predictions, count=100, words=50, seed=0)
    expected = Counter((source.texts[i], source.name(source.labels[i])) for i in range(12) if i % 3 == 0)
    assert Counter((e.text, e.label) for e in errors) == expected
    assert all(e.predicted != e.label and e.predicted in ("negative", "positive") for e in errors)
    assert source.errors(None, 3, 50, 0) == [] and source.errors(predictions[:-1], 3, 50, 0) == []
    cut = source.examples(4, words=1, seed=0)  # a budget of 1 word cuts every text, and marks it
    assert len(cut) == 4 and all(e.cut and len(e.text.split()) == 1 for e in cut)


def _request(**kwargs) -> MentorRequest:
    return MentorRequest(
        task_description="Classify review sentiment",
        trajectory=[TrajectoryPoint("great movie", 0.5)],
        metric="label_loss",
        **kwargs,
    )


EVIDENCE = dict(
    examples=[
        LabeledExample("the movie was great", "positive"),
        LabeledExample("a boring plot", "negative", cut=True),
    ],
    errors=[LabeledExample("bad acting", "negative", predicted="positive")],
    labels=["negative", "positive"],
    best_prompts=[TrajectoryPoint("Is the review positive or negative?", 0.41)],
)


def test_cache_keys_change_with_the_evidence_and_not_without_it():
    plain = _request()
    assert "examples" not in plain.to_dict()  # no evidence: the request (and its keys) read as before
    messages = MetaPrompt().render(plain)
    keys = {request_key(plain)}
    full = {full_key({}, messages, plain)}
    for name, value in EVIDENCE.items():
        request = _request(**{name: value})
        keys.add(request_key(request))
        full.add(full_key({}, messages, request))  # same messages (a template without evidence): new key anyway
    keys.add(request_key(_request(proposal="edit")))
    assert len(keys) == len(EVIDENCE) + 2 and len(full) == len(EVIDENCE) + 1
    again = MentorRequest.from_dict(json.loads(json.dumps(_request(**EVIDENCE).to_dict())))
    assert again == _request(**EVIDENCE)


def test_both_templates_render_the_evidence_and_old_templates_still_work():
    request = _request(**EVIDENCE)
    for meta in (MetaPrompt(), SMALL_MODEL_META_PROMPT):
        text = meta.render_user(request)
        assert '"negative", "positive"' in text
        assert '"the movie was great" -> positive' in text and '"a boring plot ..." -> negative' in text
        assert '"bad acting" -> true: negative, predicted: positive' in text
    assert '"Is the review positive or negative?" (label_loss 0.4100)' in MetaPrompt().render_user(request)
    edit = MetaPrompt().render_user(_request(**EVIDENCE, proposal="edit"))
    assert 'Edit the best prompt so far, "Is the review positive or negative?" so that it fixes the errors' in edit
    # Without evidence the default template renders exactly as before the evidence existed.
    bare = MetaPrompt().render_user(_request())
    assert "labels" not in bare and "\n\n\n" not in bare
    old = MetaPrompt().with_user("Task: {task_description}\n{trajectory}\nWrite {num_candidates}.")
    assert "bad acting" not in old.render_user(request)
    custom = MetaPrompt().with_user("{labels}{errors}{trajectory}")
    assert custom.render_user(request).startswith("The model must answer with one of these labels")
    with pytest.raises(ValueError, match="Unknown placeholder.*mistakes"):
        MetaPrompt().with_user("{trajectory} {mistakes}")


def test_evidence_is_held_in_the_record_and_older_formats_read():
    evidence = Evidence(
        examples=list(EVIDENCE["examples"]), errors=list(EVIDENCE["errors"]), labels=["negative", "positive"]
    )
    record = RoundRecord(round=1, step=3, trigger=Trigger.SCHEDULE, decision=Decision.KEPT, evidence=evidence)
    data = History(rounds=[RoundRecord.from_dict(record.to_dict())]).to_dict()
    assert data["format"] == HISTORY_FORMAT
    assert History.from_dict(json.loads(json.dumps(data))).rounds[0].evidence == evidence
    old = {"format": 3, "rounds": [{"round": 1, "step": 3, "trigger": "schedule", "decision": "kept"}]}
    assert History.from_dict(old).rounds[0].evidence is None


def test_arguments_validate_the_evidence_settings(tmp_path):
    with pytest.raises(ValueError, match="catalyst_mentor_errors must be >= 0"):
        tiny.catalyst_args(tmp_path, catalyst_mentor_errors=-1)
    with pytest.raises(ValueError, match="catalyst_proposal must be one of"):
        tiny.catalyst_args(tmp_path, catalyst_proposal="rewrite")
    with pytest.raises(ValueError, match="catalyst_mentor_words must be >= 1"):
        tiny.catalyst_args(tmp_path, catalyst_mentor_words=0)
    assert isinstance(tiny.catalyst_args(tmp_path, catalyst_labels=["neg", "pos"]), CatalystTrainingArguments)


class Inspecting(ScriptedMentor):
    """A scripted mentor that, when asked, predicts the catalyst split itself with the latest trajectory prompt."""

    def __init__(self, replies, trainer_box):
        super().__init__(replies)
        self.box, self.expected, self.requests = trainer_box, [], []

    def complete(self, messages, request):
        trainer = self.box[0]
        model, callback = trainer.model, trainer.catalyst
        ids = callback.state.trajectory.records[-1].token_ids
        saved = read_soft_prompt(model)
        write_token_ids(model, ids)
        collate = DataCollatorWithPadding(trainer.processing_class)
        data = trainer.catalyst_dataset
        wrong = Counter()
        was = model.training
        model.eval()
        with torch.no_grad():
            for i in range(len(data)):
                row = data[i]
                batch = collate([{"input_ids": row["input_ids"], "attention_mask": row["attention_mask"]}])
                predicted = int(model(**batch).logits.argmax(-1))
                if predicted != row["label"]:
                    text = trainer.processing_class.decode(row["input_ids"], skip_special_tokens=True)
                    wrong[(" ".join(text.split()), ["negative", "positive"][row["label"]])] += 1
        model.train(was)
        write_soft_prompt_(model, saved)
        self.expected.append(wrong)
        self.requests.append(request)
        return super().complete(messages, request)


def test_a_round_shows_examples_labels_best_prompts_and_exactly_the_current_errors(tok, tmp_path):
    box = []
    mentor = Inspecting(["1. the movie was great\n2. a boring plot"], box)
    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path / "out",
        mentor,
        catalyst_labels=["negative", "positive"],
        catalyst_mentor_examples=4,
        catalyst_mentor_errors=100,  # every error, to compare with the mentor's own count
        catalyst_mentor_words=10_000,
    )
    box.append(trainer)
    trainer.train()
    assert len(mentor.requests) == 2
    for record, request, expected in zip(trainer.catalyst_history, mentor.requests, mentor.expected):
        evidence = record.evidence
        assert evidence.labels == ["negative", "positive"] == list(request.labels)
        assert Counter(e.label for e in evidence.examples) == {"negative": 2, "positive": 2}
        assert Counter((e.text, e.label) for e in evidence.errors) == expected
        assert tuple(evidence.errors) == request.errors and tuple(evidence.examples) == request.examples
        assert [p.text for p in evidence.best_prompts] == [p.text for p in request.best_prompts]
        assert evidence.best_prompts and all(p.finite for p in evidence.best_prompts)
    assert sum(sum(e.values()) for e in mentor.expected) > 0  # the check saw errors to compare
    chat = [json.loads(line) for line in (tmp_path / "out" / "catalyst_chat.jsonl").read_text().splitlines()]
    assert "Examples from the task (text -> label)" in chat[0]["messages"][-1]["content"]
    saved = json.loads((tmp_path / "out" / "catalyst_history.json").read_text())
    assert saved["rounds"][0]["evidence"]["labels"] == ["negative", "positive"]


def test_a_score_fn_ranking_has_no_errors_but_still_examples(tok, tmp_path):
    mentor = ScriptedMentor(["1. the movie was great"])
    trainer = tiny.catalyst_trainer(tok, tmp_path / "out", mentor, catalyst_rounds=1)
    trainer.catalyst.score_fn = lambda prediction: float(prediction.losses.mean())
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.evidence.errors == [] and len(record.evidence.examples) == 3
    assert record.evidence.labels == []  # the tiny BERT's config names no classes and none were given


# ------------------------------------------------------------------------------------------------------------------
# Screen many, race few
# ------------------------------------------------------------------------------------------------------------------

FOUR = "1. the movie was great\n2. a boring plot\n3. wonderful acting\n4. this is spam"


def test_num_samples_below_num_candidates_names_both(tmp_path):
    with pytest.raises(ValueError, match=r"catalyst_num_samples \(1\) must be >= catalyst_num_candidates \(2\)"):
        tiny.catalyst_args(tmp_path, catalyst_num_samples=1)


def test_screening_keeps_the_best_untrained_scores(tok, tmp_path):
    mentor = ScriptedMentor([FOUR])
    trainer = tiny.catalyst_trainer(tok, tmp_path / "out", mentor, catalyst_num_samples=4, catalyst_rounds=1)
    trainer.train()
    (record,) = trainer.catalyst_history
    screening = record.screening
    assert screening.samples == 4 and len(record.candidates) == 4 and all(c.finite for c in record.candidates)
    ranked = sorted(range(4), key=lambda i: record.candidates[i].score)  # loss: lower is better
    assert screening.kept == ranked[:2]
    assert screening.prompts == 4 and screening.passes == 4 and screening.seconds > 0  # one at a time on CPU
    assert record.winner in (None, *screening.kept)
    chat = [json.loads(line) for line in (tmp_path / "out" / "catalyst_chat.jsonl").read_text().splitlines()]
    assert chat[0]["request"]["num_candidates"] == 4  # the mentor was asked for N


def test_screening_never_changes_the_training_state(tok, tmp_path):
    """Every screened candidate loses (the prompt-norm ranking): the run ends bit for bit as one with no restart."""
    mentor = ScriptedMentor([FOUR])
    trainer = tiny.catalyst_trainer(
        tok, tmp_path / "out", mentor, catalyst_metric="prompt_norm", catalyst_num_samples=4
    )
    from peft_catalyst.projection import get_soft_prompt

    weight = get_soft_prompt(trainer.model).weight
    trainer.compute_metrics = lambda pred: {**tiny.accuracy(pred), "prompt_norm": float(weight.detach().norm())}
    trainer.args.catalyst_greater_is_better = True
    trainer.train()
    assert [r.decision.value for r in trainer.catalyst_history] == ["kept", "kept"]
    assert all(r.screening is not None and len(r.screening.kept) == 2 for r in trainer.catalyst_history)
    final, plain = trainable(trainer.model), plain_run(tok, tmp_path)
    assert all(torch.equal(final[n], plain[n]) for n in plain)


def test_random_controls_are_screened_alike_and_the_paired_statistic_is_reported(tok, tmp_path):
    mentor = ScriptedMentor([FOUR])
    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path / "out",
        mentor,
        catalyst_selection="race",
        catalyst_race_controls=1,
        catalyst_race_steps=1,
        catalyst_num_samples=4,
    )
    trainer.train()
    for record in trainer.catalyst_history:
        screening = record.screening
        assert len(screening.controls) == 4 and all(c.finite for c in screening.controls)  # N drawn, all scored
        best_control = min(range(4), key=lambda i: screening.controls[i].score)
        assert screening.kept_controls == [best_control]
        raced = [a.token_ids for a in record.race.arms if a.kind.value == "control"]
        assert raced == [screening.controls[best_control].token_ids]
        best_mentor = min(screening.scores)
        assert record.beat_random_screening == (best_mentor < screening.controls[best_control].score)
        assert record.beat_random_race is not None
    summary = trainer.catalyst_summary()
    assert summary.beat_random_screening[1] == summary.beat_random_race[1] == 2
    line = summary.beat_random_line()
    assert line.startswith("mentor beat random in ") and "of 2 rounds (screening)" in line
    assert summary.to_dict()["beat_random_race"] == summary.beat_random_race  # metrics.json carries the summary
    trainer.save_model(str(tmp_path / "saved"))
    assert line in (tmp_path / "saved" / "README.md").read_text()  # the model card
    from peft_catalyst.app.runner import summary_lines

    metrics = {
        "test_accuracy": {"initial": 0.5, "final": 0.6, "best_round": None},
        "test_examples": 10,
        "catalyst": summary.to_dict(),
        "wall_time_s": 1.0,
        "prompts": {"final": "x"},
    }
    assert any(line in printed for printed in summary_lines(metrics, "out"))  # the command's summary line


def test_a_tie_between_mentor_and_random_is_not_counted_for_either():
    """Identical prompts score alike: a tie said "random won" at screening and "the mentor won" in the race (its arm
    came first in order), so TREC-6's label-anchored rounds counted 0/8 at screening and 8/8 in races."""
    from peft_catalyst import ArmKind, RaceArm
    from peft_catalyst.records import Race, RaceRung, ScoredPrompt
    from peft_catalyst.rounds.race import race_beats_random
    from peft_catalyst.rounds.screening import beats_random

    def sp(text, score):
        return ScoredPrompt(text=text, score=score, loss=score)

    assert beats_random([sp("a", 0.4)], [sp("a", 0.4)], higher_is_better=False) is None
    assert beats_random([sp("a", 0.3)], [sp("b", 0.4)], higher_is_better=False) is True
    assert beats_random([sp("a", 0.5)], [sp("b", 0.4)], higher_is_better=False) is False

    def race(mentor_score, control_score, winner):
        arms = [RaceArm(ArmKind.INCUMBENT, "i", [1]), RaceArm(ArmKind.CANDIDATE, "a", [2], candidate=0)]
        arms.append(RaceArm(ArmKind.CONTROL, "a", [2]))
        rung = RaceRung([0, 1, 2], 1, [sp("i", 0.9), sp("a", mentor_score), sp("a", control_score)])
        return Race(arms=arms, rungs=[rung], winner=winner, steps=3)

    assert race_beats_random(race(0.4, 0.4, winner=1), higher_is_better=False) is None
    assert race_beats_random(race(0.3, 0.4, winner=1), higher_is_better=False) is True
    assert race_beats_random(race(0.5, 0.4, winner=2), higher_is_better=False) is False
    assert race_beats_random(race(0.3, 0.4, winner=0), higher_is_better=False) is True  # the incumbent kept


def test_edit_proposals_ask_to_rewrite_the_best_prompt_so_far(tok, tmp_path):
    mentor = ScriptedMentor(["1. the movie was great"])
    trainer = tiny.catalyst_trainer(tok, tmp_path / "out", mentor, catalyst_rounds=1, catalyst_proposal="edit")
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.evidence.proposal == "edit"
    best = record.evidence.best_prompts[0].text
    chat = [json.loads(line) for line in (tmp_path / "out" / "catalyst_chat.jsonl").read_text().splitlines()]
    assert chat[0]["request"]["proposal"] == "edit"
    assert f"Edit the best prompt so far, {json.dumps(' '.join(best.split()))}" in chat[0]["messages"][-1]["content"]


# ------------------------------------------------------------------------------------------------------------------
# Label anchoring
# ------------------------------------------------------------------------------------------------------------------


def test_anchor_labels_completes_what_is_missing_within_the_budget():
    from peft_catalyst.rounds.evidence import anchor_labels

    def fits(text):
        return len(text.split()) <= 4

    labels = ["negative", "positive"]
    assert anchor_labels("Is it positive or negative?", labels, fits) == "Is it positive or negative?"
    assert anchor_labels("Is it positive?", labels, fits) == "Is it positive?: negative"
    assert anchor_labels("Classify the movie review", labels, fits) == "Classify the: negative, positive"
    # a cut that drops "positive" from the text puts it back in the completion
    three = lambda t: len(t.split()) <= 3  # noqa: E731
    assert anchor_labels("Say something positive or not", labels, three) == "Say: negative, positive"


def test_anchor_labels_never_replace_a_whole_proposal():
    """Where not one word fits beside the labels, the text stays as proposed: otherwise every candidate, the mentor's
    and the random controls', became the one label list (TREC-6's six labels in an 8-token prompt did)."""
    from peft_catalyst.rounds.evidence import anchor_labels

    labels = ["abbreviation", "entity", "description", "human", "location", "number"]

    def fits(text):
        return len(text.split()) <= 4

    texts = ["Which kind of question is this", "zq wv lorem ipsum"]
    assert [anchor_labels(t, labels, fits) for t in texts] == texts
    assert anchor_labels("Say positive or not", ["negative", "positive"], lambda t: len(t.split()) <= 2) == (
        "Say positive or not"
    )
    # random tokens decode to long "words": the first word's end is cut before the whole text is given up
    assert anchor_labels("goodce}Hrezng whe", ["bad", "great"], lambda t: len(t) <= 16) == "good: bad, great"


def _anchoring_trainer(tok, tmp_path, labels, **kwargs):
    """One race round of FOUR's prompts and one random control, anchored with ``labels``."""
    return tiny.catalyst_trainer(
        tok,
        tmp_path / "out",
        ScriptedMentor([FOUR]),
        catalyst_labels=labels,
        catalyst_label_anchor=True,
        catalyst_selection="race",
        catalyst_race_controls=1,
        catalyst_race_steps=1,
        catalyst_num_samples=4,
        catalyst_rounds=1,
        **kwargs,
    )


def test_candidates_and_random_controls_are_anchored_alike(tok, tmp_path):
    from peft_catalyst.rounds.evidence import missing_labels

    # 8 tokens leave room for the labels beside a proposal's words
    trainer = _anchoring_trainer(tok, tmp_path, ["bad", "great"], model=tiny.catalyst_model(tok, num_virtual_tokens=8))
    trainer.train()
    (record,) = trainer.catalyst_history
    decode = trainer.processing_class.decode
    assert record.mentor.candidates[2] == "wonderful acting"  # the mentor's own words are kept as it said them
    for prompt in [*record.candidates, *record.screening.controls]:
        text = decode(prompt.token_ids)  # the prompt as written (a short text repeats to the prompt's length)
        assert "bad" in text and "great" in text, prompt
    assert missing_labels(record.candidates[2].text, ["bad", "great"]) == []
    assert any("label anchor" in note for note in record.notes)


def test_labels_that_do_not_fit_the_prompt_leave_the_candidates_distinct(tok, tmp_path, caplog):
    labels = ["awful", "bad", "fine", "good", "great"]  # five labels cannot sit beside any word in 4 tokens
    trainer = _anchoring_trainer(tok, tmp_path, labels)
    with caplog.at_level("WARNING", logger="peft_catalyst.rounds.engine"):
        trainer.train()
    (record,) = trainer.catalyst_history
    texts = [c.text for c in record.candidates]
    assert len(set(texts)) == len(texts) > 1, texts  # not one label list for all
    assert all(text in FOUR for text in texts)
    assert any("left as proposed" in note for note in record.notes)
    assert sum("left as proposed" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------------------------------------------------
# A round before training
# ------------------------------------------------------------------------------------------------------------------


def test_an_initial_round_restarts_from_the_screened_winner_before_any_step(tok, tmp_path):
    from peft_catalyst.projection import get_soft_prompt, text_to_token_ids
    from peft_catalyst.records import Trigger

    model = tiny.catalyst_model(tok, init_scale=50.0)  # any text beats the blown-up initial prompt
    mentor = ScriptedMentor([FOUR])
    trainer = tiny.catalyst_trainer(
        tok,
        tmp_path / "out",
        mentor,
        model=model,
        catalyst_initial_round=True,
        catalyst_num_samples=4,
        catalyst_labels=["negative", "positive"],
    )
    seen = {}

    class AtFirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.setdefault("prompt", get_soft_prompt(model).weight.detach().clone())

    trainer.add_callback(AtFirstStep())
    trainer.train()
    initial, *later = trainer.catalyst_history
    assert (initial.round, initial.step, initial.trigger) == (0, 0, Trigger.INITIAL)
    assert [r.round for r in later] == [1, 2]  # catalyst_rounds still counts the scheduled rounds
    assert initial.trajectory == [] and initial.decision.value == "accepted"
    assert initial.winner == initial.screening.kept[0]  # the best screened prompt, which beat the initial one
    ids = text_to_token_ids(tok, initial.candidates[initial.winner].text, 4)
    assert torch.equal(seen["prompt"], model.word_embeddings.weight[ids].detach())  # training starts from it
    chat = [json.loads(line) for line in (tmp_path / "out" / "catalyst_chat.jsonl").read_text().splitlines()]
    request = chat[0]["request"]
    assert request["trajectory"] == [] and request["labels"] == ["negative", "positive"] and request["examples"]


def test_a_run_resumed_after_an_initial_round_ends_bit_identical(tok, tmp_path):
    from peft_catalyst.mentors import CachedMentor
    from peft_catalyst.projection import get_soft_prompt
    cache = tmp_path / "mentor.sqlite"
    common = dict(save_strategy="steps", save_steps=4, catalyst_initial_round=True, catalyst_num_samples=4)

    def run(folder, mentor, stop=None, resume=False):
        trainer = tiny.catalyst_trainer(
            tok, tmp_path / folder, mentor, model=tiny.catalyst_model(tok, init_scale=50.0), **common
        )
        if stop:
            trainer.add_callback(StopAt(stop))
        trainer.train(resume_from_checkpoint=resume or None)
        return trainer

    full = run("full", CachedMentor(ScriptedMentor([FOUR]), cache, mode="use"))
    assert full.catalyst_history[0].restarted
    interrupted = run("resumed", CachedMentor(None, cache, mode="strict"), stop=4)
    assert [r.round for r in interrupted.catalyst_history] == [0, 1]
    resumed = run("resumed", CachedMentor(None, cache, mode="strict"), resume=True)
    assert comparable(resumed.catalyst_history) == comparable(full.catalyst_history)
    for name, value in full.model.named_parameters():
        if value.requires_grad:
            assert torch.equal(dict(resumed.model.named_parameters())[name], value), name
    assert torch.equal(get_soft_prompt(resumed.model).weight, get_soft_prompt(full.model).weight)


def test_a_label_word_doer_shows_as_many_errors_as_its_accuracy_misses(tmp_path):
    """The command line's doer (a causal LM answering with label words): predictions come from the label words'
    scores that preprocess_logits_for_metrics keeps, so the errors number exactly (1 - accuracy) x the split."""
    trainer, spec = causal_trainer(
        tmp_path,
        ScriptedMentor(["1. Is this review positive"]),
        catalyst_size=20,
        max_steps=4,
        catalyst_rounds=1,
        catalyst_stage_steps=2,
        per_device_eval_batch_size=3,
        catalyst_metric="accuracy",
        catalyst_labels=["negative", "positive"],
        catalyst_mentor_errors=100,
        catalyst_mentor_words=10_000,
    )
    trainer.train()
    (record,) = trainer.catalyst_history
    accuracy = record.trajectory[-1].metrics["accuracy"]
    errors = record.evidence.errors
    assert 0 < len(errors) == round((1 - accuracy) * 20)
    assert all({e.label, e.predicted} == {"negative", "positive"} for e in errors)
    assert all(e.text.startswith("Review:") for e in errors)  # the decoded model input: the filled template
