"""Meta-prompt rendering and reply parsing: formats a mentor replies in, and the filters applied to candidates."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from peft_catalyst.mentors import (
    DEFAULT_META_PROMPT,
    MentorProposal,
    MentorRequest,
    MentorUsage,
    MetaPrompt,
    PastRound,
    TrajectoryPoint,
    parse_candidates,
    parse_reply,
    render_meta_prompt,
)
from peft_catalyst.mentors.metaprompt import SMALL_MODEL_META_PROMPT

REQ = MentorRequest(
    task_description="sentiment of movie review snippets (positive/negative)",
    trajectory=[
        TrajectoryPoint("Is the review positive", 0.55),
        TrajectoryPoint("movie great sentiment kil", 0.71),
        TrajectoryPoint("review positive negative film", 0.65),
    ],
    num_candidates=3,
    max_words=8,
    manual_prompt="Classify the sentiment of this movie review",
)


# ------------------------------------------------------------------------------------------------ meta-prompt
def test_meta_prompt_sorts_trajectory_worst_to_best_with_scores():
    messages = render_meta_prompt(REQ)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[-1]["content"]
    worst, middle, best = (user.index(t) for t in ("movie great", "review positive negative", "Is the review"))
    assert worst < middle < best
    assert '"movie great sentiment kil" (loss 0.7100)' in user
    assert "lower loss is better" in user
    assert "sentiment of movie review snippets" in user
    assert "Classify the sentiment of this movie review" in user  # manual prompt
    assert "Write 3 new prompts" in user and "at most 8 words" in user


def test_meta_prompt_merges_duplicate_points_keeping_the_best():
    req = MentorRequest("t", [TrajectoryPoint("same", 0.9), TrajectoryPoint("same", 0.4), TrajectoryPoint("x", 0.5)])
    user = render_meta_prompt(req)[-1]["content"]
    assert user.count('"same"') == 1
    assert "loss 0.4000" in user and "loss 0.9000" not in user


def test_meta_prompt_without_manual_prompt_or_earlier_rounds():
    req = MentorRequest("spam detection", [TrajectoryPoint("a b c", 1.0)])
    user = render_meta_prompt(req)[-1]["content"]
    assert "written by hand" not in user
    assert "Earlier rounds" not in user and "metric" not in user


# Three prompts, worst to best under each direction: loss-like (lower is better) and accuracy-like (higher is better).
_POINTS = [TrajectoryPoint("alpha words", 0.40, 0.9), TrajectoryPoint("beta words", 0.80, 0.5)]
_POINTS.append(TrajectoryPoint("gamma words", 0.60, 0.7))
_DIRECTIONS = [
    ("label_loss", False, "lower label_loss is better", ["beta", "gamma", "alpha"]),
    ("accuracy", True, "higher accuracy is better", ["alpha", "gamma", "beta"]),
]


@pytest.mark.parametrize("template", [MetaPrompt(), SMALL_MODEL_META_PROMPT], ids=["default", "small"])
@pytest.mark.parametrize(("metric", "higher", "sentence", "order"), _DIRECTIONS, ids=["loss-like", "accuracy-like"])
def test_meta_prompt_states_the_metrics_direction_and_orders_by_it(template, metric, higher, sentence, order):
    req = MentorRequest("spam detection", _POINTS, metric=metric, higher_is_better=higher)
    user = template.render(req)[-1]["content"]
    assert sentence in user
    assert "higher metric" not in user and ("lower loss" not in user or metric == "loss")
    positions = [user.index(f'"{word} words"') for word in order]
    assert positions == sorted(positions), user  # worst first, best last
    assert f'"alpha words" ({metric} 0.4000)' in user  # the ranking score, under the metric's name
    assert "0.9000" not in user  # the LM loss is not what ranks, so it is not shown


@pytest.mark.parametrize("template", [MetaPrompt(), SMALL_MODEL_META_PROMPT], ids=["default", "small"])
def test_meta_prompt_shows_earlier_rounds(template):
    rounds = [
        PastRound(1, ["first idea", "broken"], [0.52, None], taken=None, current_score=0.50),
        PastRound(2, ["second idea"], [0.61], taken="second idea", current_score=0.55),
    ]
    req = MentorRequest("spam detection", _POINTS, metric="accuracy", higher_is_better=True, earlier_rounds=rounds)
    user = template.render(req)[-1]["content"]
    assert "Earlier rounds (accuracy of each prompt):" in user
    assert 'Round 1: current prompt 0.5000; proposed "first idea" (0.5200), "broken" (not scored); kept' in user
    assert 'Round 2: current prompt 0.5500; proposed "second idea" (0.6100); took "second idea".' in user
    assert user.index("Round 1:") < user.index("Round 2:") < user.index("Write")


def test_few_shot_example_speaks_the_requests_metric():
    req = MentorRequest("spam detection", _POINTS, metric="accuracy", higher_is_better=True)
    example = MetaPrompt().render(req, few_shot=True)[1]["content"]
    assert "higher accuracy is better" in example and "(accuracy 0.6800)" in example
    assert example.index("(accuracy 0.4100)") < example.index("(accuracy 0.6800)")


def test_custom_template_by_string_and_file(tmp_path: Path):
    template = 'TASK={task_description} N={num_candidates} W={max_words} JSON={{"k": 1}}\n{trajectory}'
    by_str = render_meta_prompt(REQ, template)
    expected = 'TASK=sentiment of movie review snippets (positive/negative) N=3 W=8 JSON={"k": 1}'
    assert by_str[-1]["content"].startswith(expected)
    path = tmp_path / "mine.md"
    path.write_text(template, encoding="utf-8")
    assert render_meta_prompt(REQ, path) == by_str
    assert render_meta_prompt(REQ, str(path)) == by_str  # a command-line argument: a str naming a file


def test_a_template_replaces_only_the_user_turn_of_the_mentors_default(caplog):
    from peft_catalyst.mentors.metaprompt import resolve_meta_prompt

    small = resolve_meta_prompt("Task: {task_description}\n{trajectory}\nOne instruction:", SMALL_MODEL_META_PROMPT)
    assert small.answers_per_reply == 1 and small.examples == SMALL_MODEL_META_PROMPT.examples
    assert small.user.startswith("Task: {task_description}")
    with caplog.at_level("WARNING"):
        resolve_meta_prompt("Improve the prompt for {task_description}.")
    assert any("{trajectory}" in r.getMessage() for r in caplog.records)


def test_unknown_placeholder_is_a_clear_error():
    with pytest.raises(ValueError, match="task_desc"):
        MetaPrompt(user="{task_desc}")
    with pytest.raises(ValueError, match="literal braces"):
        MetaPrompt(user="a { b")


def test_default_template_is_packaged_data():
    assert "{trajectory}" in DEFAULT_META_PROMPT and "{num_candidates}" in DEFAULT_META_PROMPT


def test_few_shot_turn_respects_word_budget_and_count():
    req = MentorRequest("t", [TrajectoryPoint("a", 1.0)], num_candidates=2, max_words=3)
    messages = render_meta_prompt(req, few_shot=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    lines = messages[2]["content"].splitlines()
    assert len(lines) == 2
    assert all(len(line.split(". ", 1)[1].split()) <= 3 for line in lines)


def test_small_model_meta_prompt_asks_for_one_instruction_per_reply():
    messages = SMALL_MODEL_META_PROMPT.render(REQ, few_shot=True)
    assistant_turns = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(assistant_turns) == 2 and all("\n" not in a for a in assistant_turns)
    assert "Write one better instruction" in messages[-1]["content"]


def test_request_validates_and_serializes():
    with pytest.raises(ValueError):
        MentorRequest("t", [], num_candidates=0)
    with pytest.raises(ValueError):
        MentorRequest("t", [], max_words=0)
    req = MentorRequest("t", [{"text": "a", "score": 1.0}])  # plain dicts are accepted
    assert req.trajectory == (TrajectoryPoint("a", 1.0),)
    assert req.to_dict()["trajectory"] == [{"text": "a", "score": 1.0, "loss": None}]
    legacy = MentorRequest("t", [{"text": "a", "loss": 1.0, "metric": None}])  # written before scores were named
    assert legacy.trajectory == (TrajectoryPoint("a", 1.0, 1.0),) and legacy.metric == "loss"


def test_request_round_trips_every_field():
    req = MentorRequest(
        "t",
        [TrajectoryPoint("a", 0.7, 1.2)],
        num_candidates=2,
        max_words=5,
        manual_prompt="m",
        metric="accuracy",
        higher_is_better=True,
        earlier_rounds=[PastRound(1, ["x", "y"], [0.5, float("inf")], taken="x", current_score=0.4)],
    )
    data = json.loads(json.dumps(req.to_dict(), allow_nan=False))  # plain JSON: broadcast and chat log
    assert MentorRequest.from_dict(data) == req
    assert data["earlier_rounds"][0]["scores"] == [0.5, None]  # not finite: unusable
    assert MentorRequest("t", []).earlier_rounds == () and not MentorRequest("t", []).higher_is_better
    with pytest.raises(ValueError, match="one score per proposed"):
        PastRound(1, ["x"], [])


def test_proposal_and_usage_round_trip():
    p = MentorProposal(["a"], "raw", 0.5, 10, 5, "m", "rid", [{"role": "user", "content": "x"}], warning="w")
    assert MentorProposal.from_dict({**p.to_dict(), "future_field": 1}) == p
    usage = MentorUsage()
    usage.record(latency_s=0.5, prompt_tokens=10, completion_tokens=5)
    usage.record(latency_s=0.25, failed=True)
    assert usage.to_dict() == {
        "calls": 1,  # the failed call is counted in failures only
        "failures": 1,
        "cache_hits": 0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_s": 0.75,
    }


# ------------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize(
    "raw",
    [
        "1. Label the review: positive or negative\n2. Is this review positive?\n3) Decide the review's sentiment",
        "- Label the review: positive or negative\n* Is this review positive?\n\u2022 Decide the review's sentiment",
        'Sure! Here are three better prompts:\n\n1. "Label the review: positive or negative" - more explicit.\n'
        '2. "Is this review positive?" (a direct question)\n3. "Decide the review\'s sentiment"\n\n'
        "These prompts name the labels, which should lower the loss.",
        '["Label the review: positive or negative", "Is this review positive?", "Decide the review\'s sentiment"]',
        '```json\n{"prompts": ["Label the review: positive or negative", "Is this review positive?", '
        '"Decide the review\'s sentiment"]}\n```',
        "Here you go:\n```\nLabel the review: positive or negative\nIs this review positive?\n"
        "Decide the review's sentiment\n```\nGood luck!",
        "**Prompt 1:** Label the review: positive or negative\n**Prompt 2:** Is this review positive?\n"
        "**Prompt 3:** Decide the review's sentiment",
        '[{"prompt": "Label the review: positive or negative", "why": "labels"}, {"prompt": "Is this review '
        'positive?"}, {"prompt": "Decide the review\'s sentiment"}]',
        "Label the review: positive or negative\nIs this review positive?\nDecide the review's sentiment",
        "\u201cLabel the review: positive or negative\u201d\n\u201cIs this review positive?\u201d\n"
        "\u201cDecide the review's sentiment\u201d",
    ],
    ids=[
        "numbered",
        "bulleted",
        "quoted-with-preamble-and-explanations",
        "json-list",
        "fenced-json-object",
        "fenced-plain",
        "markdown-labels",
        "json-objects",
        "plain-lines",
        "curly-quotes",
    ],
)
def test_formats_give_the_same_candidates(raw: str):
    assert parse_candidates(raw, max_words=8) == [
        "Label the review: positive or negative",
        "Is this review positive?",
        "Decide the review's sentiment",
    ]


def test_quoted_word_inside_a_prompt_is_kept_whole():
    assert parse_candidates('1. Is the "movie" review positive?') == ['Is the "movie" review positive?']


def test_trailing_score_and_dash_explanation_are_dropped():
    raw = "1. Judge the review's tone (expected loss: 0.3)\n2. Rate the review \u2014 this names the task"
    assert parse_candidates(raw) == ["Judge the review's tone", "Rate the review"]


# ------------------------------------------------------------------------------------------------ filters
def test_filters_report_reasons():
    raw = (
        "1. Is the review positive\n"  # copy of a trajectory point (normalized)
        "2. classify the sentiment of this movie review!\n"  # copy of the manual prompt
        "3. Tell me whether this long and winding movie review is positive or negative please\n"  # too long
        "4. Rate the review\n"
        "5. rate the REVIEW.\n"  # duplicate
        '6. ""\n'  # empty
        "7. 123 456\n"  # no letters
        "8. Write a poem about the sea\n"  # off task (when the task filter is on)
    )
    result = parse_reply(
        raw,
        max_words=8,
        exclude=[p.text for p in REQ.trajectory] + [REQ.manual_prompt],
        task_description=REQ.task_description,
    )
    assert result.candidates == ["Rate the review"]
    reasons = [reason for _, reason in result.rejected]
    assert reasons == ["copy", "copy", "too_long", "duplicate", "empty", "empty", "off_task"]
    assert "too_long: 1" in result.summary()


def test_num_candidates_caps_in_order_and_samples_are_pooled():
    samples = ["1. Rate the review\n2. Judge the review", "1. Rate the review\n2. Score the review tone"]
    result = parse_reply(samples, num_candidates=2)
    assert result.candidates == ["Rate the review", "Judge the review"]
    assert ("Rate the review", "duplicate") in result.rejected
    assert ("Score the review tone", "surplus") in result.rejected


def test_reply_without_usable_line_is_empty_and_says_why():
    assert parse_candidates("") == []
    result = parse_reply("Sure! Here are some prompts:\n\nI hope this helps.")
    assert result.candidates == [] and [r for _, r in result.rejected] == ["preamble", "preamble"]
    result = parse_reply("Here they are:\n1. Rate the review\nThis one is short.")
    assert result.candidates == ["Rate the review"]
    assert result.rejected == [("Here they are:", "not_listed"), ("This one is short.", "not_listed")]


def test_truncation_never_turns_a_cut_line_into_a_candidate():
    raw = "1. " + "word " * 20 + "\n" + "2. Rate the review but keep going " * 3000
    assert parse_candidates(raw, max_words=8) == []


def test_multi_megabyte_reply_parses_in_bounded_time():
    raw = ("1. " + "word " * 50 + "\n") * 40_000 + "x" * 3_000_000  # ~13 MB, one line of 3 MB
    start = time.perf_counter()
    result = parse_reply(raw, max_words=8)
    assert time.perf_counter() - start < 5.0
    assert result.candidates == []
    pathological = "[" * 200_000 + '"' * 200_000  # JSON-ish and quote-heavy garbage
    start = time.perf_counter()
    assert parse_candidates(pathological) == []
    assert time.perf_counter() - start < 5.0


# ------------------------------------------------------------------------------------------------ layering
def test_network_mentors_do_not_import_torch():
    """Mentors know nothing of torch: only transformers_mentor may import it (lazily)."""
    package = Path(__file__).resolve().parents[1] / "peft_catalyst" / "mentors"
    for name in ("base", "metaprompt", "parsing", "cache", "openai_mentor", "hub_mentor", "__init__"):
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        } | {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"torch", "transformers", "peft"}, name


def test_words_of_a_few_shot_example_are_a_leak_unless_the_task_has_them():
    raw = ["Is this movie review helpful or unhelpful?", "Is this movie review positive or negative?"]
    result = parse_reply(raw, banned_words=["helpful", "unhelpful"])
    assert result.candidates == ["Is this movie review positive or negative?"]
    assert result.rejected == [("Is this movie review helpful or unhelpful?", "example_leak")]
    from peft_catalyst.mentors.metaprompt import SMALL_MODEL_META_PROMPT as small

    assert "helpful" in small.example_words() and "headline" in small.example_words()


def test_retry_messages_extend_the_conversation_or_replace_the_last_turn():
    messages = render_meta_prompt(REQ)
    big = MetaPrompt().retry_messages(messages, "Here is a review: loved it", REQ)
    assert big[:-2] == messages and big[-2] == {"role": "assistant", "content": "Here is a review: loved it"}
    assert "sentiment of movie review snippets" in big[-1]["content"] and "3 lines" in big[-1]["content"]
    small_messages = SMALL_MODEL_META_PROMPT.render(REQ, few_shot=True)
    small = SMALL_MODEL_META_PROMPT.retry_messages(small_messages, "Here is a review: loved it", REQ)
    assert small[:-1] == small_messages[:-1] and len(small) == len(small_messages)
    assert "loved it" not in str(small) and "Write one instruction" in small[-1]["content"]
    with pytest.raises(ValueError, match="retry_mode"):
        MetaPrompt(retry_mode="sometimes")


def test_a_line_just_over_the_word_budget_loses_its_fillers_instead_of_the_candidate():
    from peft_catalyst.mentors.parsing import fit_words

    result = parse_reply(
        ["Classify the movie review as either positive or negative.",  # 9 words: 6 once "the"/"either" go
         "Is this movie review snippet rated as positive or negative?"],  # 10 words, no filler: still too long
        max_words=8,
    )  # fmt: skip
    assert result.candidates == ["Classify movie review as positive or negative."]
    assert result.rejected == [("Is this movie review snippet rated as positive or negative?", "too_long")]
    assert fit_words("The review: good or bad?", 8) == "The review: good or bad?"  # within budget: untouched
    assert fit_words("the a an the very just", 3) == "the a an the very just"  # nothing would be left
