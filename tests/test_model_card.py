"""Model cards: content from a real catalyst run, every restart decision in the table, no credential anywhere, the
owner's text kept on update, Markdown that a mentor's text cannot break, and templates that ship in the wheel."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import setuptools
from huggingface_hub import ModelCard
from peft import get_peft_model

from peft_catalyst import CatalystConfig, set_soft_prompt_from_text, soft_prompt_text
from peft_catalyst.history import HISTORY_FILE, read_history
from peft_catalyst.hub import save_for_hub
from peft_catalyst.model_card import (
    SECTION_BEGIN,
    SECTION_END,
    build_model_card,
    merge_model_card,
    public_text,
    read_template,
)
from peft_catalyst.records import HISTORY_FORMAT, Decision, RaceRung, RestartShape, ScoredPrompt
from tests import hub_support as hs
from tests import tiny
from tests.loopback_openai import LoopbackOpenAIServer
from tests.testing_utils import old_format_history, raced_history

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


@pytest.fixture(scope="module")
def run(tok, tmp_path_factory):
    """A real 2-round catalyst run (HTTP mentor at a URL with user:password and a fake key) and its metrics."""
    out = tmp_path_factory.mktemp("run")
    with LoopbackOpenAIServer() as server:
        replies = iter(["1. the movie was great\n2. a terrible film", "1. hello lunch\n2. call today"])
        server.set_reply(lambda request: next(replies))
        trainer = hs.catalyst_trainer(tok, out, hs.credentialed_url(server.base_url))
        trainer.train()
        metrics = trainer.evaluate()
    return trainer, metrics


def _table(text: str, header: str) -> list[list[str]]:
    """Cells of the Markdown table whose header row starts with ``header`` (escaped pipes stay in their cell)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _model(tok, task_type="CAUSAL_LM", text="the movie was great"):
    build = tiny.tiny_llama if task_type == "CAUSAL_LM" else tiny.tiny_bert_seq_cls
    config = CatalystConfig(task_type=task_type, num_virtual_tokens=4, task_description="Classify review sentiment")
    model = get_peft_model(build(tok), config)
    set_soft_prompt_from_text(model, tok, text)
    return model


def test_card_of_a_real_run(run, tok):
    trainer, metrics = run
    history_path = Path(trainer.args.output_dir) / HISTORY_FILE
    card = build_model_card(
        trainer.model,
        tok,
        history=history_path,
        metrics=metrics,
        repo_id=hs.BERT_ADAPTER,
        base_model=hs.BERT_BASE,
        task_name="toy_reviews",
        score_metric="loss",
    )
    # Metadata: through ModelCardData, valid YAML that parses back to the same thing.
    assert card.data.library_name == "peft" and card.data.base_model == hs.BERT_BASE
    assert card.data.tags == ["peft", "prompt-tuning", "peft-catalyst"]
    assert card.data.pipeline_tag == "text-classification"
    assert ModelCard(card.content).data.to_dict() == card.data.to_dict()
    assert card.content.startswith("---\n") and "\n---\n" in card.content

    text = card.text
    assert text.count(SECTION_BEGIN) == 1 and text.count(SECTION_END) == 1
    facts = {row[0]: row[1] for row in _table(text, "| |")}
    assert facts["Virtual tokens"] == "4"
    assert facts["Task type"] == "`SEQ_CLS`"
    assert facts["Task"] == "`toy_reviews`: Classify review sentiment"
    assert facts["Mentor"].startswith("`openai:tiny-mentor` (model reported by the server: `loopback-model`)")
    assert facts["Restart rounds"].startswith("2 (")
    assert f"```text\n{soft_prompt_text(trainer.model, tok)}\n```" in text

    evaluation = dict(_table(text, "| Metric |"))
    assert evaluation["eval\\_accuracy"] == f"{metrics['eval_accuracy']:.4g}"
    assert evaluation["eval\\_loss"] == f"{metrics['eval_loss']:.4g}"
    assert "eval\\_runtime" not in evaluation  # timing is not an evaluation result

    # One row per scored prompt: the current soft prompt, then each candidate, with the history's numbers.
    rows = _table(text, "| Round |")
    history = read_history(history_path)
    assert history.rounds == trainer.catalyst_history
    expected = []
    for record in history.rounds:
        current, kept = record.current, "**taken** (kept)" if record.decision is Decision.KEPT else ""
        expected.append(
            [str(record.round), str(record.step), f"{_one_line(current.text)} *(current soft prompt)*",
             f"{current.score:.4g}", f"{current.loss:.4g}", kept]
        )  # fmt: skip
        for i, c in enumerate(record.candidates):
            taken = "**taken**" if i == record.winner and record.decision is Decision.ACCEPTED else ""
            expected.append(
                [
                    str(record.round),
                    str(record.step),
                    _one_line(c.text),
                    f"{c.score:.4g}",
                    f"{c.loss:.4g}",
                    taken,
                ]
            )
    assert rows == expected
    assert history.rounds[0].decision is Decision.ACCEPTED
    assert sum(row[-1] == "**taken**" for row in rows) == sum(r.decision is Decision.ACCEPTED for r in history.rounds)
    assert "score: loss, lower is better" in text
    assert "| Round | Step | Prompt | Score (loss) | Loss | Taken |" in text  # the ranking metric names the scores
    summary = trainer.catalyst_summary()
    assert summary.race_steps == 0 and facts["Gradient steps"] == str(summary.total_steps)
    assert summary.total_steps == trainer.state.global_step

    # How to load: with the extension by repo id, and without it through portable/.
    assert f'AutoPeftModelForSequenceClassification.from_pretrained("{hs.BERT_ADAPTER}", num_labels=2)' in text
    pipe = f'pipeline("text-classification", model="{hs.BERT_ADAPTER}", model_kwargs={{"num_labels": 2}})'
    assert f"peft_catalyst.{pipe}" in text
    assert "import peft_catalyst" in text
    assert f'AutoModelForSequenceClassification.from_pretrained("{hs.BERT_BASE}", num_labels=2)' in text
    assert f'PeftModel.from_pretrained(base, "{hs.BERT_ADAPTER}", subfolder="portable")' in text
    assert hs.leaked(card.content.encode()) == []


def test_table_shows_kept_blind_skipped_and_unusable_rounds(tok):
    """Decisions the real run above did not produce, in the history format the trainer writes."""
    rounds = [
        {"round": 1, "step": 5, "mentor": {"name": "transformers:SmolLM2-135M-Instruct"},
         "current": {"text": "good bad", "score": 0.5, "loss": 0.5},
         "candidates": [{"text": "Rate it", "token_ids": [1], "score": 0.9, "loss": 0.9},
                        {"text": "x" * 50, "token_ids": None, "error": "tokenises to nothing", "finite": False}],
         "decision": {"status": "kept", "accepted": False, "winner": None}},
        {"round": 2, "step": 10, "mentor": {"name": "transformers:SmolLM2-135M-Instruct"}, "current": {"text": "a b"},
         "candidates": [{"text": "Classify the review", "token_ids": [3]}, {"text": "Say it", "token_ids": [4]}],
         "decision": {"status": "blind", "accepted": True, "winner": 0, "text": "Classify the review"}},
        {"round": 3, "step": 15, "mentor": {"name": "transformers:SmolLM2-135M-Instruct", "error": "timeout"},
         "candidates": [], "decision": {"status": "skipped", "reason": "mentor_error", "accepted": False}},
    ]  # fmt: skip
    card = build_model_card(_model(tok), tok, history=rounds, repo_id="org/x")
    rows = _table(card.text, "| Round |")
    assert [r[-1] for r in rows] == ["**taken** (kept)", "", "not usable: tokenises to nothing", "",
                                     "**taken** (unscored)", "", ""]  # fmt: skip
    assert rows[-1][:3] == ["3", "15", "*skipped: mentor\\_error*"]
    assert rows[3][3:5] == ["–", "–"]  # blind: nothing was scored
    facts = {row[0]: row[1] for row in _table(card.text, "| |")}
    assert facts["Restart rounds"] == (
        "3 (1 restarted from a mentor prompt, 1 kept the soft prompt, 1 skipped: mentor error)"  # and why
    )
    assert facts["Mentor"] == "`transformers:SmolLM2-135M-Instruct`"
    assert card.data.pipeline_tag == "text-generation"
    assert "AutoPeftModelForCausalLM" in card.text

    plain = build_model_card(_model(tok), tok)  # no history, no metrics, no repo
    assert "No restart history was given." in plain.text and "No evaluation metrics were given." in plain.text
    assert plain.data.base_model is None and "an unrecorded base model" in plain.text


def test_an_old_format_history_file_renders_a_card(tok, tmp_path):
    """A catalyst_history.json written before the format had a version reads through read_history into a card."""
    (tmp_path / HISTORY_FILE).write_text(json.dumps(old_format_history()))
    history = read_history(tmp_path)
    for given in (history, tmp_path / HISTORY_FILE, old_format_history()):
        card = build_model_card(_model(tok), history=given, repo_id="org/old")  # no tokenizer: the summary's prompt
        rows = _table(card.text, "| Round |")
        assert rows == [
            ["1", "5", "good bad *(current soft prompt)*", "0.61", "0.7", ""],
            ["1", "5", "Classify the review", "0.42", "0.8", "**taken**"],
            ["2", "10", "Classify the review *(current soft prompt)*", "0.3", "0.5", "**taken** (kept)"],
            ["2", "10", "Say it", "0.35", "0.45", ""],
        ]
        assert "| Round | Step | Prompt | Score (label\\_loss) | Loss | Taken |" in card.text
        assert "score: label\\_loss, lower is better" in card.text
        facts = {row[0]: row[1] for row in _table(card.text, "| |")}
        assert facts["Restart rounds"] == "2 (1 restarted from a mentor prompt, 1 kept the soft prompt, 0 skipped)"
        assert facts["Mentor"] == "`openai:old-mentor` (model reported by the server: `gpt-old`); 2 calls, 120 tokens"
        assert "Gradient steps" not in facts  # the old format did not record them
        assert "```text\nClassify the review\n```" in card.text
    save_for_hub(_model(tok), tmp_path / "out", tok, history=tmp_path / HISTORY_FILE, repo_id="org/old")
    saved = json.loads((tmp_path / "out" / HISTORY_FILE).read_text())
    assert saved["format"] == HISTORY_FORMAT and read_history(tmp_path / "out") == history  # upgraded, same content


def test_a_raced_round_shows_the_score_that_decided_and_the_race_steps(tok):
    history = raced_history()
    card = build_model_card(_model(tok), tok, history=history, repo_id="org/race")
    rows = _table(card.text, "| Round |")
    assert rows == [
        ["1", "10", "a c *(current soft prompt)*", "0.6", "0.8", "**taken** (kept)"],
        ["1", "10", "x y", "0.65", "0.85", ""],
        ["1", "10", "(empty)", "–", "–", "not usable: tokenises to nothing"],
        # the race: first-rung scores, and the winner's final score after its 6 steps
        ["2", "20", "a c *(current soft prompt)*", "0.5", "–", ""],
        ["2", "20", "p q", "0.55", "–", ""],
        ["2", "20", "r s", "0.45", "–", "**taken** (race: 0.3 after 6 steps)"],
        ["2", "20", "zq wv *(random control)*", "0.9", "–", ""],
    ]
    assert "| Round | Step | Prompt | Score (label\\_loss) | Loss | Taken |" in card.text
    assert "the taken row gives the winner's final score" in card.text
    facts = {row[0]: row[1] for row in _table(card.text, "| |")}
    assert facts["Gradient steps"] == "46 (30 in the stages + 16 in the races)"

    # A race won by a random control arm, under a metric of the other direction, next to a round of another metric:
    # each score then names its metric.
    control = dataclasses.replace(history.rounds[1], winner=None, prompt_after="zq wv", higher_is_better=True)
    control.race = dataclasses.replace(control.race, winner=3, rungs=[
        control.race.rungs[0], RaceRung([3, 2], 6, [ScoredPrompt("zq wv", score=0.95), ScoredPrompt("r s", score=0.5)])
    ])  # fmt: skip
    control.metric = "accuracy"
    card = build_model_card(_model(tok), tok, history=[history.rounds[0], control])
    rows = _table(card.text, "| Round |")
    assert "| Round | Step | Prompt | Score | Loss | Taken |" in card.text
    assert rows[0][3] == "0.6 (label\\_loss)"
    assert rows[-1] == [
        "2", "20", "zq wv *(random control)*", "0.9 (accuracy)", "–", "**taken** (race: accuracy 0.95 after 6 steps)"
    ]  # fmt: skip
    assert all(row[-1] in ("", "**taken** (kept)", "not usable: tokenises to nothing") for row in rows[:-1])


def test_no_key_or_credentialed_url_reaches_the_card_or_the_history(tok, tmp_path):
    key, password = hs.FAKE_MENTOR_KEY, hs.URL_PASSWORD
    assert public_text(f"http://bob:{password}@10.0.0.7:8000/v1?api_key={key}#frag") == "http://10.0.0.7:8000/v1"
    assert public_text(f"bob:{password}@10.0.0.7:8000") == "***@10.0.0.7:8000"
    assert key not in public_text(f"Bearer {key}") and key not in public_text(f"the key was {key}.")
    assert public_text("my-own-secret-word here", secrets=["my-own-secret-word"]) == "*** here"
    assert (
        public_text("openai:gpt-4o-mini at https://api.openai.com/v1")
        == "openai:gpt-4o-mini at https://api.openai.com/v1"
    )

    url = f"http://bob:{password}@mentor.example/v1?key={key}"
    rounds = [
        {"round": 1, "step": 3, "mentor": {"name": f"openai:m@{url}", "model": f"m {key}", "raw": f"echo {key}"},
         "current": {"text": f"see {url}", "score": 1.0, "loss": 1.0},
         "candidates": [{"text": f"use {key} now", "token_ids": [1], "score": 0.5, "loss": 0.5}],
         "decision": {"status": "accepted", "winner": 0, "text": f"use {key} now"}},
        {"round": 2, "step": 6, "mentor": {"name": f"openai:m@{url}", "error": f"401 for {url}"}, "candidates": [],
         "decision": {"status": "skipped", "reason": f"mentor_error: 401 at {url}", "accepted": False}},
    ]  # fmt: skip
    history = {"summary": {"mentor": f"openai:m@{url}", "final_prompt": "x"}, "rounds": rounds}
    model = _model(tok)
    save_for_hub(model, tmp_path / "out", tok, history=history, repo_id="org/x", secrets=["hf_AnotherSecret99"])
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert hs.leaked(data) == [] and b"bob:" not in data and b"mentor.example/v1?" not in data, path
    saved = json.loads((tmp_path / "out" / HISTORY_FILE).read_text())
    assert saved["format"] == HISTORY_FORMAT  # written in the current format
    assert saved["rounds"][1]["reason"] == "mentor_error: 401 at http://mentor.example/v1"
    assert read_history(tmp_path / "out").rounds[1].reason == "mentor_error: 401 at http://mentor.example/v1"
    assert "mentor.example" in (tmp_path / "out" / "README.md").read_text()  # the host is not a secret


def test_a_mentor_cannot_break_the_markdown(tok):
    nasty = "a | b\n\n## Injected heading <script>alert(1)</script> `code` *bold* [link](http://x)"
    rounds = [
        {"round": 1, "step": 2, "current": {"text": "``` fence", "score": 1.0, "loss": 1.0},
         "candidates": [{"text": nasty, "token_ids": [1], "score": 0.5, "loss": 0.5}],
         "decision": {"status": "accepted", "winner": 0}},
    ]  # fmt: skip
    model = _model(tok)
    card = build_model_card(model, tok, history=rounds, final_prompt="x ```` y", task_name="a|b`c")
    rows = _table(card.text, "| Round |")
    assert len(rows) == 2 and all(len(row) == 6 for row in rows)
    assert "<script>" not in card.text and "\n## Injected" not in card.text
    assert rows[1][2].startswith("a \\| b \\#\\# Injected heading \\<script\\>")
    assert "`````text\nx ```` y\n`````" in card.text  # the fence outgrows any backtick run inside
    assert "``a\\|b`c``" in card.text


OWNER_CARD = """---
license: mit
language: en
tags:
- my-tag
---

# My adapter

Intro written by the owner.

{section}

## Limitations

Owner's closing words.
"""


def test_update_replaces_only_our_section_and_merges_metadata(tok):
    old_section = f"{SECTION_BEGIN}\n## peft-catalyst adapter\n\nstale numbers\n{SECTION_END}"
    model = _model(tok)
    fresh = build_model_card(model, tok, repo_id="org/x", metrics={"accuracy": 0.5})
    merged = merge_model_card(OWNER_CARD.format(section=old_section), fresh)
    text = merged.text
    assert "Intro written by the owner." in text and "## Limitations\n\nOwner's closing words." in text
    assert "stale numbers" not in text and "| accuracy | 0.5 |" in text
    assert text.index("Intro written") < text.index(SECTION_BEGIN) < text.index(SECTION_END) < text.index("## Lim")
    assert merged.data.license == "mit" and merged.data.language == "en"
    assert merged.data.tags == ["my-tag", "peft", "prompt-tuning", "peft-catalyst"]
    assert merged.data.library_name == "peft" and merged.data.pipeline_tag == "text-generation"
    again = merge_model_card(merged, build_model_card(model, tok, repo_id="org/x", metrics={"accuracy": 0.75}))
    assert again.text.count(SECTION_BEGIN) == 1 and "| accuracy | 0.75 |" in again.text
    assert again.text.replace("0.75", "0.5") == text  # idempotent apart from what changed

    # A card without our section gets it appended; the owner's text stays first.
    no_section = merge_model_card("# Hand-written\n\nHello.\n", fresh)
    assert no_section.text.startswith("# Hand-written\n\nHello.\n\n" + SECTION_BEGIN)
    assert no_section.data.library_name == "peft"
    # A broken marker pair is an error, not a guess that could delete the owner's text.
    with pytest.raises(ValueError, match="markers"):
        merge_model_card(f"# Card\n\n{SECTION_BEGIN}\nhalf a section\n", fresh)
    # The same through build_model_card(existing=...)
    built = build_model_card(model, tok, existing=OWNER_CARD.format(section=old_section))
    assert "Owner's closing words." in built.text and "stale numbers" not in built.text


def test_save_for_hub_replaces_peft_boilerplate_but_keeps_an_edited_catalyst_card(tok, tmp_path):
    model = _model(tok)
    out = tmp_path / "out"
    model.save_pretrained(out)  # PEFT writes its own boilerplate README.md
    assert "Model Card for Model ID" in (out / "README.md").read_text()
    save_for_hub(model, out, tok, repo_id="org/x")
    first = (out / "README.md").read_text()
    assert "Model Card for Model ID" not in first and first.count(SECTION_BEGIN) == 1
    assert {p.name for p in (out / "portable").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}

    (out / "README.md").write_text(first.replace("# x\n", "# x\n\nMy notes.\n"))
    set_soft_prompt_from_text(model, tok, "a terrible film")
    save_for_hub(model, out, tok, repo_id="org/x")
    second = (out / "README.md").read_text()
    assert "My notes." in second and soft_prompt_text(model, tok) in second and second.count(SECTION_BEGIN) == 1


def test_templates_ship_in_the_wheel_and_the_editable_install(tmp_path):
    # Editable install (this checkout): the package-dir mapping resolves to the top-level model_cards/ folder.
    import peft_catalyst.model_cards as cards

    assert Path(cards.__file__).resolve().parent == ROOT / "model_cards"
    assert read_template("adapter_card.md").startswith("---\n{{ card_data }}\n---")
    assert SECTION_BEGIN in read_template("catalyst_section.md")

    # A real wheel, built from a copy of the sources (no build artefacts in the checkout).
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "peft_catalyst_cli.py"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for folder in ("peft_catalyst", "model_cards"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(src),
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path / "w"),
    ]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    wheel = next((tmp_path / "w").glob("peft_catalyst-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("__init__.py", "adapter_card.md", "catalyst_section.md"):
        assert f"peft_catalyst/model_cards/{template}" in names
    # Every subpackage of peft_catalyst/ is in the explicit package list of pyproject.toml.
    packages = setuptools.find_namespace_packages(str(ROOT), include=["peft_catalyst", "peft_catalyst.*"])
    for package in packages:
        if package.split(".")[-1] != "__pycache__":
            assert f"{package.replace('.', '/')}/__init__.py" in names or any(
                n.startswith(package.replace(".", "/") + "/") for n in names
            ), f"{package} is missing from [tool.setuptools] packages in pyproject.toml"
    for template in (ROOT / "peft_catalyst" / "templates").iterdir():
        assert f"peft_catalyst/templates/{template.name}" in names

    # Installed from the wheel (not the checkout), the package finds its templates.
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    script = (
        "import peft_catalyst.model_card as card, peft_catalyst.model_cards as cards; "
        "print(cards.__file__); print(card.read_template('catalyst_section.md').splitlines()[0])"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    location, first_line = result.stdout.strip().splitlines()[-2:]
    assert Path(location).resolve().is_relative_to(target.resolve())
    assert first_line == SECTION_BEGIN

    # The console script's module ships too, and prints `train --help` from the installed package's help text
    # without importing the package (which imports torch).
    assert "peft_catalyst_cli.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "peft-catalyst = peft_catalyst_cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    script = (
        "import sys, peft_catalyst_cli; code = peft_catalyst_cli.main(['train', '--help']); "
        "print(code, 'peft_catalyst' in sys.modules, 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: peft-catalyst train") and result.stdout.strip().endswith("0 False False")


def test_cards_of_a_vanilla_prompt_tuning_adapter_and_a_seq2seq_one(tok):
    from peft import PromptTuningConfig

    vanilla = get_peft_model(tiny.tiny_llama(tok), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    card = build_model_card(vanilla, tok, repo_id="org/v")
    assert "| PEFT type | `PROMPT_TUNING` |" in card.text
    assert "import peft_catalyst" not in card.text and "KeyError" not in card.text  # plain PEFT loads it anyway

    config = CatalystConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4, task_description="Classify reviews")
    seq2seq = get_peft_model(tiny.tiny_t5(tok), config)
    set_soft_prompt_from_text(seq2seq, tok, "the movie was great")
    t5_repo = "org/t5"
    card = build_model_card(seq2seq, tok, repo_id=t5_repo)
    assert card.data.pipeline_tag is None  # transformers 5 has no text2text pipeline
    assert f'AutoPeftModelForSeq2SeqLM.from_pretrained("{t5_repo}")' in card.text
    assert "AutoModelForSeq2SeqLM.from_pretrained(" in card.text
    assert f"```text\n{soft_prompt_text(seq2seq, tok)}\n```" in card.text


def test_a_blended_restart_names_its_shape_and_its_nearest_token_reading(tok):
    """After a blended restart the prompt is no longer a token sequence: the card says so and shows the reading."""
    history = raced_history()
    raced = history.rounds[1]
    blend = RestartShape("blend", alpha=0.3)
    raced.shape, raced.prompt_after = blend, "r t"
    raced.race.arms[2].shape = blend
    raced.race.arms[3].shape = blend  # the control raced in the same shape
    card = build_model_card(_model(tok), tok, history=history, repo_id="org/blend")
    rows = _table(card.text, "| Round |")
    assert rows[-2][-1] == "**taken** (race: 0.3 after 6 steps, blend alpha=0.3 start, reads as `r t`)"
    assert rows[-1][2] == "zq wv *(random control, blend alpha=0.3)*"
    assert "no longer a token sequence" in card.text
    assert "no longer a token sequence" not in build_model_card(_model(tok), tok, history=raced_history()).text


def test_a_packaged_base_card_shows_the_call_that_loads_it_offline(tok):
    """The base is a packaged model's Hub id: the card's load snippet switches the packaged ids on, explicitly
    (importing peft_catalyst alone does not), before the first load."""
    from peft_catalyst.offline_models import MINILM_HUB_ID

    card = build_model_card(_model(tok), tok, base_model=MINILM_HUB_ID, repo_id="org/x")
    load = card.text.split("### How to load")[1]
    assert "import peft_catalyst" in load and "peft_catalyst.use_packaged_models()" in load
    assert load.index("peft_catalyst.use_packaged_models()") < load.index(".from_pretrained(")
    assert "use_packaged_models" not in build_model_card(_model(tok), tok, repo_id="org/y").text  # not packaged
