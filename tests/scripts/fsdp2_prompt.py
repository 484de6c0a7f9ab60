"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): projection and in-place restarts of a
soft prompt sharded by FSDP2 (``fully_shard``), compared with the same model unsharded. Each rank writes its result
to ``<out>/rank<N>.json`` (two processes printing to one pipe can interleave their lines)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tempfile  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from peft import get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from peft_catalyst import CatalystConfig, Projector, export_prompt_tuning, set_soft_prompt_from_text  # noqa: E402
from peft_catalyst.projection import get_soft_prompt, read_soft_prompt, write_soft_prompt_  # noqa: E402
from tests import tiny  # noqa: E402


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    tok = tiny.bpe_tokenizer()

    def build():
        torch.manual_seed(0)
        return get_peft_model(tiny.tiny_llama(tok), CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=6))

    reference, sharded = build(), build()
    fully_shard(sharded, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    weight = get_soft_prompt(sharded).weight
    result = {"rank": rank, "dtensor": isinstance(weight, DTensor), "local_rows": weight.to_local().shape[0]}
    result["text_matches"] = Projector(sharded, tok).text() == Projector(reference, tok).text()

    ids = set_soft_prompt_from_text(sharded, tok, "the movie was great")
    set_soft_prompt_from_text(reference, tok, "the movie was great")
    result["same_parameter"] = get_soft_prompt(sharded).weight is weight
    result["restart_matches"] = torch.equal(read_soft_prompt(sharded), read_soft_prompt(reference))
    result["text_after"] = Projector(sharded, tok).text()
    result["expected_text"] = tok.decode(ids)

    saved = read_soft_prompt(sharded)
    write_soft_prompt_(sharded, torch.zeros_like(saved))
    result["zeroed"] = bool((read_soft_prompt(sharded) == 0).all())
    write_soft_prompt_(sharded, saved)
    result["restored"] = torch.equal(read_soft_prompt(sharded), saved)

    with tempfile.TemporaryDirectory() as tmp:  # the portable export holds the full (gathered) prompt
        export_prompt_tuning(sharded, tmp)
        exported = load_file(str(Path(tmp) / "adapter_model.safetensors"))["prompt_embeddings"]
        result["export_matches"] = torch.equal(exported, read_soft_prompt(reference))

    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        result["logits_match"] = torch.allclose(sharded(input_ids=x).logits, reference(input_ids=x).logits, atol=1e-6)
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
