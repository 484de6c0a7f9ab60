"""Keeping the best prompt by validation (``load_best_model_at_end``), the starting prompt included: in
``CatalystTrainer``, TRL's ``SFTTrainer`` and a stock ``Trainer`` with ``CatalystCallback``; bit for bit in the model
and in the saved adapter; across a resume. (Two processes: tests/test_distributed.py.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

from peft_catalyst import CatalystArguments, CatalystCallback, CatalystConfig
from peft_catalyst.history import read_history
from peft_catalyst.mentors import RandomMentor
from peft_catalyst.model_card import SECTION_TEMPLATE, _kept_md
from peft_catalyst.projection import get_soft_prompt, read_soft_prompt
from tests import tiny

SECTION = Path(__file__).resolve().parents[1] / "model_cards" / SECTION_TEMPLATE
#: Evaluate and save every 3 of the 9 steps, keep the best by validation loss, and start from a step-0 evaluation.
KEEP_BEST = dict(
    eval_strategy="steps",
    eval_steps=3,
    save_strategy="steps",
    save_steps=3,
    load_best_model_at_end=True,
    metric_for_best_model="eval_loss",
)


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _trainer(tok, out, mentor=None, **kwargs):
    """The tiny CatalystTrainer (tests/tiny.py) with a validation split of 16 toy reviews."""
    return tiny.catalyst_trainer(
        tok, out, mentor, eval_dataset=tiny.toy_reviews(tok, 16, seed=3), **KEEP_BEST, **kwargs
    )


def _evals(trainer) -> dict[int, float]:
    return {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_saved_equals_model(folder, model) -> None:
    """The adapter file in ``folder`` holds exactly the model's prompt (and classification head, where trained)."""
    saved = load_file(folder / "adapter_model.safetensors")
    assert torch.equal(saved["prompt_embeddings"], read_soft_prompt(model))
    head = {n.split("modules_to_save.default.")[-1]: p for n, p in _trainable(model).items() if "modules_to_save" in n}
    for name, value in head.items():
        assert torch.equal(saved[f"base_model.classifier.{name}"], value), name


def test_the_starting_prompt_is_kept_when_every_later_prompt_is_worse(tok, tmp_path):
    # A learning rate of 5 wrecks the prompt at once: every later validation loss is worse than the start's.
    trainer = _trainer(tok, tmp_path / "out", learning_rate=5.0)
    start = _trainable(trainer.model)
    trainer.train()
    evals = _evals(trainer)
    assert sorted(evals) == [0, 3, 6, 9] and all(evals[s] > evals[0] for s in (3, 6, 9)), evals
    assert trainer.catalyst.kept.step == 0 and trainer.catalyst.kept.final_step == 9
    assert trainer.catalyst.kept.score == evals[0] and trainer.catalyst.kept.final_score == evals[9]
    assert trainer.catalyst.kept.line() == f"kept: step 0 (validation loss {evals[0]:.3f}; final step {evals[9]:.3f})"
    kept = _trainable(trainer.model)
    assert kept.keys() == start.keys() and all(torch.equal(kept[n], start[n]) for n in start)  # bit for bit
    trainer.save_model(str(tmp_path / "out"))
    _assert_saved_equals_model(tmp_path / "out", trainer.model)
    assert torch.equal(
        load_file(tmp_path / "out" / "adapter_model.safetensors")["prompt_embeddings"],
        start["prompt_encoder.default.embedding.weight"],
    )
    history = read_history(tmp_path / "out")
    assert history.summary.kept_prompt == trainer.catalyst.kept
    # the card's row (the template is read from the installed package, which may be another checkout's)
    assert _kept_md(history).startswith("kept: step 0 (validation") and "kept_md" in SECTION.read_text()


def test_a_mid_run_best_is_restored_bit_for_bit_after_rounds(tok, tmp_path):
    # Ranking by the *highest* validation loss (with lr 5) makes step 3 the best, neither the start nor the end; a
    # real mentor runs rounds at steps 3 and 6, and the catalyst state of later checkpoints must not leak back.
    mentor = RandomMentor(["the movie was great", "a boring plot", "classify the review"], seed=0)
    trainer = _trainer(tok, tmp_path / "out", mentor, learning_rate=5.0, greater_is_better=True)
    trainer.train()
    evals = _evals(trainer)
    best = max(evals, key=evals.get)
    assert best not in (0, 9), evals
    assert trainer.catalyst.kept.step == best and len(trainer.catalyst_history) == 2
    checkpoint = tmp_path / "out" / f"checkpoint-{best}"
    _assert_saved_equals_model(checkpoint, trainer.model)
    trainer.save_model(str(tmp_path / "out"))
    _assert_saved_equals_model(tmp_path / "out", trainer.model)
    assert len(read_history(tmp_path / "out").rounds) == 2  # the whole run's rounds, not the best checkpoint's


def test_the_callback_keeps_the_best_in_a_stock_trainer(tok, tmp_path):
    model = tiny.catalyst_model(tok)
    start = read_soft_prompt(model)
    args = TrainingArguments(
        str(tmp_path / "out"),
        **tiny.TRAINING | {"learning_rate": 5.0, "save_strategy": "steps"},
        **{k: v for k, v in KEEP_BEST.items() if k != "save_strategy"},
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tiny.toy_reviews(tok, 48, 1),
        eval_dataset=tiny.toy_reviews(tok, 16, seed=3),
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
    )
    catalyst = CatalystCallback(None, CatalystArguments(catalyst_rounds=0)).attach(trainer)
    trainer.train()
    assert catalyst.kept.step == 0 and torch.equal(read_soft_prompt(trainer.model), start)
    trainer.save_model(str(tmp_path / "out"))
    _assert_saved_equals_model(tmp_path / "out", trainer.model)


def test_the_callback_keeps_the_best_in_sft_trainer(tok, tmp_path):
    trl = pytest.importorskip("trl")
    reviews = tiny.toy_reviews(tok, 40, 4)
    rows = [f"review: {tok.decode(ids)} sentiment: {'positive' if y else 'negative'}"
            for ids, y in zip(reviews["input_ids"], reviews["label"])]  # fmt: skip
    model = get_peft_model(
        tiny.tiny_llama(tok), CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, task_description="Reviews")
    )
    start = read_soft_prompt(model)
    config = trl.SFTConfig(
        output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4, learning_rate=20.0,
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0, **KEEP_BEST,
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_dict({"text": rows[:32]}),
        eval_dataset=Dataset.from_dict({"text": rows[32:]}),
        processing_class=tok,
    )
    catalyst = CatalystCallback(None, CatalystArguments(catalyst_rounds=0)).attach(trainer)
    trainer.train()
    evals = _evals(trainer)
    assert sorted(evals) == [0, 3, 6]
    kept = min(evals, key=lambda s: (evals[s], s))
    assert catalyst.kept.step == kept
    checkpoint = tmp_path / "out" / f"checkpoint-{kept}" / "adapter_model.safetensors"
    assert torch.equal(read_soft_prompt(trainer.model), load_file(checkpoint)["prompt_embeddings"])
    assert kept != 0 or torch.equal(read_soft_prompt(trainer.model), start)
    trainer.save_model(str(tmp_path / "out"))
    saved = load_file(tmp_path / "out" / "adapter_model.safetensors")["prompt_embeddings"]
    assert torch.equal(saved, get_soft_prompt(trainer.model).weight.detach())


class _StopAt(TrainerCallback):
    """Ends training after ``step``, as a kill right after that step's checkpoint would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


@pytest.mark.parametrize("greater_is_better", [False, True], ids=["start-best", "mid-run-best"])
def test_a_resumed_run_keeps_the_best_so_far_of_the_uninterrupted_run(tok, tmp_path, greater_is_better):
    settings = dict(learning_rate=5.0, greater_is_better=greater_is_better)
    full = _trainer(tok, tmp_path / "full", **settings)
    full.train()
    interrupted = _trainer(tok, tmp_path / "resumed", **settings)
    interrupted.add_callback(_StopAt(6))
    interrupted.train()
    evals = {s: v for s, v in _evals(full).items() if s <= 6}
    best_so_far = (max if greater_is_better else min)(evals, key=evals.get)
    state = json.loads((tmp_path / "resumed" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_so_far}")  # what the checkpoint carries
    resumed = _trainer(tok, tmp_path / "resumed", **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-6"))
    assert resumed.catalyst.kept == full.catalyst.kept
    assert all(torch.equal(a, b) for a, b in zip(_trainable(resumed.model).values(), _trainable(full.model).values()))
    assert not greater_is_better or full.catalyst.kept.step not in (0, 9)
    assert greater_is_better or full.catalyst.kept.step == 0


def test_the_command_line_saves_the_kept_prompt_and_says_which(tmp_path, capsys):
    """``peft-catalyst train`` keeps by validation (its embedded defaults): a run whose training only makes things
    worse saves its starting prompt and head, bit for bit, so its saved adapter scores exactly the initial accuracy."""
    from peft_catalyst.app.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "minilm", "--mentor", "none", "--catalyst_rounds", "0", "--max_steps", "4",
                 "--eval_steps", "2", "--learning_rate", "50", "--metric_for_best_model", "loss",
                 "--train_size", "32", "--catalyst_size", "8", "--validation_size", "32", "--test_size", "24",
                 "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--plot", "false",
                 "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    kept, accuracy = metrics["kept"], metrics["test_accuracy"]
    assert kept["step"] == 0 and kept["final_step"] == 4 and kept["metric"] == "eval_loss"
    assert kept["score"] < kept["final_score"]
    assert accuracy["final"] == accuracy["initial"] and accuracy["final_step"] is not None
    saved = load_file(out / "adapter_model.safetensors")
    start = load_file(out / "checkpoint-0" / "adapter_model.safetensors")
    assert saved.keys() == start.keys() and all(torch.equal(saved[k], start[k]) for k in saved)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-5].startswith("test accuracy (24 examples): initial") and " -> kept " in lines[-5]
    expected = f"kept: step 0 (validation loss {kept['score']:.3f}; final step {kept['final_score']:.3f})"
    assert lines[-4].startswith(expected)
    card = (out / "README.md").read_text()
    assert "| kept\\_step | 0 |" in card and "validation\\_eval\\_loss\\_kept" in card


def test_the_callback_keeps_the_best_in_seq2seq_trainer(tok, tmp_path):
    """A seq2seq prompt holds both submodules' virtual tokens (8 rows for 4 tokens): all are restored bit for bit."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    reviews = tiny.toy_reviews(tok, 40, 5)
    labels = tok(["positive" if y else "negative" for y in reviews["label"]])["input_ids"]
    data = Dataset.from_dict({"input_ids": reviews["input_ids"], "labels": labels})
    config = CatalystConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4, task_description="Reviews")
    model = get_peft_model(tiny.tiny_t5(tok), config)
    start = read_soft_prompt(model)
    assert start.shape[0] == 8
    args = Seq2SeqTrainingArguments(
        str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4, learning_rate=20.0, report_to="none",
        use_cpu=True, disable_tqdm=True, seed=0, **KEEP_BEST,
    )  # fmt: skip
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=data.select(range(32)),
        eval_dataset=data.select(range(32, 40)),
        data_collator=DataCollatorForSeq2Seq(tok),
        processing_class=tok,
    )
    catalyst = CatalystCallback(None, CatalystArguments(catalyst_rounds=0)).attach(trainer)
    trainer.train()
    evals = _evals(trainer)
    assert sorted(evals) == [0, 3, 6] and catalyst.kept.step == min(evals, key=lambda s: (evals[s], s))
    checkpoint = tmp_path / "out" / f"checkpoint-{catalyst.kept.step}" / "adapter_model.safetensors"
    assert torch.equal(read_soft_prompt(trainer.model), load_file(checkpoint)["prompt_embeddings"])
    assert catalyst.kept.step != 0 or torch.equal(read_soft_prompt(trainer.model), start)


def test_benchmark_plans_with_keep_best_apply_the_rule_to_every_method(tok, tmp_path):
    """``DoerPlan(keep_best=True)``: plain prompt tuning and random restarts alike keep their best by validation; the
    record names the kept step, and the final step's accuracy beside the kept prompt's."""
    from benchmarks import compare

    model_dir = tmp_path / "tiny_bert"
    tiny.tiny_bert_seq_cls(tok, num_labels=2).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    doer = compare.DoerPlan(
        "tiny", seeds=1, max_steps=4, batch_size=4, rounds=1, stage_steps=2, train_size=32, catalyst_size=8,
        test_size=16, validation_size=16, num_virtual_tokens=4, num_candidates=2, trajectory_points=2,
        eval_batch_size=16, max_length=64, model_path=str(model_dir), keep_best=True,
    )  # fmt: skip
    plan = compare.Plan(
        name="keep_best", tasks=("rotten_tomatoes",), doers=(doer,), methods=("single-random", "random-restarts")
    )
    records = [
        compare.run_cell(plan, cell, tmp_path / "runs", tmp_path / "cache.sqlite", matched_steps=None)
        for cell in plan.cells()
    ]
    assert [r["method"] for r in records] == ["single-random", "random-restarts"]
    for record in records:
        kept = record["kept"]
        assert kept["metric"] == "eval_accuracy" and kept["final_step"] == 4 and kept["step"] in (0, 2, 4)
        assert 0.0 <= record["final_step_test_accuracy"] <= 1.0
        assert record["settings"]["doer_plan"]["keep_best"] is True
    assert "keep_best" not in compare.cell_settings(
        dataclasses.replace(plan, doers=(dataclasses.replace(doer, keep_best=None),)), plan.cells()[0]
    )["doer_plan"]  # plans without it keep their stored settings, so their finished runs stay valid


def test_a_run_resumed_from_its_start_checkpoint_does_not_redo_the_start(tok, tmp_path):
    """Killed before any later checkpoint, a run resumes from ``checkpoint-0`` (the last one): its initial round is in
    that checkpoint (not asked again) and the start is not saved again; it ends as the uninterrupted run."""
    settings = dict(learning_rate=5.0, catalyst_initial_round=True, catalyst_rounds=1, catalyst_stage_steps=3)

    def mentor():
        return RandomMentor(["the movie was great", "a boring plot", "classify the review"], seed=0)

    full = _trainer(tok, tmp_path / "full", mentor(), **settings)
    full.train()
    interrupted = _trainer(tok, tmp_path / "resumed", mentor(), **settings)
    interrupted.add_callback(_StopAt(1))
    interrupted.train()
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-0"]
    start_state = (tmp_path / "resumed" / "checkpoint-0" / "trainer_state.json").read_bytes()
    resumed = _trainer(tok, tmp_path / "resumed", mentor(), **settings)
    resumed.train(resume_from_checkpoint=True)
    assert (tmp_path / "resumed" / "checkpoint-0" / "trainer_state.json").read_bytes() == start_state
    assert [r.round for r in resumed.catalyst_history] == [r.round for r in full.catalyst_history] == [0, 1]
    assert resumed.catalyst.kept == full.catalyst.kept
    assert all(torch.equal(a, b) for a, b in zip(_trainable(resumed.model).values(), _trainable(full.model).values()))
