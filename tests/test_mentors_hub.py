"""HubInferenceMentor through the real ``huggingface_hub.InferenceClient`` against the loopback server.

The Hub itself is unreachable here; ``base_url`` points the real client at 127.0.0.1 (an OpenAI-compatible server,
as with a dedicated Inference Endpoint or TGI). Offline mode is lifted for these tests only, since it blocks
every request of that client, loopback included.
"""

from __future__ import annotations

import time
import traceback

import pytest

from peft_catalyst.mentors import HubInferenceMentor, MentorError, MentorRequest, TrajectoryPoint
from tests.loopback_openai import (
    LoopbackOpenAIServer,
    chat_reply,
    delay_reply,
    error_reply,
    non_json_reply,
    refused_base_url,
    trickle_reply,
)

FAKE_TOKEN = "hf_peftcatalyst-FAKEtoken-0123456789"  # fake; separators keep it off token scanners
REQ = MentorRequest(
    "TREC question type (6 coarse classes: abbreviation, entity, description, human, location, number)",
    [TrajectoryPoint("where who what", 0.9), TrajectoryPoint("question type", 0.7)],
    num_candidates=2,
    max_words=8,
)


@pytest.fixture
def loopback(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with LoopbackOpenAIServer() as server:
        yield server


def hub_mentor(server, **kwargs) -> HubInferenceMentor:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("max_retries", 1)
    kwargs.setdefault("max_retry_wait", 0.5)
    return HubInferenceMentor("tgi-model", token=FAKE_TOKEN, base_url=server.base_url, **kwargs)


def test_proposal_through_the_inference_client(loopback):
    loopback.enqueue(
        chat_reply(
            "1. What type of answer does this question need?\n2. Answer type: human or number?",
            prompt_tokens=77,
            completion_tokens=20,
            request_id="hub-1",
        )
    )
    mentor = hub_mentor(loopback, seed=3, temperature=0.2)
    proposal = mentor.propose(REQ)
    assert proposal.candidates == ["What type of answer does this question need?", "Answer type: human or number?"]
    assert (proposal.prompt_tokens, proposal.completion_tokens, proposal.request_id) == (77, 20, "hub-1")
    (request,) = loopback.requests
    assert request.path.endswith("/chat/completions")
    assert request.headers["authorization"] == f"Bearer {FAKE_TOKEN}"
    assert request.json["model"] == "tgi-model" and request.json["seed"] == 3
    assert request.json["messages"] == proposal.messages
    assert mentor.name == "hf:tgi-model" and mentor.usage.calls == 1
    assert mentor.cache_identity()["backend"] == "hf-inference"


@pytest.mark.timeout(30)
def test_429_then_success(loopback):
    loopback.enqueue(error_reply(429, retry_after=0.3), chat_reply())
    assert hub_mentor(loopback).propose(REQ).candidates
    assert loopback.request_count == 2


@pytest.mark.timeout(30)
def test_persistent_500_is_a_server_error(loopback):
    loopback.set_reply(lambda req: error_reply(500, f"boom {FAKE_TOKEN}"))
    with pytest.raises(MentorError) as info:
        hub_mentor(loopback).propose(REQ)
    assert info.value.reason == "server_error" and loopback.request_count == 2
    assert FAKE_TOKEN not in "".join(traceback.format_exception(info.value))


@pytest.mark.timeout(30)
def test_hard_deadline_on_a_trickling_or_silent_server(loopback):
    for fault in (trickle_reply(seconds_per_chunk=0.05, chunks=400), delay_reply(20)):
        loopback.enqueue(fault)
        start = time.perf_counter()
        with pytest.raises(MentorError) as info:
            hub_mentor(loopback, timeout=1.0, max_retries=0).propose(REQ)
        assert info.value.reason == "timeout"
        assert time.perf_counter() - start < 3


@pytest.mark.timeout(30)
def test_non_json_and_refused(loopback):
    loopback.enqueue(non_json_reply())
    with pytest.raises(MentorError) as info:
        hub_mentor(loopback, max_retries=0).propose(REQ)
    assert info.value.reason == "bad_response"
    mentor = HubInferenceMentor("m", token=FAKE_TOKEN, base_url=refused_base_url(), timeout=2, max_retries=0)
    with pytest.raises(MentorError) as info:
        mentor.propose(REQ)
    assert info.value.reason == "connection"


def test_offline_mode_is_a_clear_error(loopback, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MentorError, match="HF_HUB_OFFLINE") as info:
        hub_mentor(loopback, max_retries=0).propose(REQ)
    assert info.value.reason == "connection" and loopback.request_count == 0


@pytest.mark.timeout(30)
def test_check_needs_a_token_and_probes_the_hub_or_the_server(loopback, monkeypatch):
    """At start-up: no token is an ``auth`` error before any request; the token is shown to the Hub (``whoami``, here
    the loopback server as ``HF_ENDPOINT``) or, with ``base_url``, to the server's ``/models``; a closed port is a
    ``connection`` error and a rejected token an ``auth`` one. No check costs a chat completion."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/token")
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", "/nonexistent/stored_tokens")  # no stored login
    monkeypatch.setattr(constants, "ENDPOINT", refused_base_url().removesuffix("/v1"))
    with pytest.raises(MentorError) as info:
        HubInferenceMentor("org/model", timeout=2).check()
    assert info.value.reason == "auth" and "HF_TOKEN" in str(info.value) and not loopback.requests

    with pytest.raises(MentorError) as info:  # a token, but the Hub cannot be reached
        HubInferenceMentor("org/model", token=FAKE_TOKEN, timeout=2).check()
    assert info.value.reason == "connection" and FAKE_TOKEN not in str(info.value)

    loopback.api_key = FAKE_TOKEN
    monkeypatch.setattr(constants, "ENDPOINT", loopback.base_url.removesuffix("/v1"))
    HubInferenceMentor("org/model", token=FAKE_TOKEN, timeout=2).check()  # whoami answers
    with pytest.raises(MentorError) as info:
        HubInferenceMentor("org/model", token="hf_peftcatalyst-WRONGtoken-000", timeout=2).check()
    assert info.value.reason == "auth" and "401" in str(info.value)
    hub_mentor(loopback).check()  # base_url: /models with the right token
    with pytest.raises(MentorError) as info:
        HubInferenceMentor("m", token="hf_peftcatalyst-WRONGtoken-000", base_url=loopback.base_url, timeout=2).check()
    assert info.value.reason == "auth"
    with pytest.raises(MentorError) as info:
        HubInferenceMentor("m", token=FAKE_TOKEN, base_url=refused_base_url(), timeout=2).check()
    assert info.value.reason == "connection"
    assert loopback.request_count == 0
