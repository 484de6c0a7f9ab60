"""Helpers shared by several test modules: a scripted mentor, tiny runs, resume tools and typed history records.

A test module imports helpers from here (or from ``tests/tiny.py``, ``tests/loopback_openai.py``,
``tests/hub_support.py``, ``tests/docs_support.py``), never from another test module: ``tests/test_layout.py``
checks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

from peft_catalyst import CatalystConfig, CatalystTrainer
from peft_catalyst.mentors import ChatMentor, Completion
from peft_catalyst.projection import get_soft_prompt
from peft_catalyst.records import (
    ArmKind,
    Decision,
    History,
    MentorCall,
    Race,
    RaceArm,
    RaceRung,
    RoundRecord,
    RunSummary,
    ScoredPrompt,
    Trigger,
)
from tests import tiny

# ---------------------------------------------------------------------------------------------------------------
# A mentor with scripted replies, and tiny runs
# ---------------------------------------------------------------------------------------------------------------


class ScriptedMentor(ChatMentor):
    """A real Mentor (full parsing and accounting) whose backend returns fixed reply texts, one per call."""

    def __init__(self, replies, **kwargs):
        super().__init__(strict_retry=False, **kwargs)
        self.replies = list(replies)
        self.name = "scripted:test"
        self.calls = 0

    def complete(self, messages, request):
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        if isinstance(reply, Exception):
            raise reply
        return Completion(texts=[reply], model="scripted", prompt_tokens=10, completion_tokens=5)

    def cache_identity(self):
        return {"backend": "scripted", "model": "scripted"}


def trainable(model) -> dict[str, torch.Tensor]:
    """Copies of ``model``'s trainable parameters, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def plain_run(tok, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The tiny run (tests/tiny.py) with stock ``transformers.Trainer`` and no rounds: its trained parameters."""
    model = tiny.catalyst_model(tok)
    args = TrainingArguments(output_dir=str(tmp_path / "plain"), **tiny.TRAINING)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tiny.toy_reviews(tok, 48, seed=1),
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
    )
    trainer.train()
    return trainable(model)


def causal_trainer(tmp_path: Path, mentor, catalyst_size: int, **kwargs):
    """A tiny Llama label-word classifier with a CATALYST prompt on a small packaged task: ``(trainer, spec)``.

    Writes under ``tmp_path / "out"``; ``kwargs`` override the tiny run's arguments.
    """
    from peft_catalyst.app.data import load_task
    from peft_catalyst.app.tasks import prepare_task

    tok = tiny.bpe_tokenizer()
    task = load_task("rotten_tomatoes", train_size=24, catalyst_size=catalyst_size, validation_size=8, test_size=8)
    spec = prepare_task(task, tok, "causal_lm", max_length=256)
    pm = get_peft_model(
        tiny.tiny_llama(tok),
        CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, task_description=task.task_description),
    )
    trainer = CatalystTrainer(
        model=pm,
        args=tiny.catalyst_args(tmp_path / "out", **kwargs),
        mentor=mentor,
        catalyst_dataset=spec.datasets["catalyst"],
        **spec.trainer_kwargs(),
    )
    return trainer, spec


#: Two candidates the tiny tokenizer spells, the scripted reply of the shared-pass tests.
TWO_CANDIDATES = "1. who wrote the book\n2. a terrible film"


def causal_race(tmp_path: Path, **kwargs) -> CatalystTrainer:
    """A trained 2-round race (2 race steps, 1 control) of :func:`causal_trainer` with :data:`TWO_CANDIDATES`."""
    kwargs = {
        "catalyst_rounds": 2,
        "catalyst_selection": "race",
        "catalyst_race_steps": 2,
        "catalyst_race_controls": 1,
        "catalyst_rewarmup_steps": 3,
        "max_steps": 8,
        **kwargs,
    }
    trainer, _ = causal_trainer(tmp_path, ScriptedMentor([TWO_CANDIDATES]), catalyst_size=12, **kwargs)
    trainer.train()
    return trainer


def race_model(tok):
    """The tiny BERT classifier with its RANDOM prompt scaled by 0.001: the better start at step zero against text
    candidates, which a race's training budget can overturn (tests/test_race.py)."""
    model = tiny.catalyst_model(tok)
    with torch.no_grad():
        get_soft_prompt(model).weight.mul_(0.001)
    return model


def race_run(tok, out, texts: list[str], **kwargs) -> CatalystTrainer:
    """One round of the tiny run from :func:`race_model`, the mentor proposing ``texts``; trained."""
    mentor = ScriptedMentor(["\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))])
    kwargs = {"catalyst_rounds": 1, "catalyst_num_candidates": len(texts), **kwargs}
    trainer = tiny.catalyst_trainer(tok, out, mentor, model=race_model(tok), **kwargs)
    trainer.train()
    return trainer


# ---------------------------------------------------------------------------------------------------------------
# Interrupting and comparing runs
# ---------------------------------------------------------------------------------------------------------------


class StopAt(TrainerCallback):
    """Stops training after optimizer step ``step`` (an interrupted run, to resume from its checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == self.step
        return control


def comparable(records) -> list[dict]:
    """Round records as dicts without what differs between equal runs (timings, cache hits, the mentor's name)."""
    drop = {"seconds", "latency_s", "cached", "attempts", "name"}
    data = json.loads(json.dumps([r.to_dict() for r in records]))
    return json.loads(json.dumps(data), object_hook=lambda d: {k: v for k, v in d.items() if k not in drop})


#: New tokens of the generation tests.
GENERATION_STEPS = 10


def greedy_by_forward(pm, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Reference decoding: a full forward pass through the prompt-tuned model at every step, no cache."""
    for _ in range(steps):
        with torch.no_grad():
            logits = pm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, -steps:]


# ---------------------------------------------------------------------------------------------------------------
# Typed history records
# ---------------------------------------------------------------------------------------------------------------


def scored_prompt(text: str, score: float | None, loss: float | None = None, **kw: Any) -> ScoredPrompt:
    """A scored prompt with token ids ``[1, 2]`` and an accuracy of 0.5."""
    return ScoredPrompt(text=text, token_ids=[1, 2], score=score, loss=loss, metrics={"accuracy": 0.5}, **kw)


def raced_history() -> History:
    """Two rounds: a plain 'best' round that kept the prompt, and a race won by the second candidate."""
    _sp = scored_prompt
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
