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


@pytest.mark.timeout(600)
@pytest.mark.parametrize("selection", ["best", "race"])
def test_two_process_rounds_call_the_mentor_once_and_keep_ranks_identical(tmp_path, selection):
    tok = tiny.bpe_tokenizer()
    assets = tmp_path / "assets"
    tok.save_pretrained(assets / "tokenizer")
    base = tiny.tiny_bert_seq_cls(tok)
    base.config.hidden_dropout_prob = 0.0  # ranks see different batches; dropout is not what this test is about
    base.save_pretrained(assets / "base")
    config = CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4, task_description="Classify review sentiment")
    get_peft_model(tiny.tiny_bert_seq_cls(tok), config).save_pretrained(assets / "adapter")
    _data(tok, 64, 1).save_to_disk(assets / "train")
    _data(tok, 13, 2).save_to_disk(assets / "catalyst")  # odd size: gather_for_metrics must drop the padding

    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. the movie was great\n2. a boring plot")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
               "--assets", str(assets), "--base_url", server.base_url, "--out", str(out),
               "--selection", selection]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
        (tmp_path / "log.txt").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        requests = server.request_count
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
