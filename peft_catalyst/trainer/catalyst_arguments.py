"""Settings of LLM-guided restarts (TRL's ``<name>_config.py`` pattern, named ``catalyst_arguments.py`` because
``CatalystConfig`` is the PEFT config).

:class:`CatalystArguments` holds only the ``catalyst_*`` fields, so it combines with any ``TrainingArguments``
subclass: parse it beside ``SFTConfig`` or ``Seq2SeqTrainingArguments`` with ``HfArgumentParser((SFTConfig,
CatalystArguments))``, or inherit both. :class:`CatalystTrainingArguments` is that combination for ``Trainer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments

from peft_catalyst.mentors.base import PROPOSALS, Proposal
from peft_catalyst.records import (
    SCREEN_SCHEDULES,
    SELECTIONS,
    RestartName,
    ScreenSchedule,
    Selection,
    higher_is_better,
)
from peft_catalyst.rounds.proposers import parse_proposers
from peft_catalyst.rounds.restarts import RESTART_OPTIMIZERS, RestartOptimizer, shape_errors

SCORE_BATCH_SIZE_DEFAULT = 128
"""Rows (examples x prompts) of one shared scoring or race pass on an accelerator, when ``catalyst_score_batch_size``
is not set (on CPU prompts go one at a time: ``benchmarks/race_cost.py`` measured no gain there, and all 5 SmolLM2
arms of a race step in one pass cost about 2.6 GiB more peak memory)."""

RACE_STEPS_DEFAULT = 2
"""First-rung budget of a race: with 4 candidates (5 arms) a round trains 5x2 + 3x4 + 2x8 = 38 race steps; 4 doubles
that, 1 gives a new start a single step at a sixth of the lr (re-warm-up). What that costs against a stage depends on
the model: ``python -m benchmarks.race_cost`` measures it (the README lists the figures)."""


@dataclass
class CatalystArguments:
    r"""
    The schedule and rules of LLM-guided restarts, for any ``Trainer``.

    This class holds only the ``catalyst_*`` parameters. For the training arguments, see
    [`~transformers.TrainingArguments`] (or TRL's ``SFTConfig``), which it combines with.

    Using [`~transformers.HfArgumentParser`] we can turn this class into
    [argparse](https://docs.python.org/3/library/argparse#module-argparse) arguments that can be specified on the
    command line.

    Parameters:
        > Parameters that control the schedule

        catalyst_rounds (`int`, *optional*, defaults to `3`):
            Number of mentor rounds. `0` makes the run plain prompt tuning.
        catalyst_stage_steps (`int`, *optional*, defaults to `50`):
            Optimizer steps of each gradient stage before a mentor round. `catalyst_rounds * catalyst_stage_steps`
            must be below `max_steps`, so that a final gradient stage follows the last round.
        catalyst_initial_round (`bool`, *optional*, defaults to `False`):
            Ask the mentor once at step 0 (examples and labels, no trajectory): its prompts and the initial prompt
            are screened (and raced with `catalyst_selection="race"`) and training starts from the winner. Recorded
            as round 0; not counted in `catalyst_rounds`. With `catalyst_rounds=0` it is the only round: a screened
            start, then plain prompt tuning.
        catalyst_plateau_patience (`int` or `None`, *optional*, defaults to `None`):
            Start a round early when the training loss has not improved for this many optimizer steps of the current
            stage. `None` keeps to the schedule.

        > Parameters that control where candidates come from

        catalyst_proposers (`dict[str, int]`, `str` or `None`, *optional*, defaults to `None`):
            The proposers a round (the initial round included) draws its candidates from, name -> count:
            `"mentor"` (the LLM), `"vocab"` (random vocabulary words), `"labels"` (random words with the label
            words), `"sample_vocab"` (random token ids, as PEFT's `SAMPLE_VOCAB` init), `"examples"` (labelled
            training examples as text), `"text"` (`catalyst_manual_prompt`, else the task description) and
            `"current"` (the incumbent, judged at screening like the others); `text` and `current` give one prompt.
            A dict, `"mentor=4,vocab=4"`, a JSON dict, or a list of names (`"mentor,vocab"`) that splits
            `catalyst_num_samples` (or `catalyst_num_candidates`) evenly. The counts' sum is the prompts a round
            screens. `None`: the mentor alone, as before.

        > Parameters that control what the mentor sees and returns

        catalyst_trajectory_points (`int`, *optional*, defaults to `4`):
            How many scored prompts of the stage (deduplicated, spread over it) the mentor sees.
        catalyst_num_candidates (`int`, *optional*, defaults to `4`):
            Number of candidate prompts asked of the mentor per round.
        catalyst_num_samples (`int` or `None`, *optional*, defaults to `None`):
            Prompts asked of the mentor per round, at least `catalyst_num_candidates`: each is scored untrained on
            the catalyst split (screening) and the best `catalyst_num_candidates` go on to selection; race controls
            are screened the same way. `None` asks `catalyst_num_candidates` and screens nothing.
        catalyst_max_words (`int` or `None`, *optional*, defaults to `None`):
            Word budget of each candidate. `None` uses the adapter's `num_virtual_tokens`.
        catalyst_task_description (`str` or `None`, *optional*, defaults to `None`):
            Task description for the mentor. `None` uses the [`CatalystConfig`]'s `task_description`.
        catalyst_manual_prompt (`str` or `None`, *optional*, defaults to `None`):
            A human-written prompt shown to the mentor as a starting point.
        catalyst_mentor_examples (`int`, *optional*, defaults to `3`):
            Labelled catalyst-split examples shown to the mentor in every request, balanced over the classes.
        catalyst_mentor_errors (`int`, *optional*, defaults to `3`):
            Catalyst-split examples the current prompt gets wrong (true and predicted label) shown to the mentor,
            from the scoring pass the round runs anyway. None where the ranking has no classes (`score_fn`,
            regression, generation).
        catalyst_mentor_words (`int`, *optional*, defaults to `150`):
            Total words of example and error texts in one request: each text is cut to its share (marked " ...").
        catalyst_labels (`list[str]` or `None`, *optional*, defaults to `None`):
            The class names or label words the doer answers with, in class-id order, shown to the mentor. `None`
            reads the model config's `id2label` when it names the classes.
        catalyst_label_anchor (`bool`, *optional*, defaults to `False`):
            Complete every candidate (and every random control) that does not name the task's labels with them, so
            that each prompt names the label words the doer answers with. A prompt too short to hold the labels
            beside any of a candidate's words leaves it as proposed (noted in the round record).
        catalyst_proposal (`str`, *optional*, defaults to `"new"`):
            `"new"` asks for new prompts from the scored history; `"edit"` asks the mentor to rewrite the best
            prompt so far so that it fixes the errors shown.

        > Parameters that control how candidates are judged

        catalyst_eval_size (`float`, *optional*, defaults to `0.1`):
            Size of the held-out catalyst split carved from the training set when no `catalyst_dataset` is given:
            a fraction in (0, 1) or a number of examples (>= 1).
        catalyst_selection (`str`, *optional*, defaults to `"best"`):
            `"best"` scores every candidate and the current prompt on the catalyst split and keeps the best;
            `"race"` trains them all for the same counted budget on the same batches, then keeps the best;
            `"first"` restarts from the mentor's first candidate unscored (for ablations).
        catalyst_metric (`str`, *optional*, defaults to `"loss"`):
            Catalyst-split metric that ranks prompts: `"loss"` or a key returned by `compute_metrics`.
        catalyst_greater_is_better (`bool` or `None`, *optional*, defaults to `None`):
            Whether a higher `catalyst_metric` is better. `None`: lower is better for names ending in `"loss"`,
            higher otherwise (as `Trainer` does).
        catalyst_score_batch_size (`int` or `None`, *optional*, defaults to `None`):
            Rows (examples x prompts) of one shared scoring or race pass: prompts are scored, and race arms trained,
            several in one forward pass up to this budget. `None`: one prompt at a time on CPU, 128 rows on an
            accelerator.
        catalyst_screen_schedule (`str`, *optional*, defaults to `"full"`):
            How screening spends the catalyst split. `"full"` scores every candidate on all of it. `"halving"`
            (successive halving, eta 2): all candidates on a first rung of examples, the better half (rounded up)
            on twice the examples, and so on until as many remain as go on (`catalyst_num_candidates` to a race,
            1 otherwise), those scored on the whole split; the last rung's scores alone decide what goes on. Rungs
            are prefixes of one seeded order of the split; each candidate records on how many examples its
            screening score is (`examples`). With `"halving"` a round screens whenever it has more candidates than
            go on.
        catalyst_screen_min_examples (`int`, *optional*, defaults to `16`):
            `catalyst_screen_schedule="halving"` only: fewest examples of the first rung. The first rung is
            otherwise `ceil(split / 2**h)` for the `h = ceil(log2(candidates / kept))` halvings needed, so that
            the rung where the kept remain is the whole split; a larger minimum uses the split up sooner, with
            more candidates left on it.

        > Parameters that control the race (`catalyst_selection="race"`)

        catalyst_race_steps (`int`, *optional*, defaults to `2`):
            Optimizer steps every arm trains in the first rung; later rungs multiply it by `catalyst_race_eta`.
            Counted (`catalyst/race_steps`) but not in `global_step`. `0` judges the arms untrained.
        catalyst_race_eta (`int`, *optional*, defaults to `2`):
            Successive-halving factor: after each rung the best `1/eta` of the arms (rounded up) go on, with `eta`
            times the budget, until one arm is left.
        catalyst_race_controls (`int`, *optional*, defaults to `0`):
            Extra arms that start from random vocabulary tokens, a control in every round (never shown to the
            mentor as its proposals).
        catalyst_race_margin (`float`, *optional*, defaults to `0.0`):
            A challenger replaces the current prompt only with a finite score better by more than this (in
            `catalyst_metric` units); ties always keep the incumbent.
        catalyst_race_seed (`int` or `None`, *optional*, defaults to `None`):
            Seed of the race's own batch stream, dropout and control arms. `None` uses the training seed.

        > Parameters that control what a restart does to the optimizer

        catalyst_reset_optimizer (`bool`, *optional*, defaults to `True`):
            Reset the soft prompt's optimizer state (e.g. Adam's moments) after a restart.
        catalyst_rewarmup_steps (`int`, *optional*, defaults to `5`):
            Optimizer steps over which the prompt's learning rate ramps up again after a restart.
        catalyst_restart_optimizer (`str`, *optional*, defaults to `"reset"`):
            What a restart does to the prompt's optimizer state (when `catalyst_reset_optimizer`): `"reset"` forgets
            it (Adam's first steps are then sign-like, about the lr per coordinate); `"keep_second_moment"` zeroes
            the first moment and keeps the second moment and the step, so the first steps stay at the scale the
            stage measured; `"keep"` changes nothing. Race arms start the same way.
        catalyst_restart_radius (`float` or `None`, *optional*, defaults to `None`):
            Trust region after a restart: every virtual token is pulled back within this L2 distance of its
            restart point (a fraction of the mean norm of the model's word embeddings) after each optimizer step,
            for `catalyst_restart_radius_steps` steps. One process or DDP (not DeepSpeed or FSDP); not in race arms.
        catalyst_restart_radius_steps (`int`, *optional*, defaults to `20`):
            Optimizer steps after a restart during which `catalyst_restart_radius` holds.
        catalyst_restart_loss_ratio (`float` or `None`, *optional*, defaults to `None`):
            `catalyst_selection="best"` only: a start is taken only when its catalyst-split loss (the training
            objective, from the same scoring pass) is at most this multiple of the current prompt's, whatever
            `catalyst_metric` says. A text prompt can rank the label words better (`label_loss`) while its
            full-vocabulary loss is several times the trained prompt's: the training loss then jumps after the
            restart. `None`: not checked.
        catalyst_restart_followup (`bool`, *optional*, defaults to `False`):
            Score the prompt on the catalyst split 1, 2, 5, 10 and 20 optimizer steps after every taken restart
            (those within the stage) and keep the scores in the round record (`followup`). Costs one catalyst
            scoring pass each.

        > Parameters that control the shape of a restart

        catalyst_restart (`str`, *optional*, defaults to `"full"`):
            How a proposal becomes a new start: `"full"` starts from its tokens; `"blend"` from `incumbent + alpha *
            (proposal - incumbent)` in embedding space, one start per alpha of `catalyst_blend_alphas`; `"partial"`
            keeps the trained vectors and writes the proposal's tokens at `catalyst_partial_tokens` positions (those
            nearest to a vocabulary token). Random controls start in the same shapes.
        catalyst_blend_alphas (`list[float]`, *optional*, defaults to `[0.3, 0.6]`):
            `catalyst_restart="blend"` only: how far each blended start moves from the incumbent towards the
            proposal, each in (0, 1].
        catalyst_partial_tokens (`int` or `None`, *optional*, defaults to `None`):
            `catalyst_restart="partial"` only: how many positions take the proposal's tokens, in [1,
            num_virtual_tokens]. `None`: half the prompt, rounded up.

        > Parameters that control the outputs

        catalyst_chat_log (`str`, *optional*, defaults to `"catalyst_chat.jsonl"`):
            File name (in `output_dir`) of the JSON Lines log of every mentor exchange.
    """

    # --- the schedule ---
    catalyst_rounds: int = field(
        default=3,
        metadata={"help": "Number of mentor rounds (N). 0 makes the run plain prompt tuning."},
    )
    catalyst_stage_steps: int = field(
        default=50,
        metadata={"help": "Optimizer steps of each gradient stage before a mentor round."},
    )
    catalyst_initial_round: bool = field(
        default=False,
        metadata={
            "help": (
                "Ask the mentor once at step 0 (examples and labels, no trajectory); its prompts and the initial "
                "prompt are screened (raced with catalyst_selection='race') and training starts from the winner. "
                "Recorded as round 0, not counted in catalyst_rounds; with catalyst_rounds 0 it is the only round."
            )
        },
    )
    catalyst_plateau_patience: int | None = field(
        default=None,
        metadata={
            "help": (
                "Optional: start a round early when the training loss has not improved for this many optimizer "
                "steps of the current stage."
            )
        },
    )

    # --- where candidates come from ---
    catalyst_proposers: dict[str, int] | str | None = field(
        default=None,
        metadata={
            "help": (
                "Where a round's candidates come from, name=count: mentor (the LLM), vocab (random words), labels "
                "(random words with the label words), sample_vocab (random token ids, as PEFT's SAMPLE_VOCAB), "
                "examples (labelled training examples as text), text (catalyst_manual_prompt or the task "
                "description), current (the incumbent, screened like the others); e.g. 'mentor=4,vocab=4,labels=4', "
                "a JSON dict, or names only ('mentor,vocab') to split catalyst_num_samples evenly. Default: the "
                "mentor alone."
            )
        },
    )

    # --- what the mentor sees and returns ---
    catalyst_trajectory_points: int = field(
        default=4,
        metadata={"help": "How many trajectory points (deduplicated, spread over the stage) the mentor sees."},
    )
    catalyst_num_candidates: int = field(
        default=4,
        metadata={"help": "Number of candidate prompts asked of the mentor per round."},
    )
    catalyst_num_samples: int | None = field(
        default=None,
        metadata={
            "help": (
                "Prompts asked of the mentor per round (>= catalyst_num_candidates): all are scored untrained on "
                "the catalyst split and the best catalyst_num_candidates go on to selection; race controls are "
                "screened alike. Default: catalyst_num_candidates, no screening."
            )
        },
    )
    catalyst_max_words: int | None = field(
        default=None,
        metadata={"help": "Word budget of each candidate (default: the adapter's num_virtual_tokens)."},
    )
    catalyst_task_description: str | None = field(
        default=None,
        metadata={"help": "Task description for the mentor (default: the CatalystConfig's task_description)."},
    )
    catalyst_manual_prompt: str | None = field(
        default=None,
        metadata={"help": "Optional human-written prompt shown to the mentor as a starting point."},
    )
    catalyst_mentor_examples: int = field(
        default=3,
        metadata={"help": "Labelled catalyst examples shown to the mentor per request, balanced over the classes."},
    )
    catalyst_mentor_errors: int = field(
        default=3,
        metadata={
            "help": (
                "Catalyst examples the current prompt gets wrong (true and predicted label) shown to the mentor, "
                "taken from the round's own scoring pass; none where the ranking has no classes (score_fn, "
                "regression, generation)."
            )
        },
    )
    catalyst_mentor_words: int = field(
        default=150,
        metadata={"help": "Total words of example and error texts per request; each text is cut to its share."},
    )
    catalyst_labels: list[str] | None = field(
        default=None,
        metadata={
            "help": (
                "Class names or label words the doer answers with, in class-id order, shown to the mentor "
                "(default: the model config's id2label when it names the classes)."
            )
        },
    )
    catalyst_label_anchor: bool = field(
        default=False,
        metadata={
            "help": (
                "Complete each candidate and random control that does not name the task's labels "
                "(catalyst_labels) with them; one that cannot keep any of its words beside them in the prompt "
                "stays as proposed."
            )
        },
    )
    catalyst_proposal: Proposal = field(
        default="new",
        metadata={
            "help": (
                "'new': new prompts from the scored history; 'edit': rewrite the best prompt so far so that it "
                "fixes the errors shown."
            )
        },
    )

    # --- how candidates are judged ---
    catalyst_eval_size: float = field(
        default=0.1,
        metadata={
            "help": (
                "Size of the held-out catalyst split carved from the training set when no catalyst_dataset is "
                "given: a fraction in (0, 1) or a number of examples (>= 1)."
            )
        },
    )
    catalyst_selection: Selection = field(
        default="best",
        metadata={
            "help": (
                "'best': score every candidate and the current prompt on the catalyst split and keep the best "
                "(elitist restart; a candidate is judged before any gradient step, so the trained prompt nearly "
                "always wins). 'race': train the current prompt and every candidate for the same counted budget "
                "on the same batches, then keep the best (successive halving, see catalyst_race_*). 'first': "
                "restart from the mentor's first candidate unscored (for ablations)."
            )
        },
    )
    catalyst_metric: str = field(
        default="loss",
        metadata={"help": "Catalyst-split metric that ranks prompts: 'loss' or a key returned by compute_metrics."},
    )
    catalyst_greater_is_better: bool | None = field(
        default=None,
        metadata={"help": "Whether a higher catalyst_metric is better (default: False for names ending in 'loss')."},
    )
    catalyst_score_batch_size: int | None = field(
        default=None,
        metadata={
            "help": (
                "Rows (examples x prompts) of one shared pass: prompts of a round are scored, and race arms "
                "trained, several at a time, each on every example of a batch, in passes of at most this many rows "
                "(at least one batch of one prompt). Peak activation memory is about that of a forward (a race: "
                "forward and backward) over this many rows. 1 handles prompts one at a time. Default: 128 on a GPU "
                "or other accelerator, 1 on CPU (where shared passes measured no faster)."
            )
        },
    )
    catalyst_screen_schedule: ScreenSchedule = field(
        default="full",
        metadata={
            "help": (
                "How screening spends the catalyst split: 'full' scores every candidate on all of it; 'halving' "
                "scores all on a first rung of examples and keeps the better half on twice the examples until as "
                "many remain as go on (catalyst_num_candidates to a race, 1 otherwise), those on the whole split. "
                "Rungs are prefixes of one seeded order of the split. With 'halving' a round screens whenever it "
                "has more candidates than go on."
            )
        },
    )
    catalyst_screen_min_examples: int = field(
        default=16,
        metadata={
            "help": (
                "Halving only: fewest examples of the first rung. The first rung is otherwise the split divided by "
                "2 per halving needed, so that the last rung is the whole split."
            )
        },
    )

    # --- the race (`catalyst_selection="race"`) ---
    catalyst_race_steps: int = field(
        default=RACE_STEPS_DEFAULT,
        metadata={
            "help": (
                "Race only: optimizer steps every arm trains in the first rung (later rungs multiply it by "
                "catalyst_race_eta); counted as catalyst/race_steps, not in global_step. 0 judges the arms "
                "untrained, as 'best' does; with the default 2 and 4 candidates a race round trains 38 steps."
            )
        },
    )
    catalyst_race_eta: int = field(
        default=2,
        metadata={
            "help": (
                "Race only: successive-halving factor. After each rung the best 1/eta of the arms (rounded up) go "
                "on, with eta times the budget, until one arm is left."
            )
        },
    )
    catalyst_race_controls: int = field(
        default=0,
        metadata={
            "help": (
                "Race only: extra arms that start from random vocabulary tokens, so every round carries its own "
                "control; they are never shown to the mentor as its proposals."
            )
        },
    )
    catalyst_race_margin: float = field(
        default=0.0,
        metadata={
            "help": (
                "Race only: a challenger replaces the current prompt only with a finite score better by more than "
                "this (in catalyst_metric units). Default 0: ties already keep the incumbent; a positive margin "
                "should be about the catalyst split's noise, which depends on the task and the split size."
            )
        },
    )
    catalyst_race_seed: int | None = field(
        default=None,
        metadata={
            "help": (
                "Race only: seed of the race's own batch stream, dropout and control arms (default: the training "
                "seed); the main loop's data order and RNG are never touched."
            )
        },
    )

    # --- what a restart does to the optimizer ---
    catalyst_reset_optimizer: bool = field(
        default=True,
        metadata={"help": "Reset the optimizer state (e.g. Adam moments) of the soft prompt after a restart."},
    )
    catalyst_rewarmup_steps: int = field(
        default=5,
        metadata={"help": "Optimizer steps over which the prompt's learning rate ramps up again after a restart."},
    )
    catalyst_restart_optimizer: RestartOptimizer = field(
        default="reset",
        metadata={
            "help": (
                "What a restart does to the prompt's optimizer state (with catalyst_reset_optimizer): 'reset' "
                "forgets it (Adam's first steps are then sign-like, about the lr per coordinate); "
                "'keep_second_moment' zeroes the first moment and keeps the second moment and the step (first steps "
                "stay at the scale the stage measured); 'keep' changes nothing. Race arms start the same way."
            )
        },
    )
    catalyst_restart_radius: float | None = field(
        default=None,
        metadata={
            "help": (
                "Optional trust region after a restart: each virtual token is pulled back within this L2 distance "
                "of its restart point (a fraction of the mean word-embedding norm) after every optimizer step, for "
                "catalyst_restart_radius_steps steps. One process or DDP only (not DeepSpeed or FSDP)."
            )
        },
    )
    catalyst_restart_radius_steps: int = field(
        default=20,
        metadata={"help": "Optimizer steps after a restart during which catalyst_restart_radius holds."},
    )
    catalyst_restart_loss_ratio: float | None = field(
        default=None,
        metadata={
            "help": (
                "selection 'best' only: take a start only when its catalyst-split loss (the training objective) is "
                "at most this multiple of the current prompt's, whatever catalyst_metric says (a text prompt can "
                "rank the label words better while its full-vocabulary loss is several times higher, and the "
                "training loss then jumps after the restart). Default: not checked."
            )
        },
    )
    catalyst_restart_followup: bool = field(
        default=False,
        metadata={
            "help": (
                "Score the prompt on the catalyst split 1, 2, 5, 10 and 20 steps after every taken restart (those "
                "within the stage) and keep the scores in the round record; costs one scoring pass each."
            )
        },
    )

    # --- the shape of a restart ---
    catalyst_restart: RestartName = field(
        default="full",
        metadata={
            "help": (
                "How a proposal becomes a new start: 'full' starts from its tokens (the stage's learning is "
                "dropped); 'blend' from incumbent + alpha * (proposal - incumbent) in embedding space, one start "
                "per alpha of catalyst_blend_alphas; 'partial' keeps the trained vectors and writes the proposal's "
                "tokens at catalyst_partial_tokens positions (those nearest to a vocabulary token). Random "
                "controls start in the same shapes."
            )
        },
    )
    catalyst_blend_alphas: list[float] = field(
        default_factory=lambda: [0.3, 0.6],
        metadata={
            "help": (
                "catalyst_restart='blend' only: how far each blended start moves from the incumbent towards the "
                "proposal, each in (0, 1]; every proposal (and control) becomes one start per alpha."
            )
        },
    )
    catalyst_partial_tokens: int | None = field(
        default=None,
        metadata={
            "help": (
                "catalyst_restart='partial' only: how many positions take the proposal's tokens, in [1, "
                "num_virtual_tokens] (default: half the prompt, rounded up)."
            )
        },
    )

    # --- the outputs ---
    catalyst_chat_log: str = field(
        default="catalyst_chat.jsonl",
        metadata={"help": "File name (in output_dir) of the JSON Lines log of every mentor exchange."},
    )

    def __post_init__(self) -> None:
        self.validate_catalyst()

    def validate_catalyst(self) -> None:
        """Check the ``catalyst_*`` fields on their own; raises one ``ValueError`` naming every bad field."""
        errors = []
        for name in (
            "catalyst_rounds",
            "catalyst_trajectory_points",
            "catalyst_rewarmup_steps",
            "catalyst_race_steps",
            "catalyst_race_controls",
            "catalyst_mentor_examples",
            "catalyst_mentor_errors",
        ):
            if getattr(self, name) < 0:
                errors.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("catalyst_stage_steps", "catalyst_num_candidates"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.catalyst_score_batch_size is not None and self.catalyst_score_batch_size < 1:
            errors.append(f"catalyst_score_batch_size must be >= 1 or None (got {self.catalyst_score_batch_size})")
        if self.catalyst_max_words is not None and self.catalyst_max_words < 1:
            errors.append(f"catalyst_max_words must be >= 1 or None (got {self.catalyst_max_words})")
        if self.catalyst_plateau_patience is not None and self.catalyst_plateau_patience < 1:
            errors.append(f"catalyst_plateau_patience must be >= 1 or None (got {self.catalyst_plateau_patience})")
        if not self.catalyst_eval_size > 0 or (self.catalyst_eval_size > 1 and self.catalyst_eval_size % 1):
            errors.append(
                f"catalyst_eval_size must be a fraction in (0, 1) or a whole number of examples (got "
                f"{self.catalyst_eval_size})"
            )
        if self.catalyst_num_samples is not None and self.catalyst_num_samples < self.catalyst_num_candidates:
            errors.append(
                f"catalyst_num_samples ({self.catalyst_num_samples}) must be >= catalyst_num_candidates "
                f"({self.catalyst_num_candidates})"
            )
        if self.catalyst_mentor_words < 1:
            errors.append(f"catalyst_mentor_words must be >= 1 (got {self.catalyst_mentor_words})")
        if self.catalyst_proposal not in PROPOSALS:
            errors.append(f"catalyst_proposal must be one of {PROPOSALS} (got {self.catalyst_proposal!r})")
        if self.catalyst_labels is not None and len(self.catalyst_labels) < 2:
            errors.append(f"catalyst_labels must name at least 2 classes or be None (got {self.catalyst_labels})")
        if self.catalyst_screen_schedule not in SCREEN_SCHEDULES:
            errors.append(
                f"catalyst_screen_schedule must be one of {SCREEN_SCHEDULES} (got {self.catalyst_screen_schedule!r})"
            )
        if self.catalyst_screen_min_examples < 1:
            errors.append(f"catalyst_screen_min_examples must be >= 1 (got {self.catalyst_screen_min_examples})")
        if self.catalyst_selection not in SELECTIONS:
            errors.append(f"catalyst_selection must be one of {SELECTIONS} (got {self.catalyst_selection!r})")
        if self.catalyst_race_eta < 2:
            errors.append(f"catalyst_race_eta must be >= 2 (got {self.catalyst_race_eta})")
        if not self.catalyst_race_margin >= 0:
            errors.append(f"catalyst_race_margin must be >= 0 (got {self.catalyst_race_margin})")
        if self.catalyst_restart_optimizer not in RESTART_OPTIMIZERS:
            errors.append(
                f"catalyst_restart_optimizer must be one of {RESTART_OPTIMIZERS} "
                f"(got {self.catalyst_restart_optimizer!r})"
            )
        if self.catalyst_restart_radius is not None and not self.catalyst_restart_radius > 0:
            errors.append(f"catalyst_restart_radius must be > 0 or None (got {self.catalyst_restart_radius})")
        if self.catalyst_restart_loss_ratio is not None and not self.catalyst_restart_loss_ratio > 0:
            errors.append(f"catalyst_restart_loss_ratio must be > 0 or None (got {self.catalyst_restart_loss_ratio})")
        if self.catalyst_restart_radius_steps < 1:
            errors.append(f"catalyst_restart_radius_steps must be >= 1 (got {self.catalyst_restart_radius_steps})")
        errors += shape_errors(self.catalyst_restart, self.catalyst_blend_alphas, self.catalyst_partial_tokens)
        errors += self._proposer_errors()
        if errors:
            raise ValueError(f"Invalid {type(self).__name__}: " + "; ".join(errors) + ".")

    def _proposer_errors(self) -> list[str]:
        """Normalise ``catalyst_proposers`` to ``{name: count}`` in place; the errors it has."""
        try:
            counts = self.catalyst_proposer_counts
        except ValueError as exc:
            return [str(exc)]
        self.catalyst_proposers = counts
        total = sum(counts.values()) if counts else None
        if total is not None and self.catalyst_num_samples is not None and total != self.catalyst_num_samples:
            return [
                f"catalyst_proposers draws {total} prompts but catalyst_num_samples is {self.catalyst_num_samples}: "
                "leave catalyst_num_samples unset (the counts' sum is the prompts screened) or make them agree"
            ]
        return []

    def validate_proposers(self, *, has_mentor: bool, train_rows: int, label_names: list[str]) -> None:
        """Check ``catalyst_proposers`` against what the run has (known once a trainer is attached): a mentor for
        ``mentor``, training data for ``examples``, label words for ``labels``. One line naming the fix."""
        counts = self.catalyst_proposer_counts or {}
        if counts.get("mentor") and not has_mentor:
            raise ValueError(
                "catalyst_proposers asks the mentor but no mentor was given: pass a mentor, or drop 'mentor' from "
                "catalyst_proposers."
            )
        if counts.get("examples") and train_rows <= 0:
            raise ValueError(
                "catalyst_proposers draws 'examples' from the training set but the trainer has no train_dataset "
                "rows: give the trainer a train_dataset, or drop 'examples' from catalyst_proposers."
            )
        if counts.get("labels") and not label_names:
            raise ValueError(
                "catalyst_proposers draws 'labels' but the task's label words are unknown: set catalyst_labels "
                "(or name the classes in the model config's id2label), or drop 'labels' from catalyst_proposers."
            )

    @property
    def catalyst_proposer_counts(self) -> dict[str, int] | None:
        """``catalyst_proposers`` as ``{name: count}`` (None: the mentor alone, asked ``catalyst_samples``)."""
        return parse_proposers(self.catalyst_proposers, self.catalyst_num_samples or self.catalyst_num_candidates)

    def score_batch_size(self, device: Any) -> int:
        """``catalyst_score_batch_size``, or its default on ``device``: 1 on CPU, else ``SCORE_BATCH_SIZE_DEFAULT``."""
        if self.catalyst_score_batch_size is not None:
            return self.catalyst_score_batch_size
        return 1 if getattr(device, "type", str(device)) == "cpu" else SCORE_BATCH_SIZE_DEFAULT

    def validate_restart_shape(self, num_virtual_tokens: int) -> None:
        """Check ``catalyst_partial_tokens`` against the prompt's length (known once a model is attached)."""
        errors = shape_errors(
            self.catalyst_restart, self.catalyst_blend_alphas, self.catalyst_partial_tokens, num_virtual_tokens
        )
        if errors:
            raise ValueError(f"Invalid {type(self).__name__}: " + "; ".join(errors) + ".")

    def validate_schedule(self, max_steps: int) -> None:
        """Check that a final gradient stage follows the last round; only called when rounds can happen."""
        steps = self.catalyst_rounds * self.catalyst_stage_steps
        if max_steps > 0 and self.catalyst_rounds > 0 and steps >= max_steps:
            raise ValueError(
                f"catalyst_rounds * catalyst_stage_steps = {steps} "
                f"must be < max_steps = {max_steps}, so that a final gradient stage follows the last round; "
                "lower catalyst_rounds or catalyst_stage_steps, or raise max_steps."
            )

    @property
    def catalyst_samples(self) -> int:
        """Prompts drawn per round: the sum of ``catalyst_proposers``' counts when set, else ``catalyst_num_samples``,
        or ``catalyst_num_candidates`` when not set."""
        counts = self.catalyst_proposer_counts
        return sum(counts.values()) if counts else self.catalyst_num_samples or self.catalyst_num_candidates

    @property
    def catalyst_higher_is_better(self) -> bool:
        """Whether a higher ``catalyst_metric`` wins (resolves ``catalyst_greater_is_better=None``)."""
        return higher_is_better(self.catalyst_metric, self.catalyst_greater_is_better)


@dataclass
class CatalystTrainingArguments(TrainingArguments, CatalystArguments):
    """``TrainingArguments`` plus :class:`CatalystArguments`: the arguments of :class:`CatalystTrainer`."""

    def __post_init__(self) -> None:
        TrainingArguments.__post_init__(self)
        self.validate_catalyst()  # the schedule against max_steps is checked when a mentor is attached


def catalyst_fields(args: Any) -> CatalystArguments:
    """The ``catalyst_*`` settings of ``args`` (any object carrying them, e.g. a combined config) as
    :class:`CatalystArguments`."""
    if type(args) is CatalystArguments:
        return args
    names = [f.name for f in fields(CatalystArguments)]
    return CatalystArguments(**{n: getattr(args, n) for n in names})
