"""The arguments of ``peft-catalyst train`` (and of ``compare``, which takes the same): ``HfArgumentParser`` over the
runner's argument dataclasses and :class:`~peft_catalyst.CatalystTrainingArguments`, optionally from a YAML or JSON
file (``--config run.yaml``; flags on the command line win), with embedded defaults per packaged model. Expected
user errors are :class:`~peft_catalyst.app.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``HfArgumentParser``'s formatter, minus the "(default: ...)" suffix where the help names the default itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if "Default depends on --model" in help_text or help_text.startswith(("Sets --", "Not used by this command")):
            return help_text
        return super()._get_help_string(action)


def _train_parser(dataclass_types: tuple) -> Any:
    """``HfArgumentParser`` whose argparse errors (a mistyped option or choice) are one line, not the usage."""
    from transformers import HfArgumentParser

    from peft_catalyst.app.runner import UserError

    class TrainParser(HfArgumentParser):
        def error(self, message: str):  # argparse prints the whole usage and exits; we say the one thing
            raise UserError(f"{message} (see {SEE_HELP})")

    return TrainParser(
        dataclass_types,
        prog="peft-catalyst train",
        description="Prompt-tune a model with LLM-guided restarts. Options may also come from --config FILE.",
        formatter_class=_HelpFormatter,
    )


#: Where a user error on the command line points to.
SEE_HELP = "peft-catalyst train --help"

#: Help of this command's options where the library's own help would mislead a command-line user.
_CLI_HELP = {
    "catalyst_eval_size": (
        "Not used by this command: every task here comes with its own catalyst split, sized by --catalyst_size "
        "(the library carves this share from the training set when no catalyst_dataset is given)."
    ),
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
            own = (action.help or "").replace(" (default: the task's)", "").rstrip()
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


def parse_train_args(argv: list[str]) -> tuple[Any, ...]:
    """``(model, data, mentor, run, training)`` argument dataclasses, embedded defaults filled in."""
    from peft_catalyst.app.runner import (
        DataArguments,
        MentorArguments,
        ModelArguments,
        RunArguments,
        UserError,
        embedded_defaults,
    )
    from peft_catalyst.trainer import CatalystTrainingArguments

    config, tokens = _split_config(argv)
    file_values = read_config_file(config) if config else {}
    parser = _train_parser((ModelArguments, DataArguments, MentorArguments, RunArguments, CatalystTrainingArguments))
    parser.add_argument("--config", help="YAML or JSON file of options (command-line flags win).")
    check_config_values(parser, file_values, str(config))
    pre = argparse.ArgumentParser(add_help=False)
    for name, default in (
        ("--model", "smollm2"),
        ("--model_name_or_path", None),
        ("--dataset", "rotten_tomatoes"),
        ("--dataset_name", None),
    ):
        pre.add_argument(name, default=file_values.get(name[2:], default))
    known, _ = pre.parse_known_args(tokens)
    dataset = Path(known.dataset_name).stem if known.dataset_name else known.dataset
    parser.set_defaults(**embedded_defaults(known.model, known.model_name_or_path, dataset))
    _document_model_defaults(parser, dataset)
    parser.set_defaults(**file_values)  # the file over the embedded defaults, command-line flags over both
    try:
        parsed = parser.parse_args_into_dataclasses(args=tokens)
    except ValueError as exc:  # the dataclasses' own validation (e.g. CatalystTrainingArguments), unknown options
        message = str(exc)
        if message.startswith("Some specified arguments are not used"):
            unknown = [t for t in tokens if t.startswith("-") and t.split("=", 1)[0] in message]
            message = f"unrecognized arguments: {' '.join(unknown) or message} (see {SEE_HELP})"
        raise UserError(message) from exc
    return tuple(p for p in parsed if not isinstance(p, argparse.Namespace))
