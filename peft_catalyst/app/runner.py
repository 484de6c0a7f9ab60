"""One catalyst run from arguments: build the prompt-tuned model, the data, the mentor and the trainer; train;
evaluate; report.

Shared by the ``peft-catalyst train`` command and the benchmarks, so both run exactly the same thing. The argument
dataclasses are ``HfArgumentParser``-friendly (every field has ``metadata={"help": ...}``).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerCallback, set_seed

from peft_catalyst.app.errors import UserError
from peft_catalyst.app.mentor_setup import MentorArguments, build_mentor, check_mentor, validate_mentor_args
from peft_catalyst.history import write_json_atomic
from peft_catalyst.projection import (
    read_soft_prompt,
    set_soft_prompt_from_text,
    soft_prompt_text,
    write_soft_prompt_,
)
from peft_catalyst.quiet import no_pin_memory_without_accelerator
from peft_catalyst.records import RoundRecord, RunSummary, ranking_key

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


#: Split sizes of the embedded SmolLM2 default (the packaged tasks hold 200 catalyst and 500 test examples).
SMOLLM2_DEMO_SIZES = {"catalyst": 100, "test": 300}


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
    train_size: int | None = field(default=None, metadata={"help": "Training examples (default: the task's)."})
    catalyst_size: int | None = field(
        default=None,
        metadata={"help": "Held-out examples candidates are scored on (default: the task's)."},
    )
    validation_size: int | None = field(default=None, metadata={"help": "Validation examples (default: the task's)."})
    test_size: int | None = field(
        default=None,
        metadata={"help": "Test examples reported (default: the task's)."},
    )


@dataclass
class RunArguments:
    """What the command does around training."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that exists (its content is replaced)."}
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
        "save_strategy": "no",
        "report_to": "none",
        "catalyst_num_candidates": 4,
        "catalyst_trajectory_points": 4,
        "catalyst_eval_size": 64,
        # Rank prompts by the cross-entropy over the label words only: the LM loss over the whole vocabulary also
        # rewards prompts that merely make the label words likelier, which does not help accuracy.
        "catalyst_metric": "label_loss",
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
    if name == "smollm2":
        # Take a restart only when its full-vocabulary loss (the training objective) is no worse than the current
        # prompt's: text prompts rank the label words better (label_loss) at 2-4x the trained prompt's loss, and the
        # training loss jumped after every such restart (benchmarks/results/restart_shock/).
        defaults["catalyst_restart_loss_ratio"] = 1.0
        # The packaged task's first 300 test and 100 catalyst examples: a SmolLM2 forward pass costs about 0.16 s per
        # example on 2 slow cores, and three test evaluations plus the rounds' scoring are most of the run's time.
        defaults.update(catalyst_size=SMOLLM2_DEMO_SIZES["catalyst"], test_size=SMOLLM2_DEMO_SIZES["test"])
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


def prepare_output_dir(output_dir: str, overwrite: bool, resume_from_checkpoint: str | bool | None = None) -> Path:
    """Create ``output_dir``; an existing non-empty one is refused unless ``overwrite``.

    Resuming (``resume_from_checkpoint``) continues the run in its own ``output_dir``: it is kept as it is, never
    refused nor emptied; a checkpoint path that does not exist is refused.
    """
    path = Path(output_dir)
    if resume_from_checkpoint:
        if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() not in ("true", "false"):
            if not Path(resume_from_checkpoint).is_dir():
                raise UserError(f"--resume_from_checkpoint: no such checkpoint folder {resume_from_checkpoint!r}.")
        path.mkdir(parents=True, exist_ok=True)
        return path
    from accelerate import PartialState

    state = PartialState()  # several processes (torchrun, accelerate launch): only the main one changes the folder
    occupied = path.exists() and any(path.iterdir())
    if occupied and not overwrite:
        raise UserError(f"output_dir {path} exists and is not empty: pick another one or pass --overwrite_output_dir.")
    state.wait_for_everyone()  # every process looked before the folder changes
    if state.is_main_process:
        if occupied:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    return path


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
    tuned = build_prompt_tuned_model(model_args, data_args)
    shared = (tuned.model.get_base_model(), tuned.tokenizer) if tuned.name == "smollm2" else None
    mentor = check_mentor(build_mentor(mentor_args, out, shared, tuned.tokenizer), mentor_args.mentor_required)

    def test_accuracy() -> float:
        return evaluate_accuracy(tuned.model, tuned.spec, "test", batch_size=run_args.eval_batch_size)["accuracy"]

    initial_prompt = soft_prompt_text(tuned.model, tuned.tokenizer)
    initial = test_accuracy()
    logger.info("test accuracy of the initial prompt: %.4f", initial)
    kwargs = tuned.spec.trainer_kwargs()
    catalyst_dataset = tuned.spec.datasets["catalyst"]
    if training_args.catalyst_labels is None:  # the mentor is told the words the doer answers with
        training_args.catalyst_labels = task_label_words(tuned.task, tuned.kind)
    trainer = CatalystTrainer(
        model=tuned.model, args=training_args, mentor=mentor, catalyst_dataset=catalyst_dataset, **kwargs
    )
    snapshots = RoundSnapshots(trainer)
    trainer.add_callback(snapshots)
    trainer.train(resume_from_checkpoint=_resume_argument(resume))
    trainer.save_model(str(out))
    final = test_accuracy()

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
        "test_examples": len(tuned.spec.datasets["test"]),
        "test_accuracy": {"initial": initial, "final": final, "best_round": best_accuracy},
        "best_round": best["round"] if best else None,
        "prompts": {"initial": initial_prompt, "final": soft_prompt_text(tuned.model, tuned.tokenizer)},
        "catalyst": summary.to_dict(),
        "train_loss": trainer.state.log_history[-1].get("train_loss") if trainer.state.log_history else None,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "arguments": {"model": asdict(model_args), "data": asdict(data_args), "mentor": asdict(mentor_args)},
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


def _card_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the run folder's model card shows in its evaluation table: test accuracies and the gradient steps."""
    accuracy, summary = metrics["test_accuracy"], metrics["catalyst"]
    rows = {f"test_accuracy_{name}": value for name, value in accuracy.items() if value is not None}
    rows["test_examples"] = metrics["test_examples"]
    rows.update({name: summary[name] for name in ("total_steps", "main_steps", "race_steps")})
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
    paired = cat.beat_random_line()
    spec = metrics.get("arguments", {}).get("mentor", {}).get("mentor")
    if spec == "random":  # the control draws words: no LLM is asked
        asked = f"random draws {usage.get('calls', 0)}, no LLM calls"
    else:
        asked = (
            f"LLM calls {usage.get('calls', 0)}, tokens {usage.get('prompt_tokens', 0)} prompt "
            f"+ {usage.get('completion_tokens', 0)} completion"
        )
    return [
        f"test accuracy ({metrics['test_examples']} examples): initial {acc['initial']:.3f} -> final "
        f"{acc['final']:.3f}{best}",
        f"rounds: {cat.rounds} (accepted {cat.accepted}, kept {cat.kept}, skipped {cat.skipped}); gradient steps "
        f"{steps}; {asked}{replayed}" + (f"; {paired}" if paired else ""),
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
