"""A round's exchange with its mentor: the request built from the round's records, the mentor asked on the main
process only and its answer broadcast, and what the history (:class:`~peft_catalyst.records.MentorCall`) and the chat
log keep of it.

A mentor fault never ends a run (the round is skipped), except a strict replay's miss: a replay promises that no
round is answered differently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from accelerate.utils import broadcast_object_list

from peft_catalyst.mentors import Mentor, MentorError, MentorProposal, MentorRequest, PastRound, ReplayMissError
from peft_catalyst.records import Evidence, MentorCall, RoundRecord, ScoredPrompt

# Logged under the round's name, as before this module was split from it: log filters name peft_catalyst.rounds.engine.
logger = logging.getLogger("peft_catalyst.rounds.engine")

__all__ = ["ask", "chat_entry", "mentor_call", "mentor_request"]


def mentor_request(
    task_description: str,
    trajectory: Sequence[ScoredPrompt],
    earlier: Sequence[RoundRecord],
    evidence: Evidence,
    **fields: Any,
) -> MentorRequest:
    """What the mentor sees: the finite-scored trajectory, the earlier rounds' outcomes and the ``evidence``;
    ``fields``: the request's other fields (counts, word budget, manual prompt, metric and its direction)."""
    past = [
        PastRound(
            round=r.round,
            proposed=[c.text for c in r.candidates],
            scores=[c.score if c.finite else None for c in r.candidates],
            taken=r.candidates[r.winner].text if r.winner is not None and r.restarted else None,
            current_score=r.current.score if r.current is not None and r.current.finite else None,
        )
        for r in earlier
        if r.candidates
    ]
    return MentorRequest(
        task_description=task_description,
        trajectory=[p for p in trajectory if p.finite],  # the request keeps text, score and loss
        earlier_rounds=past,
        examples=evidence.examples,
        errors=evidence.errors,
        labels=evidence.labels,
        best_prompts=evidence.best_prompts,
        proposal=evidence.proposal,
        **fields,
    )


def ask(
    mentor: Mentor, request: MentorRequest, accelerator: Any, index: int = 0
) -> tuple[MentorProposal | None, str | None]:
    """Ask ``mentor`` on the main process only and broadcast its answer: ``(proposal, error)``.

    Never raises for a mentor fault (the round is skipped), except a strict replay's miss: that ends the run on
    every process with a :class:`ReplayMissError` naming round ``index`` and the request's key.
    """
    payload: list[Any] = [None]
    if accelerator.is_main_process:
        limit = mentor.time_limit_s
        logger.info(
            "catalyst round %d: asking %s for %d prompt(s) of at most %d words%s",
            index,
            mentor.name,
            request.num_candidates,
            request.max_words,
            f" (time limit {limit:.0f} s)" if limit else "",
        )
        try:
            proposal = mentor.propose(request)
            payload = [{"proposal": proposal.to_dict(), "error": None}]
        except ReplayMissError as exc:
            payload = [{"proposal": None, "error": str(exc), "replay_miss": exc.key}]
        except MentorError as exc:
            logger.warning("Mentor round skipped: %s", exc)
            payload = [{"proposal": None, "error": str(exc)}]
        except Exception as exc:  # a mentor bug must not kill a training run
            logger.warning("Mentor round skipped: unexpected %s: %s", type(exc).__name__, exc)
            payload = [{"proposal": None, "error": f"{type(exc).__name__}: {exc}"}]
    if accelerator.num_processes > 1:
        broadcast_object_list(payload, from_process=0)
    data = payload[0]
    if data.get("replay_miss"):
        key = data["replay_miss"]
        raise ReplayMissError(
            f"round {index}: the strict replay has no stored reply for this request (key {key[:16]}); replay the "
            "cache of a run with the same settings and data",
            key,
        )
    proposal = MentorProposal.from_dict(data["proposal"]) if data["proposal"] else None
    return proposal, data["error"]


def mentor_call(mentor: Mentor, proposal: MentorProposal | None, error: str | None) -> MentorCall:
    """What the history keeps of one exchange (the full messages are in the chat log)."""
    if proposal is None:
        return MentorCall(name=mentor.name, error=error)
    return MentorCall(
        name=mentor.name,
        error=error,
        candidates=list(proposal.candidates),
        model=proposal.model,
        latency_s=proposal.latency_s,
        prompt_tokens=proposal.prompt_tokens,
        completion_tokens=proposal.completion_tokens,
        attempts=proposal.attempts,
        cached=proposal.cached,
        warning=proposal.warning,
        rejected=[list(r) for r in proposal.rejected],
    )


def chat_entry(
    record: RoundRecord, request: MentorRequest, proposal: MentorProposal | None, error: str | None
) -> dict[str, Any]:
    """The chat log's line for one exchange: the request, the messages as sent, the reply and what it cost."""
    return {
        "round": record.round,
        "step": record.step,
        "mentor": record.mentor.name if record.mentor else None,
        "request": request.to_dict(),
        "messages": proposal.messages if proposal else None,
        "reply": proposal.raw if proposal else None,
        "candidates": proposal.candidates if proposal else [],
        "latency_s": proposal.latency_s if proposal else None,
        "prompt_tokens": proposal.prompt_tokens if proposal else None,
        "completion_tokens": proposal.completion_tokens if proposal else None,
        "error": error,
    }
