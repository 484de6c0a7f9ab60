"""Classification as generation: prompt-tune a causal LM on label words, with an LLM mentor proposing restarts.

The causal LM reads ``Review: {text}\\nSentiment:`` and is trained to predict the label word (`` positive``) as the
next token. Every ``--catalyst_stage_steps`` optimizer steps the mentor proposes text prompts; the best one on a
held-out split (the current soft prompt included) becomes the restart point.

The defaults run offline: the packaged SmolLM2-135M-Instruct is the doer and the mentor, on the packaged
Rotten Tomatoes task::

    python examples/causal_lm_classification.py --output_dir runs/causal
    accelerate launch examples/causal_lm_classification.py --output_dir runs/causal
    # any causal LM, and a mentor on an OpenAI-compatible server (key in OPENAI_API_KEY):
    python examples/causal_lm_classification.py --output_dir runs/causal \\
        --model_name_or_path HuggingFaceTB/SmolLM2-360M --mentor openai --mentor_model gpt-4o-mini
    # share it: --push_to_hub --hub_model_id <you>/<name>

The output folder holds the adapter, ``portable/`` (a plain PEFT copy), ``catalyst_history.json``, test metrics and a
``README.md`` model card (what a push uploads).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import transformers
from peft import get_peft_model
from transformers import HfArgumentParser, set_seed

from peft_catalyst import CatalystConfig, CatalystTrainer, CatalystTrainingArguments
from peft_catalyst.data import load_task
from peft_catalyst.hub import save_trainer_for_hub
from peft_catalyst.mentors import Mentor, OpenAIMentor, TransformersMentor
from peft_catalyst.tasks import prepare_task

logger = logging.getLogger(__name__)

# Training defaults that suit prompt tuning (override any of them on the command line).
DEFAULTS = dict(
    output_dir="runs/causal_lm_classification",
    learning_rate=3e-2,
    max_steps=200,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=16,
    catalyst_rounds=3,
    catalyst_stage_steps=50,
    logging_steps=10,
    save_strategy="no",
    report_to="none",
)


@dataclass
class ScriptArguments:
    """What to train and who mentors it."""

    task: str = field(
        default="rotten_tomatoes", metadata={"help": "Packaged task: rotten_tomatoes, trec or sms_spam."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Causal LM doer (Hub id or local path); default: the packaged SmolLM2-135M-Instruct."},
    )
    num_virtual_tokens: int = field(default=8, metadata={"help": "Length of the soft prompt."})
    mentor: str = field(
        default="embedded",
        metadata={
            "help": "'embedded': the packaged SmolLM2 (offline); 'openai': an OpenAI-compatible server "
            "(--mentor_model, --mentor_base_url, OPENAI_API_KEY); 'none': plain prompt tuning."
        },
    )
    mentor_model: str = field(default="gpt-4o-mini", metadata={"help": "Model name for --mentor openai."})
    mentor_base_url: str | None = field(
        default=None, metadata={"help": "Server URL ending in /v1 for --mentor openai (default: OpenAI)."}
    )
    train_size: int | None = field(default=None, metadata={"help": "Training examples (default: 1000)."})
    catalyst_size: int | None = field(default=None, metadata={"help": "Held-out examples candidates are scored on."})
    validation_size: int | None = field(default=None, metadata={"help": "Validation examples (default: 300)."})
    test_size: int | None = field(
        default=None, metadata={"help": "Test examples evaluated at the end (default: 500)."}
    )
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the train/catalyst/validation/test split of the task."}
    )
    max_length: int = field(default=128, metadata={"help": "Tokens per example, before the virtual tokens."})


def load_doer(args: ScriptArguments):
    """The causal LM and its tokenizer: a given checkpoint, or the packaged SmolLM2."""
    if args.model_name_or_path is None:
        from peft_catalyst.assets import load_smollm2

        return load_smollm2()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return transformers.AutoModelForCausalLM.from_pretrained(args.model_name_or_path), tokenizer


def build_mentor(args: ScriptArguments, doer, doer_tokenizer, seed: int) -> Mentor | None:
    """The mentor chosen by ``--mentor``; the embedded one shares the doer's weights when the doer is SmolLM2."""
    if args.mentor == "none":
        return None
    if args.mentor == "openai":
        return OpenAIMentor(args.mentor_model, base_url=args.mentor_base_url, seed=seed)
    if args.mentor == "embedded":
        if args.model_name_or_path is None:  # the doer is the packaged SmolLM2: no second copy
            return TransformersMentor.embedded(doer, doer_tokenizer, seed=seed)
        return TransformersMentor.embedded(seed=seed)
    raise ValueError(f"--mentor must be 'embedded', 'openai' or 'none', got {args.mentor!r}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate on the test split, save adapter + card locally and push if asked; returns test metrics."""
    parser = HfArgumentParser((ScriptArguments, CatalystTrainingArguments))
    parser.set_defaults(**DEFAULTS)
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger().setLevel(training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    task = load_task(
        args.task,
        seed=args.split_seed,
        train_size=args.train_size,
        catalyst_size=args.catalyst_size,
        validation_size=args.validation_size,
        test_size=args.test_size,
    )
    model, tokenizer = load_doer(args)
    spec = prepare_task(task, tokenizer, "causal_lm", max_length=args.max_length)
    config = CatalystConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=args.num_virtual_tokens, task_description=task.task_description
    )
    peft_model = get_peft_model(model, config)
    trainer = CatalystTrainer(
        model=peft_model,
        args=training_args,
        mentor=build_mentor(args, model, tokenizer, training_args.seed),
        catalyst_dataset=spec.datasets["catalyst"],
        **spec.trainer_kwargs(),
    )
    trainer.train()
    metrics = trainer.evaluate(spec.datasets["test"], metric_key_prefix="test")
    trainer.log_metrics("test", metrics)
    trainer.save_metrics("test", metrics)
    saved = save_trainer_for_hub(trainer, metrics=metrics, task_name=task.name)  # what a push uploads, to look at
    if saved is not None:
        logger.info("Adapter, portable copy, history and model card in %s", saved)
    if training_args.push_to_hub:
        trainer.push_to_hub(metrics=metrics, task_name=task.name)
    return metrics


if __name__ == "__main__":
    main()
