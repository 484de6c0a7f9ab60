"""Portable export: a CATALYST adapter written as a vanilla PROMPT_TUNING adapter that plain PEFT loads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from peft import PromptTuningConfig
from peft.utils import PeftType, get_peft_model_state_dict
from safetensors.torch import save_file

from peft_catalyst.projection import get_soft_prompt
from peft_catalyst.sharding import full_tensor, gathered

SAFETENSORS_WEIGHTS_NAME = "adapter_model.safetensors"


def export_prompt_tuning(
    model, directory: str | os.PathLike, adapter_name: str | None = None, *, is_main_process: bool = True
) -> Path:
    """Write ``model``'s prompt adapter as a vanilla PROMPT_TUNING adapter into ``directory``; returns the path.

    Why: a user without peft-catalyst who loads a CATALYST adapter gets ``KeyError: 'CATALYST'``. The export holds the
    same soft prompt (and any ``modules_to_save`` such as a classification head), so ``PeftModel.from_pretrained``
    in a process that never imports peft_catalyst gives identical logits. Under ZeRO-3 / FSDP call it on every
    process (the weights are gathered collectively) with ``is_main_process`` true on the one that writes, as PEFT's
    ``save_pretrained``.
    """
    soft = get_soft_prompt(model, adapter_name)
    peft_model = _peft_model(model)
    fields = {f.name for f in dataclasses.fields(PromptTuningConfig) if f.init}
    values = {k: v for k, v in soft.config.to_dict().items() if k in fields}
    values["peft_type"] = PeftType.PROMPT_TUNING
    values["inference_mode"] = True
    vanilla = PromptTuningConfig(**values)

    out = Path(directory)
    if is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    with gathered(model, [soft.weight, *trainable], writeback=False):  # full tensors under ZeRO-3 / FSDP
        # save_embedding_layers=False: a soft prompt never changes the vocabulary (and "auto" looks for the base
        # model's config, which offline or for a packaged model warns that it cannot find)
        state = get_peft_model_state_dict(peft_model, adapter_name=soft.adapter_name, save_embedding_layers=False)
        state = {k: full_tensor(v).detach().to("cpu").contiguous() for k, v in state.items()}
    if not is_main_process:
        return out
    save_file(state, str(out / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})
    vanilla.save_pretrained(str(out))
    return out


def _peft_model(model):
    from peft_catalyst.projection import _unwrap

    return _unwrap(model)
