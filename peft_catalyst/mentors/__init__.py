"""Mentors: the LLM side of peft-catalyst. A request (task + scored trajectory) in, candidate text prompts out.

The contract the trainer uses is :class:`Mentor` (``name``, ``usage``, ``propose(request)``). Chat backends share
:class:`ChatMentor`, whose one extension point is ``complete(messages, request)``: :class:`OpenAIMentor` (OpenAI or
any compatible server), :class:`HubInferenceMentor` (Hugging Face inference API), :class:`TransformersMentor` (a
local model, offline; the embedded SmolLM2 by :meth:`TransformersMentor.embedded`); the two server mentors take their
shared settings as one :class:`ChatOptions`. :class:`CachedMentor` caches and replays replies; :class:`RandomMentor`
proposes random vocabulary words (the control for any LLM). A request's scored prompts are :class:`ScoredPrompt` (the
run records' type, re-exported; ``TrajectoryPoint`` is its alias).
Mentors know nothing of torch or the trainer; ``transformers_mentor`` is the only module that imports torch, lazily.
"""

from .base import (
    Completion,
    LabeledExample,
    Mentor,
    MentorError,
    MentorProposal,
    MentorRequest,
    MentorUsage,
    PastRound,
    ReplayMissError,
    RetryPolicy,
    ScoredPrompt,
    TrajectoryPoint,
)
from .cache import CachedMentor
from .chat import ChatMentor
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
from .random_mentor import RandomMentor
from .remote import ChatOptions
from .transformers_mentor import TransformersMentor

__all__ = [
    "DEFAULT_META_PROMPT",
    "DEFAULT_RETRY_PROMPT",
    "DEFAULT_SYSTEM_PROMPT",
    "CachedMentor",
    "ChatMentor",
    "ChatOptions",
    "Completion",
    "HubInferenceMentor",
    "LabeledExample",
    "Mentor",
    "MentorError",
    "MentorProposal",
    "MentorRequest",
    "MentorUsage",
    "PastRound",
    "MetaPrompt",
    "OpenAIMentor",
    "ParseResult",
    "PastRound",
    "RandomMentor",
    "ReplayMissError",
    "RetryPolicy",
    "ScoredPrompt",
    "TransformersMentor",
    "TrajectoryPoint",
    "load_meta_prompt",
    "parse_candidates",
    "parse_reply",
    "render_meta_prompt",
]
