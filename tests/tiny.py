"""Tiny real models and tokenizers for tests, built from configs offline (no Hub, no mocks).

The tokenizer is a real byte-level BPE trained in memory on a fixed corpus, so it has merges, special tokens,
whitespace-only and partial-byte tokens like a production tokenizer, at a vocabulary of a few hundred entries.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    DataCollatorWithPadding,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from peft_catalyst import CatalystConfig, CatalystTrainer, CatalystTrainingArguments
from peft_catalyst.mentors import Mentor

CORPUS = [
    "the movie was great and the acting was wonderful",
    "a terrible film with a boring plot and bad acting",
    "classify the sentiment of this review as positive or negative",
    "what is the capital of france ? where is the river ?",
    "who wrote the book and when was it published",
    "an excellent story , a great cast , a good ending",
    "this is spam : win a free prize now , call today",
    "hello , are we still meeting for lunch tomorrow ?",
] * 4
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
VOCAB_SIZE = 400


@functools.lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok.to_str()


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer (pad/eos/bos/unk) with about ``VOCAB_SIZE`` tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )


def _ids(tok) -> dict:
    return {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}


# Causal LMs get a wide weight init: at PEFT's default 0.02 a 2-layer model repeats one token forever, which would
# make generation tests pass whatever the prompt handling does.
CAUSAL_INIT_RANGE = 0.2


def tiny_llama(tok, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama (RoPE positions) sized to ``tok``."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=CAUSAL_INIT_RANGE,
        **_ids(tok),
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(tok, seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer GPT-2 (learned absolute positions) sized to ``tok``."""
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        initializer_range=CAUSAL_INIT_RANGE,
        **_ids(tok),
    )
    return GPT2LMHeadModel(cfg).eval()


def _bert_config(tok, **kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        **kwargs,
    )


def tiny_bert_seq_cls(tok, num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    """A 2-layer BERT sequence classifier sized to ``tok``."""
    torch.manual_seed(seed)
    return BertForSequenceClassification(_bert_config(tok, num_labels=num_labels)).eval()


def tiny_bert_token_cls(tok, num_labels: int = 3, seed: int = 0) -> BertForTokenClassification:
    """A 2-layer BERT token classifier sized to ``tok``."""
    torch.manual_seed(seed)
    return BertForTokenClassification(_bert_config(tok, num_labels=num_labels)).eval()


def tiny_t5(tok, seed: int = 0) -> T5ForConditionalGeneration:
    """A 1+1-layer T5 sized to ``tok``."""
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        decoder_start_token_id=tok.pad_token_id,
        **_ids(tok),
    )
    return T5ForConditionalGeneration(cfg).eval()


POSITIVE = ["the movie was great", "an excellent story", "a good ending", "wonderful acting", "a great cast"]
NEGATIVE = ["a terrible film", "a boring plot", "bad acting", "a bad plot", "this is spam"]


def toy_reviews(tok, n: int, seed: int) -> Dataset:
    """``n`` tokenised toy reviews labelled positive (1) / negative (0), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = int(rng.integers(2))
        pool = POSITIVE if label else NEGATIVE
        texts.append(f"{pool[int(rng.integers(len(pool)))]} {i % 7}")
        labels.append(label)
    ds = Dataset.from_dict({"text": texts, "label": labels})
    return ds.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])


def accuracy(pred) -> dict[str, float]:
    """``compute_metrics`` for classification logits."""
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


# ---------------------------------------------------------------------------------------------------------------
# A tiny CatalystTrainer: BERT classifier, 4-token prompt, 9 steps in 2 rounds of 3 (tests override what they need)
# ---------------------------------------------------------------------------------------------------------------


def catalyst_model(tok, init_scale: float | None = None, seed: int = 0, num_virtual_tokens: int = 4) -> PeftModel:
    """A tiny BERT classifier with a CATALYST prompt (4 tokens); ``init_scale`` multiplies PEFT's RANDOM init.

    A large scale (50) makes any text candidate win the first round: token embeddings are much smaller.
    """
    model = tiny_bert_seq_cls(tok, seed=seed)
    config = CatalystConfig(
        task_type="SEQ_CLS", num_virtual_tokens=num_virtual_tokens, task_description="Classify review sentiment"
    )
    torch.manual_seed(seed)
    pm = get_peft_model(model, config)
    if init_scale is not None:
        with torch.no_grad():
            pm.prompt_encoder["default"].embedding.weight.mul_(init_scale)
    return pm


#: Training settings of the tiny run (CPU, no saving, no reporting), shared by the catalyst runs and the plain
#: ``Trainer`` runs they are compared with.
TRAINING = dict(
    max_steps=9,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    learning_rate=0.05,
    logging_steps=1,
    save_strategy="no",
    report_to=[],
    seed=0,
    disable_tqdm=True,
    use_cpu=True,
)
#: The tiny run's schedule: 2 rounds after 3 steps each, 2 candidates, 2 trajectory points.
ROUNDS = dict(catalyst_rounds=2, catalyst_stage_steps=3, catalyst_num_candidates=2, catalyst_trajectory_points=2)


def catalyst_args(output_dir: str | Path, **kwargs) -> CatalystTrainingArguments:
    """Arguments of the tiny run (:data:`TRAINING` and :data:`ROUNDS`); ``kwargs`` override any field."""
    return CatalystTrainingArguments(**{"output_dir": str(output_dir), **TRAINING, **ROUNDS, **kwargs})


def catalyst_trainer(
    tok,
    output_dir: str | Path,
    mentor: Mentor | None,
    model: PeftModel | None = None,
    eval_dataset: Dataset | None = None,
    **kwargs,
) -> CatalystTrainer:
    """The tiny CatalystTrainer on toy reviews (48 to train, 16 for the catalyst split) with ``mentor``."""
    return CatalystTrainer(
        model=model if model is not None else catalyst_model(tok),
        args=catalyst_args(output_dir, **kwargs),
        mentor=mentor,
        train_dataset=toy_reviews(tok, 48, seed=1),
        catalyst_dataset=toy_reviews(tok, 16, seed=2),
        eval_dataset=eval_dataset,
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
        compute_metrics=accuracy,
    )
