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
        --model_name_or_path HuggingFaceTB/SmolLM2-360M --mentor openai:gpt-4o-mini
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

from peft_catalyst import CatalystConfig, CatalystTrainer, CatalystTrainingArguments, quiet
from peft_catalyst.app.runner import (
    DataArguments,
    MentorArguments,
    build_mentor,
    load_model_and_tokenizer,
    load_task_data,
)
from peft_catalyst.app.tasks import prepare_task

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
    catalyst_metric="label_loss",  # cross-entropy over the label words only: what accuracy depends on
    logging_steps=10,
    save_strategy="no",
    report_to="none",
)


@dataclass
class ScriptArguments:
    """The doer and its soft prompt (data and mentor options: DataArguments, MentorArguments)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Causal LM doer (Hub id or local path); default: the packaged SmolLM2-135M-Instruct."},
    )
    num_virtual_tokens: int = field(default=8, metadata={"help": "Length of the soft prompt."})
    max_length: int = field(default=128, metadata={"help": "Tokens per example, before the virtual tokens."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate on the test split, save adapter + card locally and push if asked; returns test metrics."""
    quiet.apply()  # the command line's narrow filters of upstream warnings nobody can act on; not done on import
    parser = HfArgumentParser((ScriptArguments, DataArguments, MentorArguments, CatalystTrainingArguments))
    parser.set_defaults(**DEFAULTS)
    args, data_args, mentor_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger().setLevel(training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    task = load_task_data(data_args)
    model, tokenizer = load_model_and_tokenizer("causal_lm", args.model_name_or_path)
    # The embedded mentor shares the doer's weights when the doer is the packaged SmolLM2: no second copy.
    shared = None if args.model_name_or_path else (model, tokenizer)
    spec = prepare_task(task, tokenizer, "causal_lm", max_length=args.max_length)
    config = CatalystConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=args.num_virtual_tokens, task_description=task.task_description
    )
    peft_model = get_peft_model(model, config)
    trainer = CatalystTrainer(
        model=peft_model,
        args=training_args,
        mentor=build_mentor(mentor_args, training_args.output_dir, shared, tokenizer),
        catalyst_dataset=spec.datasets["catalyst"],
        **spec.trainer_kwargs(),
    )
    trainer.train()
    metrics = trainer.evaluate(spec.datasets["test"], metric_key_prefix="test")
    trainer.log_metrics("test", metrics)
    trainer.save_metrics("test", metrics)
    if training_args.push_to_hub:  # saves the folder, writes the card with the test metrics, uploads the folder
        trainer.push_to_hub(metrics=metrics, task_name=task.name)
    else:  # the same folder, to look at: adapter, portable copy, history and model card
        trainer.save_model()
        trainer.create_model_card(metrics=metrics, task_name=task.name)
        logger.info("Adapter, portable copy, history and model card in %s", training_args.output_dir)
    return metrics


if __name__ == "__main__":
    main()
