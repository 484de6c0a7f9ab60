"""The arguments of ``peft-catalyst train`` (and of ``compare``, which takes the same): ``HfArgumentParser`` over the
runner's argument dataclasses and :class:`~peft_catalyst.CatalystTrainingArguments`, optionally from a YAML or JSON
file (``--config run.yaml``; flags on the command line win), with embedded defaults per packaged model. Expected
user errors are :class:`~peft_catalyst.app.errors.UserError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

from peft_catalyst.app.help_text import SCREENED_START_CONFIG


def read_config_file(path: str) -> dict[str, Any]:
    """The ``option: value`` mapping of a YAML or JSON file (read as ``HfArgumentParser.parse_yaml_file`` does)."""
    from peft_catalyst.app.runner import UserError

    file = Path(path)
    if not file.is_file():
        raise UserError(f"--config: no file at {file}.")
    text = file.read_text(encoding="utf-8")
    is_json = file.suffix.lower() == ".json"
    try:
        if is_json:
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise UserError(f"--config: {file} is not valid {'JSON' if is_json else 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"--config: {file} must hold a mapping of option names to values.")
    return data


def check_config_values(parser: argparse.ArgumentParser, data: dict[str, Any], source: str) -> None:
    """Refuse a config file's unknown names and values outside an option's choices, as the command line does.

    The file's values then become the parser's defaults, so that command-line flags still win (the merge of TRL's
    ``TrlParser``): argparse converts a string default with the option's type, as it does a flag's value.
    """
    from peft_catalyst.app.runner import UserError

    actions = {a.dest: a for a in parser._actions}
    unknown = sorted(k for k in data if k not in actions or k in ("help", "config"))
    if unknown:
        raise UserError(f"--config: unknown option(s) in {source}: {', '.join(unknown)}.")
    for key, value in data.items():
        choices = actions[key].choices
        if choices is not None and value is not None and str(value) not in {str(c) for c in choices}:
            raise UserError(f"--config: {key}: invalid choice {value!r} in {source} (choose from {list(choices)}).")


#: Help that must not end in a default: a --no_* flag's, and an option the command does not use.
_OWN_DEFAULT = ("Sets --", "Not used by this command")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``HfArgumentParser``'s formatter, minus the "(default: ...)" suffix where the help names its default itself
    (or the default is None: not set), so that no option shows two defaults."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.default is None or "default" in help_text.lower() or help_text.startswith(_OWN_DEFAULT):
            return help_text
        return super()._get_help_string(action)


def _train_parser(dataclass_types: tuple) -> Any:
    """``HfArgumentParser`` whose argparse errors (a mistyped option or choice) are one line, not the usage, and that
    takes no abbreviation of an option (``--max_step`` is not ``--max_steps``)."""
    from transformers import HfArgumentParser

    from peft_catalyst.app.runner import UserError

    class TrainParser(HfArgumentParser):
        def error(self, message: str):  # argparse prints the whole usage and exits; we say the one thing
            raise UserError(f"{message} (see {SEE_HELP})")

    parser = TrainParser(
        dataclass_types,
        prog="peft-catalyst train",
        usage="peft-catalyst train [options] [--config FILE]",
        description=(
            "Prompt-tune a model with LLM-guided restarts: every option (--help shows the ones most runs need). "
            "Options may also come from --config FILE."
        ),
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    _group_options(parser, {f.name for f in dataclasses.fields(dataclass_types[-1])})
    return parser


def _group_options(parser: argparse.ArgumentParser, training_fields: set[str]) -> None:
    """Show the training arguments' catalyst options, then transformers' own, each under its own heading, after the
    command's own options (model, data, mentor, run)."""
    catalyst = parser.add_argument_group("mentor rounds (catalyst_*)")
    upstream = parser.add_argument_group("transformers TrainingArguments (as Trainer takes them)")
    optionals = parser._optionals  # argparse keeps every option here unless it is put in a group
    for action in list(optionals._group_actions):
        if action.dest not in training_fields:
            continue
        group = catalyst if action.dest.startswith("catalyst_") else upstream
        optionals._group_actions.remove(action)
        group._group_actions.append(action)


#: Where a user error on the command line points to.
SEE_HELP = "peft-catalyst train --help"

#: Help of this command's options where the library's (or transformers') own help would mislead a command-line user.
_CLI_HELP = {
    "catalyst_eval_size": (
        "Not used by this command: every task here comes with its own catalyst split, sized by --catalyst_size "
        "(the library carves this share from the training set when no catalyst_dataset is given)."
    ),
    "output_dir": "Run folder (default: runs/<dataset>-<model>-<date>-<time>).",
    "max_steps": "Optimizer steps of the run (at least 1), or -1 to train --num_train_epochs epochs instead.",
    "resume_from_checkpoint": (
        "Continue a killed or stopped run in its own --output_dir (with the same options): a checkpoint folder "
        "(<output_dir>/checkpoint-N), or 'true' for the last one in --output_dir. Runs save one at each round "
        "boundary by default (--save_strategy steps, --save_steps = --catalyst_stage_steps)."
    ),
    "save_strategy": (
        "When to save a checkpoint to resume from: 'steps' (default: every --save_steps steps), 'epoch', 'no'."
    ),
    "save_steps": (
        "Steps between checkpoints (a float in (0, 1): a share of the run). Default: --catalyst_stage_steps, so "
        "that each round boundary leaves a checkpoint."
    ),
    "save_total_limit": "Checkpoints kept in --output_dir, the newest (default 1; 0 keeps all).",
    "catalyst_metric": (
        "Catalyst-split metric that ranks prompts: 'label_loss' (cross-entropy over the classes; default), "
        "'accuracy' or 'loss' (the training loss)."
    ),
    "do_train": "Not used by this command (it always trains).",
    "do_eval": "Not used by this command (it reports test accuracy before and after training).",
    "do_predict": "Not used by this command.",
}


_TASKS_OWN = "the task's own"


def _document_model_defaults(parser: argparse.ArgumentParser, dataset: str) -> None:
    """Help that tells the truth per packaged model: options whose default depends on --model say both values."""
    from peft_catalyst.app.runner import PACKAGED_MODELS, embedded_defaults

    per_model = {m: embedded_defaults(m, None, dataset) for m in PACKAGED_MODELS}
    for action in parser._actions:
        if action.dest in _CLI_HELP:
            action.help = _CLI_HELP[action.dest]
        if any(o.startswith("--no_") for o in action.option_strings):
            action.help = f"Sets --{action.dest} to false."
            continue
        if action.dest == "output_dir" or not action.option_strings:
            continue
        values = [per_model[m].get(action.dest) for m in PACKAGED_MODELS]
        if len({repr(v) for v in values}) > 1:
            both = ", ".join(f"{_TASKS_OWN if v is None else v} for {m}" for m, v in zip(PACKAGED_MODELS, values))
            own = (action.help or "").replace("; default: the task's", "").rstrip()
            action.help = f"{own} Default depends on --model: {both}."


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Pop ``--config PATH`` (or ``--config=PATH``, or a leading ``*.yaml/*.yml/*.json`` path) from ``argv``."""
    rest, config = [], None
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--config" and i + 1 < len(argv):
            config, i = argv[i + 1], i + 2
            continue
        if token.startswith("--config="):
            config = token.split("=", 1)[1]
        elif i == 0 and token.lower().endswith((".yaml", ".yml", ".json")) and not token.startswith("-"):
            config = token
        else:
            rest.append(token)
        i += 1
    return config, rest


def _given(name: str, tokens: list[str], file_values: dict[str, Any]) -> bool:
    """Whether option ``name`` was set on the command line or in the config file."""
    flags = {f"--{name}", f"--{name.replace('_', '-')}"}
    return name in file_values or any(t.split("=", 1)[0] in flags for t in tokens)


def _unknown_options(parser: argparse.ArgumentParser, remaining: list[str]) -> str:
    """The message for what argparse did not take: each unknown option once, with the nearest real one."""
    known = sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--") and "-" not in o[2:])
    parts = []
    for token in remaining:
        if not token.startswith("-"):
            continue
        name = token.split("=", 1)[0]
        close = difflib.get_close_matches(name.replace("-", "_").replace("__", "--", 1), known, n=1, cutoff=0.75)
        parts.append(f"{name} (did you mean {close[0]}?)" if close else name)
    if not parts:  # values without an option, e.g. a second value after a one-value option
        return f"unexpected value(s) {' '.join(remaining)} (see {SEE_HELP})"
    return f"unrecognized arguments: {', '.join(parts)} (see {SEE_HELP})"


def _full_parser(config: str | None, tokens: list[str], file_values: dict[str, Any]) -> Any:
    """The command's ``HfArgumentParser`` with its defaults: embedded (per --model and --dataset), then the file's."""
    from peft_catalyst.app.runner import (
        DataArguments,
        MentorArguments,
        ModelArguments,
        RunArguments,
        embedded_defaults,
    )
    from peft_catalyst.trainer import CatalystTrainingArguments

    parser = _train_parser((ModelArguments, DataArguments, MentorArguments, RunArguments, CatalystTrainingArguments))
    parser.add_argument("--config", help="YAML or JSON file of options (command-line flags win).")
    check_config_values(parser, file_values, str(config))
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name, default in (
        ("--model", "smollm2"),
        ("--model_name_or_path", None),
        ("--dataset", "rotten_tomatoes"),
        ("--dataset_name", None),
    ):
        pre.add_argument(name, default=file_values.get(name[2:], default))
    known, _ = pre.parse_known_args(tokens)
    dataset = Path(known.dataset_name).stem if known.dataset_name else known.dataset
    defaults = embedded_defaults(known.model, known.model_name_or_path, dataset)
    parser.set_defaults(**defaults)
    _document_model_defaults(parser, dataset)
    parser.set_defaults(**file_values)  # the file over the embedded defaults, command-line flags over both
    return parser


def full_help(argv: list[str]) -> str:
    """Every option with its help (``--help-all``), defaults as for the ``--model``/``--dataset`` in ``argv``."""
    config, tokens = _split_config(argv)
    return _full_parser(config, tokens, read_config_file(config) if config else {}).format_help()


#: Where the LLM-guided method that was SmolLM2's default until benchmark v4 lives now (a config file).
SCREENED_START_HINT = f"--config {SCREENED_START_CONFIG} for the screened start with the mentor's rounds"


def parse_train_args(argv: list[str]) -> tuple[Any, ...]:
    """``(model, data, mentor, run, training)`` argument dataclasses, embedded defaults filled in."""
    from peft_catalyst.app.runner import UserError

    config, tokens = _split_config(argv)
    file_values = read_config_file(config) if config else {}
    parser = _full_parser(config, tokens, file_values)
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=tokens, return_remaining_strings=True)
    except ValueError as exc:  # the dataclasses' own validation (e.g. CatalystTrainingArguments)
        raise UserError(str(exc)) from exc
    if remaining:
        raise UserError(_unknown_options(parser, remaining))
    parsed = [p for p in parsed if not isinstance(p, argparse.Namespace)]  # --config's namespace
    training = parsed[-1]
    if not _given("save_steps", tokens, file_values):  # a checkpoint at each round boundary, whatever the stages
        training.save_steps = training.catalyst_stage_steps
    if not _given("eval_steps", tokens, file_values):  # validation (keep the best) at each round boundary too
        training.eval_steps = training.catalyst_stage_steps
    _check_rounds_have_a_mentor(parsed[2], training, tokens, file_values)
    return tuple(parsed)


def _check_rounds_have_a_mentor(mentor: Any, training: Any, tokens: list[str], file_values: dict[str, Any]) -> None:
    """Refuse a mentor and rounds that cannot meet on SmolLM2's default since benchmark v4 (no mentor, no rounds):
    rounds asked for with no mentor or proposer mix to draw prompts from, or a mentor named with no round to ask it,
    would both silently run as plain prompt tuning. ``--mentor none`` written by the user stays the baseline."""
    from peft_catalyst.app.runner import UserError

    asked = [f"--{n}" for n in ("catalyst_rounds", "catalyst_initial_round") if _given(n, tokens, file_values)]
    rounds = training.catalyst_rounds > 0 or training.catalyst_initial_round
    no_mentor = mentor.mentor.strip() == "none" and not mentor.mentor_replay
    mix = training.catalyst_proposer_counts
    if asked and rounds and no_mentor and not mix and not _given("mentor", tokens, file_values):
        raise UserError(
            f"{' and '.join(asked)} {'asks' if len(asked) == 1 else 'ask'} for rounds, but this model's default "
            "has no mentor (plain prompt tuning: benchmark v4 found nothing better): add --mentor smollm2 (or "
            f"openai:<model>, hf:<model>), or use {SCREENED_START_HINT}."
        )
    if not no_mentor and not rounds and not asked and _given("mentor", tokens, file_values):
        from peft_catalyst.app.mentor_setup import validate_mentor_args

        validate_mentor_args(mentor)  # a mentor that does not exist is said so first
        raise UserError(
            f"--mentor {mentor.mentor} has no round to propose in: this model's default runs none (plain prompt "
            "tuning: benchmark v4 found nothing better): add --catalyst_rounds 2 (and --catalyst_initial_round true "
            f"for a screened start), or use {SCREENED_START_HINT}."
        )


def _number_errors(model: Any, data: Any, mentor: Any, run: Any, training: Any) -> list[str]:
    """What is wrong with the numbers that neither argparse nor the dataclasses check (transformers takes a negative
    learning rate or ``max_steps`` without a word, and fails, or trains for epochs, later)."""

    def positive(value: float) -> bool:
        return value > 0 and value != float("inf")

    rules: list[tuple[str, Any, Any, str]] = [
        ("learning_rate", training.learning_rate, positive, "a positive number"),
        ("max_steps", training.max_steps, lambda v: v >= 1 or v == -1, "at least 1 (or -1: train --num_train_epochs)"),
        ("num_train_epochs", training.num_train_epochs, positive, "a positive number"),
        ("per_device_train_batch_size", training.per_device_train_batch_size, lambda v: v >= 1, "at least 1"),
        ("per_device_eval_batch_size", training.per_device_eval_batch_size, lambda v: v >= 1, "at least 1"),
        ("gradient_accumulation_steps", training.gradient_accumulation_steps, lambda v: v >= 1, "at least 1"),
        ("eval_batch_size", run.eval_batch_size, lambda v: v >= 1, "at least 1"),
        ("weight_decay", training.weight_decay, lambda v: v >= 0, "at least 0"),
        ("max_grad_norm", training.max_grad_norm, lambda v: v >= 0, "at least 0 (0: no clipping)"),
        ("adam_beta1", training.adam_beta1, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("adam_beta2", training.adam_beta2, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("adam_epsilon", training.adam_epsilon, positive, "a positive number"),
        ("label_smoothing_factor", training.label_smoothing_factor, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("logging_steps", training.logging_steps, positive, "a positive number"),
        ("save_steps", training.save_steps, positive, "a positive number"),
        ("save_total_limit", training.save_total_limit, lambda v: v is None or v >= 0, "at least 0 (0: keep all)"),
        ("dataloader_num_workers", training.dataloader_num_workers, lambda v: v >= 0, "at least 0"),
        ("seed", training.seed, lambda v: v >= 0, "at least 0"),
        ("data_seed", training.data_seed, lambda v: v is None or v >= 0, "at least 0"),
        ("split_seed", data.split_seed, lambda v: v >= 0, "at least 0"),
        ("mentor_temperature", mentor.mentor_temperature, lambda v: v >= 0, "at least 0"),
        ("mentor_max_tokens", mentor.mentor_max_tokens, lambda v: v >= 1, "at least 1"),
    ]
    return [f"--{name} must be {what}, got {value}" for name, value, ok, what in rules if not ok(value)]


def _newest_run_with_a_checkpoint(folder: Path) -> Path | None:
    """The most recently changed run folder in ``folder`` that holds a checkpoint (the default --output_dir has a
    time stamp, so the same options name a new folder: the run to resume is most likely this one)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    runs = [d for d in folder.iterdir() if d.is_dir() and get_last_checkpoint(str(d))]
    return max(runs, key=lambda d: d.stat().st_mtime, default=None)


def _checkpoint_error(resume: Any, output_dir: str) -> str | None:
    """Why ``--resume_from_checkpoint`` cannot resume (one line naming the fix), or None when it can."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume is None or resume is False or str(resume).strip().lower() in ("", "false"):
        return None
    complete = "trainer_state.json"  # Trainer writes it last: a checkpoint cut short while saving lacks it
    if str(resume).strip().lower() == "true":
        out = Path(output_dir)
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            newest = _newest_run_with_a_checkpoint(out.parent) if not out.exists() else None
            own = f"--output_dir {newest}" if newest else "the stopped run's own --output_dir"
            return (
                f"--resume_from_checkpoint true: --output_dir {out} holds no checkpoint-N folder; pass {own} (or "
                "--resume_from_checkpoint <its folder>/checkpoint-N). A run saves one at each round boundary unless "
                "--save_strategy no."
            )
        if not (Path(last) / complete).is_file():
            earlier = sorted(out.glob("checkpoint-*/" + complete))
            hint = f"--resume_from_checkpoint {earlier[-1].parent}" if earlier else "a complete checkpoint"
            return f"--resume_from_checkpoint true: {last} is incomplete (cut short while saving): pass {hint}."
        return None
    path = Path(str(resume))
    if not path.is_dir():
        return (
            f"--resume_from_checkpoint: no such checkpoint folder {str(resume)!r}; pass <run folder>/checkpoint-N, "
            "or true for the last one in --output_dir."
        )
    if not (path / complete).is_file():
        last = get_last_checkpoint(str(path))
        if last is not None:
            return (
                f"--resume_from_checkpoint {path} is a run folder, not a checkpoint: pass {last}, or "
                f"--resume_from_checkpoint true --output_dir {path}."
            )
        return f"--resume_from_checkpoint {path} holds no checkpoint (no {complete}): pass a checkpoint-N folder."
    return None


def check_train_args(model: Any, data: Any, mentor: Any, run: Any, training: Any, resume: bool = True) -> None:
    """Everything about a run's arguments that can be checked before any data or model loads, in one place: the
    mentor's configuration, the numbers, the ranking metric, the round schedule (when rounds can happen) and, with
    ``resume``, the checkpoint to resume from. Raises one :class:`UserError` (one line; exit code 2)."""
    from peft_catalyst.app.errors import UserError
    from peft_catalyst.app.mentor_setup import validate_mentor_args
    from peft_catalyst.app.tasks import METRIC_NAMES

    validate_mentor_args(mentor)
    errors = _number_errors(model, data, mentor, run, training)
    metrics = ("loss", *METRIC_NAMES)
    if training.catalyst_metric not in metrics:
        close = difflib.get_close_matches(training.catalyst_metric, metrics, n=1, cutoff=0.5)
        errors.append(
            f"--catalyst_metric {training.catalyst_metric!r} is not a metric of this command's tasks: choose "
            f"{', '.join(repr(m) for m in metrics)}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    if errors:
        raise UserError("; ".join(errors) + ".")
    rounds = mentor.mentor.strip() != "none" or mentor.mentor_replay
    mix = training.catalyst_proposer_counts or {}
    if not rounds and mix.get("mentor"):
        raise UserError(
            "--catalyst_proposers asks the mentor but --mentor is none: name a mentor, or drop 'mentor' from "
            "--catalyst_proposers."
        )
    rounds = rounds or bool(mix)  # a mix without the mentor runs rounds without one
    try:
        training.validate_restart_shape(model.num_virtual_tokens)  # a wrong value, rounds or not
        if rounds and (training.catalyst_rounds > 0 or training.catalyst_initial_round):
            training.validate_schedule(training.max_steps)  # only when rounds can happen
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    problem = _checkpoint_error(training.resume_from_checkpoint, training.output_dir) if resume else None
    if problem:
        raise UserError(problem)
