"""The command line's one kind of error: a problem with the user's input, reported as one line and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (arguments, files, assets): reported as one message, exit code 2."""


__all__ = ["UserError"]
