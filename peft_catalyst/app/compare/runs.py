"""The three methods of ``peft-catalyst compare`` as ``peft-catalyst train`` runs, paired per seed.

A seed ``s`` (the i-th of ``--seeds``) is the training seed ``seed + i`` and the split seed ``split_seed + i``: the
three methods of a seed share the train/catalyst/test split, the soft prompt's init (and a new head's) and the data
order; they differ only in what the rounds propose, or in having no rounds:

- ``catalyst``: the configuration as given, with its mentor;
- ``random``: the same rounds (screening, anchoring, shapes, race, initial round) with ``--mentor random``
  (``RandomMentor``, seeded by the seed), drawing in each round as many candidates as that seed's ``catalyst`` run got
  from its mentor (``--mentor_random_counts``), so that both race the same arms and train equal gradient steps; so it
  runs after it too;
- ``single``: plain prompt tuning (no rounds), matched to that seed's ``catalyst`` run (so it runs after it) by
  ``--match``: ``steps`` (the default) trains as many gradient steps as ``catalyst`` counted in all (stages + races);
  ``compute`` trains as many as ``catalyst``'s tuning compute in forward-equivalent tokens (stages + races +
  screening, :class:`~peft_catalyst.records.Compute`) buys at ``catalyst``'s own training tokens per step:
  ``steps = tuning / (TRAIN_FACTOR x tokens per step)``, see :func:`compute_matched_steps`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: The methods, in the order a seed runs them (``single`` needs ``catalyst``'s step count).
METHODS = ("catalyst", "random", "single")
#: Method whose counted gradient steps ``single`` trains.
MATCHED_TO = "catalyst"
#: How ``single`` is matched to ``catalyst`` (``--match``): by gradient steps, or by forward-equivalent compute.
MATCHES = ("steps", "compute")
#: The command's default: the default job's screening costs 1.0-1.6x its training compute
#: (benchmarks/results/compare/screen-first/), so a ``single`` matched by steps would get about half the compute.
DEFAULT_MATCH = "compute"
#: How a comparison stored before ``--match`` existed (no ``match`` in its records or meta file) was matched.
LEGACY_MATCH = "steps"
#: Matched by compute, ``single``'s tuning compute may differ from ``catalyst``'s by this share (or by one training
#: step's, as its steps are rounded) before the report flags the contrast as unequal: its batches differ in length, so
#: its tokens per step are not exactly catalyst's.
COMPUTE_TOLERANCE = 0.05

#: Training arguments that do not change a run's result: where it writes, what it logs and shows, how it saves.
_COSMETIC_TRAINING = {
    "output_dir",
    "disable_tqdm",
    "report_to",
    "run_name",
    "resume_from_checkpoint",
    "local_rank",
    "dataloader_pin_memory",
    "catalyst_chat_log",
    "overwrite_output_dir",
    "project",
    "skip_memory_metrics",
    "log_level",
    "log_level_replica",
    "log_on_each_node",
}
_COSMETIC_PREFIXES = ("logging_", "save_", "push_to_hub", "hub_", "trackio_")
#: Mentor arguments that say how to reach the mentor, not what it answers; and the one the comparison sets per run.
_COSMETIC_MENTOR = {"mentor_base_url", "mentor_timeout", "mentor_cache", "mentor_required", "mentor_random_counts"}


@dataclass(frozen=True)
class Job:
    """One run of the comparison: a method and a seed."""

    method: str
    seed: int
    index: int  # the seed's place among --seeds (0-based)

    @property
    def key(self) -> str:
        return f"{self.method}__seed{self.seed}"


@dataclass
class TrainConfig:
    """The ``peft-catalyst train`` configuration a comparison runs: its five argument dataclasses."""

    model: Any
    data: Any
    mentor: Any
    run: Any
    training: Any

    def settings(self) -> dict[str, Any]:
        """What decides the comparison's results (the configuration minus where it writes and how it logs): records
        in an output directory with other settings belong to another comparison."""
        training = {
            k: v
            for k, v in self.training.to_dict().items()
            if k not in _COSMETIC_TRAINING and not k.startswith(_COSMETIC_PREFIXES)
        }
        mentor = {k: v for k, v in asdict(self.mentor).items() if k not in _COSMETIC_MENTOR}
        settings = {
            "model": asdict(self.model),
            "data": asdict(self.data),
            "mentor": mentor,
            "eval_batch_size": self.run.eval_batch_size,
            "training": training,
        }
        return json.loads(json.dumps(settings, default=str))  # as stored: tuples read back as lists

    def jobs(self, seeds: int) -> list[Job]:
        """Every run, seed by seed (a comparison cut short has whole seeds), in the order each seed runs them."""
        return [Job(m, self.training.seed + i, i) for i in range(seeds) for m in METHODS]

    def for_job(self, job: Job, out: Path, matched: Any = None) -> TrainConfig:
        """The configuration of one run: its seed and split, its method's mentor and rounds, its own run folder
        under ``out/runs/`` (replaced when a cut run left one) and the comparison's shared mentor cache.

        ``matched``: what the run takes from the same seed's ``catalyst`` run, see :func:`matched_value`: its total
        gradient steps for ``single``, its mentor's usable candidates per round for ``random`` (None: as many as
        asked, for a ``catalyst`` record written before they were kept)."""
        if job.method == "single" and matched is None:
            raise ValueError(f"{job.key} needs the total gradient steps of {MATCHED_TO}__seed{job.seed}")
        matched_steps = matched
        data = dataclasses.replace(self.data, split_seed=self.data.split_seed + job.index)
        mentor = copy.deepcopy(self.mentor)
        changes: dict[str, Any] = {"output_dir": str(out / "runs" / job.key), "seed": job.seed}
        if job.method == "random":
            counts = ",".join(str(c) for c in matched) if matched is not None else None
            mentor = dataclasses.replace(
                mentor, mentor="random", mentor_seed=job.seed, mentor_replay=None, mentor_random_counts=counts
            )
        elif job.method == "single":
            mentor = dataclasses.replace(mentor, mentor="none", mentor_replay=None)
            changes.update(max_steps=int(matched_steps), catalyst_rounds=0, catalyst_initial_round=False)
        elif mentor.mentor_cache is None and not mentor.mentor_replay:
            mentor = dataclasses.replace(mentor, mentor_cache=str(out / "mentor_cache.sqlite"))
        training = copy.deepcopy(self.training)
        for name, value in changes.items():
            setattr(training, name, value)
        run = dataclasses.replace(self.run, overwrite_output_dir=True)
        return TrainConfig(copy.deepcopy(self.model), data, mentor, run, training)


def job_settings(comparison: dict[str, Any], job: Job, matched: Any, match: str = DEFAULT_MATCH) -> dict[str, Any]:
    """A run's stored settings: the comparison's, its method and seed, for ``single`` the steps it matched and how
    (``match``), for ``random`` the candidates per round it matched."""
    settings = {
        "comparison": comparison,
        "method": job.method,
        "seed": job.seed,
        "matched_steps": matched if job.method == "single" else None,
    }
    if job.method == "single":
        settings["match"] = match
    if job.method == "random":
        settings["matched_candidates"] = list(matched) if matched is not None else None
    return settings


def stored_job_settings(stored: Any) -> Any:
    """A stored run's settings in today's form: a ``single`` stored before ``--match`` existed was matched by steps."""
    if isinstance(stored, dict) and stored.get("method") == "single" and "match" not in stored:
        return {**stored, "match": LEGACY_MATCH}
    return stored


def compute_matched_steps(catalyst_record: dict[str, Any]) -> int:
    """The gradient steps that buy a ``catalyst`` run's tuning compute (stages + races + screening, in
    forward-equivalent tokens) as plain training: ``tuning / (TRAIN_FACTOR x tokens per step)``, the tokens per step
    being the ``catalyst`` run's own mean over its main loop (its stages' compute / (TRAIN_FACTOR x main steps)): so
    ``main steps x tuning / stages``, rounded, at least 1."""
    from peft_catalyst.app.errors import UserError
    from peft_catalyst.records import TRAIN_FACTOR

    compute = catalyst_record.get("compute") or {}
    stages, tuning, main = compute.get("stages"), compute.get("tuning"), int(catalyst_record["steps"]["main"])
    if not stages or tuning is None or main <= 0:
        raise UserError(
            f"--match compute: the record of {catalyst_record['method']}__seed{catalyst_record['seed']} has no "
            "counted compute (written before compute was counted): delete it to run it again, or use --match steps."
        )
    per_step = stages / (TRAIN_FACTOR * main)
    return max(1, round(tuning / (TRAIN_FACTOR * per_step)))


def matched_value(job: Job, catalyst_record: dict[str, Any] | None, match: str = DEFAULT_MATCH) -> Any:
    """What ``job`` takes from its seed's finished ``catalyst`` record (None while there is none): ``single`` its
    total gradient steps (``match="steps"``) or the steps its tuning compute buys (``"compute"``,
    :func:`compute_matched_steps`), ``random`` its mentor's usable candidates per round (``[]`` when the record
    predates them: then random draws as many as asked)."""
    if catalyst_record is None:
        return None
    if job.method == "single":
        if match == "compute":
            return compute_matched_steps(catalyst_record)
        return int(catalyst_record["steps"]["total"])
    if job.method == "random":
        return list(catalyst_record.get("mentor_candidates") or [])
    return None


def mentor_candidates(run_dir: Path) -> list[int] | None:
    """Per round of a finished run, how many usable candidates (ones that tokenized) its mentor gave; None without
    a history (no rounds)."""
    from peft_catalyst.history import HISTORY_FILE, read_history

    if not (Path(run_dir) / HISTORY_FILE).is_file():
        return None
    rounds = read_history(run_dir).rounds
    return [sum(c.token_ids is not None for c in r.candidates) for r in rounds]


def train(config: TrainConfig) -> dict[str, Any]:
    """One ``peft-catalyst train`` run of ``config``; returns its ``metrics.json`` content."""
    from peft_catalyst.app.runner import run

    return run(config.model, config.data, config.mentor, config.run, config.training)


def run_record(
    job: Job, settings: dict[str, Any], metrics: dict[str, Any], candidates: list[int] | None = None
) -> dict[str, Any]:
    """The stored record of a finished run, from its ``metrics.json``: test accuracy, counted steps, mentor usage
    (LLM calls count for the ``catalyst`` run only: ``random`` draws words), the mentor-vs-random counts, wall time."""
    summary = metrics["catalyst"]
    usage = summary.get("mentor_usage") or {}
    llm = job.method == "catalyst"
    return {
        "settings": settings,
        "method": job.method,
        "seed": job.seed,
        "test_accuracy": metrics["test_accuracy"]["final"],
        "initial_test_accuracy": metrics["test_accuracy"]["initial"],
        # every method keeps its best prompt by validation under the same rule (the runner's); what it kept
        "final_step_test_accuracy": metrics["test_accuracy"].get("final_step"),
        "kept_step": (metrics.get("kept") or {}).get("step"),
        "test_examples": metrics["test_examples"],
        "steps": {"main": summary["main_steps"], "race": summary["race_steps"], "total": summary["total_steps"]},
        # forward-equivalent tokens per part, tuning and total (peft_catalyst.records.Compute); None: not counted
        "compute": summary.get("compute"),
        "rounds": {k: summary[k] for k in ("rounds", "accepted", "kept", "skipped")},
        "llm": {
            "calls": int(usage.get("calls", 0)) if llm else 0,
            "prompt_tokens": int(usage.get("prompt_tokens", 0)) if llm else 0,
            "completion_tokens": int(usage.get("completion_tokens", 0)) if llm else 0,
            "cache_hits": int(usage.get("cache_hits", 0)) if llm else 0,
        },
        "beat_random": {
            "screening": list(summary.get("beat_random_screening") or [0, 0]),
            "race": list(summary.get("beat_random_race") or [0, 0]),
        },
        "mentor": metrics.get("mentor"),
        "mentor_candidates": candidates,  # usable candidates per round (what random matches); None: no rounds
        "prompts": metrics["prompts"],
        "wall_s": metrics["wall_time_s"],
        "run_dir": str(Path("runs") / job.key),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = [
    "COMPUTE_TOLERANCE",
    "DEFAULT_MATCH",
    "LEGACY_MATCH",
    "MATCHED_TO",
    "MATCHES",
    "METHODS",
    "Job",
    "TrainConfig",
    "compute_matched_steps",
    "job_settings",
    "matched_value",
    "stored_job_settings",
    "mentor_candidates",
    "run_record",
    "train",
]
