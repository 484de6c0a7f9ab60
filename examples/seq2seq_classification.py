"""Text-to-text classification: prompt-tune a seq2seq model (T5-style) to write the label, with LLM-mentor restarts.

The encoder reads ``Review: {text}\\nSentiment:`` and the decoder is trained to write the label word (``positive``).
Every ``--catalyst_stage_steps`` optimizer steps the mentor proposes text prompts and the best one on a held-out split
(the current soft prompt included) becomes the restart point. No seq2seq model is packaged, so name one::

    python examples/seq2seq_classification.py --model_name_or_path google/flan-t5-small --output_dir runs/t5
    accelerate launch examples/seq2seq_classification.py --model_name_or_path google/flan-t5-small
    # the mentor defaults to the packaged SmolLM2 (offline); or an OpenAI-compatible server (key in OPENAI_API_KEY):
    ... --mentor openai:gpt-4o-mini
    # share it: --push_to_hub --hub_model_id <you>/<name>

Accuracy reads the decoder's first step: the label whose first token scores highest. The output folder holds the
adapter, ``portable/`` (a plain PEFT copy), ``catalyst_history.json``, test metrics and a ``README.md`` model card.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers
from peft import get_peft_model
from transformers import DataCollatorForSeq2Seq, HfArgumentParser, set_seed

from peft_catalyst import CatalystConfig, CatalystTrainer, CatalystTrainingArguments, quiet
from peft_catalyst.app.runner import DataArguments, MentorArguments, build_mentor, load_task_data

logger = logging.getLogger(__name__)

# Training defaults that suit prompt tuning (override any of them on the command line).
DEFAULTS = dict(
    output_dir="runs/seq2seq_classification",
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
    """The doer and its soft prompt (data and mentor options: DataArguments, MentorArguments)."""

    model_name_or_path: str = field(
        metadata={"help": "Seq2seq model (Hub id or local path), e.g. google/flan-t5-small. Required."}
    )
    num_virtual_tokens: int = field(default=8, metadata={"help": "Length of the soft prompt."})
    max_length: int = field(default=128, metadata={"help": "Input tokens per example, before the virtual tokens."})


class FirstStepLabelScores:
    """``preprocess_logits_for_metrics``: the label words' first-token logits at the decoder's first target step."""

    def __init__(self, first_token_ids: list[int]) -> None:
        self.ids = torch.as_tensor(first_token_ids)

    def __call__(self, logits, labels: torch.Tensor) -> torch.Tensor:
        """(batch, num_labels) scores; PEFT may prepend virtual tokens to the decoder, so count from the end."""
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        return logits[:, -labels.shape[1], :][:, self.ids.to(logits.device)]


def accuracy_metric(first_token_ids: list[int]):
    """``compute_metrics``: argmax of the label scores against the class of each target's first token."""
    lookup = {token: cls for cls, token in enumerate(first_token_ids)}

    def compute(eval_pred) -> dict[str, float]:
        predictions, label_ids = eval_pred[0], np.asarray(eval_pred[1])
        truth = np.asarray([lookup.get(int(t), -1) for t in label_ids[:, 0]])
        return {"accuracy": float((np.asarray(predictions).argmax(-1) == truth).mean())}

    return compute


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
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(args.model_name_or_path)
    targets = [tokenizer(word.strip())["input_ids"] for word in task.label_words]  # e.g. "positive</s>"
    first_ids = [ids[0] for ids in targets]
    if len(set(first_ids)) != len(first_ids):
        raise ValueError(f"The label words {task.label_words} start with the same token for this tokenizer.")

    def tokenize(batch):
        inputs = tokenizer([task.format(t) for t in batch["text"]], truncation=True, max_length=args.max_length)
        return {"input_ids": inputs["input_ids"], "labels": [targets[label] for label in batch["label"]]}

    data = {
        name: split.map(tokenize, batched=True, remove_columns=split.column_names)
        for name, split in task.splits.items()
    }
    config = CatalystConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=args.num_virtual_tokens, task_description=task.task_description
    )
    peft_model = get_peft_model(model, config)
    trainer = CatalystTrainer(
        model=peft_model,
        args=training_args,
        mentor=build_mentor(mentor_args, training_args.output_dir, tokenizer=tokenizer),
        train_dataset=data["train"],
        catalyst_dataset=data["catalyst"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer),
        preprocess_logits_for_metrics=FirstStepLabelScores(first_ids),
        compute_metrics=accuracy_metric(first_ids),
    )
    trainer.train()
    metrics = trainer.evaluate(data["test"], metric_key_prefix="test")
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
