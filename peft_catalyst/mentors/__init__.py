"""Mentors: the LLM side of peft-catalyst. A request (task + scored trajectory) in, candidate text prompts out.

Backends share one protocol (:class:`Mentor`): :class:`OpenAIMentor` (OpenAI or any compatible server),
:class:`HubInferenceMentor` (Hugging Face inference API), :class:`TransformersMentor` (a local model, offline; the
embedded SmolLM2 by :meth:`TransformersMentor.embedded`), and :class:`CachedMentor` (sqlite cache and replay).
Mentors know nothing of torch or the trainer; ``transformers_mentor`` is the only module that imports torch, lazily.
"""

from .base import (
    Completion,
    Mentor,
    MentorError,
    MentorProposal,
    MentorRequest,
    MentorUsage,
    PastRound,
    RetryPolicy,
    TrajectoryPoint,
)
from .cache import CachedMentor
from .hub_mentor import HubInferenceMentor
from .metaprompt import (
    DEFAULT_META_PROMPT,
    DEFAULT_RETRY_PROMPT,
    DEFAULT_SYSTEM_PROMPT,
    MetaPrompt,
    load_meta_prompt,
    render_meta_prompt,
)
from .openai_mentor import OpenAIMentor
from .parsing import ParseResult, parse_candidates, parse_reply
from .transformers_mentor import TransformersMentor

__all__ = [
    "DEFAULT_META_PROMPT",
    "DEFAULT_RETRY_PROMPT",
    "DEFAULT_SYSTEM_PROMPT",
    "CachedMentor",
    "Completion",
    "HubInferenceMentor",
    "Mentor",
    "MentorError",
    "MentorProposal",
    "MentorRequest",
    "MentorUsage",
    "PastRound",
    "MetaPrompt",
    "OpenAIMentor",
    "ParseResult",
    "RetryPolicy",
    "TransformersMentor",
    "TrajectoryPoint",
    "load_meta_prompt",
    "parse_candidates",
    "parse_reply",
    "render_meta_prompt",
]
