"""What ``peft-catalyst`` and ``peft-catalyst train --help`` print: the options most runs need, in plain text.

Pure data and the standard library, nothing else: the console script (``peft_catalyst_cli``) reads this file without
importing the package (which imports torch, transformers and PEFT, about 5 s), so that the help prints at once.
``peft-catalyst train --help-all`` builds the real parser for every option. ``tests/test_cli.py`` checks that every
option named here exists with the choices and defaults stated here.
"""

from __future__ import annotations

import textwrap

HELP_ALL = "--help-all"

#: How long the default job takes, from docs/timings.md's table (``make demo``: "the job itself 10 min 15 s").
DEFAULT_JOB_TIME = "about 10 min on 2 CPU cores (docs/timings.md)"

#: The LLM-guided method that was SmolLM2's default until benchmark v4, as a config file of a clone (``--config``).
SCREENED_START_CONFIG = "examples/configs/screened_start.yaml"

#: How the no-option run names what it runs.
MODEL_NAMES = {"smollm2": "SmolLM2-135M-Instruct", "minilm": "all-MiniLM-L6-v2"}
TASK_NAMES = {"rotten_tomatoes": "Rotten Tomatoes", "trec": "TREC questions", "sms_spam": "SMS spam"}
#: How the no-option run names its soft prompt's init (PEFT's ``PromptTuningInit`` names).
INIT_NAMES = {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}

USAGE = """peft-catalyst <command> [options]

commands:
  train    prompt-tune a model with LLM-guided restarts (no options: the embedded offline default)
  compare  does the mentor help on this task? catalyst vs random restarts vs plain prompt tuning, paired per seed

Run 'peft-catalyst train --help' for the options most runs need ('--help-all' for every one), 'peft-catalyst compare
--help' for what compare adds."""

#: Per packaged model: a default that differs between them.
Both = dict

#: (section, [(flags, help, option name or None, default as shown)]); the default is a string, or one per model.
SECTIONS: list[tuple[str, list[tuple[str, str, str | None, str | Both | None]]]] = [
    (
        "model (the doer, whose soft prompt is tuned)",
        [
            ("--model {smollm2,minilm}", "packaged model: smollm2 (SmolLM2-135M-Instruct, answers with label words) "
             "or minilm (all-MiniLM-L6-v2 with a classification head, much faster on CPU)", "model", "smollm2"),
            ("--model_name_or_path PATH", "any local or Hub causal LM or sequence classifier instead (overrides "
             "--model)", "model_name_or_path", None),
            ("--num_virtual_tokens N", "length of the soft prompt in virtual tokens", "num_virtual_tokens", "8"),
            ("--prompt_init {random,vocab,text}", "the soft prompt's start, PEFT's RANDOM, SAMPLE_VOCAB (the best "
             "start in benchmark v4) or TEXT (the task's manual prompt)", "prompt_init",
             Both(smollm2="vocab", minilm="random")),
        ],
    ),
    (
        "data (the task)",
        [
            ("--dataset {rotten_tomatoes,trec,sms_spam}", "packaged task: movie review sentiment, 6 question types, "
             "SMS spam", "dataset", "rotten_tomatoes"),
            ("--dataset_name NAME", "any datasets dataset instead: Hub name, save_to_disk folder, CSV or JSON file",
             "dataset_name", None),
            ("--text_column COLUMN", "its text column", "text_column", "text"),
            ("--label_column COLUMN", "its label column", "label_column", "label"),
            ("--train_size SIZE", "training examples: a count (200) or a fraction of the task's examples in (0, 1) "
             "(0.2); the task's own by default, as for the three below", "train_size", None),
            ("--catalyst_size SIZE", "held-out examples the mentor's candidates are scored on",
             "catalyst_size", Both(smollm2="100", minilm="the task's")),
            ("--validation_size SIZE", "validation examples", "validation_size", None),
            ("--test_size SIZE", "test examples the accuracy is reported on", "test_size",
             Both(smollm2="300", minilm="the task's")),
        ],
    ),
    (
        "mentor (the LLM that proposes text prompts)",
        [
            ("--mentor SPEC", "smollm2 (embedded, offline), openai:<model> (OpenAI or a compatible server; key from "
             "OPENAI_API_KEY), hf:<model> (Hugging Face inference), random (random words: the control), none "
             "(no LLM: the rounds draw from the other proposers)", "mentor", Both(smollm2="none", minilm="smollm2")),
            ("--mentor_base_url URL", "base URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...)",
             "mentor_base_url", None),
            ("--mentor_timeout SECONDS", "time limit: 60 s a server request, 120 s an embedded call",
             "mentor_timeout", None),
            ("--mentor_replay FILE", "replay a run's mentor_cache.sqlite with no LLM at all", "mentor_replay", None),
        ],
    ),
    (
        "rounds (gradient stages, then the mentor's restarts)",
        [
            ("--catalyst_initial_round BOOL", "a screened start: a round before the first step; false "
             "with --catalyst_rounds 0 makes the run plain prompt tuning", "catalyst_initial_round", "False"),
            ("--catalyst_rounds N", "rounds after the stages (the initial round not counted); the method with "
             f"SmolLM2 as mentor: --config {SCREENED_START_CONFIG}", "catalyst_rounds",
             Both(smollm2="0", minilm="3")),
            ("--catalyst_proposers MIX", "where a round's prompts come from, name=count (mentor, labels, examples, "
             "sample_vocab, vocab, text, current); the mentor alone by default", "catalyst_proposers", None),
            ("--catalyst_screen_schedule {full,halving}", "how a round's prompts are screened on the catalyst "
             "split: all on every example, or by successive halving", "catalyst_screen_schedule",
             Both(smollm2="halving", minilm="full")),
            ("--catalyst_stage_steps N", "gradient steps of each stage before a round", "catalyst_stage_steps",
             Both(smollm2="20", minilm="30")),
            ("--catalyst_num_candidates N", "prompts asked of the mentor per round", "catalyst_num_candidates", "4"),
            ("--catalyst_selection {best,race,first}", "best: keep the best-scoring prompt; race: train each for "
             "the same counted budget first; first: take the mentor's first", "catalyst_selection", "best"),
            ("--catalyst_restart {full,blend,partial}", "how a proposal becomes a new start", "catalyst_restart",
             "full"),
            ("--catalyst_metric {label_loss,accuracy,loss}", "what ranks prompts on the catalyst split",
             "catalyst_metric", "label_loss"),
        ],
    ),
    (
        "training",
        [
            ("--max_steps N", "optimizer steps (at least 1; -1: train --num_train_epochs epochs instead)",
             "max_steps", Both(smollm2="60", minilm="150")),
            ("--learning_rate LR", "learning rate of the soft prompt", "learning_rate", "0.03"),
            ("--per_device_train_batch_size N", "training batch size", "per_device_train_batch_size",
             Both(smollm2="8", minilm="16")),
            ("--seed N", "seed of the soft prompt's init and the data order", "seed", "42"),
            ("--use_cpu", "train on the CPU even where a GPU is available", "use_cpu", None),
        ],
    ),
    (
        "output",
        [
            ("--output_dir DIR", "run folder", "output_dir", "runs/<dataset>-<model>-<date>-<time>"),
            ("--overwrite_output_dir", "write into a folder that is not empty: files of yours there are kept; an "
             "earlier peft-catalyst run's outputs there are replaced", "overwrite_output_dir", None),
            ("--resume_from_checkpoint {true,DIR}", "continue a killed run with the same options: true takes the "
             "last checkpoint in --output_dir (runs save one at each round boundary: --save_strategy, "
             "--save_steps)", "resume_from_checkpoint", None),
            ("--no_plot", "do not draw run.png", "plot", None),
            ("--config FILE", "options from a YAML or JSON file (flags on the command line win)", "config", None),
            ("-h, --help", "this list", None, None),
            (f"{HELP_ALL}", "every option, transformers' TrainingArguments included", None, None),
        ],
    ),
]

_INTRO = f"""usage: peft-catalyst train [options] [--config FILE]

Prompt-tune a model's soft prompt with LLM-guided restarts. With no options: the default job, SmolLM2-135M-Instruct
on Rotten Tomatoes, 60 steps of plain prompt tuning from PEFT's SAMPLE_VOCAB start (benchmark v4 found no
configuration with a mentor better; {SCREENED_START_CONFIG} turns the mentor's rounds on),
{DEFAULT_JOB_TIME}.
These are the options most runs need; 'peft-catalyst train {HELP_ALL}' lists every one."""

_COLUMN, _WIDTH = 34, 118


def _default_text(default: str | Both | None) -> str:
    if default is None:
        return ""
    if isinstance(default, dict):
        return " Default: " + ", ".join(f"{value} for {model}" for model, value in default.items()) + "."
    return f" Default: {default}."


def render() -> str:
    """The short help: the sections above, each option's help wrapped beside its flags."""
    lines = [_INTRO]
    for title, options in SECTIONS:
        lines += ["", f"{title}:"]
        for flags, text, _, default in options:
            body = textwrap.wrap(text + "." + _default_text(default), _WIDTH - _COLUMN)
            head = f"  {flags}"
            if len(head) >= _COLUMN - 1:
                lines.append(head)
                head = ""
            lines.append(head.ljust(_COLUMN) + body[0])
            lines += [" " * _COLUMN + rest for rest in body[1:]]
    return "\n".join(lines)


TRAIN_HELP = render()


def wants_help(argv: list[str]) -> str | None:
    """``"all"`` for ``--help-all``, ``"short"`` for ``-h``/``--help``, else None (a run)."""
    if HELP_ALL in argv:
        return "all"
    if "-h" in argv or "--help" in argv:
        return "short"
    return None


__all__ = [
    "DEFAULT_JOB_TIME",
    "HELP_ALL",
    "MODEL_NAMES",
    "SECTIONS",
    "TASK_NAMES",
    "TRAIN_HELP",
    "USAGE",
    "render",
    "wants_help",
]
