"""Successive-halving screening (``catalyst_screen_schedule="halving"``): its rule, its cost counted by hand, a task
whose best candidate is known, and whole-split screening ("full") left as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from peft_catalyst.mentors import ChatMentor, Completion
from peft_catalyst.records import RoundRecord, ScoredPrompt, Screening
from peft_catalyst.rounds.scoring import example_order
from peft_catalyst.rounds.screening import halving_rungs, successive_halving
from tests import tiny

GOLDEN = Path(__file__).parent / "data" / "screening_full_records.json"
EIGHT = [
    "the movie was great",
    "a boring plot",
    "wonderful acting",
    "this is spam",
    "an excellent story",
    "bad acting",
    "a good ending",
    "a terrible film",
]
TARGET = 5  # the candidate built to win: "bad acting"


class FixedMentor(ChatMentor):
    """A real chat mentor (parsing, accounting) whose backend always answers with the same numbered list."""

    name = "fixed:test"

    def __init__(self, texts: list[str]) -> None:
        super().__init__(strict_retry=False)
        self.reply = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))

    def complete(self, messages, request) -> Completion:
        return Completion(texts=[self.reply], model="fixed", prompt_tokens=1, completion_tokens=1)

    def cache_identity(self) -> dict:
        return {"backend": "fixed", "model": "fixed"}


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


# ---------------------------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------------------------


def test_halving_rungs_follow_the_documented_rule():
    # h = ceil(log2(16/1)) = 4 halvings; first rung max(8, ceil(100/16) = 7) = 8; doubling to the whole split
    assert halving_rungs(16, 1, 100, 8) == [(16, 8), (8, 16), (4, 32), (2, 64), (1, 100)]
    # h = 2; first rung max(16, ceil(100/4)) = 25: the rung where 4 remain is the whole split
    assert halving_rungs(16, 4, 100, 16) == [(16, 25), (8, 50), (4, 100)]
    # the minimum uses the split up before one remains: 4 are left on the whole split and the best of them goes on
    assert halving_rungs(16, 1, 40, 16) == [(16, 16), (8, 32), (4, 40)]
    # no more candidates than go on: one rung, the whole split (what "full" does)
    assert halving_rungs(3, 4, 100, 16) == [(3, 100)]
    assert halving_rungs(64, 4, 200, 16) == [(64, 16), (32, 32), (16, 64), (8, 128), (4, 200)]
    with pytest.raises(ValueError, match="positive"):
        halving_rungs(4, 0, 100, 16)


def test_successive_halving_ranks_by_the_last_rung_only_with_ties_and_nan_as_ranked():
    """Per-example losses built so that candidate 2 is best on the whole split but worst on the first examples:
    halving drops it (a known cost of the schedule); candidate 1 is best on every prefix and wins. A NaN candidate
    goes last; two equal candidates keep their order."""
    size = 8
    order = example_order(size, seed=0)
    losses = {
        0: [0.5] * size,
        1: [0.1] * size,
        3: [0.3] * size,
        4: [0.3] * size,  # ties with 3
        5: [math.nan] * size,
    }
    losses[2] = [0.9 if j in order[:2] else 0.0 for j in range(size)]  # whole split 0.225 < 0.3, first two 0.9
    scored: list[tuple[list[int], int]] = []

    def score(indices: list[int], examples: int) -> list[ScoredPrompt]:
        scored.append((list(indices), examples))
        values = [sum(losses[i][j] for j in order[:examples]) / examples for i in indices]
        return [ScoredPrompt(str(i), v if math.isfinite(v) else math.inf) for i, v in zip(indices, values)]

    kept, last, rungs = successive_halving(6, 2, size, 2, score, higher_is_better=False)
    assert rungs == [(6, 2), (3, 4), (2, 8)]
    assert scored[0] == ([0, 1, 2, 3, 4, 5], 2)
    assert scored[1] == ([1, 3, 4], 4)  # best first after rung 0: 1 (0.1), then the tie 3, 4 in order; 2 is out
    assert scored[2] == ([1, 3], 8)
    assert kept == [1, 3]
    assert [p.examples for p in last] == [2, 8, 2, 8, 4, 2]
    assert last[2].score == pytest.approx(0.9)  # its recorded score is the one it was dropped on


# ---------------------------------------------------------------------------------------------------------------
# A round on a task whose best candidate is known
# ---------------------------------------------------------------------------------------------------------------


def _target_metric(trainer, tok):
    """``compute_metrics`` whose ``target_loss`` is the distance of the model's soft prompt to the prompt of
    ``EIGHT[TARGET]`` plus a small per-example term (the predictions' mean squared logit / 1000): lowest, clearly,
    for that candidate, and different on every subset of examples."""
    from peft_catalyst.projection import get_soft_prompt, text_to_token_ids

    soft = get_soft_prompt(trainer.model)
    words = trainer.model.get_input_embeddings().weight
    target = words[text_to_token_ids(tok, EIGHT[TARGET], soft.num_virtual_tokens)].detach().clone()

    def metrics(prediction) -> dict[str, float]:
        noise = float((torch.as_tensor(prediction.predictions) ** 2).mean()) / 1000
        distance = float((soft.weight.detach() - target).norm())
        return {**tiny.accuracy(prediction), "target_loss": distance + noise}

    return metrics


def _halving_trainer(tok, out, **kwargs):
    trainer = tiny.catalyst_trainer(
        tok,
        out,
        FixedMentor(EIGHT),
        catalyst_rounds=1,
        catalyst_num_samples=8,
        catalyst_metric="target_loss",
        catalyst_screen_schedule="halving",
        catalyst_screen_min_examples=2,
        **kwargs,
    )
    trainer.compute_metrics = _target_metric(trainer, tok)
    return trainer


def test_halving_picks_the_known_best_and_spends_what_the_rule_says(tok, tmp_path):
    trainer = _halving_trainer(tok, tmp_path / "out")
    trainer.train()
    (record,) = trainer.catalyst_history
    screening = record.screening
    # 16 catalyst examples, 8 candidates, 1 goes on ("best"): h = 3, first rung max(2, 16/8) = 2 examples
    assert [(r.candidates, r.examples) for r in screening.rungs] == [(8, 2), (4, 4), (2, 8), (1, 16)]
    assert screening.example_scorings == 8 * 2 + 4 * 4 + 2 * 8 + 1 * 16 == 64  # full screening: 8 * 16 = 128
    assert screening.kept == [TARGET] and record.winner == TARGET and record.decision.value == "accepted"
    assert screening.schedule == "halving" and screening.prompts == 8 + 4 + 2 + 1
    examples = screening.examples
    assert examples[TARGET] == 16 and sorted(examples) == [2, 2, 2, 2, 4, 4, 8, 16]
    assert [c.examples for c in record.candidates] == examples  # each score says how many examples it is on
    # the survivor's score is its whole-split score (what "best" compares with the current prompt)
    assert record.candidates[TARGET].score == screening.scores[TARGET]
    # the history keeps it all and reads it back
    data = record.to_dict()
    assert data["screening"]["example_scorings"] == 64 and data["candidates"][0]["examples"] in (2, 4, 8)
    back = RoundRecord.from_dict(json.loads(json.dumps(data)))
    assert back.screening.rungs == screening.rungs and back.candidates[TARGET].examples == 16


def test_halving_to_a_race_keeps_num_candidates_and_controls_alike(tok, tmp_path):
    trainer = _halving_trainer(
        tok,
        tmp_path / "out",
        catalyst_selection="race",
        catalyst_race_steps=1,
        catalyst_race_controls=1,
        catalyst_num_candidates=2,
    )
    trainer.train()
    (record,) = trainer.catalyst_history
    screening = record.screening
    # candidates 8 -> 2 (h = 2, first rung 4 examples); controls 8 -> 1 (h = 3, first rung 2 examples)
    assert [(r.examples, r.candidates, r.controls) for r in screening.rungs] == [
        (2, 0, 8),
        (4, 8, 4),
        (8, 4, 2),
        (16, 2, 1),
    ]
    assert screening.example_scorings == (8 * 4 + 4 * 8 + 2 * 16) + (8 * 2 + 4 * 4 + 2 * 8 + 1 * 16)
    assert screening.kept[0] == TARGET and len(screening.kept) == 2 and len(screening.kept_controls) == 1
    assert all(screening.controls[i].examples == 16 for i in screening.kept_controls)
    assert sorted(c.examples for c in screening.controls) == [2, 2, 2, 2, 4, 4, 8, 16]


def test_a_subset_score_is_the_mean_over_that_prefix_and_copies_nothing(tok, tmp_path):
    """Scoring on the first n of the seeded order equals the loss over those examples alone; the subset is a view."""
    from peft_catalyst.projection import read_soft_prompt
    from peft_catalyst.rounds.scoring import PromptScorer

    trainer = tiny.catalyst_trainer(tok, tmp_path / "out", None, catalyst_rounds=0)
    split = trainer.catalyst_dataset
    scorer = PromptScorer(trainer, split, metric="loss")
    prompt = read_soft_prompt(trainer.model)
    (sub,) = scorer.score_prompts([prompt], examples=5, order_seed=3)
    alone = PromptScorer(trainer, split.select(example_order(len(split), 3)[:5]), metric="loss")
    (direct,) = alone.score_prompts([prompt])
    assert sub.loss == pytest.approx(direct.loss, rel=1e-5) and sub.predictions is None
    assert scorer.example_scorings == 5 and alone.example_scorings == 5
    scorer.score_prompts([prompt, prompt])
    assert scorer.example_scorings == 5 + 2 * len(split)
    loader = scorer.subset_dataloader(5, 3)
    assert loader is scorer.subset_dataloader(5, 3)  # one loader per rung and order
    assert loader.dataset._indices is not None  # an indices mapping over the split's table, not a copy
    column = "input_ids"  # the subset reads the split's own arrow buffers
    assert _buffers(loader.dataset.data.table.column(column)) == _buffers(split.data.table.column(column))


def _buffers(column) -> list[int]:
    return [b.address for chunk in column.chunks for b in chunk.buffers() if b is not None]


# ---------------------------------------------------------------------------------------------------------------
# "full" stays as it was
# ---------------------------------------------------------------------------------------------------------------


def _timeless(value):
    """``value`` without wall-clock fields (``seconds``, ``latency_s``): what differs between two equal runs."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in ("seconds", "latency_s")}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


SCENARIOS = {
    "best": dict(catalyst_num_samples=4),
    "race": dict(catalyst_num_samples=4, catalyst_selection="race", catalyst_race_controls=1, catalyst_race_steps=1),
}


def full_records(tok, out: Path) -> dict[str, list[dict]]:
    """The round records of screened tiny runs (``SCENARIOS``) with the default schedule, without wall-clock fields.
    ``tests/data/screening_full_records.json`` holds what the code before successive halving (576c1f9) wrote."""
    records = {}
    for name, settings in SCENARIOS.items():
        trainer = tiny.catalyst_trainer(tok, out / name, FixedMentor(EIGHT[:4]), **settings)
        trainer.train()
        records[name] = [_timeless(r.to_dict()) for r in trainer.catalyst_history]
    return records


def test_full_schedule_leaves_the_round_records_bit_identical(tok, tmp_path):
    golden = json.loads(GOLDEN.read_text())
    records = full_records(tok, tmp_path)
    for name, expected in golden.items():
        assert len(records[name]) == len(expected) == 2
        for got, want in zip(records[name], expected):
            assert _as_written(got["screening"], want["screening"]) == want["screening"], name  # floats exact
            assert "schedule" not in got["screening"] and "example_scorings" not in got["screening"]
            for candidate, before in zip(got["candidates"], want["candidates"]):
                assert "examples" not in candidate
                assert _as_written(candidate, before) == before, name
            # the rest of the record, keys added since aside at every depth (other work adds fields, e.g. the
            # proposer of every scored prompt)
            assert _as_written(got, want) == want, name


def _as_written(got, want):
    """``got`` restricted to the keys ``want`` has, at every depth (lists element by element)."""
    if isinstance(got, dict) and isinstance(want, dict):
        return {k: _as_written(got[k], want[k]) if k in got else "<missing>" for k in want}
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [_as_written(g, w) for g, w in zip(got, want)]
    return got


def test_each_schedule_spends_what_its_rule_says(tok, tmp_path):
    """The same round's 4 candidates screened again on the 16-example split: "full" scores each on all 16;
    "halving" to the one that goes on to "best" (first rung at least 2: 4x4, 2x8, 1x16) spends 48."""
    trainer = tiny.catalyst_trainer(
        tok, tmp_path / "out", FixedMentor(EIGHT[:4]), catalyst_num_samples=4, catalyst_rounds=1
    )
    trainer.train()
    engine = trainer.catalyst.engine
    spent = {}
    for schedule in ("full", "halving"):
        engine.settings.catalyst_screen_schedule = schedule
        engine.settings.catalyst_screen_min_examples = 2
        record = RoundRecord.from_dict(trainer.catalyst_history[0].to_dict())
        engine.hard_prompt_scores.clear()  # no remembered whole-split score
        before = engine.scorer.example_scorings
        kept, _ = engine.screen(record, [0, 1, 2, 3])
        spent[schedule] = engine.scorer.example_scorings - before
        assert len(kept) == (2 if schedule == "full" else 1)
    assert spent == {"full": 4 * 16, "halving": 4 * 4 + 2 * 8 + 1 * 16}
    assert Screening.from_dict(trainer.catalyst_history[0].screening.to_dict()).schedule == "full"


def test_a_rung_scores_the_current_candidate_as_the_incumbent_soft_prompt(tok, tmp_path):
    """Under halving, the ``current`` proposer's candidate is scored on every rung as the soft prompt it stands for
    (as whole-split screening does), not as its nearest tokens."""
    from peft_catalyst.projection import read_soft_prompt

    trainer = tiny.catalyst_trainer(
        tok, tmp_path / "out", FixedMentor(EIGHT[:4]), catalyst_num_samples=4, catalyst_rounds=1
    )
    trainer.train()
    engine = trainer.catalyst.engine
    soft = read_soft_prompt(trainer.model).clone()
    ids = [5, 6, 7, 8]  # the token ids the candidate carries (its reading as text)
    key = tuple(ids)
    (as_soft,) = engine.score_hard_prompts_on([ids], 8, seed=3, soft={key: soft})
    (direct,) = engine.scorer.score_prompts([soft], examples=8, order_seed=3)
    (as_tokens,) = engine.score_hard_prompts_on([ids], 8, seed=3)
    assert as_soft.value == pytest.approx(direct.value, abs=1e-6)
    assert as_tokens.value != pytest.approx(direct.value, abs=1e-6)  # the token ids are another prompt
