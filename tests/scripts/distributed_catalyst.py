"""Run by tests/test_distributed.py under ``accelerate launch --num_processes 2 --cpu``: a tiny CatalystTrainer
run whose mentor is an OpenAI-compatible loopback server; each rank writes the soft prompt's hash after every
round to ``<out>/rank<k>.json``. ``--keep_best max|min`` also keeps the best prompt by validation
(``load_best_model_at_end``, ranked by the prompt's norm, largest or smallest first) and records what was kept."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from datasets import load_from_disk  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    TrainerCallback,  # noqa: E402
)

from peft_catalyst import CatalystTrainer, CatalystTrainingArguments  # noqa: E402
from peft_catalyst.mentors import OpenAIMentor  # noqa: E402
from peft_catalyst.projection import get_soft_prompt  # noqa: E402


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class RoundHashes(TrainerCallback):
    """After each round (the catalyst callback runs first), record the hash of this rank's soft prompt."""

    def __init__(self, trainer):
        self.trainer, self.hashes, self.seen = trainer, [], 0

    def on_step_end(self, args, state, control, **kwargs):
        if len(self.trainer.catalyst_history) > self.seen:
            self.seen = len(self.trainer.catalyst_history)
            self.hashes.append({"step": state.global_step, "hash": digest(get_soft_prompt(self.trainer.model).weight)})


def build_trainer(assets: Path, args: CatalystTrainingArguments, base_url: str) -> CatalystTrainer:
    """The tiny BERT run of the multi-process tests (also tests/scripts/zero3_catalyst.py): saved tokenizer, base and
    adapter, prompt and head trainable, the loopback server as mentor."""
    tok = AutoTokenizer.from_pretrained(assets / "tokenizer")
    model = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(assets / "base"), assets / "adapter", is_trainable=False
    )
    for name, param in model.named_parameters():  # PEFT loads prompt adapters frozen; train the prompt and head
        param.requires_grad = "prompt_encoder" in name or "modules_to_save" in name
    mentor = OpenAIMentor("loopback-model", base_url=base_url, api_key="sk-loopback-test-key", timeout=20)
    return CatalystTrainer(
        model=model,
        args=args,
        mentor=mentor,
        train_dataset=load_from_disk(assets / "train"),
        catalyst_dataset=load_from_disk(assets / "catalyst"),
        eval_dataset=load_from_disk(assets / "catalyst") if args.eval_strategy != "no" else None,
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--assets", required=True)
    parser.add_argument("--base_url", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--selection", default="best")
    parser.add_argument("--restart", default="full")
    parser.add_argument("--keep_best", choices=["max", "min"], default=None)
    a = parser.parse_args()
    keep_best = {}
    if a.keep_best:  # evaluate (and save) at steps 0, 4 and 8; rank by the norm: "max" keeps the N(0, 1) start
        keep_best = dict(eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4,
                         load_best_model_at_end=True, metric_for_best_model="prompt_norm",
                         greater_is_better=a.keep_best == "max")  # fmt: skip
    assets = Path(a.assets)
    # Arguments first, as in any Trainer script: they set up the distributed state (gloo on CPU) before models load.
    args = CatalystTrainingArguments(
        output_dir=a.out,
        max_steps=8,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=0.05,
        report_to=[],
        seed=0,
        disable_tqdm=True,
        use_cpu=True,
        catalyst_rounds=2,
        # Rank prompts by their norm, smaller first: token embeddings (std 0.02) beat the N(0, 1) RANDOM init, so
        # the first round restarts for sure and the test sees ranks agree after a real restart.
        catalyst_metric="prompt_norm",
        catalyst_greater_is_better=False,
        catalyst_stage_steps=3,
        catalyst_num_candidates=2,
        catalyst_trajectory_points=2,
        ddp_backend="gloo",
        catalyst_selection=a.selection,
        catalyst_race_steps=2,
        catalyst_race_controls=1,
        catalyst_restart=a.restart,
        **{"save_strategy": "no", **keep_best},
    )
    trainer = build_trainer(assets, args, a.base_url)
    model = trainer.model
    weight = get_soft_prompt(model).weight
    trainer.compute_metrics = lambda pred: {"prompt_norm": float(weight.norm())}
    hashes = RoundHashes(trainer)
    trainer.add_callback(hashes)
    race_batches: list[list[list[int]]] = []
    stage_tokens = [0]  # this rank's main-loop tokens: non-padding ids plus 4 virtual tokens per row
    step = trainer.training_step

    def spy(model, inputs, num_items_in_batch=None):
        if trainer.catalyst.racing:
            race_batches.append(inputs["input_ids"].tolist())
        else:
            stage_tokens[0] += int(inputs["attention_mask"].sum()) + 4 * len(inputs["input_ids"])
        return step(model, inputs, num_items_in_batch)

    trainer.training_step = spy
    trainer.train()
    rank = trainer.accelerator.process_index
    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "rounds": hashes.hashes,
        "final": digest(get_soft_prompt(trainer.model).weight),
        "statuses": [r.decision.value for r in trainer.catalyst_history],
        "candidate_scores": [[c.score for c in r.candidates] for r in trainer.catalyst_history],
        "race_steps": [r.race_steps for r in trainer.catalyst_history],
        "race_batches": race_batches,
        "stage_tokens": stage_tokens[0],
        "compute": trainer.catalyst_summary().compute.to_dict(),
        "shapes": [r.shape.to_dict() if r.shape else None for r in trainer.catalyst_history],
        "arm_shapes": [[x.shape.to_dict() for x in r.race.arms] if r.race else [] for r in trainer.catalyst_history],
    }
    if a.keep_best:
        from dataclasses import asdict

        from safetensors.torch import load_file

        trainer.save_model(str(Path(a.out) / "saved"))
        trainer.accelerator.wait_for_everyone()
        result["kept"] = asdict(trainer.catalyst.kept)
        result["evals"] = {
            e["step"]: e["eval_prompt_norm"] for e in trainer.state.log_history if "eval_prompt_norm" in e
        }
        result["checkpoints"] = {
            int(folder.name.split("-")[1]): digest(
                load_file(folder / "adapter_model.safetensors")["prompt_embeddings"]
            )
            for folder in Path(a.out).glob("checkpoint-*")
        }
        result["saved"] = digest(load_file(Path(a.out) / "saved" / "adapter_model.safetensors")["prompt_embeddings"])
    (Path(a.out) / f"rank{rank}.json").write_text(json.dumps(result))
    # Destroy the process group before exit, as PyTorch asks: left to interpreter teardown, a finished ZeRO-3 run
    # aborted (SIGABRT, "terminate called without an active exception") on rank 0 in one CI run.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
