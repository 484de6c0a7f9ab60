"""The packaged offline models, as the command-line app uses them (the code lives in the library:
:mod:`peft_catalyst.offline_models`, which the library's hook for the packaged Hub ids needs too)."""

from peft_catalyst.offline_models import (
    MINILM_HUB_ID,
    SMOLLM2_HUB_ID,
    AssetNotInstalledError,
    cache_root,
    load_minilm,
    load_minilm_for_sequence_classification,
    load_smollm2,
    minilm_path,
    package_dir,
    smollm2_dir,
    smollm2_gguf_path,
)

__all__ = [
    "MINILM_HUB_ID",
    "SMOLLM2_HUB_ID",
    "AssetNotInstalledError",
    "cache_root",
    "load_minilm",
    "load_minilm_for_sequence_classification",
    "load_smollm2",
    "minilm_path",
    "package_dir",
    "smollm2_dir",
    "smollm2_gguf_path",
]
