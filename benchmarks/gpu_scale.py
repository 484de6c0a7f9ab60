"""Rounds at GPU scale: a Llama-3.2-1B-shaped causal LM, prompts one at a time vs K at a time (nothing downloaded).

The model has Llama-3.2-1B's shape (16 layers, hidden 2048, 32 heads / 8 KV heads, MLP 8192, tied 128,256-word
vocabulary; 1.2B parameters) with random weights in bf16, and a synthetic word-level vocabulary of made-up words, so
nothing is downloaded. The task is a synthetic two-class label-word task wired as the command line wires SmolLM2
(``compute_loss_func``, ``logits_to_keep``), so the soft prompt is the only trainable parameter.

For each selection (``best``, ``race``) and variant (``catalyst_score_batch_size=1``: sequential; 128, the default on a
GPU: batched), interleaved: one stage and one round, as ``benchmarks/race_cost.py`` measures them (stage and round wall
time, scoring and race seconds, peak RSS, the round's peak GPU memory).

    python -m benchmarks.gpu_scale                 # on a GPU: the 1B shape, bf16, batch 16
    python -m benchmarks.gpu_scale --tiny --no-save  # a CPU smoke test of the same code with a tiny shape
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.race_cost import VARIANTS, measure_round

RESULTS = Path(__file__).parent / "results" / "gpu_scale.json"

LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    vocab_size=128_256,
    max_position_embeddings=4096,
    rope_theta=500_000.0,
    tie_word_embeddings=True,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=2_000,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)
SPECIALS = ["<pad>", "<unk>", "<bos>"]
TEMPLATE_WORDS = ["text", ":", "label", "positive", "negative"]


def synthetic_words(count: int) -> list[str]:
    """``count`` distinct made-up alphabetic words (consonant-vowel syllables), reproducible."""
    syllables = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"]
    words, n = [], 0
    while len(words) < count:
        word, k = "", n
        for _ in range(3):
            word, k = word + syllables[k % len(syllables)], k // len(syllables)
        if word not in TEMPLATE_WORDS:
            words.append(word)
        n += 1
    return words


def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer over specials, the template's words and made-up words: ``vocab_size`` entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = synthetic_words(vocab_size - len(SPECIALS) - len(TEMPLATE_WORDS))
    vocab = {w: i for i, w in enumerate([*SPECIALS, *TEMPLATE_WORDS, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>")


def synthetic_task(tok, sizes: dict[str, int], seed: int = 0):
    """Two classes of random-word texts: label 1 when cue words of the first half outnumber those of the second."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from peft_catalyst.app.data import TaskData

    rng = np.random.default_rng(seed)
    pool = synthetic_words(min(len(tok) - len(SPECIALS) - len(TEMPLATE_WORDS), 20_000))
    cues = pool[:20]
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    splits = {}
    for name, size in sizes.items():
        texts, labels = [], []
        for _ in range(size):
            words = list(rng.choice(pool[20:], size=int(rng.integers(24, 48))))
            label = int(rng.integers(2))
            words += list(rng.choice(cues[:10] if label else cues[10:], size=3))
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(label)
        splits[name] = Dataset.from_dict({"text": texts, "label": labels}, features=features)
    return TaskData(
        name="synthetic",
        splits=DatasetDict(splits),
        label_names=["negative", "positive"],
        label_words=[" negative", " positive"],
        template="text : {text} label :",
        task_description="Decide whether the text uses more cue words of the first kind than of the second.",
        manual_prompt="Which kind of cue word is more frequent",
    )


def build(shape: dict, dtype: torch.dtype, device: str, num_virtual_tokens: int, seed: int):
    """Random-weight Llama of ``shape`` with a CATALYST prompt, its tokenizer and the prepared task."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from peft_catalyst import CatalystConfig
    from peft_catalyst.app.tasks import prepare_task

    tok = synthetic_tokenizer(shape["vocab_size"])
    config = LlamaConfig(**shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=None)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # a LlamaForCausalLM, initialised in dtype
    task = synthetic_task(tok, {"train": 512, "catalyst": 64, "validation": 16, "test": 16}, seed)
    spec = prepare_task(task, tok, "causal_lm", max_length=96)
    peft_config = CatalystConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens, task_description=task.task_description
    )
    return get_peft_model(model, peft_config), tok, spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny shape in float32 (a CPU smoke test)")
    parser.add_argument("--selections", nargs="+", default=["best", "race"], choices=["best", "race"])
    parser.add_argument("--stage-steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="train and eval batch size")
    parser.add_argument("--race-steps", type=int, default=2)
    parser.add_argument("--num-virtual-tokens", type=int, default=8)
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/gpu_scale.json")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cuda = torch.cuda.is_available()
    shape, dtype = (TINY, torch.float32) if a.tiny else (LLAMA_1B, torch.bfloat16)
    device = "cuda" if cuda else "cpu"
    rows = []
    for selection in a.selections:
        for variant, size in VARIANTS.items():
            model, tok, spec = build(shape, dtype, device, a.num_virtual_tokens, seed=0)
            row = measure_round(
                model,
                tok,
                spec,
                stage_steps=a.stage_steps,
                train_batch=a.batch,
                eval_batch=a.batch,
                learning_rate=3e-2,
                selection=selection,
                race_steps=a.race_steps if selection == "race" else 0,
                score_batch_size=size,
                bf16=dtype is torch.bfloat16 and cuda,
            )
            row = {"variant": variant, **row}
            rows.append(row)
            gpu = f", round GPU peak {row['round_gpu_peak_mib']:.0f} MiB" if cuda else ""
            print(
                f"{selection:4s} {variant:10s} | stage {row['stage_s']:6.2f} s | round {row['round_s']:6.2f} s "
                f"({row['round_x_stage']:.2f}x stage; scoring {row['scoring_s']:.2f} s, race {row['race_s']:.2f} s) | "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB{gpu} | {row['decision']}",
                flush=True,
            )
            del model
            if cuda:
                torch.cuda.empty_cache()
    if not a.no_save:
        device_name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
        machine = {"device": device_name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        shape_name = "tiny" if a.tiny else "llama-3.2-1b"
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"machine": machine, "shape": shape_name, "rows": rows}, indent=2) + "\n")
        print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
