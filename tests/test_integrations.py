"""Rounds in TRL's SFTTrainer, Seq2SeqTrainer and a stock Trainer: the docs' snippets (docs/trainer.md), run as they
are written.

Each snippet gets a tiny model built from a config with a CATALYST adapter (its RANDOM prompt blown up 50x, so that
a real text start wins), a real OpenAI client talking to the loopback server, and a small dataset.
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from peft import get_peft_model

from peft_catalyst import CatalystConfig, Decision
from peft_catalyst.mentors import OpenAIMentor
from peft_catalyst.projection import get_soft_prompt
from peft_catalyst.rounds.proposers import parse_proposers
from tests import tiny
from tests.docs_support import ROOT, rel, snippet
from tests.loopback_openai import LoopbackOpenAIServer

REPLY = "1. the movie was great\n2. a terrible film"


def readme_snippet(name: str) -> tuple[str, str]:
    """The Python block that follows ``<!-- snippet: name -->`` in README.md or a docs/ page, and a name for it."""
    page, block = snippet(name)
    return block, f"{rel(page)}:{name}"


def _catalyst(model, task_type: str):
    pm = get_peft_model(
        model, CatalystConfig(task_type=task_type, num_virtual_tokens=4, task_description="Classify review sentiment")
    )
    with torch.no_grad():
        get_soft_prompt(pm).weight.mul_(50.0)
    return pm


def _texts(n: int, seed: int) -> list[tuple[str, str]]:
    reviews = tiny.toy_reviews(tiny.bpe_tokenizer(), n, seed)
    tok = tiny.bpe_tokenizer()
    return [
        (tok.decode(ids), "positive" if label else "negative")
        for ids, label in zip(reviews["input_ids"], reviews["label"])
    ]


def _run(name: str, namespace: dict, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda request: REPLY)
        namespace["mentor"] = OpenAIMentor(
            "gpt-test", base_url=server.base_url, api_key="sk-loopback", timeout=5, max_retries=0
        )
        exec(compile(*readme_snippet(name), "exec"), namespace)
        namespace["requests"] = server.request_count
    return namespace


def test_sft_trainer_runs_rounds_on_its_own_preprocessed_data(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    tok = tiny.bpe_tokenizer()
    rows = [f"review: {text} sentiment: {label}" for text, label in _texts(40, seed=4)]
    raw = Dataset.from_dict({"text": rows})
    ns = _run(
        "sft",
        {"peft_model": _catalyst(tiny.tiny_llama(tok), "CAUSAL_LM"), "tokenizer": tok, "train_dataset": raw},
        tmp_path,
        monkeypatch,
    )
    trainer = ns["trainer"]
    assert [base.__name__ for base in type(trainer).__bases__] == ["CatalystMixin", "SFTTrainer"]
    history = trainer.catalyst_history
    assert len(history) == 2 and ns["requests"] == 2
    assert any(r.decision is Decision.ACCEPTED for r in history), [r.decision for r in history]
    assert all(r.race is not None and r.race_steps > 0 for r in history if r.candidates)
    # the catalyst split went through SFTTrainer's own preparation: its rows are prepared rows of the training data
    catalyst, train = trainer.catalyst_dataset, trainer.train_dataset
    assert set(catalyst.column_names) == set(train.column_names) and "input_ids" in catalyst.column_names
    prepared = trainer._prepare_dataset(raw, tok, trainer.args, False, None, "check")
    every = {tuple(r) for r in prepared["input_ids"]}
    assert all(tuple(r) in every for r in catalyst["input_ids"])
    assert not {tuple(r) for r in catalyst["input_ids"]} & {tuple(r) for r in train["input_ids"]}
    assert len(catalyst) + len(train) == len(raw)
    summary = trainer.catalyst_summary()
    assert summary.total_steps == 9 + summary.race_steps and summary.race_steps == sum(r.race_steps for r in history)

    # an explicit raw catalyst split is prepared as SFTTrainer prepares its eval data
    explicit = ns["CatalystSFTTrainer"](
        model=_catalyst(tiny.tiny_llama(tok), "CAUSAL_LM"),
        args=trainer.args,
        train_dataset=raw,
        processing_class=tok,
        mentor=ns["mentor"],
        catalyst_dataset=raw.select(range(6)),
        catalyst_args=trainer.catalyst.settings,
    )
    assert explicit.catalyst_dataset["input_ids"] == prepared.select(range(6))["input_ids"]

    # TRL's running metrics (averaged at each log) hold the main loop's steps only: a round's scoring passes (eval
    # mode) and race steps (train mode) leave them as they were, and its token count is the main loop's.
    import dataclasses

    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda request: REPLY)
        explicit = ns["CatalystSFTTrainer"](
            model=_catalyst(tiny.tiny_llama(tok), "CAUSAL_LM"),
            args=dataclasses.replace(trainer.args, logging_steps=1, output_dir=str(tmp_path / "metrics")),
            train_dataset=raw,
            processing_class=tok,
            mentor=OpenAIMentor("gpt-test", base_url=server.base_url, api_key="sk-loopback", timeout=5, max_retries=0),
            catalyst_args=trainer.catalyst.settings,
        )
        seen: list[tuple[int, int, int]] = []
        tokens: list[int] = []
        real_log, real_step = explicit.log, explicit.training_step

        def log(logs, *args, **kwargs):
            if "loss" in logs:
                metrics = explicit._metrics
                seen.append((explicit.state.global_step, len(metrics["train"]["entropy"]), len(metrics["eval"])))
            return real_log(logs, *args, **kwargs)

        def training_step(model, inputs, *args, **kwargs):
            if not explicit.catalyst.racing:
                tokens.append(int(inputs["attention_mask"].sum()))
            return real_step(model, inputs, *args, **kwargs)

        explicit.log, explicit.training_step = log, training_step
        explicit.train()
    history = explicit.catalyst_history
    assert any(r.race_steps > 0 for r in history)  # there were race steps to leak
    assert seen == [(step, 1, 0) for step in range(1, 10)]
    assert explicit._total_train_tokens == sum(tokens)


def test_seq2seq_trainer_runs_rounds_on_a_tiny_t5(tmp_path, monkeypatch):
    tok = tiny.bpe_tokenizer()
    pairs = _texts(40, seed=5)
    enc = tok([t for t, _ in pairs])
    labels = tok([label for _, label in pairs])["input_ids"]
    train = Dataset.from_dict(
        {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
    )
    ns = _run(
        "seq2seq",
        {"peft_model": _catalyst(tiny.tiny_t5(tok), "SEQ_2_SEQ_LM"), "tokenizer": tok, "train_dataset": train},
        tmp_path,
        monkeypatch,
    )
    trainer = ns["trainer"]
    history = trainer.catalyst_history
    assert len(history) == 2 and ns["requests"] == 2
    assert any(r.decision is Decision.ACCEPTED for r in history), [r.decision for r in history]
    assert (tmp_path / "s2s-out" / "catalyst_history.json").exists()


def test_stock_trainer_with_the_callback_alone(tmp_path, monkeypatch, capsys):
    tok = tiny.bpe_tokenizer()
    ns = _run(
        "callback",
        {
            "peft_model": tiny.catalyst_model(tok, init_scale=50.0),
            "tokenizer": tok,
            "train_dataset": tiny.toy_reviews(tok, 48, 1),
        },
        tmp_path,
        monkeypatch,
    )
    catalyst = ns["catalyst"]
    assert [r.round for r in catalyst.history] == [1, 2] and ns["requests"] == 2
    assert all(c.finite for r in catalyst.history for c in r.candidates) and catalyst.history[0].current.finite
    assert capsys.readouterr().out.strip().endswith(f"{catalyst.history[-1].decision} 9")
    assert catalyst.history[0].trajectory and all(p.train_loss != p.train_loss for p in catalyst.history[0].trajectory)
    assert len(ns["trainer"].train_dataset) == 48 - round(0.1 * 48)  # the catalyst split was carved


def test_the_screened_start_in_python_is_the_config_files():
    """docs/trainer.md's screened-start block sets what examples/configs/screened_start.yaml (the command's SmolLM2
    default until benchmark v4) sets, value for value."""
    import yaml

    namespace: dict = {}
    exec(compile(*readme_snippet("screened_start"), "exec"), namespace)
    path = ROOT / "examples" / "configs" / "screened_start.yaml"
    args, command = namespace["args"], yaml.safe_load(path.read_text(encoding="utf-8"))
    names = ["catalyst_initial_round", "catalyst_screen_schedule", "catalyst_restart_loss_ratio"]
    assert {n: getattr(args, n) for n in names} == {n: command[n] for n in names}
    assert args.catalyst_metric == "label_loss"  # the command's default for every model (embedded_defaults)
    assert args.catalyst_proposer_counts == parse_proposers(command["catalyst_proposers"], 8)
