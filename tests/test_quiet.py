"""The Python API is as quiet as the command line once ``peft_catalyst.quiet.apply()`` is called (the command line and
the examples call it; importing the package does not: tests/test_import.py): the filters and fixes in one place."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import peft_catalyst
from peft_catalyst import quiet

ROOT = Path(__file__).resolve().parents[1]

#: A user's script: a tiny CatalystTrainer trained, saved, exported; the adapter names a base that cannot be looked up.
SCRIPT = """
import sys
from pathlib import Path

import peft_catalyst
from tests import tiny

peft_catalyst.quiet.apply()  # what the command line and the examples do first
out = Path(sys.argv[1])
tok = tiny.bpe_tokenizer()
model = tiny.catalyst_model(tok)
model.peft_config["default"].base_model_name_or_path = "org/not-on-this-machine"  # PEFT cannot check its vocabulary
trainer = tiny.catalyst_trainer(tok, out, mentor=None, model=model, dataloader_pin_memory=True)
trainer.train()
trainer.save_model(str(out))
peft_catalyst.export_prompt_tuning(model, out / "portable")
print("done")
"""


@pytest.mark.timeout(300)
def test_a_python_api_run_prints_no_warning_a_user_cannot_act_on(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("DS_ACCELERATOR", None)  # tests/conftest.py sets it; a user's process does not
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    assert "Warning" not in result.stderr and "warning" not in result.stderr.lower(), result.stderr[-3000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_each_filter_matches_its_upstream_message_exactly_and_nothing_else():
    (entry,) = quiet.UPSTREAM_WARNINGS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.apply()
        message = "`is_gradient_checkpointing` is deprecated and will be removed in v6. "
        message += "Use `is_activation_checkpointing` instead."
        warnings.warn_explicit(message, FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        assert not caught  # transformers' warning, as transformers 5 words it
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="my_project")
        assert len(caught) == 1  # the same words from anyone else still show
    assert entry.why and peft_catalyst.quiet is quiet


def test_pin_memory_is_turned_off_only_without_an_accelerator(tmp_path):
    from tests import tiny

    args = tiny.catalyst_args(tmp_path, dataloader_pin_memory=True)
    quiet.no_pin_memory_without_accelerator(args)
    assert args.dataloader_pin_memory is quiet.has_accelerator()


def test_deepspeed_imported_after_quiet_apply_does_not_warn_about_a_missing_gpu():
    pytest.importorskip("deepspeed")
    if quiet.has_accelerator():
        pytest.skip("an accelerator is present: DeepSpeed finds it and has nothing to warn about")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}  # tests/conftest.py sets it
    code = "import os; from peft_catalyst import quiet; quiet.apply(); import deepspeed; "
    code += "print(os.environ['DS_ACCELERATOR'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0 and result.stdout.strip() == "cpu", result.stderr[-2000:]
    assert "Setting accelerator to CPU" not in result.stderr + result.stdout
