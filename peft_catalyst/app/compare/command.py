"""``peft-catalyst compare``: does the mentor beat random restarts, and plain prompt tuning, on my task?

It takes any ``peft-catalyst train`` configuration (flags or ``--config``) plus ``--seeds S`` and runs, paired per
seed, ``catalyst`` (the configured mentor), ``random`` (the same rounds with random-vocabulary candidates) and
``single`` (plain prompt tuning for ``catalyst``'s gradient steps, or its compute with ``--match compute``): see
:mod:`~peft_catalyst.app.compare.runs`. Each finished run's record is written as it lands (``records/``) and skipped
when the same command runs again. It runs on one process or under a multi-process launcher (``torchrun``,
``accelerate launch``): every process trains every run, the main process writes the records and the report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from peft_catalyst.app.compare.runs import COMPUTE_TOLERANCE, DEFAULT_MATCH
from peft_catalyst.app.errors import UserError
from peft_catalyst.app.help_text import SCREENED_START_CONFIG

logger = logging.getLogger(__name__)

#: The comparison's configuration, written first: an output directory holding another one is refused.
COMPARISON_FILE = "comparison.json"
RECORDS_DIR = "records"
DEFAULT_SEEDS = 3

HELP = f"""usage: peft-catalyst compare [--seeds S] [--match {{steps,compute}}] [train options] [--config FILE]

Does the mentor help on this task? Runs, paired per seed (same split, init and data order):
  catalyst  the configuration as given, with its LLM mentor
  random    the same rounds (screening, anchoring, shapes, race) with random-vocabulary candidates, as many per
            round as that seed's catalyst run got from its mentor (equal gradient steps)
  single    plain prompt tuning for as many gradient steps as that seed's catalyst run's compute buys (--match
            compute, the default), or as it counted (--match steps)
then writes compare.md, compare.json and compare.png into --output_dir and prints a short line: catalyst - random
and catalyst - single in test accuracy with 95% intervals, the pooled count of rounds where the mentor beat random
controls (needs --catalyst_selection race --catalyst_race_controls N), how single was matched, and UNEQUAL COMPUTE
when the methods of a seed still trained different gradient steps (or, matched by compute, single's compute is
more than {round(100 * COMPUTE_TOLERANCE)}% and a step off catalyst's); compare.md has the details and each
method's steps, forward-equivalent tokens, LLM calls, tokens and wall time. Run the same command again to resume:
finished runs are skipped.

options:
  --seeds S   seeds, at least 2 (default {DEFAULT_SEEDS}): the i-th uses --seed + i and --split_seed + i
  --match M   how single is matched to catalyst (default {DEFAULT_MATCH}): steps, its gradient steps (stages + races);
              compute, its tuning compute in forward-equivalent tokens (stages + races + screening; a trained token
              counts 3, a scored one 1) as training steps: steps = compute / (3 x catalyst's tokens per step)
  every option of 'peft-catalyst train' (see peft-catalyst train --help); --mentor must be an LLM
  --output_dir defaults to runs/compare-<dataset>-<model> (no time stamp, so the same command resumes)"""


def _pop_option(argv: list[str], name: str, missing: str) -> tuple[str | None, list[str]]:
    """The value of ``--name V`` (or ``--name=V``) in ``argv`` (None: not given) and the other tokens; ``missing``:
    the message when ``--name`` ends the line without a value."""
    rest, value, i = [], None, 0
    while i < len(argv):
        token = argv[i]
        if token == name:
            if i + 1 >= len(argv):
                raise UserError(missing)
            value, i = argv[i + 1], i + 2
            continue
        if token.startswith(f"{name}="):
            value = token.split("=", 1)[1]
        else:
            rest.append(token)
        i += 1
    return value, rest


def _pop_seeds(argv: list[str]) -> tuple[int, list[str]]:
    """``--seeds S`` (or ``--seeds=S``) out of ``argv``."""
    seeds, rest = _pop_option(argv, "--seeds", "--seeds needs a number, e.g. --seeds 5.")
    if seeds is None:
        return DEFAULT_SEEDS, rest
    try:
        value = int(seeds)
    except ValueError:
        raise UserError(f"--seeds must be a whole number, got {seeds!r}.") from None
    if value < 2:
        raise UserError(f"--seeds must be at least 2 (a paired interval needs two seeds), got {value}.")
    return value, rest


def _pop_match(argv: list[str]) -> tuple[str, list[str]]:
    """``--match M`` (or ``--match=M``) out of ``argv``: how ``single`` is matched to ``catalyst``."""
    from peft_catalyst.app.compare.runs import DEFAULT_MATCH, MATCHES

    match, rest = _pop_option(argv, "--match", f"--match needs one of {', '.join(MATCHES)}, e.g. --match compute.")
    match = DEFAULT_MATCH if match is None else match
    if match not in MATCHES:
        raise UserError(f"--match must be one of {', '.join(MATCHES)}, got {match!r}.")
    return match, rest


def _output_dir_given(argv: list[str]) -> bool:
    from peft_catalyst.app.arguments import _split_config, read_config_file

    config, tokens = _split_config(argv)
    if any(t == "--output_dir" or t.startswith("--output_dir=") for t in tokens):
        return True
    return bool(config) and "output_dir" in read_config_file(config)


def _check_contrast(mentor: Any, training: Any, num_virtual_tokens: int) -> None:
    """Refuse a configuration whose comparison would be empty or could not run, before anything loads."""
    from peft_catalyst.app.mentor_setup import validate_mentor_args

    validate_mentor_args(mentor)
    spec = mentor.mentor.strip()
    if mentor.mentor_random_counts is not None:
        raise UserError("--mentor_random_counts: compare sets it for its random runs itself; leave it out.")
    if not mentor.mentor_replay and spec in ("none", "random"):
        raise UserError(
            f"--mentor {spec}: the contrast is empty (without an LLM, catalyst would be random itself); compare an "
            f"LLM mentor with rounds, e.g. --config {SCREENED_START_CONFIG} (SmolLM2 as mentor), with "
            "--mentor openai:<model> to ask another."
        )
    if training.catalyst_rounds < 1 and not training.catalyst_initial_round:
        raise UserError(
            "--catalyst_rounds 0: the contrast is empty (no round, so catalyst, random and single are the same "
            f"run); set --catalyst_rounds 1 or more, or use --config {SCREENED_START_CONFIG}."
        )
    try:
        training.validate_schedule(training.max_steps)
        training.validate_restart_shape(num_virtual_tokens)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    try:
        import scipy  # noqa: F401
    except ImportError:
        raise UserError(
            "peft-catalyst compare needs scipy for its intervals: pip install 'peft-catalyst[compare]'."
        ) from None


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The option names where two settings differ (nested keys joined by dots)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        ]
    return [] if a == b else [path]


def check_output_dir(out: Path, settings: dict[str, Any]) -> None:
    """Refuse an output directory that holds another comparison's records (other settings) or something else
    entirely; a comparison that finished no run yet (say its first run failed to load the model) is replaced."""
    file = out / COMPARISON_FILE
    if file.is_file():
        try:
            stored = json.loads(file.read_text(encoding="utf-8")).get("settings")
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            raise UserError(f"{file} is unreadable ({exc}): pick another --output_dir.") from exc
        if stored != settings and any((out / RECORDS_DIR).glob("*.json")):  # no finished run: nothing to keep
            names = _differences(stored, settings)
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            raise UserError(
                f"--output_dir {out} holds the records of another comparison (it differs in {shown}): pick another "
                "--output_dir, or delete that folder to start over."
            )
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"--output_dir {out} exists and holds no comparison: pick another --output_dir.")


def parse_compare_args(argv: list[str]) -> tuple[int, Any]:
    """``(seeds, TrainConfig)`` from the command line, checked; nothing loaded yet (``--match``: ``_pop_match``)."""
    from peft_catalyst.app.arguments import check_train_args, parse_train_args
    from peft_catalyst.app.compare.runs import TrainConfig

    seeds, rest = _pop_seeds(argv)
    _, rest = _pop_match(rest)
    model, data, mentor, run_args, training = parse_train_args(rest)
    check_train_args(model, data, mentor, run_args, training, resume=False)  # the numbers, as train checks them
    if not _output_dir_given(rest):
        dataset = Path(data.dataset_name).stem if data.dataset_name else data.dataset
        name = "custom" if model.model_name_or_path else model.model
        training.output_dir = str(Path("runs") / f"compare-{dataset}-{name}")
    _check_contrast(mentor, training, model.num_virtual_tokens)
    from peft_catalyst.app.runner import model_kind

    model_kind(model)  # a model path or id that does not load: refused before anything is written
    return seeds, TrainConfig(model, data, mentor, run_args, training)


def _finished(
    config: Any, jobs: list[Any], records: Path, settings: dict[str, Any], match: str = "steps"
) -> dict[str, dict[str, Any]]:
    """Records of ``jobs`` already stored with today's settings (a ``single`` only while it matched the stored
    ``catalyst`` run of its seed, the same way)."""
    from peft_catalyst.app.compare.runs import MATCHED_TO, job_settings, matched_value, stored_job_settings
    from peft_catalyst.app.compare.store import read_record, record_path

    done: dict[str, dict[str, Any]] = {}
    for job in jobs:
        matched = None
        if job.method != MATCHED_TO:
            matched = matched_value(job, done.get(f"{MATCHED_TO}__seed{job.seed}"), match)
            if matched is None:
                continue
        record = read_record(
            record_path(records, job.key), job_settings(settings, job, matched, match), stored_job_settings
        )
        if record is not None:
            done[job.key] = record
    return done


def _what(config: Any) -> dict[str, str]:
    """The task and the doer the comparison ran, as the report names them (a local file or folder by its name)."""
    from peft_catalyst.app.data import public_dataset_name

    data, model = config.data, config.model
    task = public_dataset_name(data.dataset_name) if data.dataset_name else data.dataset
    doer = public_dataset_name(model.model_name_or_path) if model.model_name_or_path else model.model
    return {"task": task, "doer": doer}


def compare(argv: list[str]) -> int:
    """``peft-catalyst compare``: the missing runs of the comparison, then its report and the headline line."""
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    seeds, config = parse_compare_args(argv)
    match, _ = _pop_match(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    from accelerate import PartialState

    from peft_catalyst.app.compare.environment import environment
    from peft_catalyst.app.compare.report import headline, write_report
    from peft_catalyst.app.compare.runs import (
        MATCHED_TO,
        Job,
        job_settings,
        matched_value,
        mentor_candidates,
        run_record,
        train,
    )
    from peft_catalyst.app.compare.schedule import run_pending
    from peft_catalyst.app.compare.store import record_path, write_record
    from peft_catalyst.history import write_json_atomic
    from peft_catalyst.records import Compute

    out = Path(config.training.output_dir)
    settings = config.settings()
    check_output_dir(out, settings)  # every process reads it before the main one writes anything
    state = PartialState()
    state.wait_for_everyone()
    main = state.is_main_process
    if main:
        write_json_atomic(out / COMPARISON_FILE, {"settings": settings, "seeds": seeds})
    records = out / RECORDS_DIR
    jobs = config.jobs(seeds)
    done = _finished(config, jobs, records, settings, match)
    pending = [j for j in jobs if j.key not in done]
    if main:
        print(
            f"compare: {seeds} seeds x 3 methods (catalyst, random, single matched by {match}) = {len(jobs)} runs; "
            f"{len(done)} finished runs skipped, {len(pending)} to run; outputs in {out}",
            flush=True,
        )

    def matched(job: Job) -> Job | None:  # single and random take something of their seed's catalyst run
        return Job(MATCHED_TO, job.seed, job.index) if job.method != MATCHED_TO else None

    def needs(job: Job) -> Any:
        return matched_value(job, done.get(matched(job).key), match)  # in memory: each process knows what it trained

    def run_one(job: Job, value: Any) -> None:
        job_config = config.for_job(job, out, value)
        metrics = train(job_config)
        candidates = mentor_candidates(Path(job_config.training.output_dir))
        record = run_record(job, job_settings(settings, job, value, match), metrics, candidates)
        done[job.key] = record
        if main:
            write_record(record_path(records, job.key), record)
            compute = Compute.from_dict(record["compute"])
            print(
                f"{job.key}: test accuracy {record['test_accuracy']:.3f}; gradient steps {record['steps']['total']}; "
                + (f"{compute.short()}; " if compute is not None else "")
                + f"LLM calls {record['llm']['calls']}; {record['wall_s']:.0f} s",
                flush=True,
            )

    run_pending(pending, run_one, dependency=matched, needs=needs, desc="compare")
    if not main:
        return 0
    import torch

    meta = environment(
        " ".join(["peft-catalyst compare", *argv]), jobs=state.num_processes, threads=torch.get_num_threads()
    )
    seeds_done = {j.seed for j in jobs} - {j.seed for j in jobs if j.key not in done}
    meta.update(seeds=seeds, seeds_finished=len(seeds_done), settings=settings, match=match, **_what(config))
    finished = {k: v for k, v in done.items() if k in {j.key for j in jobs}}
    paths = write_report(out, finished, meta)
    from peft_catalyst.app.compare.summary import summarize

    print(headline(summarize(finished, match)))
    print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0


__all__ = ["COMPARISON_FILE", "DEFAULT_SEEDS", "check_output_dir", "compare", "parse_compare_args"]
