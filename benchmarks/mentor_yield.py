"""How often does the embedded SmolLM2 mentor yield a usable candidate? (issues 3 and 25)

For each packaged task (movie-review sentiment, TREC question type, SMS spam) it builds realistic mentor requests:
trajectories of soft prompts projected to text (random vocabulary tokens, as a projection of a young soft prompt
looks) mixed with a few readable prompts, with improving scores; then calls the mentor and reports, per task and
overall, the share of calls with at least one usable candidate, the mean number of candidates per call and why
the other lines were rejected.

By default the requests are those the examples send (``examples/sequence_classification.py``): the packaged task's
own description, ranked by accuracy, no manual prompt. ``--descriptions short --metric label_loss --manual-rate 0.5``
gives the requests of the first measurements (issue 3).

    python benchmarks/mentor_yield.py --calls-per-task 4            # 12 calls, writes benchmarks/results/
    python benchmarks/mentor_yield.py --calls-per-task 2 --no-write --temperature 0.5   # quick look

Runs offline (HF_HUB_OFFLINE=1). One thread by default: on a shared 2-core machine two threads thrash.

``--screen`` (issue 19) measures what the prompts are worth, not only how many come back: for each request the
SmolLM2 doer (label words) scores, untrained on the first ``--screen-examples`` catalyst examples of Rotten
Tomatoes, every prompt of each source, and the best of N counts: (a) today's request, (b) the evidence request
(examples, errors of the manual prompt, label words, best prompts) asking "new", (c) the same asking "edit",
(d) random words, (e) random words anchored with the label words, (f) the manual prompt. It reports usable prompts
and seconds per call, the best-of-N label_loss and accuracy per source, and how often (b) and (c) beat (e), with a
95% Wilson interval::

    python benchmarks/mentor_yield.py --screen --calls-per-task 4 --screen-n 4    # the README's reduced setting
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = {
    "sentiment": {
        "description": "sentiment of movie review snippets (positive/negative)",
        "readable": ["Is this review positive or negative", "Review sentiment", "movie review positive negative"],
        "manual": "Classify the sentiment of this movie review",
    },
    "trec": {
        "description": (
            "TREC question type (6 coarse classes: abbreviation, entity, description, human, location, number)"
        ),
        "readable": ["What type of question is this", "question type", "answer type: human location number"],
        "manual": "Classify the type of answer this question asks for",
    },
    "spam": {
        "description": "SMS spam detection (spam or ham)",
        "readable": ["Is this SMS spam", "spam or not", "text message spam ham"],
        "manual": "Is this text message spam or ham?",
    },
}


#: The packaged task behind each benchmark task (its description is what the trainer sends by default).
PACKAGED = {"sentiment": "rotten_tomatoes", "trec": "trec", "spam": "sms_spam"}


def packaged_descriptions() -> dict[str, str]:
    """Each benchmark task's packaged description (``TaskData.task_description``), as the examples send it."""
    from peft_catalyst.app.data import load_task

    return {name: load_task(PACKAGED[name]).task_description for name in TASKS}


def make_request(
    task: dict,
    tokenizer,
    rng: random.Random,
    *,
    num_candidates: int,
    max_words: int,
    metric: str = "label_loss",
    description: str | None = None,
    manual_rate: float = 0.5,
    readable_rate: float = 0.7,
):
    """A request like the trainer sends after a gradient stage: 4-6 scored points, worst to best."""
    from peft_catalyst.mentors import MentorRequest, TrajectoryPoint

    vocab = [
        tok
        for tok in tokenizer.convert_ids_to_tokens(range(200, min(tokenizer.vocab_size, 49152)))
        if tok and tok.isascii()
    ]
    n_points = rng.randint(4, 6)
    points = []
    loss = rng.uniform(0.9, 1.4)
    for i in range(n_points):
        if i >= n_points - 2 and rng.random() < readable_rate:
            text = rng.choice(task["readable"])
        else:
            text = tokenizer.convert_tokens_to_string(rng.sample(vocab, 8)).strip()
        loss -= rng.uniform(0.02, 0.15)
        noise = rng.uniform(-0.05, 0.05)  # drawn for every metric, so the requests stay those measured before
        score = round(loss, 4) if metric.endswith("loss") else round(min(1.0, 0.5 + (1.4 - loss) / 2 + noise), 4)
        points.append(TrajectoryPoint(text, score, round(loss, 4)))
    manual = task["manual"] if rng.random() < manual_rate else None
    return MentorRequest(
        description or task["description"],
        points,
        num_candidates=num_candidates,
        max_words=max_words,
        manual_prompt=manual,
        metric=metric,
        higher_is_better=not metric.endswith("loss"),
    )


def wilson(wins: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``wins / n``, to 3 decimals (as the results store it)."""
    from peft_catalyst.app.compare.stats import binomial_interval

    low, high = binomial_interval(wins, n)
    return round(low, 3), round(high, 3)


def screen(args) -> dict:
    """Best-of-N zero-shot scores per source on Rotten Tomatoes (see the module docstring, ``--screen``)."""
    import tempfile
    from dataclasses import replace

    import torch

    from benchmarks.trainer_overhead import setup_doer
    from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
    from peft_catalyst.evidence import EvidenceSource, anchor_labels
    from peft_catalyst.mentors import RandomMentor, TrajectoryPoint, TransformersMentor
    from peft_catalyst.projection import get_soft_prompt, text_to_token_ids, vocabulary_words
    from peft_catalyst.scoring import PromptScorer

    torch.set_num_threads(args.threads)
    model, tok, spec, task = setup_doer("smollm2", args.seed)
    split = spec.datasets["catalyst"].select(range(args.screen_examples))
    n_tokens = get_soft_prompt(model).num_virtual_tokens
    vocab = model.word_embeddings.weight
    labels = [w.strip() for w in task.label_words]
    mentor = TransformersMentor.embedded(model.get_base_model(), tok, seed=args.seed)
    words = vocabulary_words(tok)
    rng = random.Random(args.seed)

    def fits(text: str) -> bool:
        return len(tok(text, add_special_tokens=False)["input_ids"]) <= n_tokens

    with tempfile.TemporaryDirectory() as out:
        targs = CatalystTrainingArguments(
            output_dir=out, per_device_eval_batch_size=16, use_cpu=True, report_to=[], catalyst_rounds=0
        )
        trainer = CatalystTrainer(model=model, args=targs, catalyst_dataset=split, **spec.trainer_kwargs())
        scorer = PromptScorer(trainer, split, metric="label_loss", predictions=True)
        source = EvidenceSource(scorer.scored_dataset, tok, labels)

        def scores(texts: list[str]) -> list:
            prompts = [vocab[text_to_token_ids(tok, t, n_tokens)].detach().clone() for t in texts]
            return scorer.score_prompts(prompts) if prompts else []

        (manual,) = scores([task.manual_prompt])
        rows = []
        for call in range(args.calls_per_task):
            today = make_request(
                TASKS["sentiment"], tok, rng, num_candidates=args.screen_n, max_words=args.max_words,
                metric="label_loss", description=task.task_description, manual_rate=0.0, readable_rate=0.5,
            )  # fmt: skip
            best = sorted(today.trajectory, key=lambda p: p.score)[:3]
            evidence = replace(
                today,
                examples=source.examples(3, 25, seed=call),
                errors=source.errors(manual.predictions, 3, 25, seed=call),
                labels=labels,
                best_prompts=[TrajectoryPoint(p.text, p.score, p.loss) for p in best],
            )
            row = {"call": call, "sources": {}}
            asked = {
                "a_today": today,
                "b_evidence_new": evidence,
                "c_evidence_edit": replace(evidence, proposal="edit"),
                "d_random": today,
            }
            for name, request in asked.items():
                started = time.perf_counter()
                # new random words for every request (RandomMentor seeds by round: each request here is a first one)
                who = RandomMentor(words, seed=args.seed * 1000 + call) if name == "d_random" else mentor
                texts = who.propose(request).candidates
                seconds = time.perf_counter() - started
                row["sources"][name] = {"texts": texts, "seconds": round(seconds, 1)}
            random_texts = row["sources"]["d_random"]["texts"]
            row["sources"]["e_random_anchored"] = {"texts": [anchor_labels(t, labels, fits) for t in random_texts]}
            for entry in row["sources"].values():
                results = scores(entry["texts"])
                entry["usable"] = len(entry["texts"])
                entry["label_loss"] = [round(s.value, 4) for s in results]
                entry["accuracy"] = [round(s.metrics.get("accuracy", float("nan")), 4) for s in results]
                finite = [(s.value, s.metrics.get("accuracy")) for s in results if s.finite]
                entry["best_label_loss"], entry["best_accuracy"] = min(finite) if finite else (None, None)
            row["sources"]["f_manual"] = {
                "texts": [task.manual_prompt],
                "best_label_loss": round(manual.value, 4),
                "best_accuracy": manual.metrics.get("accuracy"),
            }
            rows.append(row)
            print(json.dumps({k: v.get("best_label_loss") for k, v in row["sources"].items()}), flush=True)
    summary = {}
    for name in rows[0]["sources"] if rows else []:
        entries = [r["sources"][name] for r in rows]
        best = [e["best_label_loss"] for e in entries if e["best_label_loss"] is not None]
        acc = [e["best_accuracy"] for e in entries if e["best_accuracy"] is not None]
        usable = [e["usable"] for e in entries if e.get("usable") is not None]
        seconds = [e["seconds"] for e in entries if e.get("seconds") is not None]
        summary[name] = {
            "best_label_loss_mean": round(statistics.fmean(best), 4) if best else None,
            "best_accuracy_mean": round(statistics.fmean(acc), 4) if acc else None,
            "usable_per_call": round(statistics.fmean(usable), 2) if usable else None,
            "seconds_per_call": round(statistics.fmean(seconds), 1) if seconds else None,
        }
    for name in ("b_evidence_new", "c_evidence_edit"):
        pairs = [
            (r["sources"][name]["best_label_loss"], r["sources"]["e_random_anchored"]["best_label_loss"]) for r in rows
        ]
        wins = sum(m is not None and (c is None or m < c) for m, c in pairs)
        summary[f"{name}_beats_e"] = {"wins": wins, "requests": len(pairs), "wilson95": wilson(wins, len(pairs))}
    return {
        "benchmark": "mentor_yield --screen",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "task": "rotten_tomatoes", "doer": "SmolLM2-135M (label words)", "n": args.screen_n,
            "catalyst_examples": args.screen_examples, "requests": args.calls_per_task, "seed": args.seed,
            "threads": args.threads, "metric": "label_loss (lower is better), untrained",
        },  # fmt: skip
        "summary": summary,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls-per-task", type=int, default=4)
    parser.add_argument("--descriptions", choices=["packaged", "short"], default="packaged")
    parser.add_argument("--metric", default="accuracy", help="accuracy (the examples) or label_loss (the CLI)")
    parser.add_argument("--manual-rate", type=float, default=0.0, help="share of requests with a manual prompt")
    parser.add_argument(
        "--readable-rate", type=float, default=0.0, help="chance that each of the last 2 points is a readable prompt"
    )
    parser.add_argument(
        "--trajectory-tokenizer",
        choices=["minilm", "smollm2"],
        default="minilm",
        help="whose vocabulary the projected soft prompts are made of (the doer's: MiniLM in the examples' run)",
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--num-candidates", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--num-samples", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--no-few-shot", action="store_true")
    parser.add_argument("--no-strict-retry", action="store_true")
    parser.add_argument("--no-task-filter", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mentor_yield.json")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--show", action="store_true", help="print every raw reply and the candidates")
    parser.add_argument("--screen", action="store_true", help="score each source's prompts with the doer (issue 19)")
    parser.add_argument("--screen-n", type=int, default=4, help="prompts per source and request (N)")
    parser.add_argument("--screen-examples", type=int, default=32, help="catalyst examples each prompt is scored on")
    args = parser.parse_args(argv)
    if args.screen:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        result = screen(args)
        print(json.dumps(result["summary"], indent=2))
        if not args.no_write:
            out = args.out.with_name(f"mentor_yield_screen_n{args.screen_n}.json")
            out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {out}")
        return 0

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from peft_catalyst.app.assets import load_smollm2
    from peft_catalyst.mentors import MentorError, TransformersMentor

    model, tokenizer = load_smollm2()
    kwargs = {"seed": args.seed}
    for key in ("temperature", "top_p", "num_samples", "max_new_tokens"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    mentor = TransformersMentor.embedded(
        model,
        tokenizer,
        few_shot=not args.no_few_shot,
        strict_retry=not args.no_strict_retry,
        min_task_overlap=not args.no_task_filter,
        **kwargs,
    )
    descriptions = packaged_descriptions() if args.descriptions == "packaged" else {}
    doer_tokenizer = tokenizer
    if args.trajectory_tokenizer == "minilm":
        from peft_catalyst.app.assets import load_minilm_for_sequence_classification

        doer_tokenizer = load_minilm_for_sequence_classification(num_labels=2)[1]
    settings = mentor.cache_identity() | {
        "descriptions": args.descriptions,
        "metric": args.metric,
        "manual_rate": args.manual_rate,
        "readable_rate": args.readable_rate,
        "trajectory_tokenizer": args.trajectory_tokenizer,
        "few_shot": mentor.few_shot,
        "strict_retry": mentor.strict_retry,
        "min_task_overlap": mentor.min_task_overlap,
        "num_candidates": args.num_candidates,
        "max_words": args.max_words,
        "threads": args.threads,
    }
    print(f"mentor {mentor.name}: {json.dumps(settings)}", flush=True)

    per_task: dict[str, dict] = {}
    examples: dict[str, list] = {}
    rng = random.Random(args.seed)
    start = time.perf_counter()
    for task_name in args.tasks:
        task = TASKS[task_name]
        counts, latencies, retries, errors = [], [], 0, 0
        rejected: dict[str, int] = {}
        examples[task_name] = []
        for call in range(args.calls_per_task):
            request = make_request(
                task,
                doer_tokenizer,
                rng,
                num_candidates=args.num_candidates,
                max_words=args.max_words,
                metric=args.metric,
                description=descriptions.get(task_name),
                manual_rate=args.manual_rate,
                readable_rate=args.readable_rate,
            )
            try:
                proposal = mentor.propose(request)
            except MentorError as exc:
                errors += 1
                counts.append(0)
                print(f"  {task_name} call {call}: MentorError {exc}", flush=True)
                continue
            counts.append(len(proposal.candidates))
            latencies.append(proposal.latency_s)
            for _, reason in proposal.rejected:
                rejected[reason] = rejected.get(reason, 0) + 1
            retries += proposal.attempts > 1
            if len(examples[task_name]) < 5:
                examples[task_name].append(proposal.candidates)
            print(
                f"  {task_name} call {call}: {len(proposal.candidates)} usable in {proposal.latency_s:.1f} s "
                f"(attempts {proposal.attempts}) {proposal.candidates}",
                flush=True,
            )
            if args.show:
                print("    raw:", proposal.raw.replace("\n", " | "), flush=True)
                print("    rejected:", proposal.rejected, flush=True)
        per_task[task_name] = {
            "calls": len(counts),
            "yield": sum(c > 0 for c in counts) / len(counts),
            "candidates_per_call": statistics.fmean(counts),
            "latency_s_mean": statistics.fmean(latencies) if latencies else None,
            "retried_calls": retries,
            "errors": errors,
            "rejected": rejected,
        }
    total_calls = sum(t["calls"] for t in per_task.values())
    overall = {
        "calls": total_calls,
        "yield": sum(t["yield"] * t["calls"] for t in per_task.values()) / total_calls,
        "candidates_per_call": sum(t["candidates_per_call"] * t["calls"] for t in per_task.values()) / total_calls,
        "wall_s": round(time.perf_counter() - start, 1),
        "usage": mentor.usage.to_dict(),
    }
    print(f"\n{'task':<10} {'calls':>5} {'yield':>6} {'cand/call':>9} {'s/call':>7}")
    for name, row in per_task.items():
        print(
            f"{name:<10} {row['calls']:>5} {row['yield']:>6.2f} {row['candidates_per_call']:>9.2f} "
            f"{row['latency_s_mean'] or 0:>7.1f}"
        )
    print(f"{'overall':<10} {overall['calls']:>5} {overall['yield']:>6.2f} {overall['candidates_per_call']:>9.2f}")
    print("rejected:", {name: row["rejected"] for name, row in per_task.items()})
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "benchmark": "mentor_yield",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "torch": torch.__version__,
                "cpu_count": os.cpu_count(),
            },
            "settings": settings,
            "per_task": per_task,
            "overall": overall,
            "examples": examples,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
