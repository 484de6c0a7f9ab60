"""Successive-halving screening against full-split screening, on the command line's two defaults (issue 33).

For each doer (the default job's: SmolLM2 on its 100-example Rotten Tomatoes catalyst split, and MiniLM on the
task's 200), each draw seed and each kind of candidate (``vocab``: random vocabulary words, as
:class:`~peft_catalyst.mentors.RandomMentor` draws them; ``labels``: the same words anchored with the label words, as
``catalyst_label_anchor`` completes them), it draws the largest N of ``--ns`` prompts (a smaller N is the first N of
them) and scores every one, untrained, on every example of the catalyst split with the real
:class:`~peft_catalyst.rounds.scoring.PromptScorer` at ``catalyst_metric="label_loss"``, keeping each example's label
loss. That is full-split screening: its example scorings and seconds are measured.

Halving (``catalyst_screen_schedule="halving"``) is then run on those numbers with the library's own rule
(:func:`peft_catalyst.rounds.screening.successive_halving`): a rung's score on the first n examples of the round's
seeded order (:func:`peft_catalyst.rounds.scoring.example_order`) is the mean label loss of those n examples, which
is what the scorer returns for the subset (the label loss is a mean over examples). Its example scorings are counted
by the rule; its seconds are the measured seconds per example scoring times those. ``--real`` also runs halving
through the scorer itself (subset dataloaders) for one configuration per doer, and checks that it keeps the same
candidates and costs the counted scorings, with its own seconds.

Per N, K (1: what goes on to ``best``; 4: to a race of ``catalyst_num_candidates=4``) and first-rung minimum: example
scorings and seconds of both schedules, the share saved, how often the final K agree (top-K overlap; the same
winner), the full-split label loss lost by halving's best (regret; against the spread, worst minus best of the N on
the whole split), and the rank correlation (Kendall's tau,
Spearman's rho) over all N of halving's order (survivors by their last score, then each rung's losers by that
rung's score, later rungs first) with the full-split order.

    python -m benchmarks.screening_cost                       # rows, then the summary and results files
    python -m benchmarks.screening_cost --doers minilm --seeds 0 --ns 16 --no-write   # a quick look
    python -m benchmarks.screening_cost --analyse              # the summary from the rows already scored

Rows are appended to ``benchmarks/results/screening_cost_rows.jsonl`` (one per doer, seed and kind; an interrupted
run resumes); the summary goes to ``benchmarks/results/screening_cost.json`` and ``.md``. One thread by default.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).parent / "results"
ROWS = RESULTS / "screening_cost_rows.jsonl"
REAL = RESULTS / "screening_cost_real.json"
KINDS = ("vocab", "labels")
#: The default job's eval batch of each doer (``peft_catalyst.app.runner.embedded_defaults``).
EVAL_BATCH = {"smollm2": 16, "minilm": 32}


class Doer:
    """A default job's doer, catalyst split and a scorer that keeps every example's label loss."""

    def __init__(self, name: str, out_dir: str) -> None:
        from transformers import TrainingArguments, set_seed

        from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
        from peft_catalyst.app.runner import (
            SMOLLM2_DEMO_SIZES,
            DataArguments,
            ModelArguments,
            build_prompt_tuned_model,
            task_label_words,
        )
        from peft_catalyst.projection import get_soft_prompt, vocabulary_words
        from peft_catalyst.rounds.scoring import PromptScorer

        sizes = {f"{k}_size": v for k, v in SMOLLM2_DEMO_SIZES.items()} if name == "smollm2" else {}
        set_seed(TrainingArguments(output_dir=out_dir).seed)  # as the command seeds MiniLM's new head (42)
        tuned = build_prompt_tuned_model(ModelArguments(model=name), DataArguments(**sizes))
        self.name, self.model, self.tok, self.task = name, tuned.model, tuned.tokenizer, tuned.task
        self.split = tuned.spec.datasets["catalyst"]
        self.labels = task_label_words(tuned.task, tuned.kind)
        self.words = vocabulary_words(self.tok)
        self.n_tokens = get_soft_prompt(self.model).num_virtual_tokens
        metric = tuned.spec.compute_metrics
        self.per_example: list[Any] = []

        def label_loss(prediction) -> float:  # the label_loss metric, keeping each example's term
            import numpy as np

            scores = prediction.predictions
            scores = np.asarray(scores[0] if isinstance(scores, (tuple, list)) else scores, dtype=np.float64)
            truth = metric.class_ids(prediction.label_ids)
            shifted = scores - scores.max(axis=-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            losses = -log_probs[np.arange(len(truth)), truth]
            self.per_example.append(losses)
            return float(losses.mean())

        args = CatalystTrainingArguments(
            output_dir=f"{out_dir}/{name}", per_device_eval_batch_size=EVAL_BATCH[name], use_cpu=True, report_to=[],
            catalyst_rounds=0, disable_tqdm=True,
        )  # fmt: skip
        self.trainer = CatalystTrainer(
            model=self.model, args=args, catalyst_dataset=self.split, **tuned.spec.trainer_kwargs()
        )
        self.scorer = PromptScorer(self.trainer, self.split, metric="label_loss", score_fn=label_loss)
        self.plain = PromptScorer(self.trainer, self.split, metric="label_loss")  # as a round scores
        self.size = len(self.split)
        # the scorer's order (longest first, ties in split order), to put per-example losses back in split order
        column = self.split["input_ids"]
        self.scored_order = sorted(range(self.size), key=lambda i: len(column[i]), reverse=True)

    def draw(self, kind: str, seed: int, count: int) -> list[str]:
        """``count`` random vocabulary prompts of the prompt's length (anchored with the labels for ``labels``)."""
        from peft_catalyst.mentors import MentorRequest, RandomMentor
        from peft_catalyst.rounds.evidence import anchor_labels

        request = MentorRequest(self.task.task_description, [], num_candidates=count, max_words=self.n_tokens)
        texts = list(RandomMentor(self.words, seed=seed).propose(request).candidates)
        if kind == "labels":
            texts = [anchor_labels(t, self.labels, self.fits) for t in texts]
        return texts

    def fits(self, text: str) -> bool:
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) <= self.n_tokens

    def prompt(self, text: str):
        """The soft prompt a restart from ``text`` writes (as the round engine's ``prompt_of``)."""
        from peft_catalyst.projection import read_soft_prompt, text_to_token_ids, write_soft_prompt_, write_token_ids

        before = read_soft_prompt(self.model)
        write_token_ids(self.model, text_to_token_ids(self.tok, text, self.n_tokens))
        value = read_soft_prompt(self.model)
        write_soft_prompt_(self.model, before)
        return value

    def score_full(self, texts: list[str]) -> dict:
        """Every text on every example: full-split scores, per-example losses (split order), cost and seconds."""
        self.per_example.clear()
        rows, started = self.scorer.example_scorings, time.perf_counter()
        scores = self.scorer.score_prompts([self.prompt(t) for t in texts])
        seconds = time.perf_counter() - started
        losses = []
        for per in self.per_example:
            back = [0.0] * self.size
            for position, value in zip(self.scored_order, per):
                back[position] = round(float(value), 6)
            losses.append(back)
        return {
            "scores": [s.value for s in scores],
            "losses": losses,
            "example_scorings": self.scorer.example_scorings - rows,
            "seconds": round(seconds, 2),
        }


def halving_from_losses(row: dict, n: int, keep: int, min_examples: int, order_seed: int) -> dict:
    """Halving on the first ``n`` candidates of ``row`` from their per-example losses (see the module docstring)."""
    from peft_catalyst.records import ScoredPrompt
    from peft_catalyst.rounds.scoring import example_order
    from peft_catalyst.rounds.screening import successive_halving

    size = len(row["losses"][0])
    order = example_order(size, order_seed)
    history: list[tuple[int, list[int], list[float]]] = []  # (rung, candidates, scores)

    def score(indices: list[int], examples: int) -> list[ScoredPrompt]:
        if examples >= size:
            values = [row["scores"][i] for i in indices]
        else:
            values = [math.fsum(row["losses"][i][j] for j in order[:examples]) / examples for i in indices]
        history.append((len(history), list(indices), values))
        return [ScoredPrompt(str(i), v, v) for i, v in zip(indices, values)]

    kept, last, rungs = successive_halving(n, keep, size, min_examples, score, higher_is_better=False)
    # halving's order of all n: survivors by their last score, then the losers of each rung (latest first)
    placed, ranking = set(kept), list(kept)
    for _, indices, values in reversed(history):
        for _, i in sorted(zip(values, indices)):
            if i not in placed:
                placed.add(i)
                ranking.append(i)
    return {"kept": kept, "ranking": ranking, "rungs": rungs, "example_scorings": sum(c * e for c, e in rungs)}


def compare(row: dict, n: int, keep: int, min_examples: int, order_seed: int) -> dict:
    """Halving against full-split screening on the first ``n`` candidates of ``row``."""
    from scipy.stats import kendalltau, spearmanr

    full = row["scores"][:n]
    full_ranking = sorted(range(n), key=lambda i: (full[i], i))  # ties keep their order, as ``ranked`` does
    halving = halving_from_losses(row, n, keep, min_examples, order_seed)
    rank_of = {i: r for r, i in enumerate(halving["ranking"])}
    halving_ranks = [rank_of[i] for i in range(n)]
    full_rank = {i: r for r, i in enumerate(full_ranking)}
    full_ranks = [full_rank[i] for i in range(n)]
    full_cost = n * len(row["losses"][0])
    per_scoring = row["seconds"] / row["example_scorings"]
    return {
        "full_scorings": full_cost,
        "halving_scorings": halving["example_scorings"],
        "saved": 1 - halving["example_scorings"] / full_cost,
        "full_seconds": full_cost * per_scoring,
        "halving_seconds": halving["example_scorings"] * per_scoring,
        "overlap": len(set(halving["kept"]) & set(full_ranking[:keep])) / keep,
        "same_best": halving["kept"][0] == full_ranking[0],
        "regret": full[halving["kept"][0]] - full[full_ranking[0]],
        "spread": full[full_ranking[-1]] - full[full_ranking[0]],
        "kendall": float(kendalltau(halving_ranks, full_ranks).statistic),
        "spearman": float(spearmanr(halving_ranks, full_ranks).statistic),
        "rungs": halving["rungs"],
    }


def real_halving(doer: Doer, texts: list[str], keep: int, min_examples: int, order_seed: int) -> dict:
    """Halving through the scorer (subset dataloaders, as a round runs it): kept, example scorings, seconds."""
    from peft_catalyst.records import ScoredPrompt
    from peft_catalyst.rounds.screening import successive_halving

    prompts = [doer.prompt(t) for t in texts]
    rows, started = doer.plain.example_scorings, time.perf_counter()
    history: list[tuple[list[int], int, list[float]]] = []

    def score(indices: list[int], examples: int) -> list[ScoredPrompt]:
        subset = None if examples >= doer.size else examples
        got = doer.plain.score_prompts([prompts[i] for i in indices], examples=subset, order_seed=order_seed)
        history.append((list(indices), examples, [s.value for s in got]))
        return [s.prompt(str(i)) for i, s in zip(indices, got)]

    kept, _, rungs = successive_halving(len(texts), keep, doer.size, min_examples, score, higher_is_better=False)
    return {
        "kept": kept,
        "rungs": rungs,
        "example_scorings": doer.plain.example_scorings - rows,
        "seconds": round(time.perf_counter() - started, 2),
        "history": history,
    }


def _read_rows() -> list[dict]:
    """The rows scored so far: per doer, seed and kind the one with the most candidates (a longer row extends a
    shorter one: a smaller N's draw is the start of a larger N's)."""
    if not ROWS.exists():
        return []
    best: dict[tuple, dict] = {}
    for line in ROWS.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            key = (row["doer"], row["seed"], row["kind"])
            if key not in best or len(row["scores"]) >= len(best[key]["scores"]):
                best[key] = row
    return list(best.values())


def score_rows(args) -> None:
    """Score what is missing of ``--doers`` x ``--seeds`` x ``--kinds`` (appending rows), then ``--real`` checks."""
    import tempfile

    have = {(r["doer"], r["seed"], r["kind"]): r for r in _read_rows()}
    done = {key for key, r in have.items() if len(r["scores"]) >= max(args.ns)}
    with tempfile.TemporaryDirectory() as out:
        for name in args.doers:
            todo = [(s, k) for s in args.seeds for k in args.kinds if (name, s, k) not in done]
            if not todo and not args.real:
                continue
            started = time.perf_counter()
            doer = Doer(name, out)
            loaded = time.perf_counter() - started
            print(f"{name}: loaded in {loaded:.1f} s, {doer.size} catalyst examples", flush=True)
            for seed, kind in todo:
                texts = doer.draw(kind, seed, max(args.ns))
                old = have.get((name, seed, kind))
                if old is not None and texts[: len(old["texts"])] == old["texts"]:  # score only the new ones
                    new = doer.score_full(texts[len(old["texts"]) :])
                    result = {
                        "scores": old["scores"] + new["scores"], "losses": old["losses"] + new["losses"],
                        "example_scorings": old["example_scorings"] + new["example_scorings"],
                        "seconds": round(old["seconds"] + new["seconds"], 2),
                    }  # fmt: skip
                else:
                    result = doer.score_full(texts)
                row = {"doer": name, "seed": seed, "kind": kind, "texts": texts, **result}
                if args.write:
                    with ROWS.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                else:
                    _MEMORY.append(row)
                print(
                    f"{name} seed {seed} {kind}: {len(texts)} prompts x {doer.size} examples in "
                    f"{result['seconds']:.0f} s ({result['seconds'] / result['example_scorings'] * 1000:.1f} ms per "
                    "example scoring)",
                    flush=True,
                )
            if args.real:
                _REAL.append(check_real(doer, args))
                if args.write:
                    earlier = [c for c in json.loads(REAL.read_text()) if c["doer"] != name] if REAL.exists() else []
                    REAL.write_text(json.dumps([*earlier, _REAL[-1]], indent=1) + "\n")


def check_real(doer: Doer, args) -> dict:
    """One configuration per doer through the scorer itself: same kept candidates as the rows' simulation?"""
    n, keep, seed, kind = min(args.ns), 1, args.seeds[0], args.kinds[0]
    row = next(r for r in [*_read_rows(), *_MEMORY] if (r["doer"], r["seed"], r["kind"]) == (doer.name, seed, kind))
    texts = row["texts"][:n]
    started = time.perf_counter()  # full-split screening of the same prompts, right before halving: same load
    doer.plain.score_prompts([doer.prompt(t) for t in texts])
    full_seconds = round(time.perf_counter() - started, 2)
    real = real_halving(doer, texts, keep, args.min_examples[0], seed)
    simulated = halving_from_losses(row, n, keep, args.min_examples[0], seed)
    # the real rung scores against the means of the rows' per-example losses over the same prefix
    from peft_catalyst.rounds.scoring import example_order

    order = example_order(doer.size, seed)
    gap = max(
        abs(v - math.fsum(row["losses"][i][j] for j in order[:examples]) / examples)
        for indices, examples, values in real["history"]
        for i, v in zip(indices, values)
    )
    check = {
        "doer": doer.name, "seed": seed, "kind": kind, "n": n, "keep": keep, "min_examples": args.min_examples[0],
        "kept_real": real["kept"], "kept_from_rows": simulated["kept"], "same": real["kept"] == simulated["kept"],
        "example_scorings_real": real["example_scorings"], "example_scorings_rule": simulated["example_scorings"],
        "max_score_gap": gap, "seconds_full_real": full_seconds, "seconds_real": real["seconds"],
        "seconds_from_rate": round(simulated["example_scorings"] * row["seconds"] / row["example_scorings"], 2),
    }  # fmt: skip
    print(f"real halving check: {check}", flush=True)
    return check


_MEMORY: list[dict] = []
_REAL: list[dict] = []


def summarise(rows: list[dict], args) -> dict:
    """Per doer, kind, N, K and first-rung minimum: means over seeds of :func:`compare`."""
    table = []
    for name in args.doers:
        for kind in args.kinds:
            mine = [r for r in rows if r["doer"] == name and r["kind"] == kind and r["seed"] in args.seeds]
            for n in args.ns:
                for keep in args.keeps:
                    for least in args.min_examples:
                        got = [compare(r, n, keep, least, r["seed"]) for r in mine if len(r["scores"]) >= n]
                        if not got:
                            continue
                        mean = {k: statistics.fmean(float(g[k]) for g in got) for k in got[0] if k != "rungs"}
                        table.append({
                            "doer": name, "kind": kind, "n": n, "keep": keep, "min_examples": least,
                            "seeds": len(got), "rungs": got[0]["rungs"],
                            "full_scorings": round(mean["full_scorings"]),
                            "halving_scorings": round(mean["halving_scorings"]),
                            "saved": round(mean["saved"], 3),
                            "full_seconds": round(mean["full_seconds"], 1),
                            "halving_seconds": round(mean["halving_seconds"], 1),
                            "seconds_saved": round(mean["full_seconds"] - mean["halving_seconds"], 1),
                            "overlap": round(mean["overlap"], 3),
                            "same_best": round(mean["same_best"], 3),
                            "regret": round(mean["regret"], 4),
                            "spread": round(mean["spread"], 4),
                            "kendall": round(mean["kendall"], 3),
                            "spearman": round(mean["spearman"], 3),
                        })  # fmt: skip
    return {"rows": table}


def markdown(summary: dict) -> str:
    head = (
        "| doer | kind | N | K | first rung >= | seeds | rungs (candidates x examples) | example scorings full -> "
        "halving | saved | seconds full -> halving | top-K overlap | same best | regret | spread | Kendall | "
        "Spearman |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['doer']} | {r['kind']} | {r['n']} | {r['keep']} | {r['min_examples']} | {r['seeds']} | "
        f"{', '.join(f'{c}x{e}' for c, e in r['rungs'])} | {r['full_scorings']} -> {r['halving_scorings']} | "
        f"{r['saved']:.0%} | {r['full_seconds']:.0f} -> {r['halving_seconds']:.0f} | {r['overlap']:.2f} | "
        f"{r['same_best']:.2f} | {r['regret']:.4f} | {r['spread']:.4f} | {r['kendall']:.2f} | {r['spearman']:.2f} |"
        for r in summary["rows"]
    ]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--doers", nargs="+", default=["smollm2", "minilm"], choices=["smollm2", "minilm"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--ns", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--keeps", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--min-examples", nargs="+", type=int, default=[16, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--real", action="store_true", help="also run halving through the scorer once per doer")
    parser.add_argument("--analyse", action="store_true", help="only summarise the rows already scored")
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if not args.analyse:
        score_rows(args)
    rows = [*_read_rows(), *_MEMORY]
    summary = summarise(rows, args)
    print(markdown(summary))
    if args.write:
        seconds = {}
        for r in rows:
            seconds.setdefault(r["doer"], []).append(r["seconds"] / r["example_scorings"] * 1000)
        result = {
            "benchmark": "benchmarks/screening_cost.py",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
            "metric": "label_loss (lower is better), untrained, catalyst split of the CLI default job",
            "ms_per_example_scoring": {k: round(statistics.fmean(v), 2) for k, v in seconds.items()},
            "real_halving_checks": json.loads(REAL.read_text()) if REAL.exists() else [],
            **summary,
        }
        (RESULTS / "screening_cost.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / "screening_cost.md").write_text(markdown(summary))


if __name__ == "__main__":
    main()
