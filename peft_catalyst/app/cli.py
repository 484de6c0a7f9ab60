"""The ``peft-catalyst`` command. ``peft-catalyst train`` with no arguments runs the embedded offline default.

Arguments come from ``HfArgumentParser`` over :class:`~peft_catalyst.app.runner.ModelArguments`, ``DataArguments``,
``MentorArguments``, ``RunArguments`` and :class:`~peft_catalyst.CatalystTrainingArguments`, optionally from a YAML
or JSON file (``--config run.yaml``; flags on the command line win). Expected user errors print one message and exit
with code 2, without a traceback.
"""

from __future__ import annotations

import logging
import sys

from peft_catalyst.app.arguments import (  # noqa: F401 (re-exported: the command's parsing lives there)
    SEE_HELP,
    check_config_values,
    check_train_args,
    parse_train_args,
    read_config_file,
)
from peft_catalyst.app.help_text import (
    DEFAULT_JOB_TIME,
    HELP_ALL,
    INIT_NAMES,
    MODEL_NAMES,
    TASK_NAMES,
    TRAIN_HELP,
    USAGE,
    wants_help,
)

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:  # the README's promise: no arguments runs the default job
            argv = ["train"]
        else:
            print(USAGE)
            return 0
    command, rest = argv[0], argv[1:]
    if command == "train" or (command.startswith("-") and command not in ("-h", "--help")):
        rest = rest if command == "train" else argv  # options without a command: they are train's
        shown = wants_help(rest)
        if shown == "short":
            print(TRAIN_HELP)
            return 0
        if shown == "all":
            return _guarded(print_full_help, [a for a in rest if a != HELP_ALL])
        return _guarded(train, rest)
    if command == "compare":
        from peft_catalyst.app.compare.command import compare

        return _guarded(compare, rest)
    print(f"peft-catalyst: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def _guarded(fn, argv: list[str]) -> int:
    """Run a command; user errors (bad input, missing assets) become one line on stderr and exit code 2."""
    from peft_catalyst.app.assets import AssetNotInstalledError
    from peft_catalyst.app.runner import UserError
    from peft_catalyst.mentors import ReplayMissError

    switch_on_process_settings()
    try:
        code = fn(argv)
        if code == 0:
            _end_processes()
        return code
    except (UserError, AssetNotInstalledError) as exc:
        print(f"peft-catalyst: error: {exc}", file=sys.stderr)
        return 2
    except ReplayMissError as exc:  # --mentor_replay promises that no round is skipped
        print(f"peft-catalyst: error: {exc.args[0]}, or drop --mentor_replay to ask the mentor.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("peft-catalyst: interrupted", file=sys.stderr)
        return 130


def switch_on_process_settings() -> None:
    """What the command line switches on for its whole process, and importing the library does not: the narrow
    upstream warning filters (``peft_catalyst.quiet``) and the packaged models' Hub ids loading from their asset
    packages when the Hub is off (``peft_catalyst.use_packaged_models``; the run folders name those ids)."""
    from peft_catalyst import quiet, use_packaged_models

    quiet.apply()
    use_packaged_models()


def _end_processes() -> None:
    """After a command finished on every process (torchrun / accelerate launch), destroy the process group, as
    PyTorch asks a program to before it exits: left to interpreter teardown, a finished ZeRO-3 run was seen to abort
    (SIGABRT) on one rank. Only on success: destroying the group while another rank is still failing can hang."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def print_full_help(argv: list[str]) -> int:
    """``peft-catalyst train --help-all``: every option, transformers' ``TrainingArguments`` included (the defaults
    shown are those of the ``--model`` and ``--dataset`` given with it)."""
    from peft_catalyst.app.arguments import full_help

    print(full_help(argv))
    return 0


def default_job_line(model_args, data_args, mentor_args, training_args) -> str:
    """The line a run with no options prints first: what it runs and about how long it takes (docs/timings.md)."""
    model = MODEL_NAMES.get(model_args.model, model_args.model)
    task = TASK_NAMES.get(data_args.dataset, data_args.dataset)
    if training_args.catalyst_rounds or training_args.catalyst_initial_round:
        start = "a screened start (an initial round) and " if training_args.catalyst_initial_round else ""
        how = f", {start}{training_args.catalyst_rounds} mentor rounds ({mentor_args.mentor} as mentor)"
    else:
        init = INIT_NAMES.get(model_args.prompt_init, model_args.prompt_init)
        how = f" of plain prompt tuning from PEFT's {init} start, no mentor rounds"
    return (
        f"Running the default job: {model} on {task}, {training_args.max_steps} steps{how}; {DEFAULT_JOB_TIME}. "
        f"Outputs in {training_args.output_dir}; 'peft-catalyst train --help' lists the options."
    )


def train(argv: list[str]) -> int:
    """``peft-catalyst train``: one run, outputs in ``output_dir``, a summary at the end."""
    from peft_catalyst.app.runner import run, summary_lines

    model_args, data_args, mentor_args, run_args, training_args = parse_train_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    check_train_args(model_args, data_args, mentor_args, run_args, training_args)  # before anything loads
    if not argv:
        print(default_job_line(model_args, data_args, mentor_args, training_args), flush=True)
    metrics = run(model_args, data_args, mentor_args, run_args, training_args)  # upstream noise: peft_catalyst.quiet
    print()
    for line in summary_lines(metrics, training_args.output_dir):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
