"""The ``peft-catalyst`` console script: prints the usage and ``train --help`` at once, runs everything else through
:func:`peft_catalyst.app.cli.main`.

Importing ``peft_catalyst`` registers the CATALYST PEFT type, which imports torch, transformers and PEFT (about 5 s
on 2 CPU cores). The help needs none of that: its text (``peft_catalyst/app/help_text.py``, standard library only) is
read from the package's folder without importing the package.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path


def _help_text() -> dict | None:
    """The globals of ``peft_catalyst/app/help_text.py``, found without importing ``peft_catalyst``."""
    spec = importlib.util.find_spec("peft_catalyst")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "app" / "help_text.py"
        if path.is_file():
            return runpy.run_path(str(path))
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    text = _help_text() if argv else None
    if text is not None:
        if argv[0] in ("-h", "--help"):
            print(text["USAGE"])
            return 0
        options = argv[1:] if argv[0] == "train" else argv if argv[0].startswith("-") else None  # train's options
        if options is not None and text["wants_help"](options) == "short":
            print(text["TRAIN_HELP"])
            return 0
    from peft_catalyst.app.cli import main as run_command

    return run_command(argv)


if __name__ == "__main__":
    sys.exit(main())
