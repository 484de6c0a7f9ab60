"""One catalyst run from arguments: build the prompt-tuned model, the data, the mentor and the trainer; train;
evaluate; report.

Shared by the ``peft-catalyst train`` command and the benchmarks, so both run exactly the same thing. The argument
dataclasses are ``HfArgumentParser``-friendly (every field has ``metadata={"help": ...}``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerCallback, set_seed

from peft_catalyst.app.errors import UserError
from peft_catalyst.app.mentor_setup import (
    MentorArguments,
    build_mentor,
    needs_doer,
    open_mentor,
    validate_mentor_args,
)
from peft_catalyst.app.output_dir import prepare_output_dir
from peft_catalyst.history import write_json_atomic
from peft_catalyst.mentors.base import redact_url
from peft_catalyst.projection import (
    read_soft_prompt,
    set_soft_prompt_from_text,
    soft_prompt_text,
    write_soft_prompt_,
)
from peft_catalyst.quiet import no_pin_memory_without_accelerator
from peft_catalyst.records import Compute, KeptPrompt, RoundRecord, RunSummary, ranking_key
from peft_catalyst.trainer.keep_best import keeps_best

logger = logging.getLogger(__name__)

PACKAGED_MODELS = ("smollm2", "minilm")
PACKAGED_DATASETS = ("rotten_tomatoes", "trec", "sms_spam")
PROMPT_INITS = ("random", "text", "vocab")


@dataclass
class ModelArguments:
    """Which model is prompt-tuned (the *doer*), and the soft prompt's shape."""

    model: Literal["smollm2", "minilm"] = field(
        default="smollm2",
        metadata={"help": "Packaged doer: 'smollm2' (causal LM, label words) or 'minilm' (sequence classifier)."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Any local or Hub model instead of a packaged one (overrides --model)."},
    )
    doer_kind: Literal["auto", "causal_lm", "seq_cls"] = field(
        default="auto",
        metadata={"help": "How --model_name_or_path classifies: by label words ('causal_lm') or a head ('seq_cls')."},
    )
    num_virtual_tokens: int = field(default=8, metadata={"help": "Length of the soft prompt in virtual tokens."})
    prompt_init: Literal["random", "text", "vocab"] = field(
        default="random",
        metadata={"help": "Soft prompt init: 'random' (PEFT RANDOM), 'text' (the task's manual prompt), 'vocab'."},
    )
    projection_metric: Literal["cosine", "l2", "dot"] = field(
        default="cosine", metadata={"help": "How virtual tokens are read as vocabulary tokens."}
    )
    max_length: int = field(default=128, metadata={"help": "Longest input in tokens (longer texts are cut)."})

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"--num_virtual_tokens must be at least 1, got {self.num_virtual_tokens}.")
        if self.max_length < 1:
            raise ValueError(f"--max_length must be at least 1, got {self.max_length}.")


#: Split sizes of the embedded SmolLM2 default (the packaged tasks hold 200 catalyst, 300 validation and 500 test
#: examples).
SMOLLM2_DEMO_SIZES = {"catalyst": 100, "validation": 100, "test": 300}


#: The split-size options of the command (counts, or fractions of the task's pool of examples).
SIZE_FLAGS = ("train_size", "catalyst_size", "validation_size", "test_size")
_SIZE = "a count (200) or a fraction of the task's examples in (0, 1) (0.2); default: the task's"


@dataclass
class DataArguments:
    """The task: a packaged dataset or any ``datasets`` dataset."""

    dataset: Literal["rotten_tomatoes", "trec", "sms_spam"] = field(
        default="rotten_tomatoes",
        metadata={"help": "Packaged task: 'rotten_tomatoes' (sentiment), 'trec' (6 question types), 'sms_spam'."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Any datasets dataset (Hub name, save_to_disk dir, or CSV/JSON file) instead of --dataset."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of --dataset_name."})
    text_column: str = field(default="text", metadata={"help": "Text column of --dataset_name."})
    label_column: str = field(default="label", metadata={"help": "Label column of --dataset_name."})
    task_description: str | None = field(
        default=None, metadata={"help": "What the mentor is told the task is (default: the task's own description)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/catalyst/validation/test split."})
    train_size: float | None = field(default=None, metadata={"help": f"Training examples: {_SIZE}."})
    catalyst_size: float | None = field(
        default=None, metadata={"help": f"Held-out examples candidates are scored on: {_SIZE}."}
    )
    validation_size: float | None = field(default=None, metadata={"help": f"Validation examples: {_SIZE}."})
    test_size: float | None = field(default=None, metadata={"help": f"Test examples reported: {_SIZE}."})

    def __post_init__(self) -> None:
        """Sizes become counts (int) or fractions (float in (0, 1)); anything else is refused before data loads."""
        for name in SIZE_FLAGS:
            value = getattr(self, name)
            if value is None:
                continue
            least = 0 if name == "validation_size" else 1
            if float(value).is_integer() and value >= least:
                setattr(self, name, int(value))
            elif not 0 < value < 1:
                kind = "a count of at least 1" if least else "a count"
                raise ValueError(f"--{name} must be {kind} or a fraction in (0, 1), got {value:g}.")


@dataclass
class RunArguments:
    """What the command does around training."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": (
                "Write into an output_dir that exists and is not empty: files of yours there are kept (never "
                "deleted); the outputs an earlier peft-catalyst run wrote there are replaced."
            )
        },
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Batch size of the test-accuracy evaluations."})
    plot: bool = field(default=True, metadata={"help": "Write run.png (needs matplotlib); --no_plot skips it."})


def embedded_defaults(model: str, model_name_or_path: str | None, dataset: str) -> dict[str, Any]:
    """Training defaults sized for 2 CPU cores (the README's timing), per packaged doer."""
    name = "custom" if model_name_or_path else model
    stamp = time.strftime("%Y%m%d-%H%M%S")
    defaults: dict[str, Any] = {
        "output_dir": str(Path("runs") / f"{dataset}-{name}-{stamp}"),
        "learning_rate": 3e-2,
        "logging_steps": 5,
        # A checkpoint at each round boundary (save_steps = catalyst_stage_steps, set by the argument parser unless
        # given), only the newest kept: a killed run resumes with --resume_from_checkpoint true (docs/cli.md).
        "save_strategy": "steps",
        "save_total_limit": 1,
        "report_to": "none",
        "catalyst_num_candidates": 4,
        "catalyst_trajectory_points": 4,
        "catalyst_eval_size": 64,
        # Rank prompts by the cross-entropy over the label words only: the LM loss over the whole vocabulary also
        # rewards prompts that merely make the label words likelier, which does not help accuracy.
        "catalyst_metric": "label_loss",
        # Keep the best prompt by validation (the starting prompt included, see peft_catalyst.trainer.keep_best):
        # evaluated at step 0, at every stage's end (eval_steps = catalyst_stage_steps unless given) and at the last
        # step; the best's checkpoint is kept beside the newest.
        "eval_strategy": "steps",
        "load_best_model_at_end": True,
        # By the label words' cross-entropy, not accuracy: on the SmolLM2 default's 100 validation examples accuracy
        # moves in steps of 0.01, and a make-demo run kept its start (validation 0.81 vs 0.79 at the end; test 0.713
        # vs 0.807) while the label loss fell at every evaluation (0.494, 0.459, 0.426, 0.419).
        "metric_for_best_model": "label_loss",
    }
    if name == "minilm":
        defaults.update(
            max_steps=150,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=32,
            catalyst_rounds=3,
            catalyst_stage_steps=30,
        )
    else:
        defaults.update(
            max_steps=60,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=16,
            catalyst_rounds=2,
            catalyst_stage_steps=20,
        )
    # A checkpoint and a validation at each round boundary (the argument parser keeps them on the stage length when
    # --catalyst_stage_steps is given; TrainingArguments checks at parse time that saves fall on evaluations).
    defaults.update(eval_steps=defaults["catalyst_stage_steps"], save_steps=defaults["catalyst_stage_steps"])
    if name == "smollm2":
        # Take a restart only when its full-vocabulary loss (the training objective) is no worse than the current
        # prompt's: text prompts rank the label words better (label_loss) at 2-4x the trained prompt's loss, and the
        # training loss jumped after every such restart (benchmarks/results/restart_shock/).
        defaults["catalyst_restart_loss_ratio"] = 1.0
        # Plain prompt tuning from PEFT's SAMPLE_VOCAB start, no mentor and no rounds: benchmark v4 found nothing of
        # ours above the best PEFT start (SAMPLE_VOCAB on both tasks) at equal compute (README "Benchmark",
        # benchmarks/results/compare/v4.md), and on this job's 60 steps it kept 82.3% on test against the screened
        # start's 82.6% (-0.3 points [-3.2, +2.5], 5 seeds) at 46% of its tuning compute
        # (benchmarks/results/default_start/report.md). The screened start and the mentor's rounds, the default until
        # then, are one file away: examples/configs/screened_start.yaml. The restart guard above and halving stay the
        # defaults for runs that turn rounds on.
        defaults.update(
            prompt_init="vocab",
            mentor="none",
            catalyst_rounds=0,
            catalyst_initial_round=False,
            catalyst_screen_schedule="halving",
        )
        # The packaged task's first 300 test and 100 catalyst examples: a SmolLM2 forward pass costs about 0.16 s per
        # example on 2 slow cores, and the test evaluations, the validation evaluations that keep the best prompt (4 of
        # 100 examples) and the rounds' scoring are most of the run's time.
        defaults.update(
            catalyst_size=SMOLLM2_DEMO_SIZES["catalyst"],
            validation_size=SMOLLM2_DEMO_SIZES["validation"],
            test_size=SMOLLM2_DEMO_SIZES["test"],
        )
    return defaults


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PromptTunedModel:
    """The model being prompt-tuned (a PEFT model with a CATALYST adapter) with its tokenizer, the task and the task's
    Trainer plumbing (``spec``); ``kind`` is ``causal_lm`` or ``seq_cls``, ``name`` the packaged name or the path."""

    model: Any
    tokenizer: Any
    task: Any
    spec: Any
    kind: str
    name: str


def task_label_words(task: Any, kind: str) -> list[str]:
    """The labels the doer answers with: the label words of a causal LM (without their leading space), else the
    class names."""
    return [w.strip() for w in task.label_words] if kind == "causal_lm" else list(task.label_names)


def load_task_data(data: DataArguments):
    """The task's splits (packaged or ``datasets``); missing columns and unknown datasets become ``UserError``."""
    from peft_catalyst.app.data import load_hf_task, load_task

    sizes = {
        "train_size": data.train_size,
        "catalyst_size": data.catalyst_size,
        "validation_size": data.validation_size,
        "test_size": data.test_size,
    }
    try:
        if data.dataset_name:
            task = load_hf_task(
                data.dataset_name,
                data.dataset_config,
                data.text_column,
                data.label_column,
                seed=data.split_seed,
                **{k: v for k, v in sizes.items() if v is not None},
                task_description=data.task_description,
            )
        else:
            task = load_task(data.dataset, seed=data.split_seed, **sizes)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if data.task_description:
        task.task_description = data.task_description
    return task


def build_prompt_tuned_model(model_args: ModelArguments, data: DataArguments, task=None) -> PromptTunedModel:
    """Load the model to prompt-tune, wrap it with a CATALYST adapter and prepare the task for it."""
    from peft import get_peft_model

    from peft_catalyst.app.tasks import prepare_task
    from peft_catalyst.tuners.catalyst import CatalystConfig

    task = task or load_task_data(data)
    kind, name = model_kind(model_args), model_args.model_name_or_path or model_args.model
    model, tokenizer = load_model_and_tokenizer(kind, model_args.model_name_or_path, task.num_labels)
    if kind == "seq_cls":  # saved with the adapter (CatalystMixin._save), so a pipeline answers in class names
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {name: i for i, name in enumerate(task.label_names)}
    max_length = model_args.max_length
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and max_length + model_args.num_virtual_tokens > positions:
        max_length = positions - model_args.num_virtual_tokens
        logger.warning(
            "max_length lowered to %d: with %d virtual tokens the model reads at most %d positions.",
            max_length,
            model_args.num_virtual_tokens,
            positions,
        )
    try:
        spec = prepare_task(task, tokenizer, kind, max_length=max_length)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    config = CatalystConfig(
        task_type="CAUSAL_LM" if kind == "causal_lm" else "SEQ_CLS",
        num_virtual_tokens=model_args.num_virtual_tokens,
        prompt_tuning_init="SAMPLE_VOCAB" if model_args.prompt_init == "vocab" else "RANDOM",
        task_description=task.task_description,
        projection_metric=model_args.projection_metric,
    )
    peft_model = get_peft_model(model, config)
    if model_args.prompt_init == "text":
        set_soft_prompt_from_text(peft_model, tokenizer, task.manual_prompt)
    return PromptTunedModel(peft_model, tokenizer, task, spec, kind, name)


def model_kind(model_args: ModelArguments) -> str:
    """The doer's kind: "causal_lm" or "seq_cls", from the packaged name, --doer_kind, or the checkpoint's config
    (a path or id that does not load is a ``UserError``)."""
    if not model_args.model_name_or_path:
        return "seq_cls" if model_args.model == "minilm" else "causal_lm"
    if model_args.doer_kind != "auto":
        return model_args.doer_kind
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # one line
        raise UserError(f"Cannot load model {model_args.model_name_or_path!r}: {first}") from exc
    architectures = " ".join(getattr(config, "architectures", None) or [])
    return "seq_cls" if "SequenceClassification" in architectures or config.model_type == "bert" else "causal_lm"


def load_model_and_tokenizer(kind: str, model_name_or_path: str | None = None, num_labels: int = 2):
    """``(model, tokenizer)`` for a doer: the packaged SmolLM2 (``causal_lm``) or MiniLM (``seq_cls``) when no
    ``model_name_or_path`` is given, else that checkpoint (a pad token is set when it has none)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if model_name_or_path is None:
        if kind == "seq_cls":
            from peft_catalyst.app.assets import load_minilm_for_sequence_classification

            return load_minilm_for_sequence_classification(num_labels=num_labels)
        from peft_catalyst.app.assets import load_smollm2

        return load_smollm2()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        if kind == "seq_cls":
            model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, num_labels=num_labels)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot load model {model_name_or_path!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class RoundSnapshots(TrainerCallback):
    """After each round, keep the soft prompt and its catalyst score (for the test accuracy of the best round)."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.snapshots: list[dict[str, Any]] = []

    def on_step_end(self, args, state, control, **kwargs):
        history = self.trainer.catalyst_history
        if len(history) > len(self.snapshots):
            record = history[-1]
            self.snapshots.append(
                {
                    "round": record.round,
                    "score": _score_after(record),
                    "prompt": read_soft_prompt(self.trainer.model),
                }
            )
        return control


class FinalStepAccuracy(TrainerCallback):
    """Test accuracy of the final step's prompt, measured at that step (before ``load_best_model_at_end`` loads the
    kept one)."""

    def __init__(self, measure) -> None:
        self.measure = measure
        self.accuracy: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if keeps_best(args) and state.global_step >= state.max_steps and self.accuracy is None:
            self.accuracy = self.measure()
        return control


def _resume_argument(resume: str | bool | None) -> str | bool | None:
    """``--resume_from_checkpoint`` as ``Trainer.train`` takes it (``true``: the last checkpoint in output_dir)."""
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        return resume.lower() == "true"
    return resume or None


def _score_after(record: RoundRecord) -> float | None:
    """Catalyst score of the prompt a round left behind (the winner's, a race winner's final one, or the current
    prompt's when it was kept); None when nothing decided (skipped, blind)."""
    decisive = record.decisive
    return decisive.score if decisive is not None else None


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    mentor_args: MentorArguments,
    run_args: RunArguments,
    training_args,
) -> dict[str, Any]:
    """Train with mentor rounds and write everything a person needs into ``output_dir``; returns the metrics."""
    from peft_catalyst.app.tasks import evaluate_accuracy
    from peft_catalyst.trainer import CatalystTrainer

    started = time.perf_counter()
    resume = training_args.resume_from_checkpoint
    out = prepare_output_dir(training_args.output_dir, run_args.overwrite_output_dir, resume)
    no_pin_memory_without_accelerator(training_args)
    set_seed(training_args.seed)  # the soft prompt's RANDOM init and a new classification head depend on it
    early = not needs_doer(mentor_args)  # a server is probed before anything loads
    mentor, unreachable = open_mentor(mentor_args, out) if early else (None, None)
    tuned = build_prompt_tuned_model(model_args, data_args)
    if not early:
        shared = (tuned.model.get_base_model(), tuned.tokenizer) if tuned.name == "smollm2" else None
        mentor, unreachable = open_mentor(mentor_args, out, shared, tuned.tokenizer)

    def test_accuracy() -> float:
        shown = not training_args.disable_tqdm  # a bar with the time left, as the trainer shows its own
        return evaluate_accuracy(tuned.model, tuned.spec, "test", run_args.eval_batch_size, progress=shown)["accuracy"]

    initial_prompt = soft_prompt_text(tuned.model, tuned.tokenizer)
    initial = test_accuracy()
    logger.info("test accuracy of the initial prompt: %.4f", initial)
    kwargs = tuned.spec.trainer_kwargs()
    catalyst_dataset = tuned.spec.datasets["catalyst"]
    if training_args.catalyst_labels is None:  # the mentor is told the words the doer answers with
        training_args.catalyst_labels = task_label_words(tuned.task, tuned.kind)
    if mentor is None and (training_args.catalyst_proposer_counts or {}).get("mentor"):
        training_args.catalyst_proposers = None  # the mentor could not be reached: no rounds, as without a mix
    trainer = CatalystTrainer(
        model=tuned.model, args=training_args, mentor=mentor, catalyst_dataset=catalyst_dataset, **kwargs
    )
    snapshots = RoundSnapshots(trainer)
    trainer.add_callback(snapshots)
    final_step = FinalStepAccuracy(test_accuracy)
    trainer.add_callback(final_step)
    trainer.train(resume_from_checkpoint=_resume_argument(resume))
    trainer.save_model(str(out))  # the kept prompt when the run keeps its best by validation
    kept = trainer.catalyst.kept
    same = kept is not None and kept.step == kept.final_step and final_step.accuracy is not None
    final = final_step.accuracy if same else test_accuracy()  # the last step's prompt kept: measured already

    best = _best_snapshot(snapshots.snapshots, training_args.catalyst_higher_is_better)
    best_accuracy = None
    if best is not None:
        final_prompt = read_soft_prompt(tuned.model)
        write_soft_prompt_(tuned.model, best["prompt"])
        best_accuracy = test_accuracy()
        write_soft_prompt_(tuned.model, final_prompt)

    summary = trainer.catalyst_summary()
    metrics = {
        "task": tuned.task.name,
        "doer": tuned.name,
        "mentor": getattr(mentor, "name", None),
        "mentor_unreachable": unreachable,  # why a mentor that was asked for could not be had at start (None: no)
        "test_examples": len(tuned.spec.datasets["test"]),
        # "final" is the saved adapter's (the kept prompt's when the run keeps its best by validation), "final_step"
        # the prompt the last step left
        "test_accuracy": {
            "initial": initial,
            "final": final,
            "final_step": final_step.accuracy if final_step.accuracy is not None else final,
            "best_round": best_accuracy,
        },
        "best_round": best["round"] if best else None,
        "kept": asdict(kept) if kept is not None else None,
        "prompts": {"initial": initial_prompt, "final": soft_prompt_text(tuned.model, tuned.tokenizer)},
        "catalyst": summary.to_dict(),
        "train_loss": trainer.state.log_history[-1].get("train_loss") if trainer.state.log_history else None,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "arguments": {
            "model": asdict(model_args),
            "data": _public_data_args(data_args),
            "mentor": {**asdict(mentor_args), "mentor_base_url": redact_url(mentor_args.mentor_base_url)},
        },
    }
    main_process = trainer.is_world_process_zero()  # every process holds the same metrics; one writes them
    if main_process:
        write_json_atomic(out / "metrics.json", metrics)
    trainer.create_model_card(metrics=_card_metrics(metrics), task_name=tuned.task.name)
    if run_args.plot and main_process:
        try:
            from peft_catalyst.app.plotting import plot_run

            plot_run(trainer.state.log_history, trainer.catalyst_history, out / "run.png")
        except ImportError as exc:
            logger.warning("run.png not written: %s (pip install matplotlib)", exc)
    return metrics


def _public_data_args(data: DataArguments) -> dict[str, Any]:
    """The data arguments as ``metrics.json`` keeps them: a local ``--dataset_name`` by its file name only."""
    from peft_catalyst.app.data import public_dataset_name

    kept = asdict(data)
    if data.dataset_name:
        kept["dataset_name"] = public_dataset_name(data.dataset_name)
    return kept


def _card_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the run folder's model card shows in its evaluation table: test accuracies and the gradient steps."""
    accuracy, summary = metrics["test_accuracy"], metrics["catalyst"]
    rows = {f"test_accuracy_{name}": value for name, value in accuracy.items() if value is not None}
    rows["test_examples"] = metrics["test_examples"]
    kept = metrics.get("kept")
    if kept:
        rows["kept_step"] = kept["step"]
        rows.update({f"validation_{kept['metric']}_{k}": kept[v] for k, v in (("kept", "score"), ("final_step",
                     "final_score")) if kept[v] is not None})  # fmt: skip
    rows.update({name: summary[name] for name in ("total_steps", "main_steps", "race_steps")})
    compute = Compute.from_dict(summary.get("compute"))
    if compute is not None and compute.total is not None:
        rows["forward_equivalent_tokens"] = compute.total  # every part; the card's Compute row splits it
    return rows


def _best_snapshot(snapshots: list[dict[str, Any]], higher_is_better: bool) -> dict[str, Any] | None:
    scored = [s for s in snapshots if s["score"] is not None and math.isfinite(s["score"])]
    if not scored:
        return None
    return min(scored, key=lambda s: ranking_key(s["score"], higher_is_better))


def summary_lines(metrics: dict[str, Any], output_dir: str) -> list[str]:
    """The last lines the command prints: accuracy before and after, rounds, gradient steps, LLM usage, wall time."""
    acc = metrics["test_accuracy"]
    best = "" if acc["best_round"] is None else f" (best round {metrics['best_round']}: {acc['best_round']:.3f})"
    cat = RunSummary.from_dict(metrics["catalyst"])
    usage = cat.mentor_usage or {}
    minutes, seconds = divmod(int(metrics["wall_time_s"]), 60)
    hits = usage.get("cache_hits", 0)
    replayed = f"; {hits} repl{'y' if hits == 1 else 'ies'} from the cache" if hits else ""
    steps = f"{cat.total_steps}" + (f" ({cat.main_steps} stages + {cat.race_steps} races)" if cat.race_steps else "")
    if cat.compute is not None:
        steps += f"; {cat.compute.short()}"
    spec = metrics.get("arguments", {}).get("mentor", {}).get("mentor")
    paired = cat.beat_random_line()  # None for --mentor random: random against random controls says nothing
    if cat.mixed_proposers and cat.proposers_line():  # catalyst_proposers: the wins per proposer
        paired = "; ".join(filter(None, [paired, cat.proposers_line()]))
    failed = usage.get("failures", 0)
    failed_text = f" ({failed} failed)" if failed else ""
    if spec == "random":  # the control draws words: no LLM is asked
        asked = f"random draws {usage.get('calls', 0)}, no LLM calls"
    else:
        asked = (
            f"LLM calls {usage.get('calls', 0)}{failed_text}, tokens {usage.get('prompt_tokens', 0)} prompt "
            f"+ {usage.get('completion_tokens', 0)} completion"
        )
    why = cat.skip_reasons_text()
    counts = f"accepted {cat.accepted}, kept {cat.kept}, skipped {cat.skipped}" + (f": {why}" if why else "")
    rounds = f"rounds: {cat.rounds_line()}"
    rounds = rounds[:-1] + f"; {counts})" if rounds.endswith(")") else f"{rounds} ({counts})"
    if metrics.get("mentor_unreachable"):
        rounds = f"rounds: 0 (the mentor could not be reached at start: {metrics['mentor_unreachable']})"
    kept = KeptPrompt.from_dict(metrics.get("kept"))
    kept_lines = []
    if kept is not None:  # the saved adapter holds the kept prompt: say which, and what the last step had
        final_step = acc.get("final_step")
        tail = "" if final_step is None or kept.step == kept.final_step else f"; final step's prompt {final_step:.3f}"
        kept_lines.append(f"{kept.line()}; test accuracy kept {acc['final']:.3f}{tail}")
    return [
        f"test accuracy ({metrics['test_examples']} examples): initial {acc['initial']:.3f} -> "
        f"{'kept' if kept is not None else 'final'} {acc['final']:.3f}{best}",
        *kept_lines,
        f"{rounds}; gradient steps {steps}; {asked}{replayed}" + (f"; {paired}" if paired else ""),
        f"final prompt: {metrics['prompts']['final']!r}",
        f"wall time {minutes} min {seconds:02d} s; outputs in {output_dir}",
    ]


__all__ = [
    "DataArguments",
    "MentorArguments",
    "ModelArguments",
    "PromptTunedModel",
    "RunArguments",
    "UserError",
    "build_mentor",
    "build_prompt_tuned_model",
    "validate_mentor_args",
    "load_model_and_tokenizer",
    "load_task_data",
    "embedded_defaults",
    "run",
    "summary_lines",
]
