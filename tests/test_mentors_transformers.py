"""TransformersMentor on real (tiny, random) chat models built offline, and once on the embedded SmolLM2."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peft_catalyst.mentors import MentorError, MentorRequest, MetaPrompt, TrajectoryPoint, TransformersMentor
from tests.tiny import bpe_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<bos>{{ m['role'] }}\n{{ m['content'] }}<eos>\n{% endfor %}"
    "{% if add_generation_prompt %}<bos>assistant\n{% endif %}"
)
REQ = MentorRequest(
    "sentiment of movie review snippets (positive/negative)",
    [TrajectoryPoint("the movie was great", 0.8), TrajectoryPoint("classify the review", 0.6)],
    num_candidates=2,
    max_words=8,
)
ANSWER = "classify the sentiment as positive or negative"


def chat_tokenizer():
    tok = bpe_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_chat_llama(tok, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.2,  # a wide init so that sampled replies differ from seed to seed
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def tiny():
    tok = chat_tokenizer()
    return tiny_chat_llama(tok), tok


def test_generation_leaves_the_callers_state_alone(tiny):
    model, tok = tiny
    model.train()
    model.model.layers[1].eval()  # a mixed train/eval state must come back exactly
    modes = {name: m.training for name, m in model.named_modules()}
    grad_flags: list[bool] = []
    handle = model.register_forward_hook(lambda *args: grad_flags.append(torch.is_grad_enabled()))
    torch.manual_seed(1234)
    rng_before = torch.get_rng_state()
    try:
        proposal = TransformersMentor(model, tok, seed=1, num_samples=2, max_new_tokens=8).propose(REQ)
    finally:
        handle.remove()
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert grad_flags and not any(grad_flags)  # every forward ran under no_grad
    assert all(p.grad is None for p in model.parameters())
    assert proposal.prompt_tokens and proposal.completion_tokens
    model.eval()


def test_shares_the_model_instead_of_copying_it(tiny):
    model, tok = tiny
    mentor = TransformersMentor(model, tok)
    assert mentor.model is model
    assert mentor.model.get_input_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def sampled_tokens(model, mentor) -> list[list[int]]:
    """The token ids fed back at each decoding step (a random model rarely ends a line, so texts are often cut)."""
    steps: list[list[int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] == 1:
            steps.append(ids[:, 0].tolist())

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        mentor.propose(REQ)
    finally:
        handle.remove()
    return steps


def test_seeded_calls_are_reproducible_whatever_the_global_rng(tiny):
    model, tok = tiny
    torch.manual_seed(1)
    a = sampled_tokens(model, TransformersMentor(model, tok, seed=5, num_samples=3, max_new_tokens=10))
    torch.manual_seed(999)
    b = sampled_tokens(model, TransformersMentor(model, tok, seed=5, num_samples=3, max_new_tokens=10))
    c = sampled_tokens(model, TransformersMentor(model, tok, seed=6, num_samples=3, max_new_tokens=10))
    assert len(a) >= 9 and len(a[0]) == 3  # 3 samples per step
    assert a == b
    assert a != c


def test_the_prompt_is_encoded_once_for_all_samples_with_the_same_replies(tiny, monkeypatch):
    """generate() would encode the prompt once per sample; the mentor prefills it once and repeats the KV cache."""
    import peft_catalyst.mentors.transformers_mentor as tm

    model, tok = tiny
    passes: list[tuple[int, int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            passes.append(tuple(ids.shape))

    def call():
        mentor = TransformersMentor(model, tok, seed=5, num_samples=3, max_new_tokens=10, meta_prompt=MetaPrompt())
        completion = mentor.complete(mentor.build_messages(REQ), REQ)
        seen, passes[:] = list(passes), []
        return completion, seen

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        shared, shared_passes = call()
        monkeypatch.setattr(tm, "_shared_prefix_cache", lambda *args: {})
        plain, plain_passes = call()
    finally:
        handle.remove()
    width = shared.prompt_tokens
    assert shared_passes == [(1, width - 1)]  # the prompt encoded once, its last token left to generate()
    assert plain_passes == [(3, width)]  # without it: encoded for each of the 3 samples
    assert shared.texts == plain.texts and shared.completion_tokens == plain.completion_tokens > 0


def test_samples_and_token_counts(tiny):
    model, tok = tiny
    mentor = TransformersMentor(model, tok, seed=0, num_samples=3, max_new_tokens=6, meta_prompt=MetaPrompt())
    messages = mentor.build_messages(REQ)
    completion = mentor.complete(messages, REQ)
    assert len(completion.texts) == 3
    expected_prompt = len(tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])
    assert completion.prompt_tokens == expected_prompt
    assert 0 < completion.completion_tokens <= 3 * 6
    assert mentor.cache_identity()["params"]["num_samples"] == 3


def memorize(mentor: TransformersMentor, request: MentorRequest, reply: str, steps: int = 150) -> float:
    """Train the mentor's tiny model to answer ``reply`` to this request's messages; returns the final loss."""
    model, tok = mentor.model, mentor.tokenizer
    prompt_ids = tok.apply_chat_template(mentor.build_messages(request), add_generation_prompt=True, return_dict=True)[
        "input_ids"
    ]
    ids = torch.tensor([prompt_ids + tok(reply, add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return loss.item()


def test_a_memorized_instruction_comes_back_as_the_candidate():
    """Teach a tiny model one reply, then check the whole path: template, generation, stop at the line end, parse."""
    tok = chat_tokenizer()
    model = tiny_chat_llama(tok, seed=3)
    mentor = TransformersMentor(model, tok, temperature=0, num_samples=1, max_new_tokens=24, strict_retry=False)
    assert mentor.samples_for(REQ) == 1 < REQ.num_candidates  # greedy: one reply, not copies of it
    assert memorize(mentor, REQ, ANSWER + "\nand then some rambling") < 0.05
    model.train()
    proposal = mentor.propose(REQ)
    assert proposal.candidates == [ANSWER]  # the rambling second line is never generated (stops at "\n")
    assert model.training  # mode restored
    assert proposal.completion_tokens <= len(tok(ANSWER + "\n", add_special_tokens=False)["input_ids"]) + 1


def test_words_of_the_few_shot_example_are_banned_at_generation_time():
    """A model that learned to copy the example's words is rejected by the parser, and with the ban cannot copy."""
    from peft_catalyst.mentors.metaprompt import SMALL_MODEL_META_PROMPT, FewShotExample

    example = FewShotExample("question type", (("what who", 1.0, 0.5),), ("Classify the question",), ("classify",))
    meta = MetaPrompt(**{**SMALL_MODEL_META_PROMPT.__dict__, "examples": (example,)})
    request = MentorRequest("movie review sentiment (positive/negative)", [TrajectoryPoint("the movie was", 0.7)])
    tok = chat_tokenizer()
    model = tiny_chat_llama(tok, seed=4)
    kwargs = dict(temperature=0, num_samples=1, max_new_tokens=24, strict_retry=False, meta_prompt=meta)
    free = TransformersMentor(model, tok, ban_example_words=False, **kwargs)
    assert memorize(free, request, ANSWER + "\n") < 0.05
    copied = free.propose(request)
    assert copied.raw == ANSWER and copied.rejected == [[ANSWER, "example_leak"]]
    banned = TransformersMentor(model, tok, **kwargs)
    assert tok(" classify", add_special_tokens=False)["input_ids"] in banned._banned_token_sequences(request)
    assert "classify" not in banned.propose(request).raw.lower()


def test_prompt_tuned_peft_model_generates_without_its_virtual_tokens(tiny):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    model, tok = tiny
    plain = TransformersMentor(model, tok, temperature=0, num_samples=1, max_new_tokens=8, strict_retry=False)
    expected = plain.propose(REQ).raw
    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4))
    with torch.no_grad():  # a soft prompt far from anything: it would change the reply if it were used
        peft_model.prompt_encoder["default"].embedding.weight.normal_(0, 5)
    shared = TransformersMentor(peft_model, tok, temperature=0, num_samples=1, max_new_tokens=8, strict_retry=False)
    assert shared.propose(REQ).raw == expected


@pytest.mark.timeout(60)
def test_max_time_bounds_a_call_and_drops_the_cut_line(tiny):
    model, tok = tiny
    mentor = TransformersMentor(
        model, tok, max_new_tokens=3000, max_time=0.3, num_samples=1, strict_retry=False, meta_prompt=MetaPrompt()
    )
    start = time.perf_counter()
    completion = mentor.complete(mentor.build_messages(REQ), REQ)
    assert time.perf_counter() - start < 5
    assert completion.completion_tokens < 3000
    assert all("\n" not in t or len(t.splitlines()) >= 1 for t in completion.texts)


@pytest.mark.timeout(60)
def test_max_time_bounds_the_whole_call_its_stricter_retry_included(tiny, monkeypatch):
    """``max_time`` (``--mentor_timeout``, what the round logs as the time limit) is the call's: the stricter retry
    gets only what is left, and none is made when nothing is left (the first reply stands, and says why)."""
    model, tok = tiny
    limits, slow = [], [0.0]
    generate = model.generate

    def timed(*args, **kwargs):
        limits.append(kwargs.get("max_time"))
        time.sleep(slow[0])  # a slow first generation, as on a loaded machine
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", timed)
    # No usable line (1 token per reply): the stricter retry follows, with what the first call left of 10 s.
    mentor = TransformersMentor(model, tok, max_new_tokens=1, max_time=10.0, num_samples=1, meta_prompt=MetaPrompt())
    assert mentor.time_limit_s == 10.0
    proposal = mentor.propose(REQ)
    assert proposal.attempts == 2 and len(limits) == 2 and 0 < limits[1] < limits[0] <= 10.0
    limits.clear()
    slow[0] = 1.2  # the first generation spends the whole second
    mentor = TransformersMentor(model, tok, max_new_tokens=1, max_time=1.0, num_samples=1, meta_prompt=MetaPrompt())
    start = time.perf_counter()
    proposal = mentor.propose(REQ)
    assert len(limits) == 1 and time.perf_counter() - start < 3  # no retry past the limit
    assert not proposal.candidates and "time limit of 1 s is spent" in proposal.warning


def test_generation_errors_become_mentor_errors_and_modes_are_restored(tiny):
    model, tok = tiny
    model.train()

    def boom(*args):
        raise RuntimeError("out of memory (injected)")

    handle = model.model.layers[0].register_forward_hook(boom)
    try:
        with pytest.raises(MentorError) as info:
            TransformersMentor(model, tok).propose(REQ)
    finally:
        handle.remove()
    assert info.value.reason == "generation" and isinstance(info.value.__cause__, RuntimeError)
    assert model.training and all(m.training for m in model.modules())
    model.eval()


def test_tokenizer_needs_a_chat_template(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="chat template"):
        TransformersMentor(model, bpe_tokenizer())


@pytest.mark.slow
def test_embedded_smollm2_mentor(smollm2):
    model, tok = smollm2
    was_training = model.training
    rng_before = torch.get_rng_state()
    mentor = TransformersMentor.embedded(model, tok, num_samples=2, max_new_tokens=20, seed=0, strict_retry=False)
    assert mentor.model is model and mentor.name == "transformers:SmolLM2-135M-Instruct"
    request = MentorRequest(
        "SMS spam detection (spam or ham)",
        [TrajectoryPoint("Ġwin prize ĠCall", 0.9), TrajectoryPoint("Is this spam", 0.62)],
        num_candidates=2,
        max_words=8,
    )
    proposal = mentor.propose(request)
    assert proposal.model == "SmolLM2-135M-Instruct"
    assert proposal.prompt_tokens > 100 and proposal.completion_tokens > 0
    assert proposal.raw.strip()
    for candidate in proposal.candidates:
        assert len(candidate.split()) <= 8 and candidate.lower() != "is this spam"
    assert torch.equal(torch.get_rng_state(), rng_before) and model.training == was_training


def test_a_call_shows_a_bar_over_generated_tokens_with_its_rate(tiny, capsys):
    model, tok = tiny
    mentor = TransformersMentor(model, tok, seed=0, num_samples=3, max_new_tokens=6, progress=True)
    mentor.complete(mentor.build_messages(REQ), REQ)
    err = capsys.readouterr().err
    assert "generating" in err and "tok/s" in err  # tqdm's bar: tokens so far, of 3 samples x 6, and the rate
    assert mentor.time_limit_s == mentor.max_time  # what the round logs before it asks
    quiet = TransformersMentor(model, tok, seed=0, num_samples=3, max_new_tokens=6, progress=False)
    quiet.complete(quiet.build_messages(REQ), REQ)
    assert "generating" not in capsys.readouterr().err


def test_one_prompt_per_reply_samples_as_many_replies_as_prompts_asked_in_one_call(tiny):
    """Screening asks N prompts (catalyst_num_samples): a one-line template samples N replies in one generate()."""
    from dataclasses import replace

    from peft_catalyst.mentors.metaprompt import SMALL_MODEL_META_PROMPT

    model, tok = tiny
    mentor = TransformersMentor(
        model, tok, seed=0, num_samples=2, max_new_tokens=4, meta_prompt=SMALL_MODEL_META_PROMPT
    )
    calls = []
    generate = model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["num_return_sequences"])
        return generate(*args, **kwargs)

    model.generate = counting
    try:
        wide = replace(REQ, num_candidates=5)
        completion = mentor.complete(mentor.build_messages(wide), wide)
        narrow = mentor.complete(mentor.build_messages(REQ), REQ)
    finally:
        del model.generate
    assert calls == [5, 2] and len(completion.texts) == 5 and len(narrow.texts) == 2
    listing = TransformersMentor(model, tok, num_samples=2, meta_prompt=MetaPrompt())  # a numbered list per reply
    assert listing.samples_for(replace(REQ, num_candidates=5)) == 2
