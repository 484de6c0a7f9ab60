"""The CATALYST prompt encoder: PEFT's PromptEmbedding plus projection to tokens and in-place restarts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft.tuners.prompt_tuning import PromptEmbedding

from peft_catalyst.projection import DEFAULT_CHUNK_ROWS, copy_token_embeddings_, topk_nearest


class CatalystEmbedding(PromptEmbedding):
    """Soft prompt of a CATALYST adapter: built exactly like PEFT's ``PromptEmbedding`` (same init options and state
    dict), with the two operations LLM-guided restarts need: reading it as tokens and overwriting it from tokens."""

    def __init__(self, config, word_embeddings: torch.nn.Module) -> None:
        super().__init__(config, word_embeddings)
        self.projection_metric = getattr(config, "projection_metric", "cosine")

    def nearest(
        self,
        vocab: torch.Tensor,
        top_k: int = 1,
        metric: str | None = None,
        allowed_ids: torch.Tensor | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, ids)`` of the ``top_k`` vocabulary rows nearest to each virtual token (higher is nearer)."""
        return topk_nearest(
            self.embedding.weight, vocab, top_k, metric or self.projection_metric, allowed_ids, chunk_rows
        )

    def restart_from_token_ids(self, vocab: torch.Tensor, token_ids: Sequence[int]) -> None:
        """Overwrite the soft prompt in place with the embeddings of ``token_ids`` (one per virtual token)."""
        copy_token_embeddings_(self.embedding.weight, vocab, token_ids)
