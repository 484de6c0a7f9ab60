"""``import peft_catalyst`` registers the CATALYST PEFT type and changes nothing else in the process (issue #32).

Each test runs in a fresh interpreter: this test process has imported the package long ago (and other tests switch
things on that the import does not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Imports PEFT, transformers and TRL first, records every attribute of their loaded modules and of the classes
#: defined there (by identity), the warning filters and the environment; then imports peft_catalyst and records
#: again. Prints what changed as JSON.
SNAPSHOT = """
import json, os, sys, types, warnings

import peft, peft.auto, peft.mapping, peft.peft_model, peft.utils.save_and_load
import transformers, transformers.modeling_utils, transformers.trainer, transformers.utils.hub
import trl

PREFIXES = ("peft", "transformers", "trl", "accelerate", "huggingface_hub")


def snapshot():
    seen = {}
    for name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType) or not name.split(".")[0] in PREFIXES:
            continue
        for attr, value in list(vars(module).items()):
            seen[(name, attr)] = value
            if isinstance(value, type) and getattr(value, "__module__", None) == name:
                for cattr, cvalue in list(vars(value).items()):
                    seen[(name + ":" + value.__qualname__, cattr)] = cvalue
    return seen


before = snapshot()
filters = list(warnings.filters)
environ = dict(os.environ)
import peft_catalyst  # noqa: E402
after = snapshot()
changed = sorted(".".join(k) for k in before if k in after and after[k] is not before[k])


def lazy_lookup(key):  # an attribute a lazy transformers module cached on first access, not an object of ours
    module = sys.modules.get(key[0])
    return type(module).__name__ == "_LazyModule" and not getattr(after[key], "__module__", "").startswith(
        "peft_catalyst"
    )


added = sorted(
    ".".join(k) for k in after
    if k not in before and k[0] in {n for n, _ in before} and not isinstance(after[k], types.ModuleType)
    and not lazy_lookup(k)
)
print(json.dumps({
    "changed": changed,
    "added": added,
    "filters_same": warnings.filters == filters and all(a is b for a, b in zip(warnings.filters, filters)),
    "environ_changed": sorted(k for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k)),
}))
"""

#: What importing may change: PEFT's type registries (the CATALYST member of PeftType, registered config and tuner
#: classes) and the one prompt-encoder set-up hook that registering a prompt-learning type needs.
ALLOWED_CHANGES = {"peft.peft_model:PeftModel._setup_prompt_encoder"}
ALLOWED_ADDITIONS = {"peft.utils.peft_types:PeftType.CATALYST"}


def _python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("DS_ACCELERATOR", None)  # tests/conftest.py sets it; a user's process does not
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_import_changes_no_function_of_peft_or_transformers_nor_the_warning_filters():
    result = _python(SNAPSHOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["changed"]) == ALLOWED_CHANGES, report["changed"]
    assert set(report["added"]) <= ALLOWED_ADDITIONS, report["added"]
    assert report["filters_same"]
    assert report["environ_changed"] == []


#: A plain PROMPT_TUNING adapter on the tiny causal LM, with a soft prompt far from its init (where PEFT's own cached
#: generation goes wrong under transformers 5): prints its greedy tokens with and without cache.
GENERATE = """
import sys, json, torch
from peft import PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM

if sys.argv[2] == "with":
    import peft_catalyst  # noqa: F401
torch.manual_seed(0)
base = AutoModelForCausalLM.from_pretrained(sys.argv[1])
pm = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
with torch.no_grad():
    pm.prompt_encoder["default"].embedding.weight.normal_(std=2.0)
ids = torch.tensor([[5, 9, 30, 41, 7], [0, 0, 12, 8, 3]])  # the second row left-padded
mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10, do_sample=False)
print(json.dumps({
    "cached": pm.generate(use_cache=True, **kw).tolist(),
    "uncached": pm.generate(use_cache=False, **kw).tolist(),
    "class": type(pm).__module__ + "." + type(pm).__name__,
    "imported": "peft_catalyst" in sys.modules,
}))
"""


@pytest.mark.timeout(300)
def test_a_plain_prompt_tuning_adapter_generates_the_same_tokens_with_and_without_the_import(tmp_path):
    from tests import tiny

    tiny.tiny_gpt2(tiny.bpe_tokenizer()).save_pretrained(tmp_path / "gpt2")
    runs = {}
    for mode in ("without", "with"):
        result = _python(GENERATE, str(tmp_path / "gpt2"), mode)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    assert runs["with"]["imported"] and not runs["without"]["imported"]
    assert runs["with"]["class"] == runs["without"]["class"] == "peft.peft_model.PeftModelForCausalLM"
    assert runs["with"]["cached"] == runs["without"]["cached"]
    assert runs["with"]["uncached"] == runs["without"]["uncached"]
    # The test can tell: PEFT's own cached generation differs from uncached here (the bug CATALYST's class fixes,
    # tests/test_generation.py), so a fix leaking onto PEFT's class would have shown above.
    assert runs["without"]["cached"] != runs["without"]["uncached"]
