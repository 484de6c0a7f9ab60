"""Push and load by repo id: one commit holding adapter, portable copy, history and card, read back through a real
``huggingface_hub`` cache with ``HF_HUB_OFFLINE=1`` by PEFT with and without peft_catalyst.

The only stubs are ``HfApi.create_repo`` and ``HfApi.create_commit`` (the network boundary, tests/hub_support.py);
the captured commit is written into the cache exactly where a download would put it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, snapshot_download
from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

import peft_catalyst
from peft_catalyst import CatalystConfig, set_soft_prompt_from_text, soft_prompt_text
from peft_catalyst.model_card import SECTION_BEGIN, SECTION_END
from peft_catalyst.records import HISTORY_FORMAT, Decision, History
from tests import hub_support as hs
from tests import tiny
from tests.loopback_openai import LoopbackOpenAIServer

ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return tiny.bpe_tokenizer()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty offline Hub cache in tmp_path and a recorder for pushes."""
    cache = hs.use_cache(monkeypatch, tmp_path / "hf_home")
    return hs.HubRecorder(cache).install(monkeypatch)


@pytest.fixture
def llama_on_hub(hub, tok):
    """A tiny Llama base model published (in the cache) as org/tiny-llama, and a CATALYST adapter on it."""
    hs.save_to_cache(hub.cache, hs.LLAMA_BASE, tiny.tiny_llama(tok), tok)
    base = AutoModelForCausalLM.from_pretrained(hs.LLAMA_BASE)
    config = CatalystConfig(task_type="CAUSAL_LM", num_virtual_tokens=5, task_description="Classify review sentiment")
    model = get_peft_model(base, config)
    set_soft_prompt_from_text(model, tok, "the movie was great and")
    with torch.no_grad():  # off the token embeddings, so that a load that re-initialises the prompt would show
        model.prompt_encoder["default"].embedding.weight.add_(
            0.01 * torch.randn_like(model.prompt_encoder["default"].embedding.weight)
        )
    return model.eval()


def _logits(model, tok) -> torch.Tensor:
    enc = tok(["a terrible film", "an excellent story , a great cast"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_push_is_one_commit_that_loads_by_repo_id_with_and_without_peft_catalyst(hub, llama_on_hub, tok, tmp_path):
    model = llama_on_hub
    info = peft_catalyst.push_to_hub(model, hs.LLAMA_ADAPTER, tokenizer=tok, token=hs.FAKE_HF_TOKEN, private=True)

    assert len(hub.commits) == 1, "everything must travel in one commit"
    commit = hub.commits[0]
    assert info.oid == commit.oid and commit.repo_id == hs.LLAMA_ADAPTER
    assert commit.token == hs.FAKE_HF_TOKEN and hub.created[0]["private"] is True
    assert ADAPTER_FILES | {"README.md", "portable/adapter_config.json", "portable/adapter_model.safetensors"} <= set(
        commit.files
    )
    assert "tokenizer.json" in commit.files
    assert "catalyst_history.json" not in commit.files  # no history was given
    for name, data in commit.files.items():
        assert hs.leaked(data) == [], name
    assert json.loads(commit.files["adapter_config.json"])["peft_type"] == "CATALYST"
    assert json.loads(commit.files["portable/adapter_config.json"])["peft_type"] == "PROMPT_TUNING"
    card = ModelCard(commit.files["README.md"].decode())
    assert card.data.base_model == hs.LLAMA_BASE
    assert soft_prompt_text(model, tok) in card.text

    expected = _logits(model, tok)
    # 1. PeftModel.from_pretrained(base, "org/name"), through the cache.
    base = AutoModelForCausalLM.from_pretrained(hs.LLAMA_BASE)
    loaded = PeftModel.from_pretrained(base, hs.LLAMA_ADAPTER).eval()
    assert type(loaded.peft_config["default"]).__name__ == "CatalystConfig"
    torch.testing.assert_close(_logits(loaded, tok), expected, rtol=0, atol=0)
    # 2. AutoPeftModelForCausalLM finds the base model from adapter_config.json.
    auto = AutoPeftModelForCausalLM.from_pretrained(hs.LLAMA_ADAPTER).eval()
    torch.testing.assert_close(_logits(auto, tok), expected, rtol=0, atol=0)
    # The tokenizer travelled too (AutoTokenizer by repo id would also probe config.json, which an adapter lacks).
    snapshot = snapshot_download(hs.LLAMA_ADAPTER)
    assert (
        AutoTokenizer.from_pretrained(snapshot)("a terrible film")["input_ids"] == tok("a terrible film")["input_ids"]
    )

    # 3. Plain PEFT in fresh processes that never import peft_catalyst (the card's "without peft-catalyst" recipes).
    enc = tok(["a terrible film", "an excellent story , a great cast"], padding=True, return_tensors="pt")
    torch.save({"enc": dict(enc), "logits": expected}, tmp_path / "expected.pt")
    # Online, the card's snippet as written, from an empty cache: everything is downloaded from a loopback Hub that
    # serves what the push committed.
    with hs.LoopbackHub(hub.cache) as server:
        env = {"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "fresh")}
        out = _plain_peft(tmp_path, "online", {**env, "HF_HUB_CACHE": str(tmp_path / "fresh" / "hub")})
        assert "GET /org/catalyst-llama/resolve/main/portable/adapter_model.safetensors" in server.requests
    # Offline, from the cache the push left.
    out = _plain_peft(tmp_path, "offline", {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hub.cache.parent)})
    assert "SUBFOLDER_OFFLINE_FAILS" in out, (
        "PEFT now loads subfolder adapters offline: drop the offline note from model_cards/catalyst_section.md"
    )


PLAIN_PEFT_SCRIPT = """
import os, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

mode, expected = sys.argv[1], torch.load(sys.argv[2])
BASE, ADAPTER = sys.argv[3], sys.argv[4]  # repo ids


def check(model):
    assert type(model.peft_config["default"]).__name__ == "PromptTuningConfig"
    with torch.no_grad():
        logits = model.eval()(**expected["enc"]).logits
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=0)


base = AutoModelForCausalLM.from_pretrained(BASE)
if mode == "online":
    check(PeftModel.from_pretrained(base, ADAPTER, subfolder="portable"))
    try:
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), ADAPTER)
    except KeyError as exc:
        assert "CATALYST" in str(exc), exc
    else:
        raise AssertionError("the CATALYST adapter loaded without peft_catalyst")
else:
    from huggingface_hub import snapshot_download

    check(PeftModel.from_pretrained(base, os.path.join(snapshot_download(ADAPTER), "portable")))
    # PEFT 0.21.2, offline, asks the cache for portable/portable/adapter_model.safetensors (subfolder applied twice).
    try:
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), ADAPTER, subfolder="portable")
    except Exception as exc:
        print("SUBFOLDER_OFFLINE_FAILS", type(exc).__name__)
    else:
        print("SUBFOLDER_OFFLINE_WORKS")
assert "peft_catalyst" not in sys.modules
print("OK")
"""


def _plain_peft(tmp_path: Path, mode: str, env: dict[str, str]) -> str:
    """Run PLAIN_PEFT_SCRIPT in a fresh interpreter (outside the repository, so peft_catalyst is not on its path)."""
    script = tmp_path / "plain_peft.py"
    script.write_text(PLAIN_PEFT_SCRIPT)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_CACHE": str(Path(env["HF_HOME"]) / "hub"), **env}
    cmd = [sys.executable, str(script), mode, str(tmp_path / "expected.pt"), hs.LLAMA_BASE, hs.LLAMA_ADAPTER]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK"), result.stdout
    return result.stdout


def test_second_push_keeps_what_the_owner_wrote(hub, llama_on_hub, tok):
    model = llama_on_hub
    peft_catalyst.push_to_hub(model, hs.LLAMA_ADAPTER, tokenizer=tok)
    first = hub.commits[-1].files["README.md"].decode()
    # The owner edits the card on the Hub: metadata, text above and below our section, and (wrongly) inside it.
    card = ModelCard(first)
    card.data.license = "mit"
    card.data.tags = ["my-own-tag", *card.data.tags]
    owner_top = "Trained for the reading group; ask Ana before using it in production."
    owner_bottom = "## Citation\n\nPlease cite our workshop note."
    text = card.text.replace("# catalyst-llama", "# catalyst-llama\n\n" + owner_top)
    text = text.replace("### How to load", "### How to load\n\nOWNER EDIT INSIDE THE SECTION")
    card.text = text.rstrip("\n") + "\n\n" + owner_bottom + "\n"
    hs.write_snapshot(hub.cache, hs.LLAMA_ADAPTER, {"README.md": card.content.encode()})

    set_soft_prompt_from_text(model, tok, "a terrible film")  # the adapter changed since
    peft_catalyst.push_to_hub(model, hs.LLAMA_ADAPTER, tokenizer=tok, metrics={"accuracy": 0.75})
    updated = hub.commits[-1].files["README.md"].decode()
    new = ModelCard(updated)
    assert owner_top in new.text and owner_bottom in new.text
    assert new.text.index(owner_top) < new.text.index(SECTION_BEGIN) < new.text.index(SECTION_END)
    assert new.text.index(SECTION_END) < new.text.index(owner_bottom)
    assert "OWNER EDIT INSIDE THE SECTION" not in updated  # our section is ours
    assert updated.count(SECTION_BEGIN) == 1 and updated.count(SECTION_END) == 1
    assert soft_prompt_text(model, tok) in new.text and "| accuracy | 0.75 |" in new.text
    assert new.data.license == "mit"
    assert new.data.tags[0] == "my-own-tag" and {"peft", "prompt-tuning", "peft-catalyst"} <= set(new.data.tags)
    assert new.data.library_name == "peft" and new.data.base_model == hs.LLAMA_BASE


def test_trainer_push_uploads_run_history_card_and_no_secret(hub, tok, tmp_path):
    """A real catalyst run (HTTP mentor at a URL with user:password, a fake API key) pushed with a fake HF token."""
    hs.save_to_cache(hub.cache, hs.BERT_BASE, tiny.tiny_bert_seq_cls(tok), tok)
    with LoopbackOpenAIServer() as server:
        server.set_reply(lambda req: "1. the movie was great\n2. a terrible film")
        trainer = hs.catalyst_trainer(
            tok, tmp_path / "out", hs.credentialed_url(server.base_url), hub_model_id=hs.BERT_ADAPTER
        )
        trainer.train()
        metrics = trainer.evaluate()
    # The stock Trainer.push_to_hub: save_model() writes the folder, create_model_card() our card, one upload.
    info = trainer.push_to_hub(token=hs.FAKE_HF_TOKEN, base_model=hs.BERT_BASE)

    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert info.oid == commit.oid and commit.message == "End of training" and commit.token == hs.FAKE_HF_TOKEN
    expected = ADAPTER_FILES | {"README.md", "catalyst_history.json", "portable/adapter_config.json"}
    assert expected | {"portable/adapter_model.safetensors", "tokenizer.json"} <= set(commit.files)
    for name, data in commit.files.items():
        assert hs.leaked(data) == [], name
    for path in (tmp_path / "out").rglob("*"):  # nor anything the run left on disk
        if path.is_file():
            assert hs.leaked(path.read_bytes()) == [], path

    uploaded = json.loads(commit.files["catalyst_history.json"])
    assert uploaded["format"] == HISTORY_FORMAT
    history = History.from_dict(uploaded)
    assert history.rounds == trainer.catalyst_history  # the trainer's records, as they are
    assert history.rounds[0].decision is Decision.ACCEPTED
    assert history.summary.mentor == "openai:tiny-mentor"
    assert history.summary.total_steps == trainer.state.global_step + history.summary.race_steps
    # The adapter is the trained one, and both configs point at the base model's Hub id.
    for prefix in ("", "portable/"):
        assert json.loads(commit.files[prefix + "adapter_config.json"])["base_model_name_or_path"] == hs.BERT_BASE
    card = ModelCard(commit.files["README.md"].decode())
    assert card.data.base_model == hs.BERT_BASE and card.data.pipeline_tag == "text-classification"
    assert f"| eval\\_accuracy | {metrics['eval_accuracy']:.4g} |" in card.text
    assert f'AutoPeftModelForSequenceClassification.from_pretrained("{hs.BERT_ADAPTER}", num_labels=2)' in card.text
    assert "score: loss, lower is better" in card.text
    assert "`openai:tiny-mentor`" in card.text
    # trainer.save_model ran as with Trainer.push_to_hub
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()

    # The pushed adapter reproduces the trained model from the Hub cache, with and without the extension's type.
    trainer.model.eval()
    expected_logits = _logits(trainer.model, tok)
    auto = AutoPeftModelForSequenceClassification.from_pretrained(hs.BERT_ADAPTER).eval()
    torch.testing.assert_close(_logits(auto, tok), expected_logits, rtol=0, atol=0)
    from transformers import AutoModelForSequenceClassification

    portable_dir = os.path.join(snapshot_download(hs.BERT_ADAPTER), "portable")  # offline: see PLAIN_PEFT_SCRIPT
    base = AutoModelForSequenceClassification.from_pretrained(hs.BERT_BASE)
    portable = PeftModel.from_pretrained(base, portable_dir).eval()
    torch.testing.assert_close(_logits(portable, tok), expected_logits, rtol=0, atol=0)


def test_push_without_reachable_card_does_not_guess_online(hub, llama_on_hub, tok, monkeypatch):
    """Online, a README that cannot be fetched aborts the push instead of overwriting the owner's card."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("connection error and no cached file")

    monkeypatch.setattr("huggingface_hub.HfApi.hf_hub_download", unreachable)
    with pytest.raises(LocalEntryNotFoundError):
        peft_catalyst.push_to_hub(llama_on_hub, hs.LLAMA_ADAPTER, tokenizer=tok)
    assert hub.commits == []


MAIN_ONLY_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
import torch
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.hf_api import RepoUrl
from peft import get_peft_model
import peft_catalyst
from peft_catalyst import CatalystConfig, CatalystTrainer, CatalystTrainingArguments
from tests import hub_support, tiny
from tests.tiny import toy_reviews as toy_dataset
from transformers import DataCollatorWithPadding

calls = []
HfApi.create_repo = lambda self, repo_id, **kw: RepoUrl("https://huggingface.co/" + repo_id)
def create_commit(self, repo_id, operations, *, commit_message, **kw):
    calls.append(sorted(op.path_in_repo for op in operations))
    return CommitInfo(commit_url=f"https://huggingface.co/{{repo_id}}/commit/{{'0' * 40}}",
                      commit_message=commit_message, commit_description="", oid="0" * 40)
HfApi.create_commit = create_commit
HfApi._validate_yaml = hub_support.validate_yaml
import huggingface_hub.hf_api; huggingface_hub.hf_api.is_xet_available = lambda: False

tok = tiny.bpe_tokenizer()
model = get_peft_model(tiny.tiny_bert_seq_cls(tok), CatalystConfig(task_type="SEQ_CLS", num_virtual_tokens=4))
args = CatalystTrainingArguments(output_dir={out!r}, max_steps=2, per_device_train_batch_size=2, report_to=[],
                                 save_strategy="no", catalyst_rounds=0, use_cpu=True, disable_tqdm=True)
trainer = CatalystTrainer(model=model, args=args, train_dataset=toy_dataset(tok, 8, 1), processing_class=tok,
                          data_collator=DataCollatorWithPadding(tok))
trainer.train()
trainer.args.hub_model_id = "org/ddp"
trainer.push_to_hub()
peft_catalyst.push_to_hub(trainer.model, "org/ddp-fn", tokenizer=tok)
rank = trainer.args.process_index
with open(os.path.join({out!r}, f"rank{{rank}}.json"), "w") as f:
    json.dump({{"world": trainer.args.world_size, "calls": calls}}, f)
"""


@pytest.mark.timeout(300)
def test_only_the_main_process_pushes(tmp_path):
    """Two processes (torchrun, gloo): trainer and function pushes commit from rank 0 only."""
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "main_only.py"
    script.write_text(MAIN_ONLY_SCRIPT.format(root=str(ROOT), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert len(ranks[0]["calls"]) == 2 and ranks[1]["calls"] == []
    for files in ranks[0]["calls"]:
        assert {"README.md", "adapter_model.safetensors", "portable/adapter_model.safetensors"} <= set(files)
