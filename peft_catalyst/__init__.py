"""peft-catalyst: LLM-guided prompt tuning as a Hugging Face PEFT method.

Importing this package registers the ``CATALYST`` PEFT type, so ``get_peft_model``, ``PeftModel.from_pretrained``
and the ``AutoPeftModel*`` classes handle it like a built-in method (``peft_catalyst.tuners.catalyst.registration``),
and changes nothing else: no method of PEFT's or transformers' classes, no warning filter. Two things are explicit
calls instead, made by the command line: :func:`use_packaged_models` (the packaged models' Hub ids load from their
asset packages when the Hub is off) and ``peft_catalyst.quiet.apply()`` (upstream warnings nobody can act on).
"""

from peft_catalyst.export import export_prompt_tuning
from peft_catalyst.hub import push_to_hub
from peft_catalyst.offline_models import use_packaged_models
from peft_catalyst.pipelines import pipeline
from peft_catalyst.projection import (
    NearestToken,
    Projector,
    nearest_tokens,
    set_soft_prompt_from_text,
    soft_prompt_text,
)
from peft_catalyst.records import (
    ArmKind,
    Compute,
    Decision,
    FollowUp,
    History,
    MentorCall,
    Race,
    RaceArm,
    RaceRung,
    RestartShape,
    RoundRecord,
    RunSummary,
    ScoredPrompt,
    Trigger,
)
from peft_catalyst.rounds.scoring import PromptScorer, Score
from peft_catalyst.trainer import (
    CatalystArguments,
    CatalystCallback,
    CatalystMixin,
    CatalystTrainer,
    CatalystTrainingArguments,
)
from peft_catalyst.tuners.catalyst import CatalystConfig, CatalystEmbedding

__version__ = "0.1.0.dev0"

__all__ = [
    "ArmKind",
    "Compute",
    "CatalystArguments",
    "CatalystCallback",
    "CatalystMixin",
    "Decision",
    "FollowUp",
    "History",
    "MentorCall",
    "PromptScorer",
    "Race",
    "RaceArm",
    "RaceRung",
    "RestartShape",
    "RoundRecord",
    "RunSummary",
    "Score",
    "ScoredPrompt",
    "Trigger",
    "CatalystConfig",
    "CatalystEmbedding",
    "CatalystTrainer",
    "CatalystTrainingArguments",
    "NearestToken",
    "Projector",
    "export_prompt_tuning",
    "nearest_tokens",
    "pipeline",
    "push_to_hub",
    "set_soft_prompt_from_text",
    "soft_prompt_text",
    "use_packaged_models",
]
