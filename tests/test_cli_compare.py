"""``peft-catalyst compare``: end to end on a tiny BERT doer with the loopback OpenAI mentor (the three methods paired
per seed, the headline line, the report, resume) and every bad input as one line and exit code 2."""

from __future__ import annotations

import json

import pytest

from peft_catalyst.app.cli import main
from peft_catalyst.app.compare import runs as compare_runs
from peft_catalyst.app.compare.stats import binomial_interval, paired_difference
from peft_catalyst.app.errors import UserError
from tests import tiny
from tests.loopback_openai import LoopbackOpenAIServer

REPLY = "1. the movie was great\n2. a terrible film\n3. an excellent story"


@pytest.fixture(scope="module")
def doer_dir(tmp_path_factory):
    """A tiny BERT sequence classifier and its tokenizer on disk, for --model_name_or_path."""
    path = tmp_path_factory.mktemp("tiny_bert")
    tok = tiny.bpe_tokenizer()
    tiny.tiny_bert_seq_cls(tok, num_labels=2).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _args(doer_dir, out, base_url: str = "http://127.0.0.1:9/v1") -> list[str]:
    return [
        "compare", "--model_name_or_path", str(doer_dir), "--dataset", "rotten_tomatoes", "--num_virtual_tokens", "4",
        "--max_length", "64", "--train_size", "32", "--catalyst_size", "8", "--test_size", "16",
        "--max_steps", "6", "--catalyst_rounds", "2", "--catalyst_stage_steps", "2",
        "--per_device_train_batch_size", "4", "--catalyst_num_candidates", "2", "--catalyst_num_samples", "3",
        "--catalyst_selection", "race", "--catalyst_race_controls", "1", "--catalyst_race_steps", "1",
        "--disable_tqdm", "true", "--plot", "false", "--logging_steps", "1",
        "--mentor", "openai:test-model", "--mentor_base_url", base_url, "--output_dir", str(out),
    ]  # fmt: skip


#: Matched by gradient steps (the command's default is by compute, test_compare_match_compute_gives_single...).
BY_STEPS = ["--match", "steps"]


def test_compare_runs_three_paired_methods_reports_and_resumes(doer_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. the movie was great")  # fewer candidates than asked: random matches them
        assert main([*_args(doer_dir, out, server.base_url), "--seeds", "2", *BY_STEPS]) == 0
        calls = server.request_count
    printed = capsys.readouterr().out.strip().splitlines()
    records = {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert set(records) == {f"{m}__seed{s}" for m in ("catalyst", "random", "single") for s in (42, 43)}
    for seed in (42, 43):
        cat, rnd, single = (records[f"{m}__seed{seed}"] for m in ("catalyst", "random", "single"))
        # Paired: the same split and init, so the same initial prompt and initial accuracy on the same test examples.
        assert cat["prompts"]["initial"] == rnd["prompts"]["initial"] == single["prompts"]["initial"]
        assert cat["initial_test_accuracy"] == rnd["initial_test_accuracy"] == single["initial_test_accuracy"]
        assert cat["rounds"]["rounds"] == rnd["rounds"]["rounds"] == 2 and single["rounds"]["rounds"] == 0
        # one keep-best rule for every method: each kept its best prompt by validation, the start included
        for record in (cat, rnd, single):
            assert record["kept_step"] is not None and record["final_step_test_accuracy"] is not None
        assert cat["steps"]["race"] > 0 and rnd["steps"]["race"] > 0  # the same race rule for both
        # single trains catalyst's counted gradient steps (stages + races) in its main loop
        assert single["steps"] == {"main": cat["steps"]["total"], "race": 0, "total": cat["steps"]["total"]}
        assert single["settings"]["matched_steps"] == cat["steps"]["total"]
        assert cat["llm"]["calls"] == 2 and rnd["llm"]["calls"] == single["llm"]["calls"] == 0
        assert cat["mentor"] == "openai:test-model" and rnd["mentor"] == "random-words"
        assert cat["beat_random"]["race"][1] == 2  # a random control raced beside the mentor in both rounds
        # random draws per round as many candidates as the mentor gave usable ones (1 of the 3 asked): same arms
        assert cat["mentor_candidates"] == rnd["settings"]["matched_candidates"] == [1, 1]
        assert rnd["mentor_candidates"] == [1, 1] and rnd["steps"] == cat["steps"]
        assert (out / "runs" / f"catalyst__seed{seed}" / "catalyst_history.json").is_file()
    assert calls == 4  # one request per round of the two catalyst runs; random and single ask no one
    data = json.loads((out / "compare.json").read_text())
    for ref in ("random", "single"):
        diffs = [records[f"catalyst__seed{s}"]["test_accuracy"] - records[f"{ref}__seed{s}"]["test_accuracy"]
                 for s in (42, 43)]  # fmt: skip
        expected = paired_difference(diffs, [0.0, 0.0])
        got = data["summary"]["contrasts"][f"catalyst - {ref}"]["difference"]
        assert got["mean"] == pytest.approx(expected.mean) and got["n"] == 2
        assert got["t_ci"] == pytest.approx(list(expected.t_ci), nan_ok=True)
    wins = sum(records[f"catalyst__seed{s}"]["beat_random"]["race"][0] for s in (42, 43))
    race = data["summary"]["beat_random"]["race"]
    assert (race["wins"], race["rounds"]) == (wins, 4) and race["ci95"] == pytest.approx(binomial_interval(wins, 4))
    headline = printed[-2]
    assert headline == data["headline"]
    assert headline.startswith("catalyst - random: ") and "; catalyst - single: " in headline
    assert f"mentor beat random in {wins} of 4 race rounds" in headline and len(headline) < 250  # short
    unequal = {s for s in (42, 43) if len({records[f"{m}__seed{s}"]["steps"]["total"] for m in ("catalyst", "random",
                                                                                                 "single")}) > 1}
    assert ("UNEQUAL COMPUTE" in headline) == bool(unequal)
    assert data["summary"]["compute"]["equal"] == (not unequal)
    assert printed[-1].startswith("report: ")
    for name in ("compare.md", "compare.json", "compare.png", "comparison.json"):
        assert (out / name).is_file(), name
    md = (out / "compare.md").read_text()
    assert "| `catalyst - random` | 2 |" in md and "| race | " in md and "2 of 2 seeds finished" in md
    assert "per run: catalyst " in md and "| random " in md and "| single " in md  # the costs, beside the headline
    assert f"Task `rotten_tomatoes`, doer `{doer_dir.name}`." in md

    # Resume: nothing is trained again, no mentor is asked; a record that is missing is the only run that runs.
    trained = []
    real_train = compare_runs.train

    def counting(config):
        trained.append(config.training.output_dir)
        return real_train(config)

    monkeypatch.setattr(compare_runs, "train", counting)
    with LoopbackOpenAIServer() as server:  # another port: how the mentor is reached is not the comparison's
        server.set_reply(lambda req: REPLY)
        assert main([*_args(doer_dir, out, server.base_url), "--seeds", "2", *BY_STEPS]) == 0
        assert server.request_count == 0
    assert trained == []
    assert "6 finished runs skipped, 0 to run" in capsys.readouterr().out
    (out / "records" / "single__seed43.json").unlink()
    assert main([*_args(doer_dir, out), "--seeds", "2", *BY_STEPS]) == 0
    assert [p.rsplit("/", 1)[-1] for p in trained] == ["single__seed43"]
    assert json.loads((out / "records" / "single__seed43.json").read_text())["steps"] == records["single__seed43"][
        "steps"
    ]

    # The same folder with another configuration: refused, nothing touched (a comparison with no finished run
    # would be replaced: test_a_comparison_without_a_finished_run_is_replaced).
    capsys.readouterr()
    code = main([*_args(doer_dir, out), "--seeds", "2", *BY_STEPS, "--learning_rate", "0.05"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "holds the records of another comparison" in err and "training.learning_rate" in err


def test_compare_matches_single_by_compute_unless_told():
    """The default job screens at 1.0-1.6x its training compute, so ``single`` is matched by compute by default."""
    from peft_catalyst.app.compare.command import _pop_match

    assert _pop_match(["--seeds", "2"]) == ("compute", ["--seeds", "2"])
    assert _pop_match(["--match", "steps", "--seeds", "2"]) == ("steps", ["--seeds", "2"])


def test_compare_match_compute_gives_single_the_steps_its_compute_buys(doer_dir, tmp_path, capsys):
    """``--match compute``: single trains the steps that catalyst's tuning compute (stages + races + screening, in
    forward-equivalent tokens) buys at catalyst's own training tokens per step; the report and the line say so."""
    from peft_catalyst.records import TRAIN_FACTOR

    out = tmp_path / "cmp"
    cheap = ["--catalyst_selection", "best", "--catalyst_rounds", "1", "--catalyst_race_controls", "0"]
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: REPLY)
        assert main([*_args(doer_dir, out, server.base_url), *cheap, "--seeds", "2", "--match", "compute"]) == 0
    headline = capsys.readouterr().out.strip().splitlines()[-2]
    records = {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    for seed in (42, 43):
        cat, single = records[f"catalyst__seed{seed}"], records[f"single__seed{seed}"]
        compute = cat["compute"]
        assert compute["screening"] > 0 and compute["races"] == 0 and compute["stages"] > 0
        assert compute["tuning"] == compute["stages"] + compute["screening"]
        # by hand: catalyst's training tokens per step, and the steps its tuning compute buys at that rate
        per_step = compute["stages"] / (TRAIN_FACTOR * cat["steps"]["main"])
        steps = round(compute["tuning"] / (TRAIN_FACTOR * per_step))
        assert steps > cat["steps"]["total"] == 6  # the screening passes bought single extra steps
        assert single["settings"]["match"] == "compute" and single["settings"]["matched_steps"] == steps
        assert single["steps"] == {"main": steps, "race": 0, "total": steps}
        assert single["compute"]["screening"] == single["compute"]["races"] == 0  # plain tuning: stages only
        assert single["compute"]["tuning"] == single["compute"]["stages"]
    data = json.loads((out / "compare.json").read_text())
    assert data["match"] == data["summary"]["match"] == "compute" and data["headline"] == headline
    assert "single matched by compute" in headline and len(headline) < 250
    md = (out / "compare.md").read_text()
    assert "matched to `catalyst` by **compute**" in md and "forward-equivalent tokens" in md
    assert data["summary"]["costs"]["single"]["compute"] > data["summary"]["costs"]["catalyst"]["compute"] * 0.5


def _record(method: str, seed: int, accuracy: float, steps: int, race: int) -> dict:
    return {
        "method": method, "seed": seed, "test_accuracy": accuracy, "steps": {"main": steps - race, "race": race,
        "total": steps}, "rounds": {"rounds": 2, "accepted": 1, "kept": 1, "skipped": 0},
        "llm": {"calls": 2 if method == "catalyst" else 0, "prompt_tokens": 10, "completion_tokens": 5},
        "beat_random": {"screening": [0, 0], "race": [1, 2] if method == "catalyst" else [0, 0]}, "wall_s": 30.0,
    }  # fmt: skip


def test_unequal_compute_is_flagged_in_the_line_the_report_and_the_plot(tmp_path, monkeypatch):
    """With race controls, random's race can take more arms than catalyst's (the mentor gave fewer usable
    candidates): 60 against 34 gradient steps must not pass as a fair contrast."""
    import matplotlib.figure

    from peft_catalyst.app.compare.report import headline, markdown, write_report
    from peft_catalyst.app.compare.summary import summarize

    records = {}
    for seed, (cat, rnd) in {42: (34, 60), 43: (40, 40)}.items():
        for method, steps, race, acc in (("catalyst", cat, cat - 20, 0.7), ("random", rnd, rnd - 20, 0.68),
                                         ("single", cat, 0, 0.66)):  # fmt: skip
            records[f"{method}__seed{seed}"] = _record(method, seed, acc + seed / 1000, steps, race)
    summary = summarize(records)
    assert summary["compute"] == {"equal": False, "unequal": [{"seed": 42, "steps": {"catalyst": 34, "random": 60,
                                                                                       "single": 34}}]}  # fmt: skip
    line = headline(summary)
    assert line.endswith("UNEQUAL COMPUTE in 1 seed (gradient steps per run: catalyst 34, random 60, single 34)")
    assert len(line) < 250 and "LLM calls" not in line  # the costs are in compare.md
    meta = {"seeds": 2, "seeds_finished": 2, "command": "peft-catalyst compare", "date": "d", "task": "trec",
            "doer": "minilm", "machine": {"description": "m"}, "packages": {}}  # fmt: skip
    md = markdown(summary, meta)
    assert "**UNEQUAL COMPUTE in 1 seed" in md and "| 42 | 34 | 60 | 34 |" in md
    assert "Task `trec`, doer `minilm`." in md
    equal = summarize({k: v for k, v in records.items() if k.endswith("43")})
    assert equal["compute"]["equal"] and "UNEQUAL" not in headline(equal) and "UNEQUAL" not in markdown(equal, meta)
    titles = []
    suptitle = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda fig, t, **kw: titles.append(t) or suptitle(
        fig, t, **kw))  # fmt: skip
    write_report(tmp_path, records, meta)
    assert titles and titles[0].startswith("peft-catalyst compare: task trec, doer minilm\nUNEQUAL COMPUTE")
    assert json.loads((tmp_path / "compare.json").read_text())["headline"] == line


def test_the_report_shows_the_kept_prompt_against_its_start_and_last_step():
    """compare.md and compare.json say, per method, what the saved adapters hold (the prompt kept by validation)
    against the start and the last step, and in how many seeds the kept one was at least the start."""
    from peft_catalyst.app.compare.report import markdown
    from peft_catalyst.app.compare.summary import summarize

    records = {}
    for seed, (initial, kept, final, step) in {42: (0.70, 0.80, 0.78, 40), 43: (0.72, 0.70, 0.70, 60)}.items():
        for method in ("catalyst", "random", "single"):
            record = _record(method, seed, kept, 60, 0)
            record.update(initial_test_accuracy=initial, final_step_test_accuracy=final, kept_step=step)
            records[f"{method}__seed{seed}"] = record
    records["single__seed43"]["initial_test_accuracy"] = None  # a record from before keep-best: left out
    summary = summarize(records)
    cat = summary["kept"]["catalyst"]
    assert cat["kept_at_least_initial"] == 1 and [r["seed"] for r in cat["seeds"]] == [42, 43]
    assert cat["mean"] == pytest.approx({"initial": 0.71, "kept": 0.75, "final": 0.74})
    assert [r["seed"] for r in summary["kept"]["single"]["seeds"]] == [42]
    meta = {"seeds": 2, "seeds_finished": 2, "command": "c", "date": "d", "machine": {"description": "m"},
            "packages": {}}  # fmt: skip
    md = markdown(summary, meta)
    assert "| catalyst | 2 | 71.0 | 75.0 | 74.0 | 1 of 2 |" in md
    assert "| 42 | 70.0 / 80.0 (40) / 78.0 | 70.0 / 80.0 (40) / 78.0 | 70.0 / 80.0 (40) / 78.0 |" in md
    assert "| 43 | 72.0 / 70.0 (60) / 70.0 | 72.0 / 70.0 (60) / 70.0 | - |" in md


def test_matched_by_compute_single_is_flagged_only_when_its_compute_is_off():
    """Matched by compute, single trains other steps than catalyst by design: only a tuning compute more than 5% and
    one step off catalyst's is unequal, and the line names the forward-equivalent tokens, not the steps."""
    from peft_catalyst.app.compare.report import headline, markdown
    from peft_catalyst.app.compare.summary import summarize

    def with_compute(record: dict, stages: int, tuning: int) -> dict:
        return {**record, "compute": {"stages": stages, "tuning": tuning, "total": tuning + 100}}

    records = {}
    for seed, single in ((42, 1020), (43, 1500)):  # 2% off: equal; 50% off: unequal
        records[f"catalyst__seed{seed}"] = with_compute(_record("catalyst", seed, 0.7, 10, 0), 600, 1000)
        records[f"random__seed{seed}"] = with_compute(_record("random", seed, 0.68, 10, 0), 600, 1000)
        records[f"single__seed{seed}"] = with_compute(_record("single", seed, 0.66, 17, 0), single, single)
    summary = summarize(records, "compute")
    assert summary["match"] == "compute" and summary["costs"]["single"]["compute"] == (1020 + 1500) / 2
    steps, tokens = {"catalyst": 10, "random": 10, "single": 17}, {"catalyst": 1000, "random": 1000, "single": 1500}
    assert summary["compute"]["unequal"] == [{"seed": 43, "steps": steps, "compute": tokens}]
    line = headline(summary)
    assert line.endswith("; single matched by compute; UNEQUAL COMPUTE in 1 seed (compute per run: catalyst 1k, "
                         "random 1k, single 1.5k)")  # fmt: skip
    meta = {"seeds": 2, "seeds_finished": 2, "command": "c", "date": "d", "machine": {"description": "m"},
            "packages": {}}  # fmt: skip
    md = markdown(summary, meta)
    assert "by **compute**" in md and "| single | 2 | " in md and " 1.26k (1.36k) |" in md
    assert "for the training steps that the same forward-equivalent tokens buy" in md  # what catalyst - single means
    # a summary that does not say how it was matched was stored before --match existed: by steps, all three unequal
    assert "single matched by steps" in headline(summarize(records))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "1"], "--seeds must be at least 2"),
        (["--seeds", "two"], "--seeds must be a whole number"),
        (["--match", "tokens"], "--match must be one of steps, compute, got 'tokens'"),
        (["--mentor", "none"], "--mentor none: the contrast is empty"),
        (["--mentor", "random"], "--mentor random: the contrast is empty"),
        (["--catalyst_rounds", "0"], "--catalyst_rounds 0: the contrast is empty"),
        (["--catalyst_num_samples", "1"], "catalyst_num_samples (1) must be >= catalyst_num_candidates (2)"),
        (["--catalyst_selection", "nope"], "--catalyst_selection/--catalyst-selection: invalid choice: 'nope'"),
        (["--max_steps", "4"], "catalyst_rounds"),  # 2 rounds x 2 steps leave no final stage
        (["--config", "missing.yaml"], "--config: no file at missing.yaml"),
        (["--model_name_or_path", "no/such-model-here"], "Cannot load model 'no/such-model-here'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(doer_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "cmp"
    assert main([*_args(doer_dir, out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()  # refused before anything was loaded or written


def test_an_output_dir_holding_something_else_is_refused(doer_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # e.g. a train run's folder
    assert main([*_args(doer_dir, out)]) == 2
    assert "holds no comparison" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["metrics.json"]


def test_help_and_usage_name_the_command(capsys):
    assert main(["compare", "--help"]) == 0
    assert "--seeds S" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "compare  does the mentor help" in capsys.readouterr().out


@pytest.mark.timeout(600)
def test_compare_under_two_processes_asks_once_per_round_and_writes_once(doer_dir, tmp_path):
    """torchrun, 2 CPU processes (gloo; `accelerate launch --cpu` starts one process without MPI, see README): every
    process trains every run, the mentor is asked from the main process only, the main process writes the records
    and the report and prints the headline once."""
    import os
    import subprocess
    import sys

    out = tmp_path / "cmp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: REPLY)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "peft_catalyst.app.cli", *_args(doer_dir, out, server.base_url), "--seeds", "2",
               "--use_cpu", "true"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        assert server.request_count == 4  # 2 rounds x 2 catalyst runs, from the main process only
    report = json.loads((out / "compare.json").read_text())
    assert report["machine"]["workers"] == 2
    assert len(list((out / "records").glob("*.json"))) == 6
    assert result.stdout.count("catalyst - random: ") == 1 and report["headline"] in result.stdout
    assert not list(out.rglob("*.tmp"))  # no half-written file from two processes writing one path


def test_a_comparison_without_a_finished_run_is_replaced(doer_dir, tmp_path):
    """A comparison whose first run failed left its configuration and no record: a corrected command runs there."""
    from peft_catalyst.app.compare.command import COMPARISON_FILE, check_output_dir

    out = tmp_path / "cmp"
    (out / "runs" / "catalyst__seed42").mkdir(parents=True)
    (out / COMPARISON_FILE).write_text(json.dumps({"settings": {"model": "other"}, "seeds": 2}))
    check_output_dir(out, {"model": "mine"})  # no record: nothing to keep
    (out / "records").mkdir()
    (out / "records" / "catalyst__seed42.json").write_text("{}")
    with pytest.raises(UserError, match="differs in model"):
        check_output_dir(out, {"model": "mine"})
