"""The shock after a restart: what each way of restarting the optimizer does to the next 20 steps.

Per doer (the default job's SmolLM2 with label words, or ``--model minilm``) and seed: the command line's job on
Rotten Tomatoes (lr 3e-2, linear decay over the job's ``max_steps``, its batch size) trains one stage; then a restart
is taken to a fixed candidate, the best of ``--candidates`` label-anchored random-word prompts (seeded) scored on the
catalyst split (``taken`` records whether it beats the trained prompt there, i.e. whether a ``"best"`` round would
take it), and training goes on for 20 steps in each variant from the same state, on the same batches, with the same
dropout: the no-restart continuation (``none``) and one restart per optimizer treatment (:data:`VARIANTS`). Recorded
per variant: the catalyst split's label loss at 0, 1, 2, 5, 10 and 20 steps, the training losses of the 20 steps, the
loss before the round (mean of the stage's last 5 steps) and the mean per-token L2 move of the prompt in each of the
first 5 steps beside the scale of the model's word embeddings.

One JSON record per (model, seed, variant) under ``benchmarks/results/restart_shock/``; a run skips what exists
(resumable) and, with ``--commit``, commits each record as it lands. ``--report`` prints the table.

    OMP_NUM_THREADS=1 python -m benchmarks.restart_shock --model minilm --seeds 0 1 2 3 4 [--commit]
    python -m benchmarks.restart_shock --report
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results" / "restart_shock"
CHECKPOINTS = (0, 1, 2, 5, 10, 20)
FOLLOW_STEPS = 20

#: The command line's job per doer (peft_catalyst.app.runner.embedded_defaults): stage length, max_steps, batches.
JOBS = {
    "smollm2": {"stage": 20, "max_steps": 60, "batch": 8, "eval_batch": 16},
    "minilm": {"stage": 30, "max_steps": 150, "batch": 16, "eval_batch": 32},
}

#: Restart variants: optimizer treatment (``catalyst_restart_optimizer``), re-warm-up steps, trust-region radius (a
#: fraction of the mean embedding-row norm) and its steps, a clip of the prompt's gradient norm. ``none``: no restart.
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"restart": False},
    "reset": {"mode": "reset", "rewarm": 5},
    "keep_second_moment": {"mode": "keep_second_moment", "rewarm": 5},
    "keep_second_moment_norewarm": {"mode": "keep_second_moment", "rewarm": 0},
    "keep": {"mode": "keep", "rewarm": 5},
    "reset_rewarm20": {"mode": "reset", "rewarm": 20},
    "reset_radius": {"mode": "reset", "rewarm": 5, "radius": 0.5, "radius_steps": 20},
    "reset_clip": {"mode": "reset", "rewarm": 5, "clip": 0.01},
    # catalyst_restart_loss_ratio=1: the best candidate by label loss among those whose full-vocabulary catalyst loss
    # (the training objective) is not above the current prompt's; none allowed: no restart (the same as "none").
    "reset_guarded": {"mode": "reset", "rewarm": 5, "loss_ratio": 1.0},
}

logger = logging.getLogger(__name__)


def record_path(model: str, seed: int, variant: str, results: Path = RESULTS) -> Path:
    return results / f"{model}_seed{seed}_{variant}.json"


def _train_step(trainer: Any, batches: list[dict], prompt: torch.nn.Parameter, clip: float | None = None) -> float:
    """One optimizer step as ``Trainer`` takes it (loss, global grad-norm clip, step, scheduler); returns the loss."""
    from peft_catalyst.compat.transformers import num_items_in_batch

    model = trainer.model
    model.train()
    items = num_items_in_batch(trainer, batches)
    loss = sum(float(trainer.training_step(model, inputs, items)) for inputs in batches)
    if clip:
        torch.nn.utils.clip_grad_norm_([prompt], clip)
    if trainer.args.max_grad_norm and trainer.args.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    model.zero_grad()
    return loss


def _score(scorer: Any) -> dict[str, float]:
    score = scorer.score()
    return {"label_loss": score.value, "loss": score.loss, "accuracy": score.metrics.get("accuracy", math.nan)}


def run_seed(model_name: str, seed: int, variants: list[str], candidates: int, results: Path, commit: bool) -> None:
    """Train one stage for ``seed``, pick the candidate, then run every variant not recorded yet."""
    todo = [v for v in variants if not record_path(model_name, seed, v, results).exists()]
    if not todo:
        return
    from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
    from peft_catalyst.app.runner import DataArguments, ModelArguments, build_prompt_tuned_model, task_label_words
    from peft_catalyst.projection import (
        get_soft_prompt,
        random_token_ids,
        read_soft_prompt,
        text_to_token_ids,
        write_soft_prompt_,
        write_token_ids,
    )
    from peft_catalyst.rounds.evidence import anchor_labels
    from peft_catalyst.rounds.race import RaceBatches
    from peft_catalyst.rounds.restarts import (
        apply_rewarmup,
        embedding_scale,
        project_to_radius_,
        reset_optimizer_state,
        restore_state,
        snapshot_state,
    )
    from peft_catalyst.rounds.scoring import PromptScorer

    job = JOBS[model_name]
    started = time.perf_counter()
    torch.manual_seed(seed)  # the prompt's random init, as the command line seeds it
    built = build_prompt_tuned_model(
        ModelArguments(model=model_name), DataArguments(dataset="rotten_tomatoes", catalyst_size=64)
    )
    model, tok, spec = built.model, built.tokenizer, built.spec
    with tempfile.TemporaryDirectory() as out:
        args = CatalystTrainingArguments(
            output_dir=out,
            max_steps=job["max_steps"],
            per_device_train_batch_size=job["batch"],
            per_device_eval_batch_size=job["eval_batch"],
            learning_rate=3e-2,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            seed=seed,
            disable_tqdm=True,
            use_cpu=True,
            catalyst_rounds=0,
        )
        trainer = CatalystTrainer(model=model, args=args, **spec.trainer_kwargs())
    trainer.create_optimizer_and_scheduler(num_training_steps=job["max_steps"])
    prompt = get_soft_prompt(model).weight
    params = [p for p in model.parameters() if p.requires_grad]
    scorer = PromptScorer(
        trainer, spec.datasets["catalyst"], metric="label_loss", higher_is_better=False, batch_size=1
    )
    stage_batches = RaceBatches(trainer, seed)
    torch.manual_seed(seed * 7919)
    stage_losses = [_train_step(trainer, stage_batches.step_batches(k), prompt) for k in range(job["stage"])]
    before = sum(stage_losses[-5:]) / 5
    current = _score(scorer)

    n = get_soft_prompt(model).num_virtual_tokens
    labels = task_label_words(built.task, built.kind)
    saved = read_soft_prompt(model)

    def fits(text: str) -> bool:
        return len(tok(text, add_special_tokens=False)["input_ids"]) <= n

    pool = []
    for ids in random_token_ids(tok, model, candidates, n, seed):
        text = anchor_labels(tok.decode(ids), labels, fits)
        write_token_ids(model, text_to_token_ids(tok, text, n))
        pool.append((text, read_soft_prompt(model), _score(scorer)))
    write_soft_prompt_(model, saved)
    best_text, best_value, best_score = min(pool, key=lambda c: c[2]["label_loss"])
    scale = embedding_scale(model)
    snapshot = {
        "values": [p.detach().clone() for p in params],
        "optimizer": snapshot_state(trainer.optimizer, params),
        "scheduler": copy.deepcopy(trainer.lr_scheduler.state_dict()),
        "lrs": [g["lr"] for g in trainer.optimizer.param_groups],
    }
    setup_s = time.perf_counter() - started
    follow_batches = RaceBatches(trainer, 10_000 + seed)
    follow = [follow_batches.step_batches(k) for k in range(FOLLOW_STEPS)]
    for variant in todo:
        spec_v = VARIANTS[variant]
        began = time.perf_counter()
        with torch.no_grad():
            for param, value in zip(params, snapshot["values"]):
                param.copy_(value)
        restore_state(trainer.optimizer, params, snapshot["optimizer"])
        trainer.lr_scheduler.load_state_dict(copy.deepcopy(snapshot["scheduler"]))
        for group, lr in zip(trainer.optimizer.param_groups, snapshot["lrs"]):
            group["lr"] = lr
        restarted = spec_v.get("restart", True)
        target = (best_text, best_value, best_score)
        if "loss_ratio" in spec_v:  # as a "best" round with catalyst_restart_loss_ratio: taken only when better
            allowed = [c for c in pool if c[2]["loss"] <= spec_v["loss_ratio"] * current["loss"]]
            target = min(allowed, key=lambda c: c[2]["label_loss"]) if allowed else target
            restarted = bool(allowed) and target[2]["label_loss"] < current["label_loss"]
        none_path = record_path(model_name, seed, "none", results)
        if not restarted and variant != "none" and none_path.exists():  # the no-restart run, already measured
            record = {**json.loads(none_path.read_text()), "variant": variant, "settings": spec_v}
            record.update(candidate=target[0], candidate_label_loss=target[2]["label_loss"], restarted=False)
            record.update(pool=[{"text": text, **score} for text, _, score in pool], current=current)
            _write(record, record_path(model_name, seed, variant, results), commit)
            continue
        rewarm = spec_v.get("rewarm", 0)
        radius = spec_v.get("radius")
        scores = {0: current}
        if restarted:
            write_soft_prompt_(model, target[1])
            reset_optimizer_state(trainer.optimizer, prompt, spec_v["mode"])
            scores = {0: target[2]}
        center = read_soft_prompt(model)
        torch.manual_seed(seed * 7919 + 1)  # the same dropout masks in every variant
        losses, moves, projected = [], [], 0
        for k in range(FOLLOW_STEPS):
            step = k + 1 if restarted and rewarm and k + 1 <= rewarm else 0
            apply_rewarmup(trainer.optimizer, trainer.lr_scheduler, prompt, step, rewarm)
            previous = prompt.detach().clone()
            losses.append(_train_step(trainer, follow[k], prompt, spec_v.get("clip")))
            if radius and k < spec_v.get("radius_steps", FOLLOW_STEPS):
                projected += project_to_radius_(prompt, center, radius * scale)
            if k < 5:
                moves.append(float((prompt.detach() - previous).float().norm(dim=-1).mean()))
            if k + 1 in CHECKPOINTS:
                scores[k + 1] = _score(scorer)
        record = {
            "model": model_name,
            "seed": seed,
            "variant": variant,
            "settings": spec_v,
            "job": job,
            "candidates": candidates,
            "candidate": target[0],
            "candidate_label_loss": target[2]["label_loss"],
            "restarted": restarted,
            "pool": [{"text": text, **score} for text, _, score in pool],  # every screened candidate's scores
            "current_label_loss": current["label_loss"],
            "current": current,  # the trained prompt's catalyst scores at the round (label loss, loss, accuracy)
            "taken": target[2]["label_loss"] < current["label_loss"] and ("loss_ratio" not in spec_v or restarted),
            "loss_before_round": before,
            "stage_losses": stage_losses,
            "follow_losses": losses,
            "catalyst": {str(s): scores[s] for s in CHECKPOINTS},
            "embedding_row_norm": scale,
            "first_moves": moves,
            "rows_projected": projected,
            "setup_s": round(setup_s, 1),
            "seconds": round(time.perf_counter() - began, 1),
            "torch_threads": torch.get_num_threads(),
        }
        _write(record, record_path(model_name, seed, variant, results), commit)


def _write(record: dict[str, Any], path: Path, commit: bool) -> None:
    """Write one record (atomically) and, with ``commit``, commit it alone."""
    from peft_catalyst.history import write_json_atomic

    write_json_atomic(path, record)
    scores = {s: round(v["label_loss"], 3) for s, v in record["catalyst"].items()}
    logger.info("%s seed %d %s: %s", record["model"], record["seed"], record["variant"], scores)
    if commit:
        _commit(path, f"restart_shock: {record['model']} seed {record['seed']} {record['variant']}")


def _commit(path: Path, message: str) -> None:
    """Commit ``path`` alone (retried while another git command holds the index)."""
    root = Path(__file__).resolve().parent.parent
    for _ in range(20):
        added = subprocess.run(["git", "-C", str(root), "add", str(path)], capture_output=True)
        done = (
            added.returncode == 0
            and subprocess.run(
                ["git", "-C", str(root), "commit", "-q", "-m", message, "--", str(path)], capture_output=True
            ).returncode
            == 0
        )
        if done:
            return
        time.sleep(3)
    logger.warning("could not commit %s", path)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def load_records(results: Path = RESULTS) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def summarize(records: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and variant: seeds, mean catalyst label loss per checkpoint, how often the restart is ahead of the
    no-restart continuation (lower label loss) after 5 and 20 steps, the next 5 steps' training loss against the
    loss before the round (max and mean), and how often their mean stays below it."""
    by_key = {(r["model"], r["seed"], r["variant"]): r for r in records}
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for (model, seed, variant), r in sorted(by_key.items()):
        base = by_key.get((model, seed, "none"))
        row = table.setdefault(model, {}).setdefault(
            variant,
            {"seeds": [], "taken": 0, "ahead5": 0, "ahead20": 0, "below5": 0, "spike": [], "mean5": [], "first": []},
        )
        row["seeds"].append(seed)
        row["taken"] += bool(r["taken"]) and r.get("restarted", True) is not False  # a guarded round may take none
        for s in CHECKPOINTS:
            row.setdefault(f"loss{s}", []).append(r["catalyst"][str(s)]["label_loss"])
        if base is not None:
            row["first"].append(r["follow_losses"][0] / base["follow_losses"][0])
            row["ahead5"] += r["catalyst"]["5"]["label_loss"] < base["catalyst"]["5"]["label_loss"]
            row["ahead20"] += r["catalyst"]["20"]["label_loss"] < base["catalyst"]["20"]["label_loss"]
        next5 = r["follow_losses"][:5]
        row["below5"] += sum(next5) / 5 < r["loss_before_round"]  # the mean: one batch's loss is noisy
        row["spike"].append(max(next5) / r["loss_before_round"])
        row["mean5"].append(sum(next5) / 5 / r["loss_before_round"])
        row.setdefault("move1", []).append(r["first_moves"][0] / r["embedding_row_norm"])
    for rows in table.values():
        for row in rows.values():
            for key in [k for k, v in row.items() if isinstance(v, list) and k != "seeds"]:
                row[key] = sum(row[key]) / len(row[key])
    return table


def report(results: Path = RESULTS) -> str:
    lines = []
    for model, rows in summarize(load_records(results)).items():
        lines.append(f"\n{model} (catalyst label loss; 'ahead': restart below the no-restart continuation)")
        lines.append(
            f"{'variant':<28}{'n':>3}{'taken':>6}{'@0':>7}{'@1':>7}{'@2':>7}{'@5':>7}{'@10':>7}{'@20':>7}"
            f"{'ahead5':>8}{'ahead20':>8}{'below5':>7}{'first':>7}{'spike':>7}{'mean5':>7}{'move1':>7}"
        )
        for variant in [v for v in VARIANTS if v in rows]:
            row = rows[variant]
            n = len(row["seeds"])
            cells = "".join(f"{row[f'loss{s}']:>7.3f}" for s in CHECKPOINTS)
            ahead = "" if variant == "none" else f"{row['ahead5']:>5}/{n}{row['ahead20']:>6}/{n}"
            lines.append(
                f"{variant:<28}{n:>3}{row['taken']:>6}{cells}{ahead:>16}{row['below5']:>5}/{n}"
                f"{row['first']:>7.2f}{row['spike']:>7.2f}{row['mean5']:>7.2f}{row['move1']:>7.3f}"
            )
    lines.append(
        "\nspike / mean5: max / mean training loss of the next 5 steps over the loss before the round (mean of the "
        "stage's last 5); below5: their mean below it; first: the first step's training loss (the restart point's "
        "own, before any update) over the no-restart continuation's on the same batch; move1: mean per-token L2 "
        "move of the first step over the mean embedding-row norm."
    )
    return "\n".join(lines)


def markdown(results: Path = RESULTS) -> str:
    """The table for the README: per doer and variant, label loss at 0/5/20 steps, 'ahead' counts and the spike."""
    lines = [
        "| doer | variant | seeds (restart taken) | label loss @0 / @5 / @20 | ahead of no restart @5, @20 | "
        "next 5 steps' mean below before | first-step loss vs no restart | max next-5 loss vs before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in summarize(load_records(results)).items():
        for variant in [v for v in VARIANTS if v in rows]:
            row = rows[variant]
            n = len(row["seeds"])
            ahead = "–" if variant == "none" else f"{row['ahead5']}/{n}, {row['ahead20']}/{n}"
            lines.append(
                f"| {model} | `{variant}` | {n} ({row['taken']}) | "
                f"{row['loss0']:.3f} / {row['loss5']:.3f} / {row['loss20']:.3f} | {ahead} | {row['below5']}/{n} | "
                f"{row['first']:.2f}x | {row['spike']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(JOBS), default="smollm2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--candidates", type=int, default=6, help="Random label-anchored candidates screened.")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--commit", action="store_true", help="Commit each record as it lands.")
    parser.add_argument("--report", action="store_true", help="Print the table of the records and exit.")
    parser.add_argument("--markdown", action="store_true", help="With --report: the README's Markdown table.")
    options = parser.parse_args(argv)
    if options.report:
        print(markdown(options.results) if options.markdown else report(options.results))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(options.threads)
    for seed in options.seeds:
        run_seed(options.model, seed, options.variants, options.candidates, options.results, options.commit)


if __name__ == "__main__":
    main()
