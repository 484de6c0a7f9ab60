"""Soft prompt <-> text: projection correctness, in-place restarts, chunking, vocabulary policy, bad input."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PromptTuningConfig, get_peft_model

from peft_catalyst import CatalystConfig, Projector, nearest_tokens, set_soft_prompt_from_text, soft_prompt_text
from peft_catalyst.projection import allowed_token_ids, text_to_token_ids, topk_nearest
from tests import tiny


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


def _catalyst(tok, n=4, **kwargs):
    return get_peft_model(tiny.tiny_llama(tok), CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, **kwargs))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_every_allowed_token_projects_to_itself(metric):
    vocab = torch.randn(1000, 16)
    allowed = torch.arange(3, 1000, 2)
    scores, ids = topk_nearest(vocab[allowed], vocab, 1, metric, allowed, chunk_rows=97)
    assert torch.equal(ids[:, 0], allowed)
    expected = torch.ones(len(allowed)) if metric == "cosine" else torch.zeros(len(allowed))
    torch.testing.assert_close(scores[:, 0], expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
def test_chunked_topk_equals_full_computation(metric):
    prompt, vocab = torch.randn(5, 8), torch.randn(333, 8)
    scores, ids = topk_nearest(prompt, vocab, top_k=7, metric=metric, chunk_rows=50)
    if metric == "cosine":
        full = torch.nn.functional.normalize(prompt, dim=-1) @ torch.nn.functional.normalize(vocab, dim=-1).T
    elif metric == "dot":
        full = prompt @ vocab.T
    else:
        full = -torch.cdist(prompt, vocab)
    ref_scores, ref_ids = full.topk(7, dim=-1)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=1e-4)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first


def test_cosine_picks_the_most_similar_not_the_least():
    """The research code sorted ascending and took the first; a near-copy of a row must map to that row."""
    vocab = torch.randn(50, 8)
    prompt = vocab[[7, 21]] + 0.01 * torch.randn(2, 8)
    _, ids = topk_nearest(prompt, vocab, 1, "cosine")
    assert ids[:, 0].tolist() == [7, 21]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_model_level_self_projection_for_every_allowed_token(tok, metric):
    pm = _catalyst(tok, n=4, projection_metric=metric)
    projector = Projector(pm, tok)
    allowed = projector.allowed_ids.tolist()
    assert 50 < len(allowed) < len(tok)
    vocab = pm.word_embeddings.weight
    for start in range(0, len(allowed) - 3, 4):
        ids = allowed[start : start + 4]
        with torch.no_grad():
            pm.prompt_encoder["default"].embedding.weight.copy_(vocab[ids])
        assert projector.token_ids() == ids


def test_set_from_text_round_trip_and_parameter_identity(tok):
    pm = _catalyst(tok, n=6)
    weight = pm.prompt_encoder["default"].embedding.weight
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    text = "the movie was great"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 6
    written = set_soft_prompt_from_text(pm, tok, text)
    assert pm.prompt_encoder["default"].embedding.weight is weight  # same Parameter object
    assert written == (ids * 6)[:6]
    torch.testing.assert_close(weight.detach(), pm.word_embeddings.weight[written].detach())
    assert soft_prompt_text(pm, tok) == tok.decode(written)

    pm2 = _catalyst(tok, n=len(ids))
    set_soft_prompt_from_text(pm2, tok, text)
    assert soft_prompt_text(pm2, tok) == text
    # The optimizer still drives the same parameter after the in-place write.
    before = weight.detach().clone()
    loss = pm(input_ids=torch.tensor([ids])).logits.pow(2).mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, weight.detach())


def test_text_is_cut_and_repeated_without_special_tokens(tok):
    ids = tok("the movie was great", add_special_tokens=False)["input_ids"]
    assert text_to_token_ids(tok, "the movie was great", 2) == ids[:2]
    assert text_to_token_ids(tok, "the movie was great", len(ids) * 2 + 1) == (ids * 3)[: len(ids) * 2 + 1]
    assert tok.bos_token_id not in text_to_token_ids(tok, "the movie", 10)


def test_nearest_tokens_topk_structure_and_metric_override(tok):
    pm = _catalyst(tok, n=3, projection_metric="l2")
    set_soft_prompt_from_text(pm, tok, "great movie")
    rows = nearest_tokens(pm, tok, top_k=3)
    assert len(rows) == 3 and all(len(r) == 3 for r in rows)
    first = rows[0][0]
    token_id, token, score = first
    assert token == tok.decode([token_id]) and score == pytest.approx(0.0, abs=1e-3)  # l2: -distance, 0 for itself
    assert rows[0][0].score >= rows[0][1].score >= rows[0][2].score
    assert rows[0][0][0] == token_id and rows[0][0][1] == token and rows[0][0] == (token_id, token, score)  # a tuple
    cos = nearest_tokens(pm, tok, top_k=1, metric="cosine")
    assert cos[0][0].token_id == token_id and cos[0][0].score == pytest.approx(1.0, abs=1e-4)


def test_vanilla_prompt_tuning_is_supported(tok):
    pm = get_peft_model(tiny.tiny_gpt2(tok), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    set_soft_prompt_from_text(pm, tok, "the movie")
    ids = tok("the movie", add_special_tokens=False)["input_ids"]
    assert [r[0].token_id for r in nearest_tokens(pm, tok)] == (ids * 3)[:3]


def test_seq2seq_fills_every_submodule_block(tok):
    pm = get_peft_model(tiny.tiny_t5(tok), CatalystConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=3))
    weight = pm.prompt_encoder["default"].embedding.weight
    assert weight.shape[0] == 6
    ids = set_soft_prompt_from_text(pm, tok, "a bad plot")
    torch.testing.assert_close(weight[:3], weight[3:])
    assert len(nearest_tokens(pm, tok)) == 6
    assert soft_prompt_text(pm, tok) == tok.decode(ids)


def test_printable_policy_excludes_special_whitespace_and_partial_bytes(tok):
    allowed = set(allowed_token_ids(tok, "printable", len(tok)).tolist())
    assert not allowed & set(tok.all_special_ids)
    for i in range(len(tok)):
        text = tok.decode([i])
        if i in allowed:
            assert text.strip() and text.isprintable() and "\ufffd" not in text
    space = tok.convert_tokens_to_ids("Ġ")
    assert space not in allowed
    assert allowed_token_ids(tok, "all", len(tok)).tolist() == list(range(len(tok)))


def test_explicit_vocab_restricts_projection(tok):
    vocab_ids = sorted(set(tok(" great bad movie", add_special_tokens=False)["input_ids"]))
    pm = _catalyst(tok, n=4, projection_vocab=vocab_ids)
    picked = {r[0].token_id for r in nearest_tokens(pm, tok)}
    assert picked <= set(vocab_ids)
    pm_bad = _catalyst(tok, n=2, projection_vocab=[len(tok) + 5])
    with pytest.raises(ValueError, match="beyond the embedding matrix"):
        nearest_tokens(pm_bad, tok)


def test_bad_input_errors_name_the_fix(tok):
    base = tiny.tiny_llama(tok)
    with pytest.raises(ValueError, match="get_peft_model"):
        soft_prompt_text(base, tok)
    lora = get_peft_model(tiny.tiny_llama(tok), LoraConfig(target_modules=["q_proj"], r=2))
    with pytest.raises(ValueError, match="not a prompt-tuning adapter"):
        soft_prompt_text(lora, tok)
    pm = _catalyst(tok)
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    word_level = models.WordLevel({f"w{i}": i for i in range(5000)}, unk_token="w0")
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(word_level))  # 5000 tokens for a 400-row model
    with pytest.raises(ValueError, match="tokenizer of the base model"):
        soft_prompt_text(pm, other)
    with pytest.raises(ValueError, match="tokenizer of the base model"):
        set_soft_prompt_from_text(pm, other, "w1 w2")
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            set_soft_prompt_from_text(pm, tok, empty)
    with pytest.raises(ValueError, match="top_k"):
        nearest_tokens(pm, tok, top_k=0)
    with pytest.raises(ValueError, match="metric"):
        nearest_tokens(pm, tok, metric="hamming")
    vanilla = get_peft_model(tiny.tiny_llama(tok), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    vanilla.peft_config["default"].num_virtual_tokens = 0
    with pytest.raises(ValueError, match="num_virtual_tokens"):
        soft_prompt_text(vanilla, tok)


@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
def test_projector_cache_matches_uncached_and_follows_embedding_changes(tok, metric):
    pm = _catalyst(tok, n=5, projection_metric=metric)
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.normal_()
    cached, uncached = Projector(pm, tok), Projector(pm, tok, cache_limit_mib=0)
    s1, i1 = cached.nearest_ids(top_k=3)
    s2, i2 = uncached.nearest_ids(top_k=3)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-5)
    assert cached._rows is not None and uncached._rows is None
    # An in-place change of the word embeddings invalidates the cache.
    target = cached.allowed_ids[7].item()
    with torch.no_grad():
        scale = 1.0 if metric == "l2" else 3.0  # nearest under every metric
        pm.word_embeddings.weight[target] = pm.prompt_encoder["default"].embedding.weight[0] * scale
    assert cached.nearest_ids(1)[1][0, 0].item() == target == uncached.nearest_ids(1)[1][0, 0].item()


def test_packaged_minilm_smoke():
    """The packaged MiniLM (WordPiece, [CLS]/[SEP] specials): read and write its soft prompt as text, then train."""
    from peft_catalyst.app.assets import load_minilm_for_sequence_classification

    model, minilm_tok = load_minilm_for_sequence_classification(num_labels=2)
    pm = get_peft_model(model, CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=5))
    text = "is this review positive"
    assert len(minilm_tok(text, add_special_tokens=False)["input_ids"]) <= 5
    ids = set_soft_prompt_from_text(pm, minilm_tok, text)
    assert minilm_tok.cls_token_id not in ids and minilm_tok.sep_token_id not in ids
    assert soft_prompt_text(pm, minilm_tok) == minilm_tok.decode(ids)
    allowed = set(Projector(pm, minilm_tok).allowed_ids.tolist())
    assert minilm_tok.cls_token_id not in allowed and minilm_tok.convert_tokens_to_ids("[unused5]") not in allowed
    weight = pm.prompt_encoder["default"].embedding.weight
    optimizer = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=0.05)
    batch = minilm_tok(["a wonderful film", "a dull mess"], padding=True, return_tensors="pt")
    before = weight.detach().clone()
    for _ in range(2):
        loss = pm(**batch, labels=torch.tensor([1, 0])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss) and not torch.equal(before, weight.detach())
    assert len(nearest_tokens(pm, minilm_tok, top_k=2)) == 5
