"""What one run of the comparison is: the methods and what each means for the trainer, a doer's budget, a cell."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: The first grid's methods (plan ``full``).
METHODS = ("single-random", "single-text", "random-restarts", "llm-only", "blind", "catalyst")
#: The v2 methods (issue 14), in report order.
V2_METHODS = (
    "single-random",
    "single-text",
    "single-matched",
    "random-race",
    "catalyst-race",
    "catalyst-best",
    "blind",
)
ALL_METHODS = tuple(dict.fromkeys(METHODS + V2_METHODS))
SINGLE_METHODS = ("single-random", "single-text")
ROUND_METHODS = ("random-restarts", "llm-only", "blind", "catalyst")
LLM_METHODS = ("llm-only", "blind", "catalyst", "catalyst-race", "catalyst-best")
#: Suffix of a method run from PEFT's RANDOM init in a plan whose restart methods start from the TEXT init.
RANDOM_INIT_SUFFIX = "@random"
#: Bump when the meaning of a cell's result changes: finished cells with another version are run again. The first
#: plan's runs keep version 1; a plan's ``version`` is the one its runs carry.
BENCH_VERSION = 1


@dataclass(frozen=True)
class MethodSpec:
    """What a method name means for the trainer: its init, mentor, selection rule and step budget."""

    name: str
    base: str
    init: str  # "random", "text" or "vocab" (PEFT's SAMPLE_VOCAB): the prompt init
    #: "none" (no LLM: plain tuning, or rounds drawn from catalyst_proposers alone), "random" (RandomMentor), "llm",
    #: or "llm+history" (llm-only)
    mentor: str
    selection: str | None  # catalyst_selection; None: no rounds
    frozen_prompt: bool = False  # llm-only: the soft prompt gets no gradient update
    matched_to: str | None = None  # single-matched: the method whose total gradient steps it trains
    #: How a method with ``matched_to`` is matched (from v4): "steps" (the matched run's total gradient steps) or
    #: "compute" (the gradient steps that buy the matched run's tuning compute in forward-equivalent tokens, less
    #: the method's own initial round when it has one; see :func:`benchmarks.compare.store.matched_steps`). Left out
    #: of the stored settings while "steps", so earlier plans' runs stay valid.
    match: str = "steps"
    #: More ``CatalystTrainingArguments`` of the method, as (name, value) pairs (plans from v3 on: screening,
    #: evidence, initial round, label anchor, restart shape, random controls); empty: the library's defaults.
    trainer: tuple[tuple[str, Any], ...] = ()

    @property
    def rounds(self) -> bool:
        return self.selection is not None


def method_spec(method: str, restart_init: str = "random") -> MethodSpec:
    """The trainer settings of ``method`` (a name of :data:`ALL_METHODS`, optionally suffixed ``@random``) in a plan
    whose restart methods start from ``restart_init``."""
    base, at, suffix = method.partition("@")
    if at and suffix != "random":
        raise ValueError(f"unknown init suffix in {method!r} (only {RANDOM_INIT_SUFFIX!r})")
    if base not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}")
    init = "random" if at else restart_init
    table: dict[str, tuple[str, str, str | None]] = {
        "single-random": ("random", "none", None),
        "single-text": ("text", "none", None),
        "single-matched": (init, "none", None),
        "random-restarts": (init, "random", "best"),
        "llm-only": (init, "llm+history", "best"),
        "blind": (init, "llm", "first"),
        "catalyst": (init, "llm", "best"),
        "catalyst-best": (init, "llm", "best"),
        "random-race": (init, "random", "race"),
        "catalyst-race": (init, "llm", "race"),
    }
    prompt_init, mentor, selection = table[base]
    if at and base in SINGLE_METHODS:
        raise ValueError(f"{method!r}: the single methods have a fixed init")
    return MethodSpec(
        name=method,
        base=base,
        init=prompt_init,
        mentor=mentor,
        selection=selection,
        frozen_prompt=base == "llm-only",
        matched_to="catalyst-race" + (at + suffix) if base == "single-matched" else None,
    )


@dataclass(frozen=True)
class DoerPlan:
    """Budget and schedule of one doer: the same for every method and seed of its cells."""

    doer: str
    seeds: int
    max_steps: int
    batch_size: int
    rounds: int
    stage_steps: int
    train_size: int
    catalyst_size: int
    test_size: int
    learning_rate: float = 3e-2
    num_virtual_tokens: int = 8
    num_candidates: int = 4
    trajectory_points: int = 4
    eval_batch_size: int = 32
    max_length: int = 128
    #: A local model directory instead of the packaged doer named ``doer`` (tests, or your own doer).
    model_path: str | None = None
    #: Race settings of the race methods (catalyst_race_steps / _eta / _margin); None in plans without races. Fields
    #: left None are not part of a run's stored settings, so the first plan's runs stay valid.
    race_steps: int | None = None
    race_eta: int | None = None
    race_margin: float | None = None
    #: Validation examples (None: the task's) and how many points of a validation curve the runs without rounds
    #: record (None: none), to show where plain prompt tuning flattens.
    validation_size: int | None = None
    curve_points: int | None = None
    #: True: every method keeps its best prompt by validation accuracy, the starting prompt included, under the rule
    #: of ``peft-catalyst train`` (evaluated at step 0, at every stage's end and at the last step; see
    #: ``peft_catalyst.trainer.keep_best``); its record says which step it kept. None: the final prompt is tested.
    keep_best: bool | None = None
    #: With ``keep_best``: the validation metric that ranks the prompts (None: ``accuracy``; v4: ``label_loss``, the
    #: rule of ``peft-catalyst train``).
    keep_best_metric: str | None = None
    #: Every method evaluates on validation every this many main-loop steps (the kept prompt's candidates and the
    #: validation curve alike); None: at every stage's end with ``keep_best``, at ``curve_points`` without rounds.
    eval_every: int | None = None
    #: Per task, fields that differ from the ones above, as (task, ((field, value), ...)) pairs (v4: TREC-6 trains
    #: longer than Rotten Tomatoes); see :meth:`for_task`.
    task_overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def for_task(self, task: str) -> DoerPlan:
        """The budget of this doer on ``task``: :attr:`task_overrides` applied (and then dropped)."""
        changes = dict(dict(self.task_overrides).get(task, ()))
        return dataclasses.replace(self, task_overrides=(), **changes) if self.task_overrides else self


#: DoerPlan fields added after the first grid: left out of the stored settings while None (or empty).
_OPTIONAL_DOER_FIELDS = (
    "race_steps",
    "race_eta",
    "race_margin",
    "validation_size",
    "curve_points",
    "keep_best",
    "keep_best_metric",
    "eval_every",
    "task_overrides",
)


@dataclass(frozen=True)
class Cell:
    """One run: a task, a doer, a method and a seed (also the data split's seed)."""

    task: str
    doer: str
    method: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}__{self.doer}__{self.method}__s{self.seed}"
