"""OpenAIMentor through the real ``openai`` client against a real HTTP server on 127.0.0.1 (no mocked client).

Every fault of issue 3 ends in bounded time as a ``MentorError`` or an empty proposal with a warning, and the API
key never shows up in an exception, a log line or a file.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import pytest

from peft_catalyst.mentors import CachedMentor, MentorError, MentorRequest, OpenAIMentor, TrajectoryPoint
from tests.loopback_openai import (
    LoopbackOpenAIServer,
    chat_reply,
    delay_reply,
    disconnect_reply,
    empty_message_reply,
    error_reply,
    huge_reply,
    json_reply,
    non_json_reply,
    refused_base_url,
    trickle_reply,
)

FAKE_KEY = "sk-peftcatalyst-FAKEKEY-7Qx9Zt2Lw5Rv8"

REQ = MentorRequest(
    task_description="sentiment of movie review snippets (positive/negative)",
    trajectory=[TrajectoryPoint("movie great sentiment kil", 0.71), TrajectoryPoint("Is it good", 0.6)],
    num_candidates=4,
    max_words=8,
)


@pytest.fixture
def loopback():
    """A fresh loopback OpenAI server per test (see tests/loopback_openai.py)."""
    with LoopbackOpenAIServer() as server:
        yield server


def make_mentor(server: LoopbackOpenAIServer, **kwargs) -> OpenAIMentor:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("max_retry_wait", 1.0)
    return OpenAIMentor("gpt-test", base_url=server.base_url, api_key=FAKE_KEY, **kwargs)


# ------------------------------------------------------------------------------------------------ happy path
def test_proposal_from_a_real_chat_completion(loopback):
    loopback.enqueue(
        chat_reply(
            "Sure:\n1. Label the review: positive or negative\n2. Is the review good?\n3. Is it good\n",
            prompt_tokens=120,
            completion_tokens=17,
            request_id="abc",
        )
    )
    mentor = make_mentor(loopback, temperature=0.3, seed=7, max_tokens=99)
    proposal = mentor.propose(REQ)

    assert proposal.candidates == ["Label the review: positive or negative", "Is the review good?"]
    assert ["Is it good", "copy"] in proposal.rejected
    assert proposal.prompt_tokens == 120 and proposal.completion_tokens == 17
    assert proposal.request_id == "req_abc"  # the x-request-id header
    assert proposal.model == "loopback-model"
    assert proposal.latency_s > 0 and proposal.attempts == 1 and proposal.warning is None
    assert proposal.to_dict()["candidates"] == proposal.candidates

    (request,) = loopback.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {FAKE_KEY}"
    body = request.json
    assert body["model"] == "gpt-test" and body["temperature"] == 0.3 and body["seed"] == 7
    assert body["max_tokens"] == 99 and "n" not in body
    assert body["messages"] == proposal.messages
    assert "sentiment of movie review snippets" in body["messages"][-1]["content"]


def test_several_samples_are_pooled_and_usage_accumulates(loopback):
    loopback.set_reply(
        lambda req: chat_reply(
            ["1. Rate the review", "1. Rate the review\n2. Judge the review"], prompt_tokens=50, completion_tokens=9
        )
    )
    mentor = make_mentor(loopback, num_samples=2)
    first = mentor.propose(REQ)
    mentor.propose(REQ)
    assert first.candidates == ["Rate the review", "Judge the review"]
    assert first.raw == "1. Rate the review\n\n1. Rate the review\n2. Judge the review"
    assert loopback.requests[0].json["n"] == 2
    usage = mentor.usage.to_dict()
    assert usage["calls"] == 2 and usage["failures"] == 0
    assert usage["prompt_tokens"] == 100 and usage["completion_tokens"] == 18
    assert usage["latency_s"] >= first.latency_s


# ------------------------------------------------------------------------ N prompts: n=, or several requests
ONE_LINE_WORDS = ["Rate the review", "Judge the review", "Grade the review", "Score the review", "Weigh the review"]


def one_line_mentor(server: LoopbackOpenAIServer, **kwargs) -> OpenAIMentor:
    """A chat mentor whose template asks one prompt per reply, so N prompts need N replies (``n``)."""
    from peft_catalyst.mentors.metaprompt import SMALL_MODEL_META_PROMPT

    return make_mentor(server, meta_prompt=SMALL_MODEL_META_PROMPT, **kwargs)


def numbered_replies(server: LoopbackOpenAIServer) -> None:
    """Answer every choice with the next of ONE_LINE_WORDS (distinct prompts), 10 prompt and 3 completion tokens."""
    counter = iter(range(10_000))
    server.set_reply(lambda req: ONE_LINE_WORDS[next(counter) % len(ONE_LINE_WORDS)])


def test_one_reply_per_prompt_asks_n_for_the_prompts_wanted(loopback):
    numbered_replies(loopback)
    proposal = one_line_mentor(loopback).propose(MentorRequest(**{**REQ.to_dict(), "num_candidates": 4}))
    assert proposal.candidates == ONE_LINE_WORDS[:4]
    (request,) = loopback.requests  # one request, four choices
    assert request.json["n"] == 4


def test_a_server_that_ignores_n_gets_several_requests_each_with_its_own_seed():
    with LoopbackOpenAIServer(n="ignore") as server:
        numbered_replies(server)
        proposal = one_line_mentor(server, seed=7).propose(REQ)
        assert proposal.candidates == ONE_LINE_WORDS[:4]
        assert [r.json.get("n") for r in server.requests] == [4, 3, 2, None]  # n=1 is not sent
        assert [r.json["seed"] for r in server.requests] == [7, 8, 9, 10]
        assert proposal.completion_tokens == sum(len(w.split()) for w in ONE_LINE_WORDS[:4])


def test_a_server_that_refuses_n_is_asked_one_reply_at_a_time_and_remembered():
    with LoopbackOpenAIServer(n="refuse") as server:
        numbered_replies(server)
        mentor = one_line_mentor(server)
        assert mentor.propose(REQ).candidates == ONE_LINE_WORDS[:4]
        assert [r.json.get("n") for r in server.requests] == [4, None, None, None, None]
        server.clear()
        mentor.propose(REQ)
        assert [r.json.get("n") for r in server.requests] == [None] * 4  # no second refusal


def test_a_client_error_that_is_not_about_n_is_raised_and_not_remembered_as_a_refused_n(loopback):
    loopback.set_reply(lambda req: error_reply(400, "bad model"))
    mentor = one_line_mentor(loopback, max_retries=0)
    with pytest.raises(MentorError, match="bad model"):
        mentor.propose(REQ)
    assert [r.json.get("n") for r in loopback.requests] == [4, None]  # tried without n once
    loopback.set_reply(lambda req: "Rate the review")
    mentor.propose(REQ)
    assert loopback.requests[2].json["n"] == 4  # n is still asked


def test_further_requests_stop_at_the_time_limit_and_keep_the_replies_in_hand():
    def slow(req):
        time.sleep(0.4)
        return ONE_LINE_WORDS[len(server.requests) - 1]

    with LoopbackOpenAIServer(slow, n="ignore") as server:
        mentor = one_line_mentor(server, timeout=1.0, max_retries=0)
        started = time.monotonic()
        proposal = mentor.propose(MentorRequest(**{**REQ.to_dict(), "num_candidates": 16}))
        elapsed = time.monotonic() - started
    assert 1 <= len(proposal.candidates) < 16
    assert proposal.candidates == ONE_LINE_WORDS[: len(proposal.candidates)]
    assert elapsed < 1.0 + 0.5  # the limit, plus one reply's time at most
    assert mentor.usage.to_dict()["failures"] == 0


def test_a_further_request_that_fails_leaves_the_first_replies_standing():
    with LoopbackOpenAIServer(n="ignore") as server:
        server.enqueue(chat_reply("Rate the review"), error_reply(500), chat_reply("never asked"))
        mentor = one_line_mentor(server, max_retries=0)
        proposal = mentor.propose(REQ)
        assert proposal.candidates == ["Rate the review"]
        assert server.request_count == 2 and proposal.warning is None


def test_key_and_base_url_from_environment(loopback, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", loopback.base_url)
    mentor = OpenAIMentor("gpt-test")
    assert mentor.propose(REQ).candidates
    assert loopback.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"


def test_missing_key_is_a_config_error_for_openai_but_not_for_a_custom_server(loopback, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(MentorError) as info:
        OpenAIMentor("gpt-test")
    assert info.value.reason == "config" and "OPENAI_API_KEY" in str(info.value)
    assert OpenAIMentor("local", base_url=loopback.base_url).propose(REQ).candidates


def test_short_explicit_timeout_and_no_client_retries(loopback):
    mentor = OpenAIMentor("gpt-test", base_url=loopback.base_url, api_key=FAKE_KEY)
    assert mentor.timeout == 30.0 and mentor._client.max_retries == 0
    assert mentor.name == "openai:gpt-test"
    assert FAKE_KEY not in repr(mentor) and FAKE_KEY not in str(mentor.cache_identity())


def test_stricter_retry_when_the_reply_has_no_usable_line(loopback):
    loopback.enqueue(
        chat_reply("Here is an example review: I loved this film so much, best movie of the year!"),
        chat_reply("1. Is the review positive or negative?"),
    )
    proposal = make_mentor(loopback).propose(REQ)
    assert proposal.candidates == ["Is the review positive or negative?"]
    assert proposal.attempts == 2 and loopback.request_count == 2
    retry_messages = loopback.requests[1].json["messages"]
    assert retry_messages[-2]["role"] == "assistant" and "example review" in retry_messages[-2]["content"]
    assert "no usable prompt" in retry_messages[-1]["content"]
    assert proposal.retry_messages == retry_messages
    assert proposal.messages == loopback.requests[0].json["messages"] == retry_messages[:-2]


# ------------------------------------------------------------------------------------------------ faults
@pytest.mark.timeout(30)
def test_429_retry_after_is_honoured(loopback):
    loopback.enqueue(error_reply(429, "slow down", retry_after=0.6), chat_reply())
    start = time.perf_counter()
    proposal = make_mentor(loopback).propose(REQ)
    elapsed = time.perf_counter() - start
    assert proposal.candidates and loopback.request_count == 2
    gap = loopback.requests[1].received_at - loopback.requests[0].received_at
    assert gap >= 0.55 and elapsed < 5


@pytest.mark.timeout(30)
def test_retry_after_longer_than_the_cap_fails_at_once(loopback):
    loopback.enqueue(error_reply(429, "quota", retry_after=3600))
    start = time.perf_counter()
    with pytest.raises(MentorError) as info:
        make_mentor(loopback, max_retry_wait=2).propose(REQ)
    assert info.value.reason == "rate_limited" and info.value.retry_after == 3600
    assert time.perf_counter() - start < 2 and loopback.request_count == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_then_succeed(loopback, status):
    loopback.enqueue(error_reply(status), error_reply(status, retry_after=0.1), chat_reply())
    assert make_mentor(loopback).propose(REQ).candidates
    assert loopback.request_count == 3


@pytest.mark.timeout(30)
def test_persistent_503_ends_as_mentor_error_after_the_retry_budget(loopback):
    loopback.set_reply(lambda req: error_reply(503, "overloaded", retry_after=0.05))
    mentor = make_mentor(loopback, max_retries=2)
    with pytest.raises(MentorError) as info:
        mentor.propose(REQ)
    assert info.value.reason == "server_error" and "503" in str(info.value)
    assert loopback.request_count == 3
    assert mentor.usage.failures == 1 and mentor.usage.calls == 0  # a call no LLM answered is no LLM call


@pytest.mark.timeout(30)
def test_timeout_is_bounded(loopback):
    loopback.set_reply(lambda req: delay_reply(20))
    start = time.perf_counter()
    with pytest.raises(MentorError) as info:
        make_mentor(loopback, timeout=0.5, max_retries=1, max_retry_wait=0.1).propose(REQ)
    assert info.value.reason == "timeout"
    assert time.perf_counter() - start < 4 and loopback.request_count == 2


@pytest.mark.timeout(30)
def test_trickling_body_cannot_defeat_the_timeout(loopback):
    loopback.enqueue(trickle_reply(seconds_per_chunk=0.05, chunks=400))  # 20 s of body, bytes every 50 ms
    start = time.perf_counter()
    with pytest.raises(MentorError) as info:
        make_mentor(loopback, timeout=1.0, max_retries=0).propose(REQ)
    assert info.value.reason == "timeout"
    assert time.perf_counter() - start < 4


@pytest.mark.timeout(30)
def test_connection_refused(loopback):
    mentor = OpenAIMentor(
        "gpt-test", base_url=refused_base_url(), api_key=FAKE_KEY, timeout=2, max_retries=1, max_retry_wait=0.1
    )
    start = time.perf_counter()
    with pytest.raises(MentorError) as info:
        mentor.propose(REQ)
    assert info.value.reason == "connection" and isinstance(info.value.__cause__, Exception)
    assert time.perf_counter() - start < 10


@pytest.mark.timeout(30)
def test_dropped_connection(loopback):
    loopback.set_reply(lambda req: disconnect_reply())
    with pytest.raises(MentorError) as info:
        make_mentor(loopback, max_retries=1, max_retry_wait=0.1).propose(REQ)
    assert info.value.reason == "connection" and loopback.request_count == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "reply, fragment",
    [
        (non_json_reply(), "not JSON"),
        (json_reply({"id": "x", "object": "chat.completion"}), "no choices"),
        (json_reply({"choices": []}), "no choices"),
        (json_reply({"error": {"message": "model overloaded"}}), "model overloaded"),
        (json_reply(["not", "an", "object"]), "not an object"),
    ],
    ids=["non-json", "no-choices", "empty-choices", "error-in-200", "json-list"],
)
def test_malformed_bodies_are_bad_response_without_retry(loopback, reply, fragment):
    loopback.enqueue(reply)
    with pytest.raises(MentorError) as info:
        make_mentor(loopback).propose(REQ)
    assert info.value.reason == "bad_response" and fragment in str(info.value)
    assert loopback.request_count == 1


@pytest.mark.timeout(30)
def test_empty_message_is_an_empty_proposal_with_a_warning(loopback, caplog):
    loopback.set_reply(lambda req: empty_message_reply())
    with caplog.at_level(logging.WARNING, logger="peft_catalyst"):
        proposal = make_mentor(loopback, strict_retry=False).propose(REQ)
    assert proposal.candidates == [] and proposal.warning and "no usable candidate" in proposal.warning
    assert any("no usable candidate" in r.getMessage() for r in caplog.records)
    assert loopback.request_count == 1


@pytest.mark.timeout(30)
def test_reply_with_no_usable_line_after_the_stricter_retry(loopback):
    loopback.set_reply(lambda req: chat_reply("The movie was great and everyone should watch it twice, or more."))
    mentor = make_mentor(loopback)
    proposal = mentor.propose(REQ)
    assert proposal.candidates == [] and proposal.warning and proposal.attempts == 2
    assert ["The movie was great and everyone should watch it twice, or more.", "too_long"] in proposal.rejected
    assert "too_long: 2" in proposal.warning
    assert mentor.usage.calls == 1 and mentor.usage.failures == 0


@pytest.mark.timeout(30)
def test_multi_megabyte_reply(loopback):
    loopback.enqueue(huge_reply(megabytes=5))
    start = time.perf_counter()
    with pytest.raises(MentorError) as info:
        make_mentor(loopback).propose(REQ)
    assert info.value.reason == "response_too_large"
    # Under the size cap a huge content is parsed, truncated, in bounded time.
    loopback.enqueue(huge_reply(megabytes=1.5))
    proposal = make_mentor(loopback, strict_retry=False).propose(REQ)
    assert proposal.candidates == [] and len(proposal.raw) < 70_000
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------------------------------------ secrets
@pytest.mark.timeout(60)
def test_api_key_never_in_messages_logs_or_files(loopback, tmp_path: Path, caplog):
    """The server echoes the key in error bodies (as real servers do); it must not leak anywhere we write."""
    echo = f"Incorrect API key provided: {FAKE_KEY}. Bearer {FAKE_KEY}"
    loopback.enqueue(
        error_reply(401, echo),
        error_reply(500, echo),
        error_reply(500, echo),
        error_reply(500, echo),
        non_json_reply(f"<html>{FAKE_KEY}</html>"),
        json_reply({"error": {"message": echo}}),
        chat_reply(f"1. Rate the review\n2. {FAKE_KEY}"),
    )
    mentor = CachedMentor(make_mentor(loopback, max_retry_wait=0.05), tmp_path / "cache.sqlite")
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for i in range(6):
            req = MentorRequest(REQ.task_description, REQ.trajectory, num_candidates=4 + i)
            try:
                proposal = mentor.propose(req)
                texts.append(str(proposal.to_dict()))
            except MentorError as exc:
                texts.append(str(exc))
                texts.append("".join(traceback.format_exception(exc)))  # includes the chained causes
    assert loopback.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"  # the key was really used
    assert len(texts) >= 6
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    texts += [repr(mentor), mentor.name, str(mentor.cache_identity())]
    for text in texts:
        assert FAKE_KEY not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files  # the cache was written
    for path in files:
        assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_few_shot_turn_and_its_leak_filter(loopback):
    loopback.set_reply(
        lambda req: chat_reply("1. Is this review helpful or unhelpful?\n2. Which headline topic fits?")
    )
    movie = make_mentor(loopback, few_shot=True, strict_retry=False).propose(REQ)
    assert [m["role"] for m in movie.messages] == ["system", "user", "assistant", "user"]
    assert "topic of news headlines" in movie.messages[1]["content"]  # the worked example is another task
    # "headline" belongs to the example's task, not to this one: a candidate using it copied the example.
    assert movie.candidates == ["Is this review helpful or unhelpful?"]
    assert ["Which headline topic fits?", "example_leak"] in movie.rejected
    news = MentorRequest("topic of news headlines (world, sports, business, science)", REQ.trajectory)
    assert make_mentor(loopback, few_shot=True, strict_retry=False).propose(news).candidates == [
        "Is this review helpful or unhelpful?",
        "Which headline topic fits?",
    ]


@pytest.mark.timeout(30)
def test_failed_stricter_retry_keeps_the_first_reply(loopback):
    loopback.enqueue(
        chat_reply("Lovely film, truly a joy from start to finish for the whole family."),
        error_reply(400, "context too long"),
    )
    mentor = make_mentor(loopback)
    proposal = mentor.propose(REQ)
    assert proposal.candidates == [] and proposal.attempts == 2 and loopback.request_count == 2
    assert "stricter retry failed" in proposal.warning and "400" in proposal.warning
    assert proposal.raw.startswith("Lovely film") and proposal.retry_messages[-2]["role"] == "assistant"
    assert mentor.usage.failures == 0


def test_usage_pickles_and_deep_copies():
    import copy
    import pickle

    from peft_catalyst.mentors import MentorUsage

    usage = MentorUsage()
    usage.record(latency_s=1.0, prompt_tokens=3)
    for clone in (pickle.loads(pickle.dumps(usage)), copy.deepcopy(usage)):
        clone.record(latency_s=1.0)
        assert clone.to_dict()["calls"] == 2 and usage.calls == 1


@pytest.mark.timeout(30)
def test_retry_after_as_an_http_date(loopback):
    from email.utils import formatdate

    loopback.enqueue(error_reply(503, retry_after=formatdate(time.time() + 2, usegmt=True)), chat_reply())
    assert make_mentor(loopback, max_retry_wait=5).propose(REQ).candidates
    gap = loopback.requests[1].received_at - loopback.requests[0].received_at
    assert 0.5 <= gap <= 3.5  # HTTP dates have a one-second resolution


def test_retry_after_parsing_and_backoff_bounds():
    from peft_catalyst.mentors.base import RetryPolicy, parse_retry_after

    assert parse_retry_after("1.5") == 1.5 and parse_retry_after(None) is None
    assert parse_retry_after("soon") is None and parse_retry_after("inf") is None
    policy = RetryPolicy(max_retries=5, max_wait_s=3.0)
    assert policy.wait_time(1, 100.0) == 3.0 and policy.wait_time(1, 0.2) == 0.2
    assert all(0 < policy.wait_time(n, None) <= 3.0 for n in range(1, 30))


def test_check_reports_an_unreachable_server_and_accepts_a_live_one(loopback):
    from tests.loopback_openai import refused_base_url

    OpenAIMentor("m", base_url=loopback.base_url, api_key="sk-check-secret-000000", timeout=3).check()
    assert loopback.request_count == 0  # a check costs no chat completion
    with pytest.raises(MentorError) as info:
        OpenAIMentor("m", base_url=refused_base_url(), api_key="sk-check-secret-000000", timeout=3).check()
    assert info.value.reason == "connection" and "sk-check-secret" not in str(info.value)
    with pytest.raises(MentorError) as info:  # a host that never resolves (RFC 6761 ".invalid"): a DNS failure
        OpenAIMentor("m", base_url="http://mentor.invalid/v1", api_key="sk-check-secret-000000", timeout=3).check()
    assert info.value.reason == "connection" and "mentor.invalid" in str(info.value)
    with LoopbackOpenAIServer(api_key="sk-right-key-0000000") as server:  # a rejected key: HTTP 401
        with pytest.raises(MentorError) as info:
            OpenAIMentor("m", base_url=server.base_url, api_key="sk-check-secret-000000", timeout=3).check()
        OpenAIMentor("m", base_url=server.base_url, api_key="sk-right-key-0000000", timeout=3).check()
    assert info.value.reason == "auth" and "401" in str(info.value) and "sk-check-secret" not in str(info.value)


def test_a_slow_server_shows_the_elapsed_time(loopback, capsys):
    loopback.enqueue(delay_reply(2.5, chat_reply("1. Label the review: positive or negative")))
    mentor = make_mentor(loopback, timeout=10.0)
    mentor.progress = True
    assert mentor.propose(REQ).candidates and mentor.time_limit_s == mentor.timeout
    err = capsys.readouterr().err
    assert "openai:gpt-test: waiting for the reply: 00:02 elapsed" in err  # refreshed every second while it waits


# ------------------------------------------------------------------------------------------------ options
def test_shared_settings_are_one_options_object_or_keywords(loopback):
    """The settings both server mentors share are one ``ChatOptions``; a constructor takes it or its fields as
    keywords (which win), and repeats none of its fields in its own signature."""
    import dataclasses
    import inspect

    from peft_catalyst.mentors import ChatOptions, HubInferenceMentor

    options = ChatOptions(temperature=0.2, max_tokens=64, num_samples=3, timeout=4.0, seed=7, name="mine")
    by_object = OpenAIMentor("gpt-test", base_url=loopback.base_url, api_key=FAKE_KEY, options=options)
    by_keywords = OpenAIMentor(
        "gpt-test", base_url=loopback.base_url, api_key=FAKE_KEY, temperature=0.2, max_tokens=64, num_samples=3,
        timeout=4.0, seed=7, name="mine",
    )  # fmt: skip
    assert by_object.options == by_keywords.options == options
    assert by_object.cache_identity() == by_keywords.cache_identity()
    assert (by_object.timeout, by_object.name, by_object.num_samples) == (4.0, "mine", 3)
    hub = HubInferenceMentor("tgi-model", token="hf_x" * 4, base_url=loopback.base_url, options=options, seed=8)
    assert hub.options == dataclasses.replace(options, seed=8) and hub.seed == 8  # a keyword wins over options
    assert hub.cache_identity()["params"]["temperature"] == 0.2

    with pytest.raises(TypeError, match=r"OpenAIMentor\(\) got unexpected keyword argument\(s\) 'temprature'.*"
                       r"ChatOptions fields: temperature, top_p"):  # fmt: skip
        OpenAIMentor("gpt-test", base_url=loopback.base_url, api_key=FAKE_KEY, temprature=0.2)
    with pytest.raises(MentorError, match="timeout must be > 0"):
        OpenAIMentor("gpt-test", base_url=loopback.base_url, api_key=FAKE_KEY, options=ChatOptions(timeout=0))
    shared = {f.name for f in dataclasses.fields(ChatOptions)}
    for cls in (OpenAIMentor, HubInferenceMentor):
        assert not shared & set(inspect.signature(cls).parameters), cls
