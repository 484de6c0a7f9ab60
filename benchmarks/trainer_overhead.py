"""What the catalyst machinery costs: the same model, data and optimizer steps with stock ``Trainer`` (plain PEFT
prompt tuning) and with ``CatalystTrainer`` driven by a mentor that answers instantly.

Prints the catalyst run's wall time split into gradient steps, per-step projection, other per-step bookkeeping,
candidate scoring, the mentor call and the rest of the rounds, each as a ratio to the plain run's total, and checks
the target: projection plus bookkeeping at most 3% of gradient-step time.

    python -m benchmarks.trainer_overhead [--steps 60] [--rounds 3] [--model minilm|smollm2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import Trainer, TrainingArguments

from peft_catalyst import CatalystConfig, CatalystTrainer, CatalystTrainingArguments
from peft_catalyst.app.assets import load_minilm_for_sequence_classification, load_smollm2
from peft_catalyst.app.data import load_task
from peft_catalyst.app.tasks import prepare_task
from peft_catalyst.mentors import ChatMentor, Completion

RESULTS = Path(__file__).parent / "results" / "trainer_overhead.json"


class InstantMentor(ChatMentor):
    """Answers at once with fixed candidates: isolates the trainer's own overhead from any LLM latency."""

    name = "instant:fixed"

    def __init__(self, candidates: list[str]) -> None:
        super().__init__(strict_retry=False)
        self.reply = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(candidates))

    def complete(self, messages, request) -> Completion:
        return Completion(texts=[self.reply], model="instant", prompt_tokens=0, completion_tokens=0)

    def cache_identity(self) -> dict:
        return {"backend": "instant", "model": "instant"}


def setup_doer(model_name: str, seed: int, task_name: str = "rotten_tomatoes"):
    """The packaged doer (MiniLM or SmolLM2), an 8-token CATALYST prompt, a packaged task: model, tok, spec, task."""
    task = load_task(task_name, seed=0, catalyst_size=64)
    if model_name == "minilm":
        model, tok = load_minilm_for_sequence_classification(num_labels=2)
        kind, task_type = "seq_cls", "SEQ_CLS"
    else:
        model, tok = load_smollm2()
        kind, task_type = "causal_lm", "CAUSAL_LM"
    spec = prepare_task(task, tok, kind)
    torch.manual_seed(seed)
    config = CatalystConfig(task_type=task_type, num_virtual_tokens=8, task_description=task.task_description)
    return get_peft_model(model, config), tok, spec, task


def _common(out: str, steps: int, batch: int, seed: int) -> dict:
    return dict(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=32,
        learning_rate=3e-2,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        seed=seed,
        disable_tqdm=True,
        use_cpu=True,
    )


def run_plain(model_name: str, steps: int, batch: int, seed: int) -> float:
    model, tok, spec, _ = setup_doer(model_name, seed)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(**_common(out, steps, batch, seed)),
            **spec.trainer_kwargs(),
        )
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start


def run_catalyst(model_name: str, steps: int, batch: int, seed: int, rounds: int) -> dict:
    model, tok, spec, task = setup_doer(model_name, seed)
    kwargs = spec.trainer_kwargs()
    with tempfile.TemporaryDirectory() as out:
        args = CatalystTrainingArguments(
            **_common(out, steps, batch, seed),
            catalyst_rounds=rounds,
            catalyst_stage_steps=steps // (rounds + 1),
            catalyst_num_candidates=4,
            catalyst_trajectory_points=4,
        )
        mentor = InstantMentor(
            [
                task.manual_prompt,
                "Decide if the review is positive",
                "Rate this movie review",
                "Is the critic happy or not",
            ]
        )
        trainer = CatalystTrainer(
            model=model, args=args, mentor=mentor, catalyst_dataset=spec.datasets["catalyst"], **kwargs
        )
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
        summary = trainer.catalyst_summary()
        timings = dict(summary.seconds)
        statuses = [r.decision.value for r in trainer.catalyst_history]
    return {"total": total, "timings": timings, "statuses": statuses, "gradient_steps": summary.total_steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["minilm", "smollm2"], default="minilm")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the fastest is reported")
    parser.add_argument("--output", type=Path, default=RESULTS)
    a = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    plains, catalysts = [], []
    for i in range(a.repeats):
        plains.append(run_plain(a.model, a.steps, a.batch, seed=i))
        catalysts.append(run_catalyst(a.model, a.steps, a.batch, seed=i, rounds=a.rounds))
    plain = min(plains)
    cat = min(catalysts, key=lambda c: c["total"])
    t = cat["timings"]
    gradient = cat["total"] - t["step_bookkeeping"] - t["rounds"]
    rows = {
        "gradient steps": gradient,
        "projection (per step)": t["projection"],
        "other per-step bookkeeping": t["step_bookkeeping"] - t["projection"],
        "candidate and trajectory scoring": t["scoring"],
        "mentor call (instant)": t["mentor"],
        "rest of the rounds": t["rounds"] - t["scoring"] - t["mentor"],
    }
    print(f"model={a.model} steps={a.steps} batch={a.batch} rounds={a.rounds} threads={torch.get_num_threads()}")
    print(f"plain Trainer total: {plain:.2f} s (runs: {', '.join(f'{p:.2f}' for p in plains)})")
    print(
        f"CatalystTrainer total: {cat['total']:.2f} s = {cat['total'] / plain:.3f} x plain; rounds: {cat['statuses']}"
    )
    print(f"{'part':<34} {'seconds':>9} {'/ plain total':>14}")
    for name, seconds in rows.items():
        print(f"{name:<34} {seconds:>9.3f} {seconds / plain:>14.4f}")
    overhead = t["step_bookkeeping"] / gradient
    verdict = "OK" if overhead <= 0.03 else "ABOVE TARGET"
    print(f"projection + bookkeeping = {100 * overhead:.2f}% of gradient-step time (target <= 3%): {verdict}")
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(
        json.dumps(
            {
                "args": vars(a) | {"output": str(a.output)},
                "plain_runs_s": plains,
                "catalyst_runs": catalysts,
                "split_s": rows,
                "bookkeeping_share_of_gradient": overhead,
                "machine": {
                    "python": platform.python_version(),
                    "cpu_count": os.cpu_count(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {a.output}")


if __name__ == "__main__":
    main()
