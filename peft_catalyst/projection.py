"""Soft prompt <-> text: project virtual tokens to their nearest vocabulary tokens, and write text into a soft prompt.

Works for any prompt-tuned ``PeftModel`` (CATALYST or vanilla PROMPT_TUNING). The projection scans the vocabulary in
chunks, so memory stays bounded (a chunk of rows at a time) even for 150k x 4096 embedding matrices. Scores are
"higher is nearer" for every metric: cosine similarity, negative Euclidean distance, or dot product.
"""

from __future__ import annotations

import logging
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import torch

from peft_catalyst.compat.torch import compiled_inner, tensor_version
from peft_catalyst.sharding import assign_full_, full_tensor, gathered, num_rows

logger = logging.getLogger(__name__)

#: How a virtual token is compared with the vocabulary's embeddings to find its nearest token.
ProjectionMetric = Literal["cosine", "l2", "dot"]
PROJECTION_METRICS: tuple[str, ...] = get_args(ProjectionMetric)
PROJECTION_VOCABS = ("printable", "all")

DEFAULT_CHUNK_ROWS = 8192
# The Projector keeps a float32 copy of the allowed vocabulary rows up to this size (SmolLM2: 49k x 576 = 108 MiB).
DEFAULT_CACHE_LIMIT_MIB = 512.0
# Vocabularies are often padded beyond the tokenizer (to a multiple of 64/128, or a few hundred reserved rows);
# a larger gap means the tokenizer belongs to another model.
MAX_EMBEDDING_ROWS_BEYOND_TOKENIZER = 1024
# Placeholder entries some vocabularies carry (BERT's "[unused12]", Gemma's "<unused3>"): never useful as text.
_PLACEHOLDER_TOKEN = re.compile(r"^\s*[\[<](unused|reserved)[_\w]*\d+[\]>]\s*$", re.IGNORECASE)


class NearestToken(NamedTuple):
    """One candidate for a virtual token: ``(token_id, token, score)``, higher is nearer; indexable and unpackable."""

    token_id: int
    token: str
    score: float


# ---------------------------------------------------------------------------------------------------------------
# Tensor level: no model, no tokenizer.
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def topk_nearest(
    prompt: torch.Tensor,
    vocab: torch.Tensor,
    top_k: int = 1,
    metric: str = "cosine",
    allowed_ids: torch.Tensor | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k vocabulary rows nearest to each prompt row, scanning ``vocab`` in chunks of ``chunk_rows`` rows.

    Returns ``(scores, ids)``, both ``(num_prompt_rows, top_k)``, best first. Peak extra memory is about
    ``chunk_rows * (hidden + num_prompt_rows)`` floats, whatever the vocabulary size.
    """
    if metric not in PROJECTION_METRICS:
        raise ValueError(f"metric must be one of {PROJECTION_METRICS}, got {metric!r}.")
    if prompt.dim() != 2 or vocab.dim() != 2 or prompt.shape[1] != vocab.shape[1]:
        raise ValueError(
            f"prompt and vocab must be 2-D with the same width; got {tuple(prompt.shape)} and {tuple(vocab.shape)}."
        )
    if allowed_ids is not None:
        allowed_ids = allowed_ids.to(device=vocab.device, dtype=torch.long)
    num_candidates = vocab.shape[0] if allowed_ids is None else allowed_ids.numel()
    if num_candidates == 0:
        raise ValueError("No vocabulary token is allowed for projection: check projection_vocab.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    top_k = min(top_k, num_candidates)

    p = prompt.detach().to(device=vocab.device, dtype=torch.float32)
    if metric == "cosine":
        p = torch.nn.functional.normalize(p, dim=-1)
    p_sq = (p * p).sum(-1, keepdim=True) if metric == "l2" else None

    best_scores = p.new_full((p.shape[0], 0), -math.inf)
    best_ids = torch.empty((p.shape[0], 0), dtype=torch.long, device=vocab.device)
    for start in range(0, num_candidates, chunk_rows):
        if allowed_ids is None:
            ids = torch.arange(start, min(start + chunk_rows, num_candidates), device=vocab.device)
            rows = vocab[start : start + chunk_rows]
        else:
            ids = allowed_ids[start : start + chunk_rows]
            rows = vocab.index_select(0, ids)
        rows = rows.to(torch.float32)
        if metric == "cosine":
            scores = p @ torch.nn.functional.normalize(rows, dim=-1).T
        elif metric == "dot":
            scores = p @ rows.T
        else:  # negative squared distance; the square root is taken on the winners only
            scores = 2.0 * (p @ rows.T) - p_sq - (rows * rows).sum(-1)[None, :]
        k = min(top_k, scores.shape[1])
        chunk_scores, chunk_pos = scores.topk(k, dim=-1)
        merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
        merged_ids = torch.cat([best_ids, ids[chunk_pos]], dim=1)
        keep = min(top_k, merged_scores.shape[1])
        best_scores, order = merged_scores.topk(keep, dim=-1)
        best_ids = merged_ids.gather(1, order)
    if metric == "l2":  # exact distances for the winners (the expansion above loses precision near zero)
        winners = vocab[best_ids].to(torch.float32)  # (rows, k, hidden)
        best_scores = -(p[:, None, :] - winners).norm(dim=-1)
    return best_scores, best_ids


def text_to_token_ids(tokenizer, text: str, length: int) -> list[int]:
    """Token ids of ``text`` without special tokens, repeated or cut to exactly ``length`` ids.

    Same repeat/cut rule as PEFT's TEXT init, but without the special tokens it adds (which would shift the prompt by
    one token, a flaw of the research code).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is empty: give a non-empty prompt text to write into the soft prompt.")
    if length < 1:
        raise ValueError(f"num_virtual_tokens must be >= 1 (got {length}); fix the adapter config.")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"text {text!r} tokenizes to no tokens: give a prompt with at least one real token.")
    reps = math.ceil(length / len(ids))
    return (list(ids) * reps)[:length]


def validate_projection_vocab(value: object) -> str | list[int]:
    """Normalise ``projection_vocab`` to a policy name or a sorted list of unique, non-negative token ids."""
    if isinstance(value, str):
        if value.lower() in PROJECTION_VOCABS:
            return value.lower()
        raise ValueError(f"projection_vocab must be one of {PROJECTION_VOCABS} or a list of token ids, got {value!r}.")
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        ids = list(value)
        if not ids:
            raise ValueError("projection_vocab is an empty list: give at least one token id, or 'printable'/'all'.")
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or i < 0]
        if bad:
            raise ValueError(f"projection_vocab must hold non-negative integer token ids; invalid entries: {bad[:5]}.")
        return sorted(set(ids))
    raise ValueError(
        f"projection_vocab must be one of {PROJECTION_VOCABS} or a list of token ids, got {type(value).__name__}."
    )


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary filtering, cached per tokenizer (decoding 150k tokens takes seconds; the trainer projects every step).
# ---------------------------------------------------------------------------------------------------------------

_ALLOWED_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _is_printable_token(text: str) -> bool:
    return bool(text.strip()) and text.isprintable() and "\ufffd" not in text and not _PLACEHOLDER_TOKEN.match(text)


def allowed_token_ids(tokenizer, policy: str | Sequence[int], num_embeddings: int) -> torch.Tensor:
    """Sorted ids a projection may pick under ``policy`` ("printable", "all" or explicit ids)."""
    policy = validate_projection_vocab(policy if isinstance(policy, str) else list(policy))
    vocab_size = min(len(tokenizer), num_embeddings)
    if not isinstance(policy, str):
        out_of_range = [i for i in policy if i >= num_embeddings]
        if out_of_range:
            raise ValueError(
                f"projection_vocab holds token ids beyond the embedding matrix ({num_embeddings} rows): "
                f"{out_of_range[:5]}; give ids of this model's vocabulary."
            )
        return torch.tensor(policy, dtype=torch.long)
    if policy == "all":
        return torch.arange(vocab_size, dtype=torch.long)
    try:
        per_tokenizer = _ALLOWED_CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: compute without caching
        per_tokenizer = {}
    key = (policy, vocab_size)
    if key not in per_tokenizer:
        special = set(tokenizer.all_special_ids)
        texts = tokenizer.batch_decode([[i] for i in range(vocab_size)], skip_special_tokens=False)
        ids = [i for i, t in enumerate(texts) if i not in special and _is_printable_token(t)]
        if not ids:
            raise ValueError("No printable token in the vocabulary: set projection_vocab='all' or give token ids.")
        per_tokenizer[key] = torch.tensor(ids, dtype=torch.long)
        logger.debug("projection vocabulary: %d of %d tokens allowed", len(ids), vocab_size)
    return per_tokenizer[key]


def random_token_ids(tokenizer, model, count: int, length: int, seed: int) -> list[list[int]]:
    """``count`` prompts of ``length`` uniformly random printable vocabulary tokens of ``model``, seeded (a generator
    of their own: no global RNG stream is drawn from)."""
    allowed = allowed_token_ids(tokenizer, "printable", model.word_embeddings.weight.shape[0])
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(allowed), (count, length), generator=generator)
    return [allowed[row].tolist() for row in picks]


def vocabulary_words(tokenizer) -> list[str]:
    """Alphabetic vocabulary tokens that are their own single-token encoding as a space-separated word (sorted).

    For a byte-level BPE (SmolLM2) these are the ``Ġword`` tokens, for WordPiece (MiniLM) the whole-word (non-``##``)
    tokens: a space-joined string of them re-tokenizes to exactly those tokens, so a random restart
    (``peft_catalyst.mentors.RandomMentor``) really starts from random vocabulary tokens.
    """
    allowed = allowed_token_ids(tokenizer, "printable", len(tokenizer)).tolist()
    texts = [t.strip() for t in tokenizer.batch_decode([[i] for i in allowed], skip_special_tokens=True)]
    keep = [(i, t) for i, t in zip(allowed, texts) if t.isascii() and t.isalpha()]
    encoded = tokenizer([" " + t for _, t in keep], add_special_tokens=False)["input_ids"]
    words = sorted({t for (i, t), ids in zip(keep, encoded) if ids == [i]})
    if not words:
        raise ValueError("No single-token alphabetic word in this tokenizer's vocabulary.")
    return words


def check_tokenizer_matches(tokenizer, num_embeddings: int) -> None:
    """Raise a ``ValueError`` when ``tokenizer`` cannot belong to an embedding matrix of ``num_embeddings`` rows."""
    n = len(tokenizer)
    if n > num_embeddings or num_embeddings - n > MAX_EMBEDDING_ROWS_BEYOND_TOKENIZER:
        raise ValueError(
            f"The tokenizer has {n} tokens but the model's embedding matrix has {num_embeddings} rows: pass the "
            "tokenizer of the base model (AutoTokenizer.from_pretrained(<base model>)), or resize the embeddings "
            "with model.resize_token_embeddings(len(tokenizer)) before adding the adapter."
        )


# ---------------------------------------------------------------------------------------------------------------
# Model level.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SoftPrompt:
    """The pieces of a prompt-tuned model that projection and restarts touch."""

    adapter_name: str
    config: object
    weight: torch.nn.Parameter  # (num_virtual_tokens * num_transformer_submodules, hidden)
    word_embeddings: torch.nn.Module

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.config.num_virtual_tokens)

    @property
    def num_submodules(self) -> int:
        return int(self.config.num_transformer_submodules or 1)


def _unwrap(model):
    """Strip DDP/FSDP/torch.compile wrappers until the PeftModel."""
    seen = 0
    while not hasattr(model, "peft_config") and seen < 8:
        inner = getattr(model, "module", None) or compiled_inner(model)
        if inner is None:
            break
        model, seen = inner, seen + 1
    return model


def get_soft_prompt(model, adapter_name: str | None = None) -> SoftPrompt:
    """Locate the soft prompt of a CATALYST or PROMPT_TUNING adapter; a clear error for any other model."""
    from peft.utils import PeftType

    model = _unwrap(model)
    peft_config = getattr(model, "peft_config", None)
    if not isinstance(peft_config, dict) or not peft_config:
        raise ValueError(
            f"{type(model).__name__} has no PEFT adapter: wrap the model first, e.g. "
            "get_peft_model(model, CatalystConfig(task_type=..., num_virtual_tokens=8))."
        )
    name = adapter_name or model.active_adapter
    if name not in peft_config:
        raise ValueError(f"Adapter {name!r} not found; the model has {sorted(peft_config)}.")
    config = peft_config[name]
    if config.peft_type not in (PeftType.PROMPT_TUNING, PeftType["CATALYST"]):
        raise ValueError(
            f"Adapter {name!r} is {getattr(config.peft_type, 'value', config.peft_type)}, not a prompt-tuning "
            "adapter: projection and restarts need a CatalystConfig or PromptTuningConfig adapter."
        )
    if not config.num_virtual_tokens or config.num_virtual_tokens < 1:
        raise ValueError(f"num_virtual_tokens must be >= 1, got {config.num_virtual_tokens}: fix the adapter config.")
    encoder = model.prompt_encoder[name]
    return SoftPrompt(name, config, encoder.embedding.weight, model.word_embeddings)


def _metric_of(config, metric: str | None) -> str:
    metric = metric or getattr(config, "projection_metric", None) or "cosine"
    metric = metric.lower()
    if metric not in PROJECTION_METRICS:
        raise ValueError(f"metric must be one of {PROJECTION_METRICS}, got {metric!r}.")
    return metric


class Projector:
    """Projects one model's soft prompt to text, reusing the filtered vocabulary between calls (a hot path).

    Args:
        model: a PeftModel with a CATALYST or PROMPT_TUNING adapter (DDP/FSDP wrappers are unwrapped).
        tokenizer: the base model's tokenizer.
        metric: "cosine", "l2" or "dot"; None takes the adapter config's ``projection_metric`` (cosine for vanilla).
        vocab: "printable", "all" or token ids; None takes the config's ``projection_vocab`` ("printable" for vanilla).
    """

    def __init__(
        self,
        model,
        tokenizer,
        metric: str | None = None,
        vocab: str | Sequence[int] | None = None,
        adapter_name: str | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        cache_limit_mib: float = DEFAULT_CACHE_LIMIT_MIB,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.adapter_name = adapter_name
        self.chunk_rows = chunk_rows
        self.cache_limit_mib = cache_limit_mib
        soft = get_soft_prompt(model, adapter_name)
        self.metric = _metric_of(soft.config, metric)
        num_embeddings = num_rows(soft.word_embeddings.weight)
        check_tokenizer_matches(tokenizer, num_embeddings)
        policy = vocab if vocab is not None else getattr(soft.config, "projection_vocab", "printable")
        self.allowed_ids = allowed_token_ids(tokenizer, policy, num_embeddings)
        self._rows_key: tuple | None = None
        self._rows: torch.Tensor | None = None

    def soft_prompt(self) -> SoftPrompt:
        """The current soft prompt (looked up anew: adapters can be switched between calls)."""
        return get_soft_prompt(self.model, self.adapter_name)

    def _cached_rows(self, vocab: torch.Tensor) -> torch.Tensor | None:
        """The allowed vocabulary rows in float32 (normalised for cosine), kept while the embeddings are unchanged.

        Why: the trainer projects after every optimizer step; re-reading and normalising the vocabulary each time
        dominated the cost (and under sharding, re-gathering it). Not cached above ``cache_limit_mib`` (a
        150k x 4096 copy is 2.3 GiB) or for ZeRO-3 placeholders, whose storage says nothing about their values.
        """
        mib = self.allowed_ids.numel() * vocab.shape[-1] * 4 / 2**20
        if mib > self.cache_limit_mib or getattr(vocab, "ds_shape", None) is not None:
            return None
        local = vocab.to_local() if hasattr(vocab, "to_local") else vocab
        key = (local.data_ptr(), tensor_version(local), tuple(vocab.shape), local.device, self.metric)
        if key != self._rows_key:
            full = full_tensor(vocab).detach()
            rows = full.index_select(0, self.allowed_ids.to(full.device)).to(torch.float32)
            self._rows = torch.nn.functional.normalize(rows, dim=-1) if self.metric == "cosine" else rows
            self._rows_key = key
        return self._rows

    def nearest_ids(self, top_k: int = 1, rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, ids)`` of shape ``(rows, top_k)`` for the first ``rows`` rows of the soft prompt (all)."""
        soft = self.soft_prompt()
        with gathered(self.model, [soft.weight, soft.word_embeddings.weight], writeback=False):
            prompt = full_tensor(soft.weight)
            prompt = prompt[:rows] if rows else prompt
            cached = self._cached_rows(soft.word_embeddings.weight)
            if cached is None:
                vocab = full_tensor(soft.word_embeddings.weight)
                return topk_nearest(prompt, vocab, top_k, self.metric, self.allowed_ids, self.chunk_rows)
            if self.metric == "cosine":  # rows are normalised already: cosine is the dot product of unit vectors
                prompt = torch.nn.functional.normalize(prompt.detach().to(cached.device, torch.float32), dim=-1)
            scores, pos = topk_nearest(
                prompt, cached, top_k, "dot" if self.metric == "cosine" else self.metric, None, self.chunk_rows
            )
            return scores, self.allowed_ids.to(pos.device)[pos]

    def nearest_tokens(self, top_k: int = 1) -> list[list[NearestToken]]:
        """For each virtual token, its ``top_k`` nearest vocabulary tokens as ``(token_id, token, score)``."""
        scores, ids = self.nearest_ids(top_k)
        ids_list, scores_list = ids.tolist(), scores.tolist()
        return [
            [NearestToken(i, self.tokenizer.decode([i]), s) for i, s in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(ids_list, scores_list)
        ]

    def token_ids(self) -> list[int]:
        """Top-1 token ids of the virtual tokens the model reads first (the encoder's, for seq2seq)."""
        _, ids = self.nearest_ids(1, rows=self.soft_prompt().num_virtual_tokens)
        return ids[:, 0].tolist()

    def text(self) -> str:
        """The soft prompt read as text: the decoded top-1 tokens."""
        return self.tokenizer.decode(self.token_ids())

    def set_text(self, text: str) -> list[int]:
        """Write ``text``'s token embeddings into the soft prompt in place; returns the token ids written."""
        return set_soft_prompt_from_text(self.model, self.tokenizer, text, adapter_name=self.adapter_name)


def nearest_tokens(
    model, tokenizer, top_k: int = 1, metric: str | None = None, adapter_name: str | None = None
) -> list[list[NearestToken]]:
    """For each virtual token of ``model``'s soft prompt, the top-k ``(token_id, token_string, score)``.

    ``metric=None`` takes the adapter config's ``projection_metric`` (cosine for a vanilla PROMPT_TUNING adapter).
    Seq2seq adapters have one block of virtual tokens per transformer submodule; every row is returned.
    """
    return Projector(model, tokenizer, metric=metric, adapter_name=adapter_name).nearest_tokens(top_k)


def soft_prompt_text(model, tokenizer, metric: str | None = None, adapter_name: str | None = None) -> str:
    """The soft prompt projected to its nearest tokens and decoded as one string."""
    return Projector(model, tokenizer, metric=metric, adapter_name=adapter_name).text()


def token_embeddings(vocab: torch.Tensor, token_ids: Sequence[int], total_rows: int) -> torch.Tensor:
    """The rows of ``vocab`` at ``token_ids``, tiled to ``total_rows`` (one block per transformer submodule)."""
    n = len(token_ids)
    if n == 0 or total_rows % n:
        raise ValueError(f"Got {n} token ids for a soft prompt of {total_rows} rows; give num_virtual_tokens ids.")
    bad = [i for i in token_ids if not 0 <= int(i) < vocab.shape[0]]
    if bad:
        raise ValueError(f"Token ids {bad[:5]} are outside the vocabulary (0..{vocab.shape[0] - 1}).")
    ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=vocab.device)
    return vocab.index_select(0, ids).detach().repeat(total_rows // n, 1)


@torch.no_grad()
def copy_token_embeddings_(weight: torch.Tensor, vocab: torch.Tensor, token_ids: Sequence[int]) -> None:
    """Overwrite ``weight`` in place with the rows of ``vocab`` at ``token_ids``, tiled over its submodule blocks."""
    assign_full_(weight, token_embeddings(vocab, token_ids, weight.shape[0]))


def read_soft_prompt(model, adapter_name: str | None = None) -> torch.Tensor:
    """A detached full copy of the soft prompt (gathered when sharded), e.g. to restore it later."""
    soft = get_soft_prompt(model, adapter_name)
    with gathered(model, [soft.weight], writeback=False):
        return full_tensor(soft.weight).detach().clone()


def write_soft_prompt_(model, value: torch.Tensor, adapter_name: str | None = None) -> None:
    """Overwrite the soft prompt in place with ``value`` (the same full tensor on every rank)."""
    soft = get_soft_prompt(model, adapter_name)
    with gathered(model, [soft.weight], writeback=True):
        assign_full_(soft.weight, value)


def write_token_ids(model, token_ids: Sequence[int], adapter_name: str | None = None) -> None:
    """Copy the word embeddings of ``token_ids`` (one per virtual token) into the existing soft prompt parameter.

    The Parameter object is kept (an optimizer holding it keeps working); for seq2seq the ids fill every submodule's
    block, as PEFT's TEXT init does.
    """
    soft = get_soft_prompt(model, adapter_name)
    if len(token_ids) != soft.num_virtual_tokens:
        raise ValueError(f"Expected {soft.num_virtual_tokens} token ids (num_virtual_tokens), got {len(token_ids)}.")
    with gathered(model, [soft.weight, soft.word_embeddings.weight], writeback=True):
        value = token_embeddings(full_tensor(soft.word_embeddings.weight), token_ids, num_rows(soft.weight))
        assign_full_(soft.weight, value)


def set_soft_prompt_from_text(model, tokenizer, text: str, adapter_name: str | None = None) -> list[int]:
    """Write the token embeddings of ``text`` into the soft prompt, in place; returns the token ids written.

    ``text`` is tokenized without special tokens and repeated or cut to ``num_virtual_tokens``. The existing
    Parameter is updated under ``no_grad``, so an optimizer that holds it keeps working.
    """
    soft = get_soft_prompt(model, adapter_name)
    check_tokenizer_matches(tokenizer, num_rows(soft.word_embeddings.weight))
    ids = text_to_token_ids(tokenizer, text, soft.num_virtual_tokens)
    write_token_ids(model, ids, adapter_name=soft.adapter_name)
    return ids
