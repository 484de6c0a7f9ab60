"""The random mentor (the control for any LLM mentor) and the vocabulary words it draws from."""

from __future__ import annotations

import pytest

from peft_catalyst.mentors import Mentor, MentorRequest, PastRound, RandomMentor, TrajectoryPoint
from peft_catalyst.projection import vocabulary_words
from tests import tiny


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def test_vocabulary_words_are_single_tokens(tok):
    words = vocabulary_words(tok)
    assert len(words) > 20 and words == sorted(set(words))
    for word in words:
        assert word.isalpha() and len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1


def test_random_mentor_proposes_seeded_random_token_prompts(tok):
    words = vocabulary_words(tok)
    request = MentorRequest("Classify review sentiment", [TrajectoryPoint("a b", 1.0)], num_candidates=3, max_words=5)
    first, again = RandomMentor(words, seed=7), RandomMentor(words, seed=7)
    assert isinstance(first, Mentor) and first.name == "random-words"
    round1 = first.propose(request).candidates
    assert round1 == again.propose(request).candidates  # same seed, same round: same proposals
    assert first.propose(request).candidates == round1  # seeded by the round, not by how often it was asked
    assert RandomMentor(words, seed=8).propose(request).candidates != round1
    assert len(round1) == 3 and len(set(round1)) == 3
    for text in round1:
        assert len(text.split()) == 5 and all(w in words for w in text.split())
        assert len(tok(text, add_special_tokens=False)["input_ids"]) == 5  # exactly max_words vocabulary tokens
    assert first.usage.calls == 2 and first.usage.prompt_tokens == 0


def test_random_mentor_draws_per_round_so_a_resumed_run_proposes_the_same(tok):
    words = vocabulary_words(tok)
    past = [PastRound(1, ["x"], [0.5], taken=None, current_score=0.4)]
    round1 = MentorRequest("t", [TrajectoryPoint("a", 1.0)], num_candidates=2, max_words=3)
    round2 = MentorRequest("t", [TrajectoryPoint("a", 1.0)], num_candidates=2, max_words=3, earlier_rounds=past)
    running = RandomMentor(words, seed=3)
    first, second = running.propose(round1).candidates, running.propose(round2).candidates
    assert first != second  # the next round draws new words
    assert RandomMentor(words, seed=3).propose(round2).candidates == second  # a fresh mentor after a resume


def test_random_mentor_needs_words_and_stops_at_what_the_vocabulary_allows():
    with pytest.raises(ValueError, match="non-empty"):
        RandomMentor([" ", ""])
    proposal = RandomMentor(["only"], seed=0).propose(MentorRequest("t", [], num_candidates=3, max_words=2))
    assert proposal.candidates == [" only only"]


def test_random_mentor_matches_per_round_counts(tok):
    """``counts`` (what compare sets from the LLM mentor's usable candidates) caps each round's draw; 0 is an empty
    proposal that says why; rounds past the list draw what is asked; the draws are the uncapped mentor's first ones."""
    words = vocabulary_words(tok)
    past = [PastRound(1, ["x"], [0.5], taken=None, current_score=0.4)]
    round1 = MentorRequest("t", [TrajectoryPoint("a", 1.0)], num_candidates=3, max_words=3)
    round2 = MentorRequest("t", [TrajectoryPoint("a", 1.0)], num_candidates=3, max_words=3, earlier_rounds=past)
    free = RandomMentor(words, seed=3)
    matched = RandomMentor(words, seed=3, counts=[1])
    assert matched.propose(round1).candidates == free.propose(round1).candidates[:1]
    assert len(matched.propose(round2).candidates) == 3  # past the list: as many as asked
    empty = RandomMentor(words, seed=3, counts=[0]).propose(round1)
    assert empty.candidates == [] and "matched to a mentor that gave none" in empty.warning
    with pytest.raises(ValueError, match=">= 0"):
        RandomMentor(words, counts=[-1])
