"""Two CPU processes (torchrun, gloo; Accelerate picks the environment up): the mentor is asked on the main process
only, its candidates reach every rank, scoring is sharded and gathered, and the soft prompt is bitwise identical on
both ranks.

``accelerate launch --num_processes 2 --cpu`` starts a single process in accelerate 1.15 unless MPI is installed
(its multi-CPU launcher is mpirun), so the test launches with torchrun, which Accelerate's state detects as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import get_peft_model

from peft_catalyst import CatalystConfig
from tests import tiny
from tests.loopback_openai import LoopbackOpenAIServer

SCRIPT = Path(__file__).parent / "scripts" / "distributed_catalyst.py"


def _data(tok, n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    words = ["the movie was great", "a terrible film", "an excellent story", "a boring plot"]
    texts = [f"{words[int(rng.integers(4))]} {i}" for i in range(n)]
    labels = [int("great" in t or "excellent" in t) for t in texts]
    return Dataset.from_dict({"text": texts, "label": labels}).map(
        lambda b: tok(b["text"]), batched=True, remove_columns=["text"]
    )


def _assets(tmp_path: Path) -> Path:
    """What the 2-process scripts load: a tiny tokenizer, BERT classifier and CATALYST adapter, train and catalyst
    data, under ``tmp_path / "assets"``."""
    tok = tiny.bpe_tokenizer()
    assets = tmp_path / "assets"
    tok.save_pretrained(assets / "tokenizer")
    base = tiny.tiny_bert_seq_cls(tok)
    base.config.hidden_dropout_prob = 0.0  # ranks see different batches; dropout is not what these tests are about
    base.save_pretrained(assets / "base")
    config = CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4, task_description="Classify review sentiment")
    get_peft_model(tiny.tiny_bert_seq_cls(tok), config).save_pretrained(assets / "adapter")
    _data(tok, 64, 1).save_to_disk(assets / "train")
    _data(tok, 13, 2).save_to_disk(assets / "catalyst")  # odd size: gather_for_metrics must drop the padding
    return assets


def _run_two_processes(assets: Path, out: Path, *extra: str) -> int:
    """Run ``scripts/distributed_catalyst.py`` on 2 CPU processes (torchrun) against a loopback mentor; its log goes to
    ``out.parent / "log.txt"``. Returns the number of mentor requests."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. the movie was great\n2. a boring plot")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
               "--assets", str(assets), "--base_url", server.base_url, "--out", str(out), *extra]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
        (out.parent / "log.txt").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        return server.request_count


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "selection, restart", [("best", "full"), ("race", "full"), ("best", "blend"), ("race", "partial")]
)
def test_two_process_rounds_call_the_mentor_once_and_keep_ranks_identical(tmp_path, selection, restart):
    assets = _assets(tmp_path)

    out = tmp_path / "out"
    requests = _run_two_processes(assets, out, "--selection", selection, "--restart", restart)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert requests == 2  # one call per round, from the main process only
    assert len(ranks[0]["rounds"]) == 2
    assert ranks[0]["rounds"] == ranks[1]["rounds"]  # bitwise-identical soft prompt after every round
    assert ranks[0]["final"] == ranks[1]["final"]
    assert ranks[0]["statuses"] == ranks[1]["statuses"]
    assert ranks[0]["statuses"][0] == "accepted"  # a restart happened, and both ranks hold the same prompt
    assert ranks[0]["candidate_scores"] == ranks[1]["candidate_scores"]  # gathered scores agree
    history = json.loads((out / "catalyst_history.json").read_text())
    assert len(history["rounds"]) == 2
    assert ranks[0]["race_steps"] == ranks[1]["race_steps"]
    # compute is summed over the processes: every rank holds the run's count, its stages both ranks' tokens x 3
    assert ranks[0]["compute"] == ranks[1]["compute"] == history["summary"]["compute"]
    assert ranks[0]["compute"]["stages"] == 3 * (ranks[0]["stage_tokens"] + ranks[1]["stage_tokens"])
    assert ranks[0]["stage_tokens"] != ranks[1]["stage_tokens"]  # the ranks trained different rows
    # one restart shape, and for a partial restart the same positions, on every rank
    assert ranks[0]["shapes"] == ranks[1]["shapes"] and ranks[0]["arm_shapes"] == ranks[1]["arm_shapes"]
    assert ranks[0]["shapes"][0]["name"] == restart
    if selection == "race":
        # rung 0: incumbent, 2 candidates and 1 control train 2 steps each on the same batches (per rank: its share
        # of the same global batch); the decision and the prompt after the race are one for all ranks
        assert ranks[0]["race_steps"][0] > 0 and history["rounds"][0]["race"]["steps"] == ranks[0]["race_steps"][0]
        for rank in ranks:
            arms = [rank["race_batches"][i : i + 2] for i in range(0, 8, 2)]
            assert all(arm == arms[0] for arm in arms)
        assert ranks[0]["race_batches"][:2] != ranks[1]["race_batches"][:2]
    else:
        assert ranks[0]["race_steps"] == [0, 0] and not ranks[0]["race_batches"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("keep_best", ["max", "min"], ids=["start-kept", "mid-run-kept"])
def test_two_process_load_best_model_at_end_keeps_the_same_prompt_on_every_rank(tmp_path, keep_best):
    """DDP with ``load_best_model_at_end``: the step-0 prompt is a contender (``max``: the N(0, 1) start has the
    largest norm, the restarted prompts far smaller ones), the kept checkpoint is loaded bit for bit on both ranks, and
    the saved adapter holds it."""
    assets = _assets(tmp_path)
    out = tmp_path / "out"
    _run_two_processes(assets, out, "--keep_best", keep_best)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["kept"] == ranks[1]["kept"] and ranks[0]["final"] == ranks[1]["final"]
    kept, evals = ranks[0]["kept"], ranks[0]["evals"]
    assert sorted(evals, key=int) == ["0", "4", "8"] and ranks[0]["statuses"][0] == "accepted"
    best = (max if keep_best == "max" else min)(evals, key=lambda s: (evals[s], -int(s)))
    assert kept["step"] == int(best) and kept["final_step"] == 8
    assert (kept["step"] == 0) == (keep_best == "max")
    assert ranks[0]["final"] == ranks[0]["checkpoints"][str(kept["step"])]  # bit for bit, on both ranks
    assert ranks[0]["saved"] == ranks[0]["final"]


@pytest.mark.timeout(300)
def test_fsdp2_sharded_prompt_projects_and_restarts_like_unsharded(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).parent / "scripts" / "fsdp2_prompt.py"), str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    for r in ranks:
        assert r["dtensor"] and r["local_rows"] == 3  # 6 virtual tokens sharded over 2 ranks
        assert r["text_matches"] and r["restart_matches"] and r["same_parameter"]
        assert r["text_after"] == r["expected_text"] and r["expected_text"].startswith("the movie was great")
        assert r["zeroed"] and r["restored"] and r["logits_match"] and r["export_matches"]


# ---------------------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO stage 3 on CPU: 2 processes over gloo (DS_ACCELERATOR=cpu), the recipe in the README
# ---------------------------------------------------------------------------------------------------------------

ZERO3_SCRIPT = Path(__file__).parent / "scripts" / "zero3_catalyst.py"


def _zero3_env() -> dict[str, str]:
    # DeepSpeed JIT-compiles a small shared-memory op at start-up (about 60 s, g++ and ninja): cache it in the venv.
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path(sys.prefix) / "torch_extensions")
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": extensions}  # fmt: skip


def _zero3_run(assets: Path, out: Path, phase: str, *extra: str) -> tuple[subprocess.CompletedProcess, int]:
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. the movie was great\n2. a boring plot")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ZERO3_SCRIPT), "--assets", str(assets), "--base_url", server.base_url, "--out", str(out),
               "--phase", phase, *extra]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=_zero3_env())
        (out.parent / f"{phase}-log.txt").write_text(result.stdout + result.stderr)
        return result, server.request_count


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    """One ZeRO-3 training run (8 steps, rounds at steps 3 and 6, checkpoints at 4 and 8), shared by the tests."""
    pytest.importorskip("deepspeed")
    tmp_path = tmp_path_factory.mktemp("zero3")
    assets = _assets(tmp_path)
    out = tmp_path / "out"
    result, requests = _zero3_run(assets, out, "full")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return assets, out, requests


@pytest.mark.timeout(600)
def test_zero3_two_process_rounds_restart_through_gathered_parameters(zero3_run):
    _, out, requests = zero3_run
    ranks = [json.loads((out / f"full-rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:  # really DeepSpeed ZeRO-3 (a silent fallback to DDP would fail here), really sharded
        assert r["deepspeed_enabled"] and r["engine"] == "DeepSpeedEngine" and r["zero_stage"] == 3
        assert r["world_size"] == 2
        assert r["prompt_local_numel"] == 0 and r["prompt_ds_shape"] == [4, 32] and r["prompt_partition_numel"] == 64
    assert requests == 2  # one mentor call per round, from the main process only
    assert ranks[0]["statuses"] == ranks[1]["statuses"] == ["accepted", "accepted"]  # restarts happened
    assert ranks[0]["round_steps"] == [3, 6]
    assert ranks[0]["rounds"] == ranks[1]["rounds"]  # same gathered prompt on both ranks after every restart
    assert ranks[0]["final"] == ranks[1]["final"]
    assert ranks[0]["candidate_scores"] == ranks[1]["candidate_scores"]
    for r in ranks:  # the optimizer-state reset reached DeepSpeed's partitioned fp32 state
        for round_ in r["rounds"]:
            assert round_["exp_avg_norm"] == 0.0 and round_["adam_step"] == 0.0
        assert r["moments"][3] > 0.0  # and training goes on after it
        # The re-warm-up reaches the prompt's own flat fp32 group: 1/6 of the scheduled lr after each restart (at
        # steps 3 and 6, catalyst_rewarmup_steps=5), rising a sixth per step; the other groups keep the schedule
        # (linear to 0 at the last step).
        prompt_lr, scheduled = zip(*r["lrs"])
        assert scheduled[-1] == prompt_lr[-1] == 0.0 and min(scheduled[:-1]) > 0.0
        ratios = [p / s for p, s in zip(prompt_lr[:-1], scheduled[:-1])]
        assert ratios == pytest.approx([1, 1, 1 / 6, 2 / 6, 3 / 6, 1 / 6, 2 / 6])
    assert len(json.loads((out / "catalyst_history.json").read_text())["rounds"]) == 2
    # The checkpoint holds the full prompt (not ZeRO-3's empty placeholder) and the catalyst state.
    from safetensors.torch import load_file

    for step in (4, 8):
        saved = load_file(out / f"checkpoint-{step}" / "adapter_model.safetensors")
        prompt = [v for k, v in saved.items() if "prompt_embeddings" in k]
        assert len(prompt) == 1 and tuple(prompt[0].shape) == (4, 32), {k: v.shape for k, v in saved.items()}
        assert (out / f"checkpoint-{step}" / "catalyst_state.json").is_file()
    # save_model() on both ranks: the full prompt in the adapter and its portable copy, and our card, from rank 0.
    final = load_file(out / "adapter_model.safetensors")
    portable = load_file(out / "portable" / "adapter_model.safetensors")
    assert [tuple(v.shape) for k, v in final.items() if "prompt_embeddings" in k] == [(4, 32)]
    assert all(torch.equal(final[k], portable[k]) for k in final if "prompt_embeddings" in k)
    card = (out / "README.md").read_text()
    assert "<!-- peft-catalyst:begin -->" in card and "More Information Needed" not in card


@pytest.mark.timeout(600)
def test_zero3_resume_from_checkpoint_ends_like_the_uninterrupted_run(zero3_run):
    assets, out, _ = zero3_run
    result, requests = _zero3_run(assets, out, "resume", "--resume", str(out / "checkpoint-4"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert requests == 1  # the round at step 3 came back with the checkpoint
    full = json.loads((out / "full-rank0.json").read_text())
    resumed = [json.loads((out / f"resume-rank{r}.json").read_text()) for r in (0, 1)]
    assert resumed[0]["final"] == resumed[1]["final"] == full["final"]


@pytest.mark.timeout(600)
def test_zero3_keep_second_moment_zeroes_only_the_first_moment_in_the_partitions(zero3_run):
    """``catalyst_restart_optimizer="keep_second_moment"`` under ZeRO-3: each rank zeroes its slice of ``exp_avg``
    and keeps ``exp_avg_sq`` and Adam's step (the full reset is the fixture's run, pinned to ``"reset"``)."""
    assets, out, _ = zero3_run
    keep = out.parent / "keepv"
    result, _ = _zero3_run(assets, keep, "keepv", "--restart_optimizer", "keep_second_moment")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [json.loads((keep / f"keepv-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["statuses"] == ["accepted", "accepted"] and ranks[0]["rounds"] == ranks[1]["rounds"]
    for r in ranks:
        for round_ in r["rounds"]:
            assert round_["exp_avg_norm"] == 0.0 and round_["exp_avg_sq_norm"] > 0.0
            assert round_["adam_step"] == round_["step"]  # one Adam step per optimizer step, none forgotten
    full = json.loads((out / "full-rank0.json").read_text())
    assert all(round_["exp_avg_sq_norm"] == 0.0 for round_ in full["rounds"])  # the full reset, for contrast
