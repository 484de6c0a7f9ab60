"""CatalystTrainer: rounds, elitist restarts, faults, logging, checkpoints and resume, on tiny models from configs."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorWithPadding, HfArgumentParser, TrainerCallback

from peft_catalyst import CatalystTrainer, CatalystTrainingArguments, Decision, Trigger
from peft_catalyst.mentors import CachedMentor, MentorError, MentorRequest, OpenAIMentor
from peft_catalyst.projection import get_soft_prompt, text_to_token_ids, write_token_ids
from peft_catalyst.records import HISTORY_FORMAT
from tests import tiny
from tests.loopback_openai import LoopbackOpenAIServer, error_reply, refused_base_url
from tests.testing_utils import ScriptedMentor, causal_trainer, plain_run, trainable


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _args(tmp_path, **kwargs) -> CatalystTrainingArguments:
    """The tiny run's arguments (tests/tiny.py), writing under ``tmp_path / "out"``."""
    return tiny.catalyst_args(tmp_path / "out", **kwargs)


def _trainer(tok, tmp_path, mentor, model=None, **kwargs):
    """The tiny CatalystTrainer (tests/tiny.py), writing under ``tmp_path / "out"``."""
    return tiny.catalyst_trainer(tok, tmp_path / "out", mentor, model=model, **kwargs)


class Probe(TrainerCallback):
    """Captures the soft prompt, the prompt's optimizer state and its learning rate after every step."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, {}

    def on_step_end(self, args, state, control, **kwargs):
        weight = get_soft_prompt(self.trainer.model).weight
        opt = self.trainer.optimizer.optimizer
        group = next(g for g in opt.param_groups if any(p is weight for p in g["params"]))
        self.steps[state.global_step] = {
            "weight": weight.detach().clone(),
            "state": dict(opt.state.get(weight, {})),
            "lr": group["lr"],
            "group_size": len(group["params"]),
            "training": self.trainer.model.training,
        }


def test_losing_candidates_leave_training_exactly_as_a_plain_run(tok, tmp_path):
    """Rounds score trajectory points and candidates, but when the current prompt wins nothing else changes.

    The model has dropout (BERT, training mode) so that any consumed RNG draw would show in the final weights. The
    ranking metric is the soft prompt's norm, under which the current RANDOM-init prompt (N(0, 1) entries) always
    beats token embeddings (std 0.02): a deterministic way to make every candidate lose.
    """
    mentor = ScriptedMentor(["1. call today\n2. hello lunch"])
    trainer = _trainer(tok, tmp_path, mentor, catalyst_metric="prompt_norm")
    weight = get_soft_prompt(trainer.model).weight
    trainer.compute_metrics = lambda pred: {**tiny.accuracy(pred), "prompt_norm": float(weight.detach().norm())}
    trainer.args.catalyst_greater_is_better = True
    probe = Probe(trainer)
    trainer.add_callback(probe)
    trainer.train()
    statuses = [r.decision for r in trainer.catalyst_history]
    assert statuses == [Decision.KEPT, Decision.KEPT], trainer.catalyst_history
    for record in trainer.catalyst_history:
        assert len(record.candidates) == 2 and all(c.finite for c in record.candidates)
        assert all(0 <= c.metrics["accuracy"] <= 1 for c in record.candidates)
        assert 1 <= len(record.trajectory) <= 2 and all(p.loss is not None for p in record.trajectory)
    # The mentor is told the ranking metric, its direction and the earlier rounds' outcomes.
    chat = [json.loads(line) for line in (tmp_path / "out" / "catalyst_chat.jsonl").read_text().splitlines()]
    requests = [MentorRequest.from_dict(entry["request"]) for entry in chat]
    assert [(r.metric, r.higher_is_better, len(r.earlier_rounds)) for r in requests] == [
        ("prompt_norm", True, 0),
        ("prompt_norm", True, 1),
    ]
    (past,) = requests[1].earlier_rounds
    assert past.proposed == ["call today", "hello lunch"] and past.taken is None
    assert past.scores == [c.score for c in trainer.catalyst_history[0].candidates]
    assert "higher prompt_norm is better" in chat[1]["messages"][-1]["content"]
    assert all(s["training"] for s in probe.steps.values())  # model mode restored after scoring
    assert trainer.model.base_model.config.hidden_dropout_prob > 0
    catalyst = trainable(trainer.model)
    plain = plain_run(tok, tmp_path)
    assert catalyst.keys() == plain.keys()
    for name in plain:
        assert torch.equal(catalyst[name], plain[name]), name


def test_winning_candidate_restarts_in_place_resets_optimizer_and_rewarms(tok, tmp_path):
    # A soft prompt blown up 50x scores badly: any real text wins.
    model = tiny.catalyst_model(tok, init_scale=50.0)
    mentor = ScriptedMentor(["1. the movie was great\n2. a terrible film"])
    trainer = _trainer(tok, tmp_path, mentor, model=model, catalyst_rounds=1, catalyst_rewarmup_steps=3)
    probe = Probe(trainer)
    trainer.add_callback(probe)
    weight_before = get_soft_prompt(model).weight
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.decision is Decision.ACCEPTED and record.step == 3
    winner = record.candidates[record.winner]
    assert winner.score < record.current.score
    ids = text_to_token_ids(tok, winner.text, 4)
    assert winner.token_ids == ids
    at_round = probe.steps[3]
    torch.testing.assert_close(at_round["weight"], model.word_embeddings.weight[ids].detach(), rtol=0, atol=0)
    assert get_soft_prompt(model).weight is weight_before  # same Parameter object
    assert probe.steps[2]["state"] and at_round["state"] == {}  # Adam moments dropped at the restart
    assert at_round["group_size"] == 1  # the prompt has a parameter group of its own
    scheduled = trainer.args.learning_rate  # constant-ish linear schedule: compare ratios to the scheduled lr
    ratios = [probe.steps[s]["lr"] / _scheduled_lr(trainer, s) for s in (3, 4, 5, 6)]
    assert ratios == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1.0])
    assert scheduled > 0


def _scheduled_lr(trainer, step: int) -> float:
    """The learning rate the linear schedule sets after optimizer step ``step`` (before any re-warm scaling)."""
    total = trainer.args.max_steps
    return trainer.args.learning_rate * max(0.0, (total - step) / total)


def test_blind_selection_takes_the_first_candidate_unscored(tok, tmp_path):
    mentor = ScriptedMentor(["1. a boring plot\n2. the movie was great"])
    trainer = _trainer(tok, tmp_path, mentor, catalyst_selection="first", catalyst_rounds=1)
    trainer.train()
    (record,) = trainer.catalyst_history
    assert (record.decision, record.winner, record.candidates[0].text) == (Decision.BLIND, 0, "a boring plot")
    assert record.candidates[0].score is None and record.current is None


def test_mentor_faults_skip_rounds_and_training_goes_on(tok, tmp_path):
    mentors = [
        ScriptedMentor([MentorError("down", reason="connection")]),
        ScriptedMentor([RuntimeError("a bug in a custom mentor")]),
        ScriptedMentor(["Sure! Here are some ideas:"]),  # no usable line
        OpenAIMentor(
            "gpt-test", base_url=refused_base_url(), api_key="sk-test-not-a-real-key-1234", timeout=2, max_retries=0
        ),
    ]
    plain = None
    for i, mentor in enumerate(mentors):
        trainer = _trainer(tok, tmp_path / str(i), mentor)
        trainer.train()
        assert [r.decision for r in trainer.catalyst_history] == [Decision.SKIPPED, Decision.SKIPPED]
        assert trainer.state.global_step == 9
        plain = plain or plain_run(tok, tmp_path)
        final = trainable(trainer.model)
        assert all(torch.equal(final[n], plain[n]) for n in plain)
    log = (tmp_path / "3" / "out" / "catalyst_chat.jsonl").read_text()
    assert "sk-test-not-a-real-key-1234" not in log and "connection" in log


def test_openai_mentor_through_loopback_server_and_outputs(tok, tmp_path):
    with LoopbackOpenAIServer() as server:
        server.enqueue(error_reply(500))  # one transient fault: the client retries
        server.set_reply(lambda req: "1. the movie was great\n2. a terrible film")
        mentor = OpenAIMentor(
            "gpt-test", base_url=server.base_url, api_key="sk-loopback-secret-0000", timeout=5, max_retries=2
        )
        trainer = _trainer(tok, tmp_path, mentor)
        trainer.train()
        assert server.request_count == 3  # 1 failed + 2 rounds
    out = tmp_path / "out"
    history = json.loads((out / "catalyst_history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [1, 2]
    assert history["summary"]["mentor"] == "openai:gpt-test"
    first = history["rounds"][0]
    assert history["format"] == HISTORY_FORMAT
    assert {"step", "trajectory", "mentor", "candidates", "current", "decision", "seconds", "metric"} <= first.keys()
    assert all({"text", "score", "loss", "train_loss"} <= p.keys() for p in first["trajectory"])
    assert first["mentor"]["prompt_tokens"] is not None
    chat = [json.loads(line) for line in (out / "catalyst_chat.jsonl").read_text().splitlines()]
    assert len(chat) == 2 and chat[0]["messages"][-1]["role"] == "user" and "movie" in chat[0]["reply"]
    assert "sk-loopback-secret-0000" not in (out / "catalyst_chat.jsonl").read_text()
    logged = [h for h in trainer.state.log_history if "catalyst/round" in h]
    assert [h["catalyst/round"] for h in logged] == [1.0, 2.0]
    assert {"catalyst/current_loss", "catalyst/accepted", "catalyst/best_candidate_loss"} <= logged[0].keys()


def test_trajectory_is_recorded_once_per_optimizer_step_under_gradient_accumulation(tok, tmp_path):
    mentor = ScriptedMentor(["1. the movie was great"])
    trainer = _trainer(
        tok,
        tmp_path,
        mentor,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=2,
        catalyst_trajectory_points=10,
    )
    seen = []
    original = trainer.catalyst._run_round

    def spy(trigger, step):
        seen.append([r.step for r in trainer.catalyst.state.trajectory.records])
        original(trigger, step)

    trainer.catalyst._run_round = spy
    trainer.train()
    assert seen == [[1, 2, 3], [4, 5, 6]]
    losses = [p.train_loss for p in trainer.catalyst_history[0].trajectory]
    assert all(math.isfinite(x) and x > 0 for x in losses)


def test_plateau_triggers_an_early_round(tok, tmp_path):
    mentor = ScriptedMentor(["1. the movie was great"])
    trainer = _trainer(
        tok,
        tmp_path,
        mentor,
        learning_rate=0.0,
        catalyst_rounds=1,
        catalyst_stage_steps=8,
        catalyst_plateau_patience=2,
    )
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.trigger is Trigger.PLATEAU and record.step < 8


def test_non_finite_scores_are_never_selected(tok, tmp_path):
    mentor = ScriptedMentor(["1. the movie was great\n2. a terrible film"])
    trainer = _trainer(
        tok,
        tmp_path,
        mentor,
        catalyst_rounds=1,
        catalyst_metric="nan_metric",
        model=tiny.catalyst_model(tok, init_scale=50.0),
    )
    trainer.compute_metrics = lambda pred: {"nan_metric": float("nan")}
    trainer.train()
    (record,) = trainer.catalyst_history
    assert record.decision is Decision.KEPT
    assert not any(c.finite for c in record.candidates)


def test_resume_from_checkpoint_with_replayed_mentor_matches_uninterrupted_run(tok, tmp_path):
    replies = ["1. the movie was great\n2. a terrible film", "1. a good ending\n2. a boring plot"]
    cache = tmp_path / "mentor.sqlite"
    common = dict(save_strategy="steps", save_steps=4, catalyst_rounds=2, catalyst_stage_steps=3)

    full = _trainer(
        tok,
        tmp_path / "full",
        CachedMentor(ScriptedMentor(replies), cache, mode="use"),
        model=tiny.catalyst_model(tok, init_scale=50.0),
        **common,
    )
    full.train()
    assert full.catalyst_history[0].decision is Decision.ACCEPTED

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                control.should_training_stop = True
            return control

    interrupted = _trainer(
        tok,
        tmp_path / "resumed",
        CachedMentor(None, cache, mode="strict"),
        model=tiny.catalyst_model(tok, init_scale=50.0),
        **common,
    )
    interrupted.add_callback(StopAt())
    interrupted.train()
    assert interrupted.state.global_step == 4 and len(interrupted.catalyst_history) == 1
    state = json.loads((tmp_path / "resumed" / "out" / "checkpoint-4" / "catalyst_state.json").read_text())
    assert state["state"]["rounds_done"] == 1 and [r["step"] for r in state["state"]["trajectory"]] == [4]

    resumed = _trainer(
        tok,
        tmp_path / "resumed",
        CachedMentor(None, cache, mode="strict"),
        model=tiny.catalyst_model(tok, init_scale=50.0),
        **common,
    )
    resumed.train(resume_from_checkpoint=True)

    def strip(history):
        drop = {"seconds", "latency_s", "cached", "attempts", "name"}  # replay names itself after the cache
        return json.loads(json.dumps(history), object_hook=lambda d: {k: v for k, v in d.items() if k not in drop})

    assert strip([r.to_dict() for r in resumed.catalyst_history]) == strip(
        [r.to_dict() for r in full.catalyst_history]
    )
    assert torch.equal(get_soft_prompt(resumed.model).weight, get_soft_prompt(full.model).weight)
    chat = (tmp_path / "resumed" / "out" / "catalyst_chat.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in chat] == [1, 2]


def test_arguments_parse_with_hfargumentparser_and_validate():
    parser = HfArgumentParser(CatalystTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            "x",
            "--catalyst_rounds",
            "2",
            "--catalyst_stage_steps",
            "10",
            "--catalyst_selection",
            "first",
            "--catalyst_plateau_patience",
            "3",
            "--max_steps",
            "50",
            "--report_to",
            "none",
        ]
    )
    assert args.catalyst_rounds == 2 and args.catalyst_selection == "first" and args.catalyst_plateau_patience == 3
    assert all(
        f.metadata.get("help")
        for f in CatalystTrainingArguments.__dataclass_fields__.values()
        if f.name.startswith("catalyst_")
    )
    cases = [
        ({"catalyst_selection": "worst"}, "catalyst_selection"),
        ({"catalyst_stage_steps": 0}, "catalyst_stage_steps"),
        ({"catalyst_eval_size": 0}, "catalyst_eval_size"),
        ({"catalyst_eval_size": 2.5}, "catalyst_eval_size"),
        ({"catalyst_plateau_patience": 0}, "catalyst_plateau_patience"),
        ({"catalyst_race_eta": 1}, "catalyst_race_eta"),
        ({"catalyst_race_steps": -1}, "catalyst_race_steps"),
        ({"catalyst_race_margin": -0.1}, "catalyst_race_margin"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ValueError, match=field):
            CatalystTrainingArguments(output_dir="x", report_to=[], **kwargs)


def test_the_round_engine_contract_is_typed():
    """The round reads the catalyst settings through a protocol CatalystArguments satisfies, takes a Mentor only,
    and the selection rule is one Literal that the argument parser turns into choices."""
    import typing

    from peft_catalyst import CatalystArguments, CatalystCallback
    from peft_catalyst.records import SELECTIONS, Selection
    from peft_catalyst.rounds.contract import RoundSettings

    assert isinstance(CatalystArguments(), RoundSettings) and isinstance(tiny.catalyst_args("x"), RoundSettings)
    hints = typing.get_type_hints(CatalystArguments)
    assert hints["catalyst_selection"] is Selection and SELECTIONS == ("best", "race", "first")
    with pytest.raises(TypeError, match="mentor must be a peft_catalyst.mentors.Mentor, not object"):
        CatalystCallback(mentor=object())


def test_the_round_settings_protocol_cannot_drift_from_the_arguments():
    """RoundSettings is a hand-written view of CatalystArguments for the round engine: every setting it names is a
    field of the dataclass with the same type, so a renamed or retyped setting fails here, not in a run."""
    import dataclasses
    import typing

    from peft_catalyst import CatalystArguments
    from peft_catalyst.rounds.contract import RoundSettings

    protocol = typing.get_type_hints(RoundSettings)
    arguments = typing.get_type_hints(CatalystArguments)
    fields = {f.name for f in dataclasses.fields(CatalystArguments)}
    assert protocol and set(protocol) <= fields, sorted(set(protocol) - fields)
    assert {name: protocol[name] for name in protocol if protocol[name] != arguments[name]} == {}


def test_the_arguments_fields_follow_their_docstring_sections():
    """CatalystArguments documents its fields in sections (PEFT/TRL style); the fields are declared in the same
    order, so --help-all, the docstring and the source read alike."""
    import dataclasses
    import re

    from peft_catalyst import CatalystArguments

    documented = re.findall(r"^ {8}(catalyst_\w+) \(", CatalystArguments.__doc__, flags=re.M)
    assert documented == [f.name for f in dataclasses.fields(CatalystArguments)]


def test_metric_direction_follows_the_name_unless_given():
    from peft_catalyst.trainer.catalyst_arguments import higher_is_better

    assert not higher_is_better("loss") and not higher_is_better("label_loss")
    assert higher_is_better("accuracy") and not higher_is_better("accuracy", greater_is_better=False)
    args = CatalystTrainingArguments(output_dir="x", report_to=[], catalyst_metric="label_loss")
    assert args.catalyst_higher_is_better is False


def test_bad_models_and_inputs_get_clear_errors(tok, tmp_path):
    lora = get_peft_model(tiny.tiny_llama(tok), LoraConfig(target_modules=["q_proj"], r=2))
    with pytest.raises(ValueError, match="not a prompt-tuning adapter"):
        CatalystTrainer(model=lora, args=_args(tmp_path), processing_class=tok)
    with pytest.raises(ValueError, match="max_steps"):  # checked when a mentor makes rounds possible
        CatalystTrainer(
            model=tiny.catalyst_model(tok),
            args=_args(tmp_path, max_steps=20, catalyst_rounds=4, catalyst_stage_steps=5),
            mentor=ScriptedMentor(["x"]),
            train_dataset=tiny.toy_reviews(tok, 20, 0),
            processing_class=tok,
        )
    # without a mentor no round can happen, so the same schedule is not refused
    CatalystTrainer(
        model=tiny.catalyst_model(tok),
        args=_args(tmp_path, max_steps=20, catalyst_rounds=4, catalyst_stage_steps=5),
        processing_class=tok,
    )
    with pytest.raises(ValueError, match="no training data"):
        CatalystTrainer(
            model=tiny.catalyst_model(tok),
            args=_args(tmp_path, catalyst_eval_size=100),
            mentor=ScriptedMentor(["x"]),
            train_dataset=tiny.toy_reviews(tok, 20, 0),
            processing_class=tok,
        )


def test_catalyst_split_is_carved_from_train_when_not_given(tok, tmp_path):
    train = tiny.toy_reviews(tok, 40, seed=3)
    trainer = CatalystTrainer(
        model=tiny.catalyst_model(tok),
        args=_args(tmp_path, catalyst_eval_size=0.25),
        mentor=ScriptedMentor(["1. the movie was great"]),
        train_dataset=train,
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
    )
    assert len(trainer.train_dataset) == 30 and len(trainer.catalyst_dataset) == 10
    again = CatalystTrainer(
        model=tiny.catalyst_model(tok),
        args=_args(tmp_path, catalyst_eval_size=0.25),
        mentor=ScriptedMentor(["x"]),
        train_dataset=train,
        processing_class=tok,
    )
    assert again.catalyst_dataset["input_ids"] == trainer.catalyst_dataset["input_ids"]  # seeded


def _count_scorings(trainer) -> list[int]:
    """Record every prompt scored on the catalyst split (one entry per prompt, alone or in a shared pass)."""
    calls: list[int] = []
    scorer = trainer.catalyst.engine.scorer
    score, score_prompts = scorer.score, scorer.score_prompts

    def counted():
        calls.append(1)
        return score()

    def counted_many(prompts):
        calls.extend([1] * len(prompts))
        return score_prompts(prompts)

    scorer.score, scorer.score_prompts = counted, counted_many
    return calls


def _hard_prompts(record) -> set[tuple[int, ...]]:
    """The distinct token-id prompts (trajectory points and candidates) a round scored."""
    ids = [p.token_ids for p in record.trajectory] + [c.token_ids for c in record.candidates]
    return {tuple(i) for i in ids}


def test_repeated_hard_prompts_are_scored_once_while_only_the_prompt_trains(tmp_path):
    """A trajectory point or candidate scored before reuses its score, which a fresh scoring reproduces exactly."""
    mentor = ScriptedMentor(["1. the movie was great\n2. a terrible film"])  # the same reply every round
    trainer, _ = causal_trainer(tmp_path, mentor, catalyst_size=12, max_steps=7)
    assert trainer.catalyst.engine.only_prompt_trains()
    calls = _count_scorings(trainer)
    trainer.train()
    first, second = trainer.catalyst_history
    assert all(c.finite for r in (first, second) for c in r.candidates)
    assert _hard_prompts(first) & _hard_prompts(second)  # the candidates at least repeat
    # one scoring per distinct hard prompt over the whole run, plus the current soft prompt in each round
    assert len(calls) == len(_hard_prompts(first) | _hard_prompts(second)) + 2
    for old, new in zip(first.candidates, second.candidates, strict=True):
        assert new.token_ids == old.token_ids and new.score == old.score and new.loss == old.loss
    reused = second.candidates[0]
    write_token_ids(trainer.model, reused.token_ids)
    fresh = trainer.catalyst.engine.scorer.score()  # computed again (alone, not in a shared pass), not looked up
    assert fresh.value == pytest.approx(reused.score, rel=1e-5) and fresh.loss == pytest.approx(reused.loss, rel=1e-5)
    assert fresh.metrics == pytest.approx(reused.metrics, rel=1e-5)


def test_scores_are_not_reused_across_rounds_when_a_head_trains(tok, tmp_path):
    """With a trained classification head (SEQ_CLS modules_to_save) a repeated candidate is scored again."""
    trainer = _trainer(tok, tmp_path, ScriptedMentor(["1. the movie was great\n2. a terrible film"]))
    assert not trainer.catalyst.engine.only_prompt_trains()
    calls = _count_scorings(trainer)
    trainer.train()
    first, second = trainer.catalyst_history
    assert len(calls) == len(_hard_prompts(first)) + len(_hard_prompts(second)) + 2
    assert [c.token_ids for c in first.candidates] == [c.token_ids for c in second.candidates]
    assert first.candidates[0].loss != second.candidates[0].loss  # the head moved in between


def test_causal_label_word_scoring_over_batches_of_different_widths(tmp_path):
    """Causal-LM labels are as wide as their batch: scoring must pad them while gathering (packaged task, tiny LM)."""
    trainer, spec = causal_trainer(
        tmp_path,
        ScriptedMentor(["1. Is this review positive"]),
        catalyst_size=20,
        max_steps=4,
        catalyst_rounds=1,
        catalyst_stage_steps=2,
        per_device_eval_batch_size=3,
        catalyst_metric="accuracy",  # a metric of compute_metrics: logits are gathered (only then)
    )
    catalyst = spec.datasets["catalyst"]
    widths = {spec.data_collator([catalyst[j] for j in range(i, i + 3)])["labels"].shape[1] for i in (0, 3, 6, 9)}
    assert len(widths) > 1  # the batches of 3 below really differ in width
    trainer.train()
    (record,) = trainer.catalyst_history
    assert (
        0.0 <= record.current.metrics["accuracy"] <= 1.0 and record.current.score == record.current.metrics["accuracy"]
    )
    assert record.candidates[0].finite and "accuracy" in record.candidates[0].metrics


def test_catalyst_arguments_go_beside_any_training_arguments_class():
    """CatalystArguments parses beside SFTConfig or Seq2SeqTrainingArguments, with help on every field."""
    from transformers import Seq2SeqTrainingArguments
    from trl import SFTConfig

    from peft_catalyst import CatalystArguments
    from peft_catalyst.trainer.catalyst_arguments import catalyst_fields

    for f in CatalystArguments.__dataclass_fields__.values():
        help_text = f.metadata.get("help") or ""
        assert help_text and f"{f.name} (`" in CatalystArguments.__doc__, f.name  # help, and a docstring entry
        assert not any(model in help_text for model in ("MiniLM", "SmolLM2")), f"{f.name}: demo figures in help"
        documented = re.search(rf"{f.name} \(`[^`]+`[^)]*defaults to `([^`]+)`\)", CatalystArguments.__doc__)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # list fields: a factory
        assert documented and ast.literal_eval(documented.group(1)) == default, f"{f.name}: documented default"
    for training_class in (SFTConfig, Seq2SeqTrainingArguments):
        parser = HfArgumentParser((training_class, CatalystArguments))
        training, catalyst = parser.parse_args_into_dataclasses(
            ["--output_dir", "x", "--use_cpu", "true", "--catalyst_selection", "race", "--catalyst_race_steps", "3"]
        )
        assert isinstance(training, training_class) and catalyst.catalyst_selection == "race"
        assert catalyst.catalyst_race_steps == 3
    with pytest.raises(ValueError, match="catalyst_race_eta"):
        parser.parse_args_into_dataclasses(["--output_dir", "x", "--catalyst_race_eta", "1"])

    @dataclasses.dataclass
    class CombinedConfig(SFTConfig, CatalystArguments):  # one config class: validated when a trainer attaches it
        pass

    combined = CombinedConfig(output_dir="x", use_cpu=True, catalyst_race_eta=1)
    with pytest.raises(ValueError, match="catalyst_race_eta"):
        catalyst_fields(combined)
