"""Smoke tests of examples/: each script runs end to end with ``python`` and with ``accelerate launch`` on tiny
settings, its mentor a real OpenAI-compatible HTTP server on 127.0.0.1, and leaves what a push would upload.

Single process under ``accelerate launch`` (accelerate 1.15 starts one CPU process without MPI anyway; the
multi-process behaviour of the trainer is covered by tests/test_distributed.py with torchrun).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from peft_catalyst import CatalystTrainingArguments
from peft_catalyst.app.runner import DataArguments, MentorArguments
from peft_catalyst.history import read_history
from peft_catalyst.model_card import SECTION_BEGIN
from peft_catalyst.records import Decision
from tests import tiny
from tests.loopback_openai import LoopbackOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = ["causal_lm_classification.py", "sequence_classification.py", "seq2seq_classification.py"]
FAKE_KEY = "sk-test-ExampleKey0123456789"
MENTOR_REPLY = "1. Is this review positive\n2. Rate the movie review"
TINY = [
    "--max_steps", "4", "--catalyst_rounds", "1", "--catalyst_stage_steps", "2", "--catalyst_num_candidates", "2",
    "--catalyst_trajectory_points", "2", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4",
    "--train_size", "16", "--catalyst_size", "4", "--validation_size", "4", "--test_size", "4", "--logging_steps", "1",
    "--num_virtual_tokens", "4", "--max_length", "48", "--use_cpu", "--disable_tqdm", "True", "--seed", "0",
]  # fmt: skip
ACCELERATE_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
num_machines: 1
num_processes: 1
mixed_precision: 'no'
use_cpu: true
"""


def _load(script: str):
    name = f"examples_{script[:-3]}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_argument_has_help(script):
    module = _load(script)
    fields = dataclasses.fields(module.ScriptArguments)
    assert fields and all(f.metadata.get("help") for f in fields), [
        f.name for f in fields if not f.metadata.get("help")
    ]
    assert module.__doc__ and "accelerate launch" in module.__doc__
    parser = HfArgumentParser(  # no clash with TrainingArguments
        (module.ScriptArguments, DataArguments, MentorArguments, CatalystTrainingArguments)
    )
    assert parser.format_help()


def _run(launcher: str, script: str, extra: list[str], tmp_path: Path) -> tuple[Path, int]:
    """Run one example with the loopback mentor; returns the output folder and the number of mentor requests."""
    out = tmp_path / f"out-{launcher}"
    env = {
        **os.environ,
        "OPENAI_API_KEY": FAKE_KEY,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
    }
    if launcher == "python":
        cmd = [sys.executable, str(EXAMPLES / script)]
    else:
        config = tmp_path / "accelerate.yaml"
        config.write_text(ACCELERATE_CONFIG)
        accelerate = Path(sys.executable).with_name("accelerate")
        cmd = [str(accelerate), "launch", "--config_file", str(config), str(EXAMPLES / script)]
    with LoopbackOpenAIServer(MENTOR_REPLY) as server:
        args = ["--output_dir", str(out), "--mentor", "openai:tiny-mentor"]
        args += ["--mentor_base_url", server.base_url, *TINY, *extra]
        result = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        requests = server.request_count
    (tmp_path / f"log-{launcher}.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    if launcher == "python":  # as quiet as the command line (peft_catalyst.quiet): no warning a user cannot act on
        assert "warning" not in result.stderr.lower(), result.stderr[-5000:]
    return out, requests


def _check_outputs(out: Path, requests: int, task_type: str, metric: str = "loss") -> None:
    """What every example leaves: adapter, portable copy, one mentor round on record, test metrics and a card."""
    assert requests == 1  # one round, one mentor call
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "CATALYST" and config["task_type"] == task_type
    assert json.loads((out / "portable" / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"
    assert (out / "adapter_model.safetensors").is_file() and (out / "portable" / "adapter_model.safetensors").is_file()
    history = read_history(out)
    assert len(history.rounds) == 1 and history.summary.mentor == "openai:tiny-mentor"
    assert history.rounds[0].decision in (Decision.ACCEPTED, Decision.KEPT)
    assert history.rounds[0].metric == history.summary.metric == metric
    results = json.loads((out / "test_results.json").read_text())
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["test_loss"] > 0
    card = (out / "README.md").read_text()
    assert card.count(SECTION_BEGIN) == 1 and "`rotten_tomatoes`" in card
    assert f"| test\\_accuracy | {results['test_accuracy']:.4g} |" in card
    better = "lower" if metric.endswith("loss") else "higher"
    shown = metric.replace("_", "\\_")  # Markdown-escaped in the card
    assert f"score: {shown}, {better} is better" in card  # the run's catalyst_metric, from the trainer
    for path in out.rglob("*"):
        if path.is_file():
            assert b"ExampleKey" not in path.read_bytes(), path


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    """A tiny T5 and its tokenizer saved to disk (no seq2seq model is packaged)."""
    path = tmp_path_factory.mktemp("t5")
    tok = tiny.bpe_tokenizer()
    tiny.tiny_t5(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["python", "accelerate"])
def test_seq2seq_example(launcher, tiny_t5_dir, tmp_path):
    out, requests = _run(launcher, "seq2seq_classification.py", ["--model_name_or_path", str(tiny_t5_dir)], tmp_path)
    _check_outputs(out, requests, "SEQ_2_SEQ_LM")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["python", "accelerate"])
def test_sequence_classification_example_on_packaged_minilm(launcher, tmp_path):
    out, requests = _run(launcher, "sequence_classification.py", [], tmp_path)
    _check_outputs(out, requests, "SEQ_CLS", metric="accuracy")  # the script's default catalyst_metric
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"]  # the new head travels


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["python", "accelerate"])
def test_causal_lm_example_on_packaged_smollm2(launcher, smollm2, tmp_path):
    # `smollm2` has loaded (and so cached) the converted model: the script's own load takes about a second.
    out, requests = _run(launcher, "causal_lm_classification.py", [], tmp_path)
    _check_outputs(out, requests, "CAUSAL_LM", metric="label_loss")  # the script's default catalyst_metric
