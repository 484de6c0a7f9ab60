"""The base of mentors that ask a chat model: meta-prompt in, parsed and filtered candidate prompts out.

:class:`ChatMentor` turns a :class:`~peft_catalyst.mentors.base.MentorRequest` into chat messages (see
``metaprompt``), sends them through the one method a backend implements, :meth:`ChatMentor.complete`, parses the
reply (see ``parsing``), asks once more with a stricter instruction when nothing usable came back, and keeps usage.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from .base import (
    MAX_RAW_CHARS,
    Completion,
    Mentor,
    MentorError,
    MentorProposal,
    MentorRequest,
    add_token_counts,
    scrub_secrets,
)
from .metaprompt import MetaPrompt, resolve_meta_prompt
from .parsing import ParseResult, parse_reply, stems

logger = logging.getLogger(__name__)

__all__ = ["ChatMentor"]


class ChatMentor(Mentor):
    """Base of mentors that ask a chat model: renders the meta-prompt, calls :meth:`complete`, parses the reply.

    Subclasses implement :meth:`complete` (one chat request to the backend, raising :class:`MentorError` on any
    fault) and :meth:`cache_identity`; :meth:`propose` renders the meta-prompt, parses and filters the reply,
    retries once with a stricter instruction when nothing usable came back, and keeps :attr:`usage`.

    Args:
        meta_prompt: a :class:`MetaPrompt`, a user-turn template (str) or a template file (path; see
            ``resolve_meta_prompt``), or None for :attr:`default_meta_prompt`.
        strict_retry: when a reply has no usable candidate, ask once more with a stricter instruction.
        few_shot: prepend a worked example (another task) as a previous chat turn; helps small local models.
        min_task_overlap: drop candidates that share no word with the task description (see ``parse_candidates``).
        progress: show the call's progress on stderr (tokens for a local model, elapsed time for a server);
            None: only when stderr is a terminal.
    """

    #: The meta-prompt used when none is given; a template string or file replaces only its user turn.
    default_meta_prompt: MetaPrompt = MetaPrompt()
    #: Credentials this mentor holds; scrubbed from replies, errors and anything written (set by subclasses).
    _secrets: list[str] = []
    #: Replies sampled per call (``n`` for a server); set by subclasses.
    num_samples: int = 1

    def __init__(
        self,
        *,
        meta_prompt: MetaPrompt | str | Any | None = None,
        strict_retry: bool = True,
        few_shot: bool = False,
        min_task_overlap: bool = False,
        progress: bool | None = None,
    ) -> None:
        self.meta_prompt = resolve_meta_prompt(meta_prompt, base=self.default_meta_prompt)
        self.progress = progress
        self.strict_retry = strict_retry
        self.few_shot = few_shot
        self.min_task_overlap = min_task_overlap
        super().__init__()

    def secrets(self) -> list[str]:
        """The credentials this mentor holds (set by subclasses in ``_secrets``)."""
        return [s for s in self._secrets if s]

    # -- to implement ---------------------------------------------------------------------------------------------
    @abstractmethod
    def complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        """Send one chat request (``messages``: OpenAI-style role/content dicts) and return the reply's text(s).

        Raise :class:`MentorError` on any fault (after the backend's own retries). ``request`` is given for backends
        that use it (e.g. to ban copying the trajectory while sampling); most only send ``messages``.
        """

    @abstractmethod
    def cache_identity(self) -> dict[str, Any]:
        """Backend, model, sampling parameters and seed: what, besides the messages, decides the reply.

        Never include a key, token or credentialed URL: this goes into the cache key and the cache file.
        """

    # -- shared logic ---------------------------------------------------------------------------------------------
    def build_messages(self, request: MentorRequest) -> list[dict[str, str]]:
        """The chat messages sent for ``request`` (system, optional few-shot turn, the rendered meta-prompt)."""
        return self.meta_prompt.render(request, few_shot=self.few_shot)

    def samples_for(self, request: MentorRequest) -> int:
        """Replies wanted for ``request``: ``num_samples``, or as many as the prompts asked (``catalyst_num_samples``)
        when each reply holds one prompt."""
        if self.meta_prompt.answers_per_reply == 1:
            return max(self.num_samples, request.num_candidates)
        return self.num_samples

    def parse(self, raw_texts: Sequence[str], request: MentorRequest) -> ParseResult:
        """Parse and filter the samples of one reply into usable candidates (in order, deduplicated)."""
        return parse_reply(
            raw_texts,
            max_words=request.max_words,
            num_candidates=request.num_candidates,
            exclude=self._excluded_texts(request),
            task_description=request.task_description if self.min_task_overlap else None,
            banned_words=self._example_words(request),
        )

    def _scrub_texts(self, texts: Sequence[str]) -> list[str]:
        """Replies with this mentor's own credentials removed (a server may echo them)."""
        return [scrub_secrets(t, self._secrets, patterns=False) for t in texts] if self._secrets else list(texts)

    def _example_words(self, request: MentorRequest) -> list[str]:
        """Few-shot example words absent from this task (and its prompts): using one means copying the example."""
        if not self.few_shot:
            return []
        own = " ".join([request.task_description, request.manual_prompt or ""] + [p.text for p in request.trajectory])
        own_stems = stems(own)
        return [w for w in self.meta_prompt.example_words() if not stems(w) & own_stems]

    def _excluded_texts(self, request: MentorRequest) -> list[str]:
        """Texts a candidate must not copy: the trajectory, the manual prompt, the few-shot example answers."""
        texts = [p.text for p in request.trajectory]
        if request.manual_prompt:
            texts.append(request.manual_prompt)
        if self.few_shot:
            texts.extend(self.meta_prompt.example_answers())
        return texts

    def propose(self, request: MentorRequest) -> MentorProposal:
        """Ask the backend for candidates; raises :class:`MentorError`, or returns an empty proposal with a warning."""
        start = time.perf_counter()
        messages = self.build_messages(request)
        retry_error: str | None = None
        retry_messages: list[dict[str, str]] | None = None
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        try:
            completion = self.complete(messages, request)
            prompt_tokens, completion_tokens = completion.prompt_tokens, completion.completion_tokens
            raw_texts = self._scrub_texts(completion.texts)
            parsed = self.parse(raw_texts, request)
            attempts = 1
            if not parsed.candidates and self.strict_retry:
                logger.info(
                    "%s: no usable candidate (%s); retrying with a stricter instruction", self.name, parsed.summary()
                )
                retry_messages = self.meta_prompt.retry_messages(messages, raw_texts[0] if raw_texts else "", request)
                attempts = 2
                try:
                    retry = self.complete(retry_messages, request)
                except MentorError as exc:  # the first reply stands: an empty proposal, with the reason
                    retry_error = str(exc)
                else:
                    prompt_tokens = add_token_counts(prompt_tokens, retry.prompt_tokens)
                    completion_tokens = add_token_counts(completion_tokens, retry.completion_tokens)
                    retry_texts = self._scrub_texts(retry.texts)
                    retry_parsed = self.parse(retry_texts, request)
                    retry_parsed.rejected = parsed.rejected + retry_parsed.rejected
                    parsed, raw_texts, completion = retry_parsed, raw_texts + retry_texts, retry
        except MentorError:
            self.usage.record(
                latency_s=time.perf_counter() - start,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                failed=True,
            )
            raise
        except Exception as exc:  # a backend bug must not kill training: surface it as the one error type
            self.usage.record(latency_s=time.perf_counter() - start, failed=True)
            raise MentorError(f"{self.name}: unexpected {type(exc).__name__}", reason="error") from exc
        latency = time.perf_counter() - start
        self.usage.record(latency_s=latency, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        proposal = MentorProposal(
            candidates=parsed.candidates,
            raw=_truncate("\n\n".join(_truncate(t) for t in raw_texts)),
            latency_s=latency,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=completion.model,
            request_id=completion.request_id,
            messages=messages,
            rejected=[[text, reason] for text, reason in parsed.rejected],
            attempts=attempts,
            retry_messages=retry_messages if attempts > 1 else None,
        )
        if not proposal.candidates:
            proposal.warning = f"no usable candidate in the reply ({parsed.summary()})"
            if retry_error:
                proposal.warning += f"; the stricter retry failed: {retry_error}"
            logger.warning("%s: %s", self.name, proposal.warning)
        else:
            logger.info(
                "%s: %d candidate(s) in %.2f s (%s prompt + %s completion tokens)",
                self.name,
                len(proposal.candidates),
                latency,
                prompt_tokens,
                completion_tokens,
            )
        return proposal


def _truncate(text: str | None, limit: int = MAX_RAW_CHARS) -> str:
    text = text or ""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... truncated {len(text) - limit} characters]"
