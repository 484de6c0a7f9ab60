"""What a user sees while a mentor works: a bar over generated tokens (local) or the elapsed time (remote).

A mentor call can take minutes on a slow CPU; without a sign of life a user thinks the run hung. Both bars go
through tqdm like the trainer's, to stderr, and are off when stderr is not a terminal unless ``enabled=True``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from tqdm.auto import tqdm

__all__ = ["elapsed_bar", "token_bar"]


def _disable(enabled: bool | None) -> bool | None:
    return None if enabled is None else not enabled  # tqdm's None: off when the stream is not a terminal


def token_bar(desc: str, total: int, enabled: bool | None = None) -> tqdm:
    """A bar over generated tokens, with its rate (``tok/s``); update it once per generated token."""
    return tqdm(total=total, desc=desc, unit="tok", leave=False, disable=_disable(enabled))


@contextlib.contextmanager
def elapsed_bar(desc: str, enabled: bool | None = None, every_s: float = 1.0) -> Iterator[None]:
    """Show ``desc`` and the elapsed time, refreshed every ``every_s`` seconds, while the block waits on a server."""
    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed", leave=False, disable=_disable(enabled))
    if bar.disable:
        yield
        return
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every_s):
            bar.refresh()

    ticker = threading.Thread(target=tick, name="mentor-elapsed", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        bar.close()
