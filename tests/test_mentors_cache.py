"""CachedMentor: sqlite read/write-through cache, replay without any LLM, strict replay.

The inner mentor is a real OpenAIMentor talking to the loopback server, so "no LLM call" is checked by the server's
request count.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from peft_catalyst.mentors import (
    CachedMentor,
    LabeledExample,
    MentorError,
    MentorRequest,
    OpenAIMentor,
    PastRound,
    ReplayMissError,
    ScoredPrompt,
    TrajectoryPoint,
)
from peft_catalyst.mentors.cache import full_key, request_key
from tests.loopback_openai import LoopbackOpenAIServer, chat_reply, error_reply

REQ = MentorRequest(
    "SMS spam detection (spam or ham)",
    [TrajectoryPoint("win prize call", 0.9), TrajectoryPoint("Is this spam", 0.6)],
    num_candidates=2,
    max_words=8,
)
OTHER = MentorRequest("SMS spam detection (spam or ham)", [TrajectoryPoint("free text now", 0.8)], num_candidates=2)


@pytest.fixture
def loopback():
    with LoopbackOpenAIServer() as server:
        counter = iter(range(1000))
        server.set_reply(lambda req: f"1. Label the SMS: spam or ham ({next(counter)})\n2. Spam or not?")
        yield server


def openai_mentor(server, **kwargs) -> OpenAIMentor:
    kwargs.setdefault("timeout", 2)
    kwargs.setdefault("max_retries", 0)
    return OpenAIMentor("gpt-test", base_url=server.base_url, api_key="sk-cache-test-000000000", **kwargs)


def test_use_mode_reads_through_and_writes_through(loopback, tmp_path: Path):
    path = tmp_path / "nested" / "mentor.sqlite"
    cached = CachedMentor(openai_mentor(loopback), path)
    first = cached.propose(REQ)
    again = cached.propose(REQ)
    assert loopback.request_count == 1
    assert not first.cached and again.cached
    assert again.candidates == first.candidates == ["Label the SMS: spam or ham (0)", "Spam or not?"]
    assert again.raw == first.raw and again.messages == first.messages
    assert again.prompt_tokens == first.prompt_tokens  # what the reply cost when it was made
    cached.propose(OTHER)
    assert loopback.request_count == 2 and len(cached) == 2
    usage = cached.usage.to_dict()
    assert usage["calls"] == 2 and usage["cache_hits"] == 1 and usage["prompt_tokens"] == 2 * 42  # hits are no calls
    assert cached.name == "openai:gpt-test"


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0.1}, {"seed": 3}, {"max_tokens": 17}, {"num_samples": 2}, {"meta_prompt": "{trajectory}"}],
    ids=["temperature", "seed", "max_tokens", "n", "messages"],
)
def test_key_covers_sampling_parameters_seed_and_messages(loopback, tmp_path: Path, change):
    path = tmp_path / "c.sqlite"
    CachedMentor(openai_mentor(loopback, seed=1), path).propose(REQ)
    kwargs = {"seed": 1} | change
    CachedMentor(openai_mentor(loopback, **kwargs), path).propose(REQ)
    assert loopback.request_count == 2
    CachedMentor(openai_mentor(loopback, **kwargs), path).propose(REQ)
    assert loopback.request_count == 2


def test_key_covers_the_model(loopback, tmp_path: Path):
    path = tmp_path / "c.sqlite"
    CachedMentor(openai_mentor(loopback), path).propose(REQ)
    other = OpenAIMentor("other-model", base_url=loopback.base_url, api_key="x" * 12, timeout=2)
    CachedMentor(other, path).propose(REQ)
    assert loopback.request_count == 2


# Keys of these requests as peft-catalyst 0.1 computed them (before TrajectoryPoint became an alias of ScoredPrompt):
# a cache or a --mentor_replay file written then must still answer the same requests.
RICH = MentorRequest(
    "movie review sentiment",
    [ScoredPrompt("great movie", 0.5, 0.7, token_ids=[4, 5], step=3, train_loss=0.9, metrics={"accuracy": 0.5})],
    num_candidates=3,
    max_words=6,
    manual_prompt="Is it positive?",
    metric="accuracy",
    higher_is_better=True,
    earlier_rounds=[PastRound(1, ["a b", "c d"], [0.4, None], "a b", 0.3)],
    examples=[LabeledExample("fine film", "positive")],
    errors=[LabeledExample("dull", "negative", "positive", True)],
    labels=["negative", "positive"],
    best_prompts=[TrajectoryPoint("Is the review positive or negative?", 0.41)],
    proposal="edit",
)
LEGACY = MentorRequest.from_dict({"task_description": "t", "trajectory": [{"text": "a", "loss": 1.0, "metric": "x"}]})
PINNED_KEYS = {
    "plain": (REQ, "917a7d8b8d836d503d4dcd6012930a9e835666da1acc9f7f4092f2c79fad93be", None),
    "rich": (
        RICH,
        "0ad7bf2087d941d2efa96140b4a24902d7ba198b1336fb56be34182af23d5a24",
        "e3ae44c6bc655769d4e6f1b321f24ef7db3739ae6346093c250f04030614723c",
    ),
    "legacy": (LEGACY, "45250f6cf838ac11ade4933a9517452e5e3cedc43a23acdf6ef6d49d0766617b", None),
}


@pytest.mark.parametrize("name", sorted(PINNED_KEYS))
def test_cache_keys_of_a_request_never_change(name):
    """A point's token ids, step or metrics are not what a mentor reads: they never reach the key."""
    request, key, call_key = PINNED_KEYS[name]
    assert request_key(request) == key
    point = request.trajectory[0]
    assert point == ScoredPrompt(point.text, point.score, point.loss)  # the request keeps text, score, loss alone
    if call_key is not None:
        assert full_key({"backend": "x"}, [{"role": "user", "content": "hi"}], request) == call_key


def test_replay_reruns_a_finished_run_without_any_llm(loopback, tmp_path: Path):
    path = tmp_path / "run.sqlite"
    live = CachedMentor(openai_mentor(loopback), path)
    recorded = [live.propose(REQ), live.propose(OTHER)]
    assert loopback.request_count == 2

    loopback.set_reply(lambda req: error_reply(500, "the LLM must not be called in a replay"))
    for inner in (openai_mentor(loopback), None):  # with the original mentor, or with nothing at all
        for mode in ("replay", "strict"):
            replay = CachedMentor(inner, path, mode=mode)
            got = [replay.propose(REQ), replay.propose(OTHER)]
            assert [p.candidates for p in got] == [p.candidates for p in recorded]
            assert [p.raw for p in got] == [p.raw for p in recorded]
            assert all(p.cached for p in got)
            assert replay.usage.calls == 0 and replay.usage.cache_hits == 2  # replies replayed, no LLM called
    assert loopback.request_count == 2
    assert CachedMentor(None, path, mode="replay").name == "replay:run.sqlite"


def test_replay_miss_is_an_empty_proposal_and_strict_miss_raises(loopback, tmp_path: Path, caplog):
    path = tmp_path / "run.sqlite"
    CachedMentor(openai_mentor(loopback), path).propose(REQ)
    replay = CachedMentor(None, path, mode="replay")
    with caplog.at_level("WARNING"):
        miss = replay.propose(OTHER)
    assert miss.candidates == [] and miss.warning and "no stored reply" in miss.warning
    assert any("no stored reply" in r.getMessage() for r in caplog.records)
    assert replay.usage.calls == 0 and replay.usage.cache_hits == 0  # a miss is neither
    strict = CachedMentor(None, path, mode="strict")
    with pytest.raises(ReplayMissError) as info:
        strict.propose(OTHER)
    assert info.value.reason == "cache_miss" and info.value.key == request_key(OTHER)
    assert info.value.key[:16] in str(info.value) and strict.usage.calls == 0
    assert loopback.request_count == 1


def test_replay_of_a_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.sqlite"
    assert CachedMentor(None, missing, mode="replay").propose(REQ).candidates == []
    with pytest.raises(MentorError) as info:
        CachedMentor(None, missing, mode="strict")
    assert info.value.reason == "cache_miss"
    assert not missing.exists()  # replay never creates files


def test_replay_opens_the_file_read_only(loopback, tmp_path: Path):
    path = tmp_path / "run.sqlite"
    CachedMentor(openai_mentor(loopback), path).propose(REQ)
    path.chmod(0o444)
    try:
        assert CachedMentor(None, path, mode="strict").propose(REQ).candidates
    finally:
        path.chmod(0o644)


def test_failures_are_not_cached(loopback, tmp_path: Path):
    loopback.enqueue(error_reply(400, "bad request"))
    cached = CachedMentor(openai_mentor(loopback), tmp_path / "c.sqlite")
    with pytest.raises(MentorError):
        cached.propose(REQ)
    assert len(cached) == 0 and cached.usage.failures == 1
    assert cached.propose(REQ).candidates and len(cached) == 1


def test_empty_proposals_are_cached_so_replay_skips_the_same_rounds(loopback, tmp_path: Path):
    loopback.set_reply(lambda req: chat_reply("The weather is nice today and I like it a lot, really a lot."))
    path = tmp_path / "c.sqlite"
    live = CachedMentor(openai_mentor(loopback), path).propose(REQ)
    assert live.candidates == [] and live.warning
    replayed = CachedMentor(None, path, mode="strict").propose(REQ)
    assert replayed.candidates == [] and replayed.warning == live.warning


def test_invalid_arguments(tmp_path: Path):
    with pytest.raises(MentorError):
        CachedMentor(None, tmp_path / "c.sqlite", mode="use")
    with pytest.raises(MentorError):
        CachedMentor(None, tmp_path / "c.sqlite", mode="sometimes")  # type: ignore[arg-type]


def test_file_is_plain_sqlite_with_json_rows(loopback, tmp_path: Path):
    path = tmp_path / "c.sqlite"
    CachedMentor(openai_mentor(loopback, seed=5), path).propose(REQ)
    with sqlite3.connect(path) as conn:
        backend, model, identity, proposal = conn.execute(
            "SELECT backend, model, identity, proposal FROM mentor_replies"
        ).fetchone()
    assert (backend, model) == ("openai", "gpt-test")
    assert json.loads(identity)["seed"] == 5
    assert json.loads(proposal)["candidates"] == ["Label the SMS: spam or ham (0)", "Spam or not?"]


def _write_rows(path: str, base_url: str, worker: int) -> None:
    mentor = CachedMentor(OpenAIMentor("gpt-test", base_url=base_url, api_key="k" * 12, timeout=5), path)
    for i in range(5):
        mentor.propose(MentorRequest(f"task {worker} {i}", [TrajectoryPoint("a", 1.0)]))


def test_two_processes_share_one_cache_file(loopback, tmp_path: Path):
    path = tmp_path / "shared.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_rows, args=(str(path), loopback.base_url, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(CachedMentor(None, path, mode="replay")) == 10


def test_secrets_are_reached_through_the_public_method(tmp_path):
    """What the card and the uploaded history mask: the key a mentor holds, also through a cache; none to replay."""
    from peft_catalyst.mentors import RandomMentor

    key = "sk-test-secret-method-0123456789"
    inner = OpenAIMentor("m", base_url="http://127.0.0.1:9/v1", api_key=key, timeout=1, max_retries=0)
    assert inner.secrets() == [key]
    assert CachedMentor(inner, tmp_path / "c.sqlite").secrets() == [key]
    assert CachedMentor(None, tmp_path / "c.sqlite", mode="replay").secrets() == []
    assert RandomMentor(["a", "b"]).secrets() == []
