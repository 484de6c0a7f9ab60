"""The ``--mentor*`` arguments and the mentor they build: checked before anything is loaded, cached on disk.

Split from :mod:`peft_catalyst.app.runner` (one idea per module): the runner asks for a mentor, this module knows the
backends, the replay file, the key check and the reachability probe.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_catalyst.app.errors import UserError
from peft_catalyst.projection import vocabulary_words

logger = logging.getLogger(__name__)


@dataclass
class MentorArguments:
    """The mentor LLM."""

    mentor: str = field(
        default="smollm2",
        metadata={
            "help": (
                "'smollm2' (embedded, offline; shares the doer's weights when the doer is SmolLM2), "
                "'openai:<model>' (OpenAI or any compatible server, see --mentor_base_url), 'hf:<model>' "
                "(Hugging Face inference), 'random' (random vocabulary words of the doer's tokenizer, seeded by "
                "--mentor_seed: the control that tells whether an LLM beats random restarts), or 'none' (plain "
                "prompt tuning)."
            )
        },
    )
    mentor_base_url: str | None = field(
        default=None, metadata={"help": "Base URL of an OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...)."}
    )
    mentor_timeout: float | None = field(
        default=None,
        metadata={
            "help": (
                "Seconds: a server's time-out per request (default 60; retries of transient faults add more), or "
                "the embedded model's wall-clock limit for a whole call, its stricter retry included (default 120)."
            )
        },
    )
    mentor_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the mentor."})
    mentor_max_tokens: int = field(default=256, metadata={"help": "Reply budget of a remote mentor, in tokens."})
    mentor_seed: int | None = field(default=0, metadata={"help": "Sampling seed of the mentor (None: random)."})
    meta_prompt: str | None = field(default=None, metadata={"help": "File with a meta-prompt template to use."})
    mentor_cache: str | None = field(
        default=None,
        metadata={"help": "sqlite cache of mentor replies (default: <output_dir>/mentor_cache.sqlite)."},
    )
    mentor_replay: str | None = field(
        default=None,
        metadata={
            "help": (
                "Replay the mentor from this cache file, with no LLM at all. A round whose request the file does not "
                "hold is an error (exit code 2) naming the round and the request's key."
            )
        },
    )
    mentor_random_counts: str | None = field(
        default=None,
        metadata={
            "help": (
                "--mentor random only: how many candidates each round draws, comma-separated (default: as many as "
                "asked). `compare` sets it to what the same seed's LLM mentor gave, so both train equal steps."
            )
        },
    )
    mentor_required: bool = field(
        default=True,
        metadata={
            "help": (
                "Stop before training (exit code 2) when the mentor cannot be reached or rejects the key at start; "
                "--mentor_required false trains without rounds instead."
            )
        },
    )


def validate_mentor_spec(spec: str) -> None:
    """Reject a malformed ``--mentor`` before anything is loaded."""
    backend, _, model = spec.strip().partition(":")
    if spec.strip() in ("none", "smollm2", "embedded", "random") or (backend in ("openai", "hf") and model):
        return
    raise UserError(f"Unknown mentor {spec!r}: use 'smollm2', 'openai:<model>', 'hf:<model>', 'random' or 'none'.")


#: ``--mentor_timeout``'s defaults: a server's per request, the embedded model's per call (2 slow cores).
SERVER_TIMEOUT_S = 60.0
EMBEDDED_TIMEOUT_S = 120.0


def _timeout(args: MentorArguments, default: float) -> float:
    """``--mentor_timeout``, or the backend's default; zero or less is a ``UserError``."""
    if args.mentor_timeout is None:
        return default
    if not args.mentor_timeout > 0:
        raise UserError(f"--mentor_timeout must be more than 0 seconds, got {args.mentor_timeout}.")
    return float(args.mentor_timeout)


def random_counts(args: MentorArguments) -> list[int] | None:
    """``--mentor_random_counts`` as numbers (None: not given); anything but whole numbers >= 0 is a ``UserError``."""
    given = args.mentor_random_counts
    if isinstance(given, (list, tuple)):  # a list in a --config file
        given = ",".join(str(c) for c in given)
    if given is None or not str(given).strip():
        return None
    try:
        counts = [int(c) for c in str(given).split(",")]
    except ValueError:
        counts = [-1]
    if any(c < 0 for c in counts):
        raise UserError(
            "--mentor_random_counts: whole numbers >= 0 separated by commas, e.g. 3,2,3; got "
            f"{args.mentor_random_counts!r}."
        )
    return counts


def validate_mentor_args(args: MentorArguments) -> None:
    """Check the mentor's configuration before any data or model is loaded: the spec, a replay file, a key.

    The messages name the command's options (``--mentor_base_url``), not the Python keywords.
    """
    if args.mentor_replay:
        if not Path(args.mentor_replay).is_file():
            raise UserError(f"--mentor_replay: no cache file at {args.mentor_replay}.")
        return
    spec = args.mentor.strip()
    validate_mentor_spec(spec)
    random_counts(args)
    _timeout(args, SERVER_TIMEOUT_S)
    has_key_or_server = os.environ.get("OPENAI_API_KEY") or args.mentor_base_url or os.environ.get("OPENAI_BASE_URL")
    if spec.startswith("openai:") and not has_key_or_server:
        raise UserError(
            f"--mentor {spec} needs an API key: set OPENAI_API_KEY, or pass --mentor_base_url for an "
            "OpenAI-compatible server that needs none."
        )
    if spec.startswith("hf:") and args.mentor_required and not _hf_token():
        raise UserError(
            f"--mentor {spec} needs a Hugging Face token: set HF_TOKEN or log in with `hf auth login` "
            f"({GO_ON_WITHOUT})."
        )


#: How a run goes on when its mentor cannot be had, said by every message that stops it.
GO_ON_WITHOUT = "or pass --mentor_required false to train without rounds"


def _hf_token() -> str | None:
    """The token ``huggingface_hub`` would send (``HF_TOKEN``, the stored login), or None."""
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # pragma: no cover - an unreadable token file is no token
        return None


def needs_doer(args: MentorArguments) -> bool:
    """Whether the mentor is built from the doer (the embedded SmolLM2 shares its weights, ``random`` its
    vocabulary); the others (a server, a replay, none) are built and probed before any model is loaded."""
    return not args.mentor_replay and args.mentor.strip() in ("smollm2", "embedded", "random")


def build_mentor(
    args: MentorArguments,
    output_dir: str | os.PathLike | None = None,
    shared: tuple | None = None,
    tokenizer: Any = None,
):
    """The mentor named by ``--mentor``, or None for plain prompt tuning.

    ``shared``: ``(model, tokenizer)`` of an already loaded SmolLM2 for the embedded mentor to use instead of a
    second copy. ``tokenizer``: the doer's, whose vocabulary ``--mentor random`` draws from. Replies of a chat mentor
    are cached in ``--mentor_cache`` or, with an ``output_dir``, its ``mentor_cache.sqlite``.
    """
    from peft_catalyst.mentors import (
        CachedMentor,
        HubInferenceMentor,
        MentorError,
        OpenAIMentor,
        RandomMentor,
        TransformersMentor,
    )

    validate_mentor_args(args)
    if args.mentor_replay:
        return CachedMentor(None, Path(args.mentor_replay), mode="strict")
    spec = args.mentor.strip()
    backend, _, model = spec.partition(":")
    if spec == "none":
        return None
    if spec == "random":  # free and deterministic: nothing to cache
        if tokenizer is None:
            raise UserError("--mentor random needs the doer's tokenizer (build_mentor(..., tokenizer=...)).")
        try:
            words = vocabulary_words(tokenizer)
        except ValueError as exc:
            raise UserError(f"Mentor 'random': {exc}") from exc
        return RandomMentor(
            words, seed=args.mentor_seed if args.mentor_seed is not None else 0, counts=random_counts(args)
        )
    try:
        if spec in ("smollm2", "embedded"):
            if not shared:
                from peft_catalyst.app.assets import load_smollm2

                shared = load_smollm2()
            inner = TransformersMentor.embedded(
                shared[0],
                shared[1],
                max_time=_timeout(args, EMBEDDED_TIMEOUT_S),
                temperature=args.mentor_temperature,
                seed=args.mentor_seed,
                meta_prompt=args.meta_prompt,
            )
        elif backend == "openai":
            inner = OpenAIMentor(
                model,
                base_url=args.mentor_base_url,
                timeout=_timeout(args, SERVER_TIMEOUT_S),
                temperature=args.mentor_temperature,
                max_tokens=args.mentor_max_tokens,
                seed=args.mentor_seed,
                meta_prompt=args.meta_prompt,
            )
        else:  # "hf:<model>", the one form validate_mentor_spec leaves
            inner = HubInferenceMentor(
                model,
                timeout=_timeout(args, SERVER_TIMEOUT_S),
                temperature=args.mentor_temperature,
                max_tokens=args.mentor_max_tokens,
                seed=args.mentor_seed,
                meta_prompt=args.meta_prompt,
            )
    except (MentorError, OSError, ValueError) as exc:
        raise UserError(f"Mentor {spec!r}: {exc}") from exc
    return with_reply_cache(inner, args, output_dir)


def with_reply_cache(inner, args: MentorArguments, output_dir: str | os.PathLike | None = None):
    """A chat mentor behind its reply cache (``--mentor_cache``, else ``<output_dir>/mentor_cache.sqlite``; none
    without either); other mentors as they are."""
    from peft_catalyst.mentors import CachedMentor, ChatMentor

    if not isinstance(inner, ChatMentor):
        return inner
    if args.mentor_cache:
        return CachedMentor(inner, args.mentor_cache, mode="use")
    if output_dir is not None:
        return CachedMentor(inner, Path(output_dir) / "mentor_cache.sqlite", mode="use")
    return inner


def open_mentor(
    args: MentorArguments,
    output_dir: str | os.PathLike | None = None,
    shared: tuple | None = None,
    tokenizer: Any = None,
) -> tuple[Any, str | None]:
    """:func:`build_mentor`, probed (:func:`reach_mentor`) before its reply cache is created, so that a mentor that
    cannot be had leaves no file in ``output_dir`` (the corrected command then runs into the same folder)."""
    mentor, why = reach_mentor(build_mentor(args, None, shared, tokenizer), args.mentor_required)
    return with_reply_cache(mentor, args, output_dir) if mentor is not None else None, why


def check_mentor(mentor, required: bool):
    """Probe a mentor once (no tokens spent): the mentor, or None when it cannot be had and not ``required``.

    See :func:`reach_mentor`, which also says why."""
    return reach_mentor(mentor, required)[0]


def reach_mentor(mentor, required: bool) -> tuple[Any, str | None]:
    """Probe a mentor once: ``(mentor, None)`` when it answers; unreachable, or its key rejected: a one-line
    ``UserError`` naming the fix when ``required`` (``--mentor_required``, the default), else a warning and
    ``(None, why)``, so the run trains without rounds and its summary says why."""
    from peft_catalyst.mentors import MentorError

    if mentor is None:
        return None, None
    try:
        mentor.check()
    except MentorError as exc:
        message = str(exc.args[0]) if exc.args else ""
        why = message.strip().splitlines()[0] if message.strip() else exc.reason
        if exc.reason == "auth":
            problem, fix = "rejects the credentials", "the key or token (OPENAI_API_KEY, HF_TOKEN)"
        else:
            problem, fix = "cannot be reached", "--mentor or --mentor_base_url, or start the server"
        if required:
            raise UserError(f"The mentor {problem} ({why}): fix {fix}, {GO_ON_WITHOUT}.") from exc
        logger.warning("The mentor %s (%s): training runs without rounds.", problem, why)
        mentor.close()
        return None, why
    return mentor, None


__all__ = [
    "MentorArguments",
    "build_mentor",
    "check_mentor",
    "needs_doer",
    "open_mentor",
    "random_counts",
    "reach_mentor",
    "validate_mentor_args",
    "validate_mentor_spec",
    "with_reply_cache",
]
