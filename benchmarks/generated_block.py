"""A block of a page (the README, a docs page) generated from committed results, kept between two marker lines: one
way to read it and to replace it, for every generator (``benchmarks.timings``, benchmark v4's README headline)."""

from __future__ import annotations

__all__ = ["block_of", "replace_block"]


def _parts(page: str, begin: str, end: str, where: str) -> tuple[str, str, str]:
    """``page`` cut at the markers: the text up to ``begin``'s line, the text between the markers, and the text from
    ``end`` on; a ValueError naming the page and its markers when it lacks one (or holds them out of order)."""
    head, found, rest = page.partition(begin)
    body, found_end, tail = rest.partition(end)
    if not (found and found_end) or begin in rest:
        raise ValueError(f"{where} needs the marker lines {begin!r} and {end!r}, once each, in that order")
    return head, body, tail


def block_of(page: str, begin: str, end: str, where: str = "the page") -> str:
    """The text between the marker lines of ``page`` (without the newlines that end the markers' lines)."""
    return _parts(page, begin, end, where)[1].strip("\n")


def replace_block(page: str, begin: str, end: str, body: str, where: str = "the page") -> str:
    """``page`` with the text between its ``begin`` and ``end`` marker lines replaced by ``body``."""
    head, _, tail = _parts(page, begin, end, where)
    body = body.strip("\n")
    return f"{head}{begin}\n{body}\n{end}{tail}"
