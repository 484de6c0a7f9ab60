"""Configuration of the CATALYST PEFT method: prompt tuning plus what LLM-guided restarts need."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import PromptTuningConfig

from peft_catalyst.projection import PROJECTION_METRICS, ProjectionMetric, validate_projection_vocab

from .registration import CATALYST


@dataclass
class CatalystConfig(PromptTuningConfig):
    """
    This is the configuration class to store the configuration of a [`CatalystEmbedding`]: prompt tuning whose soft
    prompt can be read as text and restarted from text that an LLM mentor proposes.

    Everything of [`PromptTuningConfig`] works as before (`num_virtual_tokens`, the `RANDOM`, `TEXT` and
    `SAMPLE_VOCAB` inits, ...). The fields below are extra; vanilla PEFT ignores them with a warning when it reads
    the config.

    Args:
        task_description (`str`, *optional*):
            What the mentor LLM is told the task is (e.g. "Classify the sentiment of a movie review").
        projection_metric (`Literal["cosine", "l2", "dot"]`, defaults to `"cosine"`):
            How a virtual token is mapped to its nearest vocabulary token when the soft prompt is read as text.
        projection_vocab (`str` or `list[int]`, defaults to `"printable"`):
            Which tokens a projection may pick: `"printable"` (no special, unprintable or whitespace-only tokens),
            `"all"`, or an explicit list of token ids.
    """

    task_description: str | None = field(
        default=None,
        metadata={"help": "What the mentor LLM is told the task is; used to build the meta-prompt."},
    )
    projection_metric: ProjectionMetric = field(
        default="cosine",
        metadata={
            "help": f"Similarity used to project virtual tokens to vocabulary tokens: one of {PROJECTION_METRICS}."
        },
    )
    projection_vocab: str | list[int] = field(
        default="printable",
        metadata={
            "help": (
                "Tokens a projection may pick: 'printable' (no special, unprintable or whitespace-only tokens), "
                "'all', or an explicit list of token ids."
            )
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = CATALYST
        if (
            self.num_virtual_tokens is None
            or isinstance(self.num_virtual_tokens, bool)
            or not isinstance(self.num_virtual_tokens, int)
            or self.num_virtual_tokens < 1
        ):
            raise ValueError(
                f"num_virtual_tokens must be an integer >= 1 (got {self.num_virtual_tokens!r}); "
                "set e.g. CatalystConfig(num_virtual_tokens=8, ...)."
            )
        if self.task_description is not None and not isinstance(self.task_description, str):
            raise ValueError(f"task_description must be a string or None, got {type(self.task_description).__name__}.")
        if isinstance(self.projection_metric, str):
            self.projection_metric = self.projection_metric.lower()
        if self.projection_metric not in PROJECTION_METRICS:
            raise ValueError(f"projection_metric must be one of {PROJECTION_METRICS}, got {self.projection_metric!r}.")
        self.projection_vocab = validate_projection_vocab(self.projection_vocab)
