"""One run: train a (task, doer, method, seed) with the product's runner pieces and return its result record."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.compare.costs import RACE_STEPS_FALLBACK, llm_only_schedule
from benchmarks.compare.methods import Cell, MethodSpec, method_spec
from benchmarks.compare.plans import Plan
from benchmarks.compare.store import cell_settings

if TYPE_CHECKING:
    from peft_catalyst.records import RoundRecord, ScoredPrompt


def _history_rounds(history: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    """The rounds of ``catalyst_history``, compacted: decision, the ranking metric, current and candidate scores
    and losses, the score that decided, race steps, mentor usage.

    Runs stored before the typed records (``BENCH_VERSION`` unchanged) lack ``metric``, the ``score`` fields,
    ``decisive_score`` and ``race_steps``: the report reads those with defaults.
    """

    def scored(p: ScoredPrompt) -> bool:
        return p.score is not None or p.loss is not None

    rounds = []
    for record in history:
        mentor = record.mentor.to_dict() if record.mentor is not None else {}
        current, decisive = record.current, record.decisive
        rounds.append(
            {
                "round": record.round,
                "step": record.step,
                "status": record.decision.value,
                "winner": record.winner,
                "metric": record.metric,
                "higher_is_better": record.higher_is_better,
                "trajectory": [{"text": p.text, "score": p.score, "loss": p.loss} for p in record.trajectory],
                "current": {"text": current.text, "score": current.score, "loss": current.loss}
                if current is not None and scored(current)
                else None,
                "candidates": [
                    {"text": c.text, "score": c.score, "loss": c.loss, "scored": scored(c), "proposer": c.proposer}
                    for c in record.candidates
                ],
                "decisive_score": decisive.score if decisive is not None else None,
                "race_steps": record.race_steps,
                "mentor": {
                    k: mentor.get(k)
                    for k in (
                        "latency_s",
                        "prompt_tokens",
                        "completion_tokens",
                        "attempts",
                        "cached",
                        "warning",
                        "error",
                    )
                },
                "prompt_after": record.prompt_after,
                # from v4: what started the round, the prompts drawn per proposer and which proposer won at
                # screening and at selection (peft_catalyst.rounds.proposers.round_wins), and how screening spent
                # the catalyst split; every round's outcome, so pooled counts can be rebuilt round by round
                "trigger": record.trigger.value,
                "proposers": dict(record.proposers),
                "wins": dict(record.wins),
                "screening": _screening(record),
            }
        )
    return rounds


def _screening(record: RoundRecord) -> dict[str, Any] | None:
    """A round's screening, compacted: schedule, prompts screened and kept, scorings of examples (halving)."""
    s = record.screening
    if s is None:
        return None
    return {
        "schedule": s.schedule,
        "samples": s.samples,
        "kept": list(s.kept),
        "examples": list(s.examples),
        "example_scorings": s.example_scorings,
        "rungs": [dataclasses.asdict(r) for r in s.rungs],
    }


def llm_usage(rounds: list[dict[str, Any]], method: str, spec: MethodSpec | None = None) -> dict[str, Any]:
    """LLM calls (a stricter retry counts), tokens and replayed calls of a run, from its rounds (0 without an LLM);
    a call that failed (the round skipped for a mentor error) is no LLM call, as in ``MentorUsage``. ``spec``: the
    method's settings (default: the shared table's)."""
    usage = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_calls": 0}
    if (spec or method_spec(method)).mentor in ("none", "random"):
        return usage
    for r in rounds:
        m = r["mentor"]
        if m.get("error"):
            continue  # no LLM answered: no call, no tokens
        usage["calls"] += int(m.get("attempts") or 1)
        usage["prompt_tokens"] += int(m.get("prompt_tokens") or 0)
        usage["completion_tokens"] += int(m.get("completion_tokens") or 0)
        usage["cached_calls"] += int(bool(m.get("cached")))
    return usage


def embedded_mentor(doer: Any, work_dir: Path, mentor_cache: Path) -> Any:
    """The product's default mentor for ``doer``: the embedded SmolLM2 behind the sqlite reply cache."""
    from peft_catalyst.app.runner import MentorArguments, build_mentor

    args = MentorArguments(mentor="smollm2", mentor_cache=str(mentor_cache))
    shared = (doer.model.get_base_model(), doer.tokenizer) if doer.name == "smollm2" else None
    return build_mentor(args, output_dir=str(work_dir), shared=shared)


def run_cell(
    plan: Plan,
    cell: Cell,
    work_dir: Path,
    mentor_cache: Path,
    llm_factory: Callable[[Any, Path, Path], Any] = embedded_mentor,
    matched_steps: int | None = None,
) -> dict[str, Any]:
    """Train one (task, doer, method, seed) with the product's runner pieces and return its result record.

    ``llm_factory(doer, run_dir, mentor_cache)`` builds the LLM mentor of the LLM methods. ``matched_steps``: the
    optimizer steps of ``single-matched`` (the total gradient steps of the same seed's ``catalyst-race`` run).
    """
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from benchmarks.baselines import FrozenPromptTrainer, HistoryMentor, freeze_soft_prompt
    from peft_catalyst.app.runner import (
        DataArguments,
        FinalStepAccuracy,
        ModelArguments,
        build_prompt_tuned_model,
        task_label_words,
    )
    from peft_catalyst.app.tasks import evaluate_accuracy
    from peft_catalyst.mentors import RandomMentor
    from peft_catalyst.projection import soft_prompt_text, vocabulary_words
    from peft_catalyst.trainer import CatalystTrainer, CatalystTrainingArguments

    d = plan.budget(cell)
    spec = plan.spec(cell.method)
    if spec.matched_to is not None and matched_steps is None:
        raise ValueError(f"{cell.key} needs the total gradient steps of its {spec.matched_to} run")
    started, cpu_started = time.perf_counter(), time.process_time()
    out = work_dir / cell.key
    out.mkdir(parents=True, exist_ok=True)
    init = spec.init
    set_seed(cell.seed)  # the prompt init and MiniLM's new head: identical across the methods of a seed
    doer = build_prompt_tuned_model(
        ModelArguments(
            model=cell.doer if d.model_path is None else "minilm",
            model_name_or_path=d.model_path,
            num_virtual_tokens=d.num_virtual_tokens,
            prompt_init=init,
            max_length=d.max_length,
        ),
        DataArguments(
            dataset=cell.task,
            split_seed=cell.seed,
            train_size=d.train_size,
            catalyst_size=d.catalyst_size,
            validation_size=d.validation_size,
            test_size=d.test_size,
        ),
    )
    initial_prompt = soft_prompt_text(doer.model, doer.tokenizer)
    max_steps, stage_steps, rounds = d.max_steps, d.stage_steps, d.rounds
    selection = spec.selection or "best"
    trainer_cls = CatalystTrainer
    mentor = None
    notes: list[str] = []
    trainer_ref: list[Any] = []
    if spec.matched_to is not None:
        max_steps = int(matched_steps)  # type: ignore[arg-type]
        notes.append(
            f"{max_steps} optimizer steps: the tuning compute of {spec.matched_to}, same seed"
            if spec.match == "compute"
            else f"{max_steps} optimizer steps: the total gradient steps of {spec.matched_to}, same seed"
        )
    if not spec.rounds:
        rounds = 0
    elif spec.mentor == "none":  # rounds drawn from catalyst_proposers alone (v4's screened-init, ...-no-mentor)
        mentor = None
    elif spec.mentor == "random":
        mentor = RandomMentor(vocabulary_words(doer.tokenizer), seed=cell.seed)
    else:
        llm = llm_factory(doer, out, mentor_cache)
        mentor = llm
        if spec.frozen_prompt:
            by_grad = freeze_soft_prompt(doer.model)
            max_steps, stage_steps = llm_only_schedule(d, by_grad)
            trainer_cls = FrozenPromptTrainer
            mentor = HistoryMentor(llm, lambda: trainer_ref[0].catalyst_history, max_points=d.trajectory_points)
            notes.append(
                "prompt frozen by requires_grad, the head trains"
                if by_grad
                else "nothing else trains: one lr-0 step per stage"
            )
    race_kwargs: dict[str, Any] = {}
    if selection == "race":
        race_kwargs = {
            "catalyst_race_steps": d.race_steps if d.race_steps is not None else RACE_STEPS_FALLBACK,
            "catalyst_race_eta": d.race_eta or 2,
            "catalyst_race_margin": d.race_margin or 0.0,
        }
    extra: dict[str, Any] = {}
    if spec.trainer and spec.rounds:  # v3 on: the method's own settings, and the label words as the command gives
        extra = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.trainer}
        extra["catalyst_labels"] = task_label_words(doer.task, doer.kind)
        rounds = extra.pop("catalyst_rounds", rounds)  # v4's screened-init: the initial round alone
    if d.keep_best:  # every method alike: the command's rule (peft_catalyst.app.runner.embedded_defaults)
        extra.update(
            eval_strategy="steps",
            eval_steps=stage_steps,
            save_strategy="best",
            load_best_model_at_end=True,
            metric_for_best_model=d.keep_best_metric or "accuracy",
        )
    if d.curve_points and not spec.rounds:  # where plain prompt tuning flattens: a validation curve
        extra.update(eval_strategy="steps", eval_steps=max(1, max_steps // d.curve_points))
    if d.eval_every:  # v4: every method evaluated on the same schedule (kept prompt and validation curve)
        extra.update(eval_strategy="steps", eval_steps=d.eval_every)
    args = CatalystTrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=d.batch_size,
        per_device_eval_batch_size=d.eval_batch_size,
        learning_rate=d.learning_rate,
        seed=cell.seed,
        logging_steps=max(1, max_steps // 5),
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        catalyst_rounds=rounds,
        catalyst_stage_steps=stage_steps,
        catalyst_num_candidates=d.num_candidates,
        catalyst_trajectory_points=d.trajectory_points,
        catalyst_selection=selection,
        catalyst_metric="label_loss",  # as the product's default (runner.embedded_defaults)
        **{"save_strategy": "no", **race_kwargs, **extra},
    )
    trainer = trainer_cls(
        model=doer.model,
        args=args,
        mentor=mentor,
        catalyst_dataset=doer.spec.datasets["catalyst"],
        **doer.spec.trainer_kwargs(),
    )
    trainer.remove_callback(PrinterCallback)
    final_step = FinalStepAccuracy(
        lambda: evaluate_accuracy(doer.model, doer.spec, "test", batch_size=d.eval_batch_size)["accuracy"]
    )
    trainer.add_callback(final_step)
    initial_round = initial_round_compute(trainer)
    trainer.add_callback(initial_round)
    trainer_ref.append(trainer)
    loaded = time.perf_counter()
    trainer.train()
    trained = time.perf_counter()
    test = evaluate_accuracy(doer.model, doer.spec, "test", batch_size=d.eval_batch_size)
    evaluated = time.perf_counter()
    if mentor is not None:
        mentor.close()
    rounds_done = _history_rounds(trainer.catalyst_history)
    run_summary = trainer.catalyst_summary()
    timings = {k: round(v, 2) for k, v in run_summary.seconds.items()}
    train_loss = next((e["train_loss"] for e in reversed(trainer.state.log_history) if "train_loss" in e), None)
    return {
        "settings": cell_settings(plan, cell),
        "task": cell.task,
        "doer": cell.doer,
        "method": cell.method,
        "seed": cell.seed,
        "init": init,
        "selection": spec.selection,
        "optimizer_steps": max_steps,
        "gradient_steps": {
            "stages": run_summary.main_steps,
            "races": run_summary.race_steps,
            "total": run_summary.total_steps,
        },
        "notes": notes,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        # the validation accuracy of the prompt the run kept (keep_best): what picks the best PEFT start in v4
        "kept_validation_accuracy": _kept_validation_accuracy(trainer),
        # with keep_best: the step whose prompt was kept (and tested above), and the last step's prompt's accuracy
        **(
            {"kept": dataclasses.asdict(trainer.catalyst.kept), "final_step_test_accuracy": final_step.accuracy}
            if trainer.catalyst.kept is not None
            else {}
        ),
        "test_examples": test["num_examples"],
        "train_loss": train_loss,
        "prompts": {"initial": initial_prompt, "final": soft_prompt_text(doer.model, doer.tokenizer)},
        "rounds": rounds_done,
        # forward-equivalent tokens per part (peft_catalyst.records.Compute: stages, races, screening, evaluation,
        # tuning, total, gradient steps), and the initial round's alone (counted as it ended, before step 1)
        "compute": run_summary.compute.to_dict() if run_summary.compute is not None else None,
        "initial_round_compute": initial_round.parts,
        "proposers": dict(run_summary.proposers),
        "llm": llm_usage(rounds_done, cell.method, spec),
        "beat_random": {
            "screening": list(run_summary.beat_random_screening),
            "race": list(run_summary.beat_random_race),
        },
        "curve": [
            {"step": e["step"], "loss": e.get("eval_loss"), "accuracy": e.get("eval_accuracy")}
            for e in trainer.state.log_history
            if "eval_loss" in e
        ],
        "seconds": {
            "total": round(evaluated - started, 2),
            "cpu": round(time.process_time() - cpu_started, 2),
            "setup": round(loaded - started, 2),
            "train": round(trained - loaded, 2),
            "test_eval": round(evaluated - trained, 2),
            **{f"catalyst_{k}": v for k, v in timings.items()},
        },
        "matched_to": _matched_to(spec, matched_steps),
        "estimated_seconds": round(plan.estimate(cell, matched_steps=matched_steps), 1),
        "threads": _torch_threads(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _matched_to(spec: MethodSpec, steps: int | None) -> dict[str, Any] | None:
    """What a matched method took from its run: the method and the steps it trains (and, matched by compute, how)."""
    if spec.matched_to is None:
        return None
    matched: dict[str, Any] = {"method": spec.matched_to, "total_steps": steps}
    if spec.match != "steps":  # a field added with v4
        matched["match"] = spec.match
    return matched


def _kept_validation_accuracy(trainer: Any) -> float | None:
    """Validation accuracy of the kept prompt (the evaluation at the kept step); None without keep_best."""
    kept = trainer.catalyst.kept
    if kept is None:
        return None
    at = [e["eval_accuracy"] for e in trainer.state.log_history if e.get("step") == kept.step and "eval_accuracy" in e]
    return at[-1] if at else None


def initial_round_compute(trainer: Any) -> Any:
    """A callback that reads ``trainer``'s compute as training starts, after the initial round (the trainer's own
    callback runs it in ``on_train_begin``, before this one): that round's screening and race compute, in ``parts``
    (None for a run without an initial round)."""
    from transformers import TrainerCallback

    class InitialRoundCompute(TrainerCallback):
        parts: dict[str, int] | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            history = trainer.catalyst_history
            if history and history[0].trigger.value == "initial":
                parts = trainer.catalyst.compute.parts
                self.parts = {part: int(parts[part]) for part in ("screening", "races")}
            return control

    return InitialRoundCompute()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
